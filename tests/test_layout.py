"""The package layout: the design card's folders install under the one `duoscan` namespace."""

from __future__ import annotations

import ast
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
    cycles = {d: c for d in (*FOLDERS, "duoscan", "duoscan/core") if (c := _cycle(_module_imports(ROOT / d)))}
    assert cycles == {}


# Each package and the folder it is installed from; "duoscan" is the applications (CLI, demo, drill, evaluate).
PACKAGES = {
    "duoscan.core": "duoscan/core",
    "duoscan.schemas": "schemas",
    "duoscan.models": "models",
    "duoscan.producers": "producers",
    "duoscan.workers": "workers",
    "duoscan.view": "duoscan/view",
    "duoscan": "duoscan",
}
# The layers, bottom up: a package may import only those listed for it. The base layer (settings, clients,
# errors) imports nothing of duoscan; models know nothing of Kafka or Redis.
ALLOWED = {
    "duoscan.schemas": set(),
    "duoscan.core": set(),
    "duoscan.models": {"duoscan.schemas"},
    "duoscan.producers": {"duoscan.schemas", "duoscan.core", "duoscan.models"},
    "duoscan.workers": {"duoscan.schemas", "duoscan.core", "duoscan.models"},
    "duoscan.view": {"duoscan.schemas", "duoscan.core", "duoscan.workers"},
    "duoscan": set(PACKAGES) - {"duoscan"},
}


def _package_of(module: str) -> str:
    return max((p for p in PACKAGES if module == p or module.startswith(p + ".")), key=len)


def _package_imports() -> dict[str, set[str]]:
    """Package -> the duoscan packages its modules import, every import counted (lazy ones inside functions too);
    other top-level names (kafka, torch, ...) are kept as they are."""
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).glob("*.py"):
            here = package.split(".")
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    base = here[: len(here) - node.level + 1] if node.level else []
                    target = ".".join([*base, *([node.module] if node.module else [])])
                    targets = [f"{target}.{a.name}" for a in node.names] if node.module is None else [target]
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                else:
                    continue
                graph[package] |= {_package_of(t) if t.startswith("duoscan") else t.split(".")[0] for t in targets}
        graph[package].discard(package)
    return graph


def test_packages_import_one_way():
    """No import cycle between packages, lazy imports included: the base layer (duoscan.core) imports nothing
    of duoscan, the models nothing of Kafka or Redis, and only the applications import the workers' stack."""
    everything = _package_imports()
    graph = {p: {t for t in targets if t.startswith("duoscan")} for p, targets in everything.items()}
    assert _cycle(graph) is None
    extra = {p: sorted(graph[p] - ALLOWED[p]) for p in PACKAGES if graph[p] - ALLOWED[p]}
    assert extra == {}
    assert everything["duoscan.models"] & {"kafka", "aiokafka", "faust", "redis"} == set()
    assert {"torch", "numpy"} <= everything["duoscan.models"]  # the walk sees third-party imports
    assert graph["duoscan"] >= {"duoscan.workers", "duoscan.producers"}  # the walk sees lazy imports


def _long_functions(limit: int = 60) -> list[str]:
    out = []
    for folder in (*PACKAGES.values(), "benchmarks"):
        for path in (ROOT / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if (n := node.end_lineno - node.lineno + 1) > limit:  # type: ignore[operator]
                        out.append(f"{path.relative_to(ROOT)}:{node.name} ({n} lines)")
    return out


def test_no_function_over_60_lines_outside_the_tests():
    """Long functions hide their steps; split them into named ones (the demo, the drill, the benchmark were)."""
    assert _long_functions() == []
