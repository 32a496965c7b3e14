"""The package's shape: stages import only earlier stages, nothing imports in a circle, and
the core never imports the demo. Function-level imports count too (that is where circles
hide)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cli" / "agentscale"
# The pipeline, in order: each stage may import itself and the stages before it.
ORDER = [
    "",  # agentscale/__init__ (the version)
    "errors",
    "jsondata",
    "formatting",
    "processes",
    "stops",
    "config",
    "telemetry",
    "records",
    "chaos",
    "engine",
    "analysis",
    "gate",
    "report",
    "console",
    "commands",
    "cli",
    "__main__",
]
CORE = set(ORDER) - {"commands", "cli", "__main__"}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("agentscale")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentscale"):
                # ``from agentscale.gate import cifiles`` imports a module of the package.
                found |= {f"{node.module}.{a.name}" for a in node.names} | {str(node.module)}
        graph[name] = found
    modules = set(graph)
    return {m: {i if i in modules else i.rsplit(".", 1)[0] for i in imps} & modules - {m}
            for m, imps in graph.items()}  # fmt: skip


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_stage_imports_a_later_stage_and_the_core_never_imports_the_demo():
    problems = []
    for module, imported in _imports().items():
        mine = _stage(module)
        for other in imported:
            theirs = _stage(other)
            if theirs == "demo":
                if mine in CORE:
                    problems.append(f"{module} (core) imports the demo: {other}")
            elif mine == "demo":
                continue  # the demo is a client of the core, never the other way
            elif ORDER.index(theirs) > ORDER.index(mine):
                problems.append(f"{module} ({mine}) imports a later stage: {other}")
    assert not problems, "\n".join(sorted(problems))


def test_no_import_circle():
    graph = _imports()
    state: dict[str, int] = {}
    path: list[str] = []
    circles = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                circles.append(" -> ".join([*path[path.index(other) :], other]))
            elif other not in state:
                visit(other)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not circles, "\n".join(circles)


def test_the_walk_sees_the_package():
    graph = _imports()
    assert "agentscale.gate.verdict" in graph and "agentscale.analysis.build" in graph
    assert "agentscale.analysis.build" in graph["agentscale.gate.verdict"]
    assert {_stage(m) for m in graph} - {"demo"} <= set(ORDER)
