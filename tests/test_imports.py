"""The package's imports flow one way: no module imports, even lazily or only for type checking,
a module that imports it back (a cycle), and importing the package loads no AG2."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cmbagent_events

PACKAGE = Path(cmbagent_events.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["cmbagent_events", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module ``name`` imports, anywhere in its body (functions and TYPE_CHECKING included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import sub" imports the submodule sub; "from mod import name" imports mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # A package's __init__ re-exports its submodules: importing a submodule runs its parents' __init__
    # first, and that is not a dependency of the submodule on its parents' re-exports.
    return {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    assert len(graph) > 30 and graph["cmbagent_events.run"]  # the scan sees the package
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_live_and_store_import_nothing_upstream() -> None:
    graph = _graph()
    upstream = ("cmbagent_events.capture", "cmbagent_events.captor", "cmbagent_events.writer",
                "cmbagent_events.run", "cmbagent_events.integrations")
    for name, targets in graph.items():
        if name.startswith(("cmbagent_events.live", "cmbagent_events.store")):
            assert not [t for t in targets if t.startswith(upstream)], name


def test_importing_the_package_loads_no_ag2() -> None:
    code = ("import sys, cmbagent_events, cmbagent_events.cli, cmbagent_events.integrations.ag2_classic; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('autogen', 'ag2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
