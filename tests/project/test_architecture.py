"""The package's shape, read from the source with ``ast`` (nothing is imported, no engine):

- no import circle anywhere in ``apo_local``, counting every import statement: module-level ones and
  those inside functions (a function-level import defers a circle to run time, it does not remove it);
  imports under ``if TYPE_CHECKING:`` are the only ones left out;
- modules and functions within the size rule, for the parts listed in ``SIZED``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "apo_local"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Files and folders (relative to the repository root) held to the size rule. The rest of the
# package is not checked yet; add each part here once it is within the rule.
SIZED = ["apo_local/"]
# Modules allowed past MAX_MODULE_LINES, each with its own ceiling and the reason.
LONGER: dict[str, tuple[int, str]] = {}


# -- the import graph -----------------------------------------------------------------------------


def module_names(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package`` under ``root``."""
    out = {}
    for f in sorted((root / package).rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement may load: the module and, for ``from m import x``, ``m.x``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: from the module's package, one level up per extra dot
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at any level of the file).

    Importing ``a.b.c`` also runs the packages ``a.b`` and ``a`` first, so those count as imported too,
    except a package the importing module lives in (Python has started that one already)."""
    files = module_names(root, package)

    def resolve(name: str) -> str | None:  # "a.b.name" -> the module "a.b" when "name" is not a module
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            for name in _imported_names(node, module, path.name == "__init__.py"):
                if name != package and not name.startswith(package + "."):
                    continue
                target = resolve(name)
                while target:
                    if target != module and not module.startswith(target + "."):
                        graph[module].add(target)
                    target = target.rpartition(".")[0]
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (or a self-import),
    as a path that starts and ends at the same module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle_in(set(comp), graph) for comp in components]


def _circle_in(comp: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth-first)."""
    start = min(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError("unreachable: a strongly connected component has a circle")


def test_no_import_circles():
    graph = import_graph(ROOT)
    assert len(graph) > 30 and graph["apo_local.report.sweep_page"]  # the scan sees the package
    circles = find_cycles(graph)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def house(graph: dict[str, set[str]]) -> tuple[int, int, int]:
    """(rooms, arrows, circles): the package's top-level modules and folders, the distinct imports between two
    of them, and the import circles between them."""

    def room(module: str) -> str:
        return ".".join(module.split(".")[:2])

    arrows = {(room(a), room(b)) for a, targets in graph.items() for b in targets if room(a) != room(b)}
    rooms = {room(m) for m in graph}
    between: dict[str, set[str]] = {r: set() for r in rooms}
    for a, b in arrows:
        between[a].add(b)
    return len(rooms), len(arrows), len(find_cycles(between))


def test_the_house_is_as_docs_architecture_records_it():
    """docs/architecture.md records the import graph's rooms, arrows and circles; a change to them updates it."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    recorded = re.search(r"rooms / arrows / circles: (\d+) / (\d+) / (\d+) now", text)
    assert recorded, "docs/architecture.md: no 'rooms / arrows / circles: R / A / C now' line"
    assert house(import_graph(ROOT)) == tuple(map(int, recorded.groups()))


def test_sweep_sits_below_report():
    graph = import_graph(ROOT)
    sweep = [m for m in graph if m == "apo_local.experiments.sweep" or m.startswith("apo_local.experiments.sweep.")]
    assert len(sweep) >= 8
    upward = {m: sorted(t for t in graph[m] if t.startswith("apo_local.report")) for m in sweep}
    assert not any(upward.values()), f"sweep/ imports report/: {upward}"
    assert any(t.startswith("apo_local.experiments.sweep") for t in graph["apo_local.report.sweep_page"])


def test_cycle_finder_on_synthetic_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]
    two = find_cycles({"a": {"b"}, "b": {"a"}, "x": {"y"}, "y": {"x", "a"}})
    assert sorted(map(tuple, two)) == [("a", "b", "a"), ("x", "y", "x")]


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_old_report_sweep_circle_is_caught(tmp_path):
    """The layout this package had: report/__init__ and report/plots import sweep inside functions,
    sweep imports report inside functions. Function-level imports count, so the circle is found."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/report/__init__.py": "def write_report(p):\n    from pkg.sweep import MANIFEST\n",
            "pkg/report/plots.py": "def size_plot(rows):\n    from pkg.sweep import human_params\n",
            "pkg/sweep.py": "def write_tables(out):\n    from pkg.report.plots import size_plot\n"
            "def cli():\n    from pkg.report import write_report\n",
        },
    )
    circles = find_cycles(import_graph(tmp_path, "pkg"))
    assert len(circles) == 1 and circles[0][0] == circles[0][-1] == "pkg.report" and "pkg.sweep" in circles[0]
    # the plots module alone: report/plots -> sweep -> report/plots
    (tmp_path / "pkg" / "report" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sweep.py").write_text("def write_tables(out):\n    from pkg.report.plots import size_plot\n")
    circles = find_cycles(import_graph(tmp_path, "pkg"))
    assert len(circles) == 1 and "pkg.report.plots" in circles[0] and "pkg.sweep" in circles[0]


def test_import_forms_are_resolved(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import f\n",
            "pkg/a/__init__.py": "",
            "pkg/a/x.py": "from . import y\nfrom ..b import g\nimport pkg.c as c\nimport os\n",
            "pkg/a/y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n",
            "pkg/b.py": "def g():\n    from pkg.a.y import h\n",
            "pkg/c.py": "",
        },
    )
    g = import_graph(tmp_path, "pkg")
    assert g["pkg.a.x"] == {"pkg.a.y", "pkg.b", "pkg.c"}  # own package pkg.a and root pkg: not edges
    assert g["pkg.a.y"] == set()  # TYPE_CHECKING only
    assert g["pkg.b"] == {"pkg.a.y", "pkg.a"}  # pkg.a runs before pkg.a.y
    assert g["pkg"] == {"pkg.a"}
    assert find_cycles(g) == []


