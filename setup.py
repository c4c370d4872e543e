"""The build: the hot path compiled with mypyc where it can be, the same modules as plain
Python where it cannot (no C compiler, TRIO_BROKER_NO_COMPILE=1).

The modules are listed in pyproject.toml, ``[tool.trio-broker] compiled``. The build
records each one's source hash in ``broker/_compiled.json``: at import, `broker.speedups`
loads the compiled modules only if every source still matches (an edited module makes the
whole set run as Python until the next build), and never with TRIO_BROKER_NO_SPEEDUPS=1.
"""

import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent
RECORD = ROOT / "broker" / "_compiled.json"


def compiled_extensions() -> list[Any]:
    modules = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["trio-broker"][
        "compiled"
    ]
    RECORD.unlink(missing_ok=True)
    if os.environ.get("TRIO_BROKER_NO_COMPILE") == "1":
        print("trio-broker: TRIO_BROKER_NO_COMPILE=1: pure Python", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("trio-broker: no mypyc: pure Python", file=sys.stderr)
        return []
    paths = [module.replace(".", "/") + ".py" for module in modules]
    os.chdir(ROOT)  # mypycify takes paths relative to the project
    # The build has only its own requirements (pyproject.toml's build-system): the
    # modules these import that it lacks are typed Any, and only these are checked.
    options = ["--follow-imports=silent", "--ignore-missing-imports"]
    try:
        extensions = mypycify([*options, *paths], opt_level="3")
    except (Exception, SystemExit) as error:  # mypy's errors end in SystemExit
        print(f"trio-broker: mypyc failed ({error!r}): pure Python", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # a failed C build leaves the Python modules in use
    hashes = {
        module: hashlib.sha256((ROOT / path).read_bytes()).hexdigest()
        for module, path in zip(modules, paths, strict=True)
    }
    RECORD.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    return extensions


setup(ext_modules=compiled_extensions())
