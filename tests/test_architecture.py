"""The house rules: imports flow one way, no import circle (lazy imports included), a study loads light.

Layers, lowest first (a module may import its own layer and those below, never above):
fmt/argtypes/safefs/redact/signals -> config -> records/evidence/budget/actions/report.words
-> store/execution/planners -> analysis -> report/tracking -> loop/console/snapshot/rounds/session -> cli/mcp. trainer/
imports nothing of research_agents. report.words (the words for the evidence and open questions the
planners also read) sits low so the LLM prompt renders with it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "research_agents"

LAYERS = [
    {"fmt", "argtypes", "safefs", "redact", "signals"},
    {"config"},
    {"records", "evidence", "budget", "actions", "rungs", "report.words"},
    {"store", "execution", "planners"},
    {"analysis"},
    {"report", "tracking"},
    {"loop", "console", "snapshot", "rounds", "session"},
    {"cli", "__main__", "mcp"},
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every research_agents module `path` imports, at module level or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        out.update(n for n in names if n.split(".")[0] == "research_agents" and n in known)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, known) - {m} for m, p in mods.items()}


def _layer(module: str) -> int:
    """The layer of the longest entry that names the module or a package above it ("report.words"
    before "report")."""
    parts = module.split(".")[1:]
    for depth in range(len(parts), 0, -1):
        name = ".".join(parts[:depth])
        for i, names in enumerate(LAYERS):
            if name in names:
                return i
    return -1


def test_every_module_has_a_layer():
    unplaced = [m for m in _modules() if m != "research_agents" and _layer(m) < 0]
    assert not unplaced, f"modules outside every layer: {unplaced}"


def test_imports_flow_downward_only():
    upward = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps
              if m != "research_agents" and _layer(d) > _layer(m)]
    assert not upward, "imports that reach up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    graph = _graph()
    # a package's __init__ that re-exports its own submodules is not a circle: the submodule
    # importing a sibling goes through the parent package, which Python has already begun
    def deps(m):
        return {d for d in graph[m] if not m.startswith(d + ".")}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(deps(m)):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_trainer_knows_nothing_of_research_agents():
    for path in (ROOT / "trainer").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("research_agents"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("research_agents") for a in node.names), path


def _loaded_after(code: str) -> set[str]:
    probe = (f"import sys\n{code}\n"
             "print(' '.join(m for m in ('scipy', 'matplotlib', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_loading_a_study_imports_no_statistics_plotting_or_torch():
    loaded = _loaded_after("from research_agents.config import load_study\n"
                           "load_study('muon_vs_adamw', __import__('pathlib').Path('experiments'))")
    assert loaded == set(), f"loading a study imported {loaded}"


def test_list_command_stays_light():
    loaded = _loaded_after("from research_agents.cli import main\nassert main(['list']) == 0")
    assert not {"scipy", "matplotlib"} & loaded, f"`list` imported {loaded}"


def test_readme_performance_section_is_what_the_benchmark_json_says():
    """The README's Performance figures are generated (scripts/performance.py), never hand-edited."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "performance.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_readme_layout_names_every_module():
    """The README's Layout table lists every module, in the row of its package (a new module without
    a home in the table fails here)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Layout"):text.index("## Commands")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    missing = []
    for package in ("research_agents", "trainer"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if path.name == "__init__.py":
                continue
            parent = rel.parent.as_posix()
            # the row of its package (research_agents/analysis/ for stats/ too), or a top-level row
            homes = [r for r in rows if f"`{parent}/" in r or f"`{rel.parts[0]}/{rel.parts[1]}/" in r] \
                if len(rel.parts) > 2 else [r for r in rows if f"`{parent}/" in r.split("|")[1]
                                             or f"`{rel.parts[0]}/" in r.split("|")[1]]
            if not any(f"`{path.name}`" in r or f"`{rel.as_posix()}`" in r or f"{path.name}`" in r for r in homes):
                missing.append(rel.as_posix())
    assert not missing, f"modules the README Layout table does not name: {missing}"
