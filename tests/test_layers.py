"""Imports point down the layers, never in a circle; no module in src/ over 400 lines.

The graph is read from the source with `ast` (nothing is imported or run). What counts as
an import, and why:

- every `import` / `from ... import` statement anywhere in a module: at the top, inside a
  function (a lazy import is still a dependency, it only runs later) and under
  `if TYPE_CHECKING:` (a type-only import still ties the two modules together; exempting
  it is how `api.py` ↔ kinds circles hid before). No exemptions.
- an import names one module: `from workbench.widgets import badge` is an arrow to
  `workbench.widgets.badge`, `from workbench.store import Store` one to the package
  `workbench.store` (its `__init__`). The packages *around* the named module are not
  arrows, although Python runs them first: `workbench/__init__.py` runs for every import,
  which is why it holds nothing but the facade's names.
- a module named in a string and imported with `importlib` is a plugin, bound late by a
  registry that the lower layer owns and the upper layer fills: `runtime.registry` loads
  the kinds that register their runner, `widgets.panel` loads the kinds' panels,
  `runtime.child` builds the engine named in an `EngineSpec`. Those are not arrows.
  `Job.panel()` reaches the widgets the same way: the handle holds a panel hook that the
  facade (`workbench/api.py`) installs, so the handle never imports what sits above it.

Rules: (a) no cycle between modules; (b) an arrow stays in its layer or points down
(the table below; kinds are siblings and do not import each other); (c) only the listed
front doors reach an engine-layer module ("a front door never talks to an engine
directly", DESIGN.md); (d) no module over 400 lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "workbench"
MAX_LINES = 400

#: Bottom first. A module belongs to the layer of its longest matching name (relative to
#: `workbench.`; "" is the package's own __init__). It may import its own layer and below.
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    # layer      modules                                   why there
    ("base",     ("config", "errors", "media", "device"),  "settings, error types, media types"
                                                           " and hashes, is there a GPU: read by all"),
    ("store",    ("store",),                               "SQLite + job folders + stored media:"
                                                           " the single source of truth"),
    ("engines",  ("engines", "models", "demo_model"),      "real backends; models/demo_model pick"
                                                           " and prepare what an engine loads"),
    ("runtime",  ("runtime",),                             "worker loop, job context, kind registry,"
                                                           " job handle, phase lock, child engines"),
    ("kinds",    ("batch", "phased", "grid"),              "one package per job kind; siblings"),
    ("widgets",  ("widgets",),                             "panels and dashboard over the handles"),
    ("facade",   ("api", ""),                              "Workbench: kinds, worker, widgets in one"
                                                           " object; installs the panel hook"),
    ("doors",    ("cli", "server", "demo", "demo_rank", "doctor"),      "the CLI, the HTTP batch API, `make"
                                                           " demo` and `workbench doctor`: front"
                                                           " doors over the facade"),
]
#: Sibling packages of one layer that must not import each other.
SIBLINGS = {"kinds"}
#: Front doors (widgets and above) that may import an engine-layer module, and why.
ENGINE_USERS = {
    "workbench.demo": "prepares the embedded model before the job (so the wait is explained)"
                      " and releases the pooled engine at exit",
    "workbench.doctor.facts": "reports the arguments this machine's engines would load with,"
                              " from the same functions the engines call (vllm_args, whisper_args)",
    "workbench.doctor.selftest": "prepares the embedded models and releases the pooled engine"
                                 " between its two jobs, as `make demo` does",
    "workbench.demo_rank": "releases the pooled embedding engine at exit, as workbench.demo",
}


@dataclass(frozen=True)
class Arrow:
    src: str
    dst: str
    line: int
    where: str  # "top level", "in function f", "under TYPE_CHECKING"

    def describe(self) -> str:
        path = module_path(self.src).relative_to(SRC.parent)
        return f"{self.src} imports {self.dst} ({path}:{self.line}, {self.where})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> Path:
    base = SRC.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


class _Imports(ast.NodeVisitor):
    def __init__(self, name: str, is_package: bool, known: set[str]) -> None:
        self.name, self.known = name, known
        self.package = name if is_package else name.rpartition(".")[0]
        self.arrows: list[Arrow] = []
        self.scope: list[str] = []

    def _where(self) -> str:
        return self.scope[-1] if self.scope else "top level"

    def _add(self, target: str, line: int) -> None:
        while target and target not in self.known:  # a name inside a module → the module
            target = target.rpartition(".")[0]
        if target and target != self.name and all(
                (a.dst, a.line) != (target, line) for a in self.arrows):
            self.arrows.append(Arrow(self.name, target, line, self._where()))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name.split(".")[0] == "workbench":
                self._add(a.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            up = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join(up + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base.split(".")[0] != "workbench":
            return
        for a in node.names:
            sub = f"{base}.{a.name}"
            self._add(sub if sub in self.known else base, node.lineno)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self.scope.append("under TYPE_CHECKING")
            for child in node.body:
                self.visit(child)
            self.scope.pop()
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(f"in function {node.name}")
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function


def import_graph() -> dict[str, list[Arrow]]:
    mods = modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        v = _Imports(name, path.name == "__init__.py", known)
        v.visit(ast.parse(path.read_text(), str(path)))
        graph[name] = v.arrows
    return graph


def layer_of(module: str) -> tuple[int, str, str]:
    """(layer index, layer name, the table's module prefix) of a module."""
    rel = module.removeprefix("workbench").removeprefix(".")
    best: tuple[int, str, str] | None = None
    for i, (layer, prefixes, _) in enumerate(LAYERS):
        for p in prefixes:
            if rel == p or (p and rel.startswith(p + ".")):
                if best is None or len(p) > len(best[2]):
                    best = (i, layer, p)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best


def cycles(graph: dict[str, list[Arrow]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for a in graph.get(v, []):
            if a.dst not in index:
                visit(a.dst)
                low[v] = min(low[v], low[a.dst])
            elif a.dst in on:
                low[v] = min(low[v], index[a.dst])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _circle_text(graph: dict[str, list[Arrow]], comp: list[str]) -> str:
    inside = set(comp)
    arrows = [a for m in comp for a in graph[m] if a.dst in inside]
    return "import cycle between " + ", ".join(comp) + ":\n" + "\n".join(
        f"    {a.describe()}" for a in arrows)


def layer_problems(graph: dict[str, list[Arrow]]) -> list[str]:
    problems = []
    engines = next(i for i, (name, _, _) in enumerate(LAYERS) if name == "engines")
    widgets = next(i for i, (name, _, _) in enumerate(LAYERS) if name == "widgets")
    for src in sorted(graph):
        si, sl, sp = layer_of(src)
        for a in graph[src]:
            di, dl, dp = layer_of(a.dst)
            if di > si:
                problems.append(f"upward import: {a.describe()}: layer {sl} ({si}) may not"
                                f" import layer {dl} ({di})")
            elif di == si and sl in SIBLINGS and sp != dp:
                problems.append(f"sideways import: {a.describe()}: {sl} {sp!r} and {dp!r} are"
                                f" siblings and do not import each other")
            elif di == engines and si >= widgets and src not in ENGINE_USERS:
                problems.append(f"front door reaching an engine: {a.describe()}: a front door"
                                f" ({sl}) goes through a kind or the store, not to {dl}")
    return problems


# -- the tests ----------------------------------------------------------------------------

def test_every_module_has_a_layer() -> None:
    missing = []
    for name in modules():
        try:
            layer_of(name)
        except LookupError as e:
            missing.append(str(e))
    assert not missing, "\n".join(missing)


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "\n".join(_circle_text(graph, c) for c in found)


def test_imports_point_down_the_layers() -> None:
    problems = layer_problems(import_graph())
    assert not problems, f"{len(problems)} import(s) against the layers:\n" + "\n".join(problems)


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, p in modules().items()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, "modules over 400 lines (split them by job): " + ", ".join(
        f"{k} ({v})" for k, v in sorted(long.items(), key=lambda kv: -kv[1]))


def test_the_graph_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The reader itself: lazy, TYPE_CHECKING and submodule imports are all arrows."""
    code = ("from typing import TYPE_CHECKING\nfrom workbench.store import Store\n"
            "if TYPE_CHECKING:\n    from workbench.api import Workbench\n"
            "def f():\n    from workbench.widgets import badge\n    import workbench.grid.api\n")
    known = {"workbench.store", "workbench.api", "workbench.widgets",
             "workbench.widgets.badge", "workbench.grid", "workbench.grid.api"}
    v = _Imports("workbench.store.x", False, known)
    v.visit(ast.parse(code))
    assert [(a.dst, a.line, a.where) for a in v.arrows] == [
        ("workbench.store", 2, "top level"),
        ("workbench.api", 4, "under TYPE_CHECKING"),
        ("workbench.widgets.badge", 6, "in function f"),
        ("workbench.grid.api", 7, "in function f"),
    ]
    graph = {"a": [Arrow("a", "b", 1, "top level")], "b": [Arrow("b", "a", 1, "top level")],
             "c": []}
    assert cycles(graph) == [["a", "b"]]
    planted = {"workbench.store.db": [Arrow("workbench.store.db", "workbench.widgets.badge", 9,
                                            "top level")], "workbench.widgets.badge": []}
    assert [p.split(":")[0] for p in layer_problems(planted)] == ["upward import"]


@pytest.mark.parametrize("module", ["workbench.store.db", "workbench.api", "workbench",
                                    "workbench.grid.runner", "workbench.server.app"])
def test_layer_table_places_known_modules(module: str) -> None:
    expected = {"workbench.store.db": "store", "workbench.api": "facade", "workbench": "facade",
                "workbench.grid.runner": "kinds", "workbench.server.app": "doors"}
    assert layer_of(module)[1] == expected[module]
