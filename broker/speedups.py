"""The optional speedups: the hot path compiled with mypyc (setup.py builds it where a C
compiler is found) and ISA-L for permessage-deflate (the ``isal`` package). Each does what
the plain Python (or the standard library) path does, faster; the suite runs both ways.

``TRIO_BROKER_NO_SPEEDUPS=1`` in the environment turns them all off. A compiled build is
used only while every compiled module's source is the one it was built from: the build
records their hashes in ``_compiled.json``, and an edited module (a checkout, a change
in progress) makes the whole set load as Python until the next build, because compiled
modules call each other directly and cannot mix with Python ones.
"""

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ENVIRONMENT = "TRIO_BROKER_NO_SPEEDUPS"
_PACKAGE = Path(__file__).resolve().parent
_RECORD = _PACKAGE / "_compiled.json"


def enabled() -> bool:
    return os.environ.get(ENVIRONMENT, "") in ("", "0")


class _AsPython(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' Python sources, before the compiled files beside them."""

    def __init__(self, modules: set[str]) -> None:
        self.modules = modules

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        source = _PACKAGE.parent.joinpath(*fullname.split(".")).with_suffix(".py")
        return importlib.util.spec_from_file_location(fullname, source)


def _why_python(record: dict[str, str]) -> str | None:
    """Why the compiled build must not be used, or None if it may."""
    if not enabled():
        return f"{ENVIRONMENT}=1"
    for module, digest in sorted(record.items()):
        source = _PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")
        if hashlib.sha256(source.read_bytes()).hexdigest() != digest:
            return f"{module} changed since the build (make test, or pip install, rebuilds)"
    return None


def _record() -> dict[str, str]:
    try:
        loaded: dict[str, str] = json.loads(_RECORD.read_text())
    except FileNotFoundError:
        return {}
    return loaded


_COMPILED = _record()
_WHY_PYTHON = _why_python(_COMPILED) if _COMPILED else "not built (no C compiler, or mypyc)"
if _COMPILED and _WHY_PYTHON is not None:
    sys.meta_path.insert(0, _AsPython(set(_COMPILED)))


def compiled_modules() -> list[str]:
    """The modules of the compiled build that this process runs compiled (imported or not)."""
    if _WHY_PYTHON is not None:
        return []
    return [m for m in sorted(_COMPILED) if _compiled_file(m) is not None]


def _compiled_file(module: str) -> Path | None:
    directory = _PACKAGE.parent.joinpath(*module.split(".")[:-1])
    name = module.rsplit(".", 1)[-1]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (directory / f"{name}{suffix}").exists():
            return directory / f"{name}{suffix}"
    return None


def describe() -> str:
    """One line for the log: what runs compiled, and why not when it does not."""
    modules = compiled_modules()
    if modules:
        return f"compiled hot path (mypyc, {len(modules)} modules)"
    if _COMPILED and _WHY_PYTHON is None:
        return "pure Python (the compiled build failed: no C compiler?)"
    return f"pure Python ({_WHY_PYTHON})"
