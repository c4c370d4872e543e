"""The compiled build (setup.py, mypyc) and its fallback: what `broker.speedups` loads."""

import json
import subprocess
import sys
import tomllib

import pytest

from broker import speedups
from tests.conftest import ROOT, require_service

COMPILED = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["trio-broker"]["compiled"]


def test_make_test_runs_the_compiled_build() -> None:
    # Else the suite would test the Python modules twice, and the compiled ones never.
    if not speedups.enabled():
        pytest.skip(f"{speedups.ENVIRONMENT}=1: this run is the pure-Python one")
    built = speedups.compiled_modules() == sorted(COMPILED)
    require_service("the compiled build", built, f"make test builds it ({speedups.describe()})")
    for name in COMPILED:
        module = sys.modules.get(name) or __import__(name, fromlist=["_"])
        assert module.__file__ is not None and not module.__file__.endswith(".py")


def test_without_speedups_every_compiled_module_runs_as_python() -> None:
    script = (
        f"import importlib, json; names = {COMPILED!r}; "
        "print(json.dumps([importlib.import_module(n).__file__ for n in names]))"
    )
    env = {"PATH": "/usr/bin:/bin", speedups.ENVIRONMENT: "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env
    )
    files = json.loads(done.stdout)
    assert [path.endswith(".py") for path in files] == [True] * len(COMPILED), done.stderr


def test_a_module_edited_since_the_build_makes_the_whole_set_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(speedups.ENVIRONMENT, raising=False)
    record = {name: "0" * 64 for name in COMPILED}
    why = speedups._why_python(record)
    assert why is not None and why.startswith(f"{min(COMPILED)} changed since the build")
    assert speedups._why_python({}) is None


def test_the_compiled_modules_are_listed_once_and_exist() -> None:
    assert len(set(COMPILED)) == len(COMPILED)
    for name in COMPILED:
        assert ROOT.joinpath(*name.split(".")).with_suffix(".py").is_file(), name


def test_speedups_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(speedups.ENVIRONMENT, "1")
    assert not speedups.enabled()
    monkeypatch.setenv(speedups.ENVIRONMENT, "0")
    assert speedups.enabled()
    assert "\n" not in speedups.describe()
