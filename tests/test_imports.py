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
    upstream = ("cmbagent_events.capture", "cmbagent_events.current_run", "cmbagent_events.writer",
                "cmbagent_events.run", "cmbagent_events.integrations")
    for name, targets in graph.items():
        if name.startswith(("cmbagent_events.live", "cmbagent_events.store")):
            assert not [t for t in targets if t.startswith(upstream)], name


def _top_level_names(path: Path) -> tuple[set[str], set[str]]:
    """Names a module defines at its top level, and names it imports there."""
    defined: set[str] = set()
    imported: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imported.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
    return defined, imported - defined


def _imported_names(path: Path, modules: dict[str, Path]) -> list[tuple[int, str, str]]:
    """(line, module, name) of every ``from <package module> import name`` in ``path`` (a package
    file, a test or a benchmark), submodules left out."""
    in_package = path.is_relative_to(PACKAGE)
    name = _module_name(path) if in_package else ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            base = ".".join(anchor[: len(anchor) - (node.level - 1)] + ([base] if base else []))
        if base in modules:
            found += [(node.lineno, base, a.name) for a in node.names if f"{base}.{a.name}" not in modules]
    return found


def _import_offences() -> list[str]:
    """Private names imported from another module, and names imported from a module that only
    re-exports them (a package's ``__init__`` may: it is that package's public face)."""
    modules = _modules()
    tops = {name: _top_level_names(path) for name, path in modules.items()}
    root = PACKAGE.parent
    files = [*modules.values(), *(root / "tests").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]
    offences = []
    for path in files:
        for line, module, name in _imported_names(path, modules):
            where = f"{path.relative_to(root)}:{line}: {module}.{name}"
            if name.startswith("_") and not name.startswith("__"):
                offences.append(where + " is private")
            elif modules[module].name != "__init__.py" and name in tops[module][1]:
                offences.append(where + " is only re-exported there: import it from its home")
    return offences


def test_no_private_names_or_re_exports_imported_across_modules() -> None:
    offences = _import_offences()
    assert not offences, "\n".join(offences)


def test_the_import_checker_sees_private_names_and_re_exports(tmp_path: Path) -> None:
    modules = _modules()
    probe = tmp_path / "probe.py"
    probe.write_text("from cmbagent_events.capture import _time_ns\n"
                     "from cmbagent_events.run.session import EventCaptureManager\n"
                     "from cmbagent_events.capture import EventCaptureManager\n", encoding="utf-8")
    found = [(module, name) for _, module, name in _imported_names(probe, modules)]
    assert found == [("cmbagent_events.capture", "_time_ns"), ("cmbagent_events.run.session", "EventCaptureManager"),
                     ("cmbagent_events.capture", "EventCaptureManager")]
    session_imports = _top_level_names(modules["cmbagent_events.run.session"])[1]
    assert "EventCaptureManager" in session_imports


def test_importing_the_package_loads_no_ag2() -> None:
    code = ("import sys, cmbagent_events, cmbagent_events.cli, cmbagent_events.integrations.ag2_classic; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('autogen', 'ag2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
