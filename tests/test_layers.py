"""The tree's layers (docs/design.md): each subpackage of `broker` imports only those below
it, and an application that wants only the client gets only the client."""

import ast
import subprocess
import sys

from tests.conftest import ROOT

# Top to bottom: a module may import from its own subpackage and from those after it.
LAYERS = [
    "cli",
    "process",
    "node",
    "admin",
    "connections",
    "requests",
    "cluster",
    "engine",
    "plugin_host",
    "plugin",
    "config",
    "handshake",
    "client",
    "core",
    "wire",
    "version",
    "speedups",
]


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _imported(path_module: str, package: str, node: ast.ImportFrom) -> list[str]:
    """The broker modules (or names of a subpackage) that one import statement takes."""
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        target = ".".join(base) + (f".{node.module}" if node.module else "")
    else:
        target = node.module or ""
    if target.split(".")[0] != "broker":
        return []
    if target.count(".") == 0:  # from broker import x: x is a subpackage or module
        return [f"broker.{alias.name}" for alias in node.names]
    return [target]


def test_each_subpackage_imports_only_those_below_it() -> None:
    rank = {name: index for index, name in enumerate(LAYERS)}
    upward = []
    for path in sorted((ROOT / "broker").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        here = _layer(module)
        if here not in rank:
            continue  # broker/__init__.py and __main__.py: the top
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            for target in _imported(module, package, node):
                there = _layer(target)
                assert there in rank, f"{path}: {target} is in no layer of LAYERS"
                if rank[there] < rank[here]:
                    upward.append(f"{module} imports {target}")
    assert upward == []


def test_the_built_in_plugins_use_only_the_public_plugin_api() -> None:
    # As a third-party plugin must: broker.plugin (docs/plugins.md), nothing else of broker.
    private = []
    for path in sorted((ROOT / "plugins").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            private += [
                f"{path.name}: {module}"
                for module in modules
                if module.split(".")[0] == "broker" and module != "broker.plugin"
            ]
    assert private == []


def test_the_client_loads_neither_trio_nor_the_server() -> None:
    script = (
        "import sys, broker.client\n"
        "server = ('trio', 'coredis', 'prometheus_client', 'jsonschema', 'broker.node')\n"
        "print(sorted(name for name in server if name in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert loaded == "[]"
