"""The import rules of DESIGN.md section 3, read from the source: the netdef package
knows nothing above it, the library never imports the command-line tools, and no
modules import each other in a circle (imports inside functions count too)."""
from __future__ import annotations

import ast
import os

import pytest

from conftest import ROOT

PKG = os.path.join(ROOT, "deeplab_compile")


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    out["deeplab_compile._C"] = None        # the compiled extension (imports nothing of ours)
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The package's modules that ``name`` imports (``from pkg import sub`` names the
    submodule where there is one, else the package)."""
    path = MODULES[name]
    if path is None:
        return set()
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _inside(name: str, *areas: str) -> bool:
    return any(name == f"deeplab_compile.{a}" or name.startswith(f"deeplab_compile.{a}.") for a in areas)


def test_netdef_imports_nothing_above_it():
    above = ("caffe", "layers", "compiler", "validation", "codegen", "passes", "solver", "train", "training",
             "test", "experiment", "cli", "data", "io", "crf", "ops")
    bad = {(m, t) for m in GRAPH if _inside(m, "netdef") for t in GRAPH[m] if _inside(t, *above)}
    assert not bad


@pytest.mark.parametrize("area", ["netdef", "layers", "data", "io", "crf", "ops", "passes", "caffe", "zoo",
                                  "compiler", "validation", "codegen", "schema", "graph", "errors", "settings"])
def test_library_does_not_import_the_commands(area):
    bad = {(m, t) for m in GRAPH if _inside(m, area) for t in GRAPH[m] if _inside(t, "cli")}
    assert not bad


def test_no_import_circles():
    # Tarjan's strongly connected components; a package __init__ that only hands its
    # submodules' names on is left out (importing a submodule runs it, but uses none of it)
    def faces(m: str) -> bool:
        return MODULES[m] is not None and MODULES[m].endswith("__init__.py") and not any(
            isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.parse(open(MODULES[m]).read()).body)

    graph = {m: {t for t in ts if not faces(t)} for m, ts in GRAPH.items() if not faces(m)}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles
