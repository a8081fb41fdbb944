"""The import graph of the project's own modules points one way (docs/DESIGN.md, "Layers").

Every import counts, also one inside a function: a lazy import is still a dependency. A new module must be placed
in a layer below (the test fails on an unplaced one), so the map stays true.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "trainers", "ablations")

# layer -> module-name prefixes; a module may import its own layer and the layers below it, never above.
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("harness.core",),                                             # foundation: I/O, config, scoring, run dirs
    1: ("trainers", "harness.evaluation", "harness.tasks", "harness.sandbox", "harness.metrics",
        "harness.mini", "harness.identity"),                          # libraries
    2: ("ablations", "harness.reporting"),                            # analyses and tables, on top of libraries
    3: ("harness.runner", "harness.slurm", "harness.report", "harness.cli",
        "harness.migrate"),                                           # entry points
}
PACKAGE_INITS = {"harness", "trainers", "ablations"}  # empty namespace docstrings (plus ablations.ANALYSES)
# within layer 1, the training library and the evaluation libraries do not know each other
TRAINING, EVALUATION = ("trainers",), ("harness.evaluation", "harness.tasks", "harness.sandbox", "harness.metrics",
                                       "harness.mini")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            parts = list(p.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


def _graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (`from pkg import submodule` counts as the submodule)."""
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names]
            else:
                assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: relative import"
                continue
            deps |= {o for n in names if n.split(".")[0] in PACKAGES and (o := owner(n)) and o != mod}
        graph[mod] = deps
    return graph


def _layer(mod: str) -> int | None:
    if mod in PACKAGE_INITS:
        return 0
    hits = [(len(p), layer) for layer, prefixes in LAYERS.items() for p in prefixes
            if mod == p or mod.startswith(p + ".")]
    return max(hits)[1] if hits else None


def _within(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in _graph() if _layer(m) is None)
    assert not unplaced, f"place these modules in a layer of tests/test_architecture.py and docs/DESIGN.md: {unplaced}"


def test_imports_point_down_the_layers():
    graph = _graph()
    upward = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
              for m, deps in graph.items() for d in deps if (_layer(d) or 0) > (_layer(m) or 0)]
    assert not upward, "\n".join(sorted(upward))


def test_foundation_imports_only_itself():
    graph = _graph()
    bad = [f"{m} imports {d}" for m, deps in graph.items() if _within(m, ("harness.core",))
           for d in deps if not _within(d, ("harness.core",)) and d not in PACKAGE_INITS]
    assert not bad, bad


def test_training_and_evaluation_libraries_are_independent():
    graph = _graph()
    bad = [f"{m} imports {d}" for m, deps in graph.items() for d in deps
           if (_within(m, TRAINING) and _within(d, EVALUATION)) or (_within(m, EVALUATION) and _within(d, TRAINING))]
    assert not bad, bad


def test_no_import_cycles():
    graph = _graph()
    # Tarjan's strongly connected components; any component with two or more modules is a cycle
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks can fail: a fake project with trainers -> harness.runner -> trainers is caught by both."""
    for rel, text in {"trainers/__init__.py": "", "trainers/a.py": "from harness.runner import x\n",
                      "harness/__init__.py": "", "harness/runner.py": "import trainers.a\n",
                      "ablations/__init__.py": ""}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match="trainers.a .layer 1. imports harness.runner"):
        test_imports_point_down_the_layers()