# -- sizes ----------------------------------------------------------------------------------------


def _sized_files() -> list[Path]:
    files = []
    for entry in SIZED:
        p = ROOT / entry
        assert p.exists(), f"SIZED names {entry}, which does not exist"
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return files


@pytest.mark.parametrize("path", _sized_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    limit = LONGER.get(str(path.relative_to(ROOT)), (MAX_MODULE_LINES, ""))[0]
    assert lines <= limit, f"{path.relative_to(ROOT)}: {lines} lines (limit {limit})"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_public_names_are_never_shadowed_by_a_submodule():
    """Importing a submodule sets it as an attribute of the package, hiding a lazy name of the same spelling
    (``apo.optimize`` once became a module after some test imported ``apo_local.optimize``)."""
    import importlib

    import apo_local

    package = Path(apo_local.__file__).parent
    submodules = {p.stem for p in package.glob("*.py")} | {
        p.name for p in package.iterdir() if (p / "__init__.py").exists()
    }
    assert not submodules & set(apo_local.__all__)
    for module in set(apo_local._LAZY.values()):
        importlib.import_module(module)
    assert callable(apo_local.optimize) and callable(apo_local.resume) and callable(apo_local.build_config)


def test_modules_that_share_a_session_fixture_run_on_one_worker():
    """The suite's parallel workers (tests/conftest.py) build a session fixture once per worker: every module that
    names a shared one is in that fixture's group; a module that names none is a group of its own."""
    from tests.conftest import module_groups

    groups = module_groups()
    assert (
        groups["run/test_optimize_e2e.py"]
        == groups["run/test_faults_e2e.py"]
        == groups["experiments/test_sweep_e2e.py"]
    )
    assert groups["search/test_search_logic_equivalence.py"] == groups["search/test_config_behaviours.py"]
    assert groups["project/test_airgap.py"] == groups["commands/test_cli_output_e2e.py"]
    assert groups["engine/test_http_engine.py"] == groups["engine/test_openai_engine_e2e.py"]
    assert (
        len(
            {
                groups[m]
                for m in (
                    "run/test_optimize_e2e.py",
                    "config/test_study_configs_e2e.py",
                    "project/test_airgap.py",
                    "engine/test_http_engine.py",
                    "search/test_config_behaviours.py",
                )
            }
        )
        == 5
    )
    assert groups["engine/test_chat.py"] == "engine/test_chat.py"
