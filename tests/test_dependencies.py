"""What `make run` installs (pyproject's dependencies, and the optional speedups, which
the daemon does without) is all the daemon imports."""

import ast
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

from packaging.requirements import Requirement

from tests.conftest import ROOT


def test_every_third_party_import_of_the_daemon_is_a_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["speedups"]]
    declared = {_normal(Requirement(line).name) for line in lines}
    distributions = packages_distributions()
    missing = {}
    for path in [*(ROOT / "broker").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("broker", "plugins"):
                    continue
                found = {_normal(d) for d in distributions.get(top, [top])}
                if not found & declared:
                    missing[top] = path.relative_to(ROOT)
    assert missing == {}, f"imported but not in [project] dependencies: {missing}"


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def test_every_package_is_installed_not_only_in_editable_mode() -> None:
    # make run installs in editable mode, which finds any package; a real install (pip
    # install ., a wheel) takes only what [tool.setuptools] lists.
    from setuptools import find_packages

    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(find_packages(str(ROOT), include=options["packages"]["find"]["include"]))
    packages = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("broker", "plugins")
        for path in (ROOT / top).rglob("__init__.py")
    }
    assert packages <= listed, f"not installed: {packages - listed}"
    assert "ui/*" in options["package-data"]["broker"]  # the demo pages


def test_the_daemon_runs_without_the_speedups() -> None:
    # Each optional library is imported where it is used, under a guard, never at the top
    # of a module: the daemon imports (and serves) without it.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = {Requirement(line).name for line in project["optional-dependencies"]["speedups"]}
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in optional)
    script = (
        f"import sys; {blocked}; import broker.cli.main, broker.node.broker; "
        "from broker.wire.deflate import ZLIB, Deflater; "
        "print('ok' if Deflater(1, 256).library is ZLIB else 'not zlib')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout == "ok\n", done.stderr
