"""The tree's shape: imports go one way without cycles, the runtime's core never reaches up, lines fit 120."""

from __future__ import annotations

import ast
from pathlib import Path

from tools.paths import REPO

PACKAGES = ("runtime", "export", "tools", "stacks", "bench", "demo", "checkpoints")
MAX_LINE = 120
LINE_CHECKED = ("runtime", "export", "tools", "stacks", "tests", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """{module: project modules it imports anywhere in its file}: top level, functions and TYPE_CHECKING alike."""
    files = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from package import submodule` depends on the submodule, not on the package's __init__
                submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in files]
                targets = submodules if len(submodules) == len(node.names) else [node.module, *submodules]
            else:
                continue
            found |= {t for t in targets if t in files and t != name}
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the modules along it (Tarjan's strongly connected components, then one path)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_path(graph, component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path(graph, component: set[str]) -> list[str]:
    start = min(component)
    seen, todo = {start: [start]}, [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return seen[v] + [start]
            if w not in seen:
                seen[w] = seen[v] + [w]
                todo.append(w)
    return sorted(component)


def test_no_import_cycles_anywhere():
    found = cycles(imports())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_runtime_never_imports_the_laptop_side_and_its_core_never_the_agent():
    graph = imports()
    upward = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if m.split(".")[0] == "runtime"
        for t in targets
        if t.split(".")[0] != "runtime"
    )
    core = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if m.startswith("runtime") and not m.startswith(("runtime.agent", "runtime.__main__"))
        for t in targets
        if t.startswith("runtime.agent")
    )
    assert not upward, f"runtime/ runs on the instance alone: {upward}"
    assert not core, f"the runtime's core never depends on the agent built on it: {core}"


def test_runtime_never_names_transformers_or_the_laptop_packages():
    offenders = []
    for path in (REPO / "runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            offenders += [
                f"{path.relative_to(REPO)}: {n}"
                for n in names
                if n.split(".")[0] in ("transformers", "export", "tools", "demo", "stacks", "bench")
            ]
    assert not offenders


def test_lines_fit_in_120_characters():
    long = [
        f"{path.relative_to(REPO)}:{number} ({len(line)})"
        for folder in LINE_CHECKED
        for path in sorted((REPO / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if len(line) > MAX_LINE
    ]
    assert not long, f"{len(long)} lines over {MAX_LINE} characters: {long[:20]}"
