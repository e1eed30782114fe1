"""The package layout: the design card's folders install under the one `duoscan` namespace."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("models", "schemas", "producers", "workers")


def test_installed_names_live_under_duoscan(tmp_path):
    """Outside the checkout `import models` fails (no top-level name a camera integrator's app could clash with)
    and the sensor SDK imports as duoscan.producers."""
    code = (
        "import importlib.util, sys; from duoscan.producers import sdk; "
        f"print([n for n in {FOLDERS!r} if importlib.util.find_spec(n) is not None])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_no_code_imports_a_folder_by_its_bare_name():
    """A bare `import models` inside the checkout would load a second copy beside duoscan.models."""
    bare = re.compile(rf"^\s*(from|import) ({'|'.join(FOLDERS)})\b", re.M)
    found = [
        str(p.relative_to(ROOT))
        for d in (*FOLDERS, "duoscan", "tests", "benchmarks")
        for p in (ROOT / d).rglob("*.py")
        if bare.search(p.read_text())
    ]
    assert found == []


def _module_imports(folder: Path) -> dict[str, set[str]]:
    """Within one folder: module -> the sibling modules it imports (relative imports, lazy ones included)."""
    names = {p.stem for p in folder.glob("*.py")}
    graph = {}
    for p in folder.glob("*.py"):
        found = re.findall(r"^\s*from \.(\w+) import", p.read_text(), re.M)
        graph[p.stem] = {m for m in found if m in names and m != p.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_no_module_cycles_inside_a_folder():
    """The dataset readers once imported each other (dataset <-> eyecandies); arrows point one way."""
    cycles = {d: c for d in FOLDERS if (c := _cycle(_module_imports(ROOT / d)))}
    assert cycles == {}
