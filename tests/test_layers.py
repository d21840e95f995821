"""Imports run one way: the core below the model, the model below the tools,
the command line and the package facade on top.

The checker parses every module of ``pymm/`` and ``mmcore/`` (``ast`` for
.py; the ``import``/``cimport``/``from ... cimport`` lines of .pyx/.pxd),
builds the import graph and reports, each naming the import (file:line):

* an arrow from a lower layer to a higher one, even a lazy import inside a
  function;
* a cycle;
* a module the layer table does not place (a new module must be placed on
  purpose), or an import of a module that does not exist.

Importing ``pymm.mm.vma`` also runs ``pymm/mm/__init__.py``: an import
counts as an arrow to the module and to each package above it, except the
packages the importer is itself inside (those are already running; the root
packages' ``__init__`` is the facade every submodule sits under).  A package
named for itself (``import pymm``, ``from pymm import MM``) is an arrow to
it even from inside: the importer then uses what the facade holds.
"""
from __future__ import annotations

import ast
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mmcore", "pymm")

# Bottom to top.  "x.*" places every submodule of x.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("L0 core", ("mmcore", "mmcore.*")),
    ("L1 model", ("pymm.constants", "pymm.errors", "pymm.kernels", "pymm.arches", "pymm.machine", "pymm.mm", "pymm.mm.*",
                  "pymm.check", "pymm.walk", "pymm.describe")),
    ("L2 tools", ("pymm.host", "pymm.ops", "pymm.scenarios", "pymm.pictures", "pymm.show",
                  "pymm.demo", "pymm.bench", "pymm.fuzz", "pymm.progress", "pymm.pool", "pymm.sweep")),
    ("L3 cli", ("pymm.cli", "pymm.__main__", "pymm")),
]


class Source(NamedTuple):
    module: str        # dotted name; a .pyx and its .pxd are two sources of one module
    path: str          # for messages, relative to the repository
    text: str
    cython: bool       # .pyx/.pxd: read with the regex, not ast
    package: bool      # an __init__: relative imports resolve inside it


class Import(NamedTuple):
    target: str        # dotted name as written, resolved to an absolute name
    names: Tuple[str, ...]   # for "from target import a, b": a, b (maybe submodules)
    line: int


class Edge(NamedTuple):
    src: str
    dst: str
    where: str         # "pymm/mm/mm_struct.py:31"


# -- reading the sources ----------------------------------------------------------------------
def discover(root: Path = ROOT) -> Dict[str, Source]:
    """Every source file of the packages, by path."""
    out: Dict[str, Source] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*")):
            if path.suffix not in (".py", ".pyx", ".pxd") or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root)
            parts = list(rel.with_suffix("").parts)
            package = parts[-1] == "__init__"
            if package:
                parts.pop()
            out[str(rel)] = Source(".".join(parts), str(rel), path.read_text(), path.suffix != ".py", package)
    return out


def _absolute(module: str, package: bool, level: int, target: Optional[str]) -> str:
    """A relative import's target as an absolute name."""
    if not level:
        return target or ""
    base = module.split(".") if package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _python_imports(src: Source) -> List[Import]:
    module = src.module
    out = []
    for node in ast.walk(ast.parse(src.text, src.path)):
        if isinstance(node, ast.Import):
            out += [Import(a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, src.package, node.level, node.module)
            out.append(Import(target, tuple(a.name for a in node.names), node.lineno))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Name) and node.func.id == "__import__"
                   or isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")):
            out.append(Import(node.args[0].value, (), node.lineno))
    return out


_BLANKED = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\''          # strings and comments
                      r'|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|#[^\n]*')
_CY_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(?P<base>\.*[\w.]*)[ \t]+c?import[ \t]+(?P<names>[^\n]+)"
                        r"|c?import[ \t]+(?P<mods>[^\n]+))", re.M)


def _cython_imports(src: Source) -> List[Import]:
    module = src.module
    # Blank out strings and comments, and join parenthesised lists, keeping
    # every offset so that line numbers stay right.
    text = _BLANKED.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), src.text)
    text = re.sub(r"\([^()]*\)", lambda m: m.group().replace("\n", " "), text)
    out = []
    for m in _CY_IMPORT.finditer(text):
        line = src.text.count("\n", 0, m.start()) + 1
        if m.group("base") is not None:
            base = m.group("base")
            level = len(base) - len(base.lstrip("."))
            target = _absolute(module, src.package, level, base.lstrip(".") or None)
            names = tuple(n.split()[0] for n in m.group("names").strip("() ").split(",") if n.strip())
            out.append(Import(target, names, line))
        else:
            out += [Import(n.split()[0], (), line) for n in m.group("mods").split(",") if n.strip()]
    return out


def imports_of(src: Source) -> List[Import]:
    """The imports a source file makes, lazy ones included."""
    return (_cython_imports if src.cython else _python_imports)(src)


# -- the graph and its checks -------------------------------------------------------------------
def layer_of(module: str, layers=LAYERS) -> Optional[int]:
    for i, (_, patterns) in enumerate(layers):
        if any(fnmatchcase(module, p) for p in patterns):
            return i
    return None


def graph(sources: Dict[str, Source]) -> Tuple[List[str], List[Edge], List[str]]:
    """(modules, edges, problems with imports of modules that do not exist)."""
    modules = sorted({src.module for src in sources.values()})
    known = set(modules)
    edges: List[Edge] = []
    problems: List[str] = []
    for src in sources.values():
        module = src.module
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        for imp in imports_of(src):
            if imp.target.split(".")[0] not in PACKAGES:
                continue
            where = f"{src.path}:{imp.line}"
            # "from x import y" runs x, then y when y is a submodule; x itself is
            # used only if some y is an attribute of it (as "import x" uses x).
            subs = [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in known]
            explicit = subs + ([imp.target] if len(subs) < len(imp.names) or not imp.names else [])
            for target in explicit:
                if target not in known:
                    problems.append(f"{where}: imports {target}, which is no module of {'/'.join(PACKAGES)}")
                    continue
                if target != module:
                    edges.append(Edge(module, target, where))
                parts = target.split(".")
                for i in range(len(parts) - 1, 0, -1):   # the packages above it run first
                    dst = ".".join(parts[:i])
                    if dst in ancestors:
                        break
                    edges.append(Edge(module, dst, where))
    return modules, edges, problems


def find_cycle(nodes: List[str], edges: List[Edge]) -> Optional[List[Edge]]:
    """One cycle of the graph, as its edges, or None."""
    out: Dict[str, List[Edge]] = {n: [] for n in nodes}
    for e in edges:
        out.setdefault(e.src, []).append(e)
    state: Dict[str, int] = {}          # 1: on the DFS stack, 2: done
    stack: List[Edge] = []

    def visit(n: str) -> Optional[List[Edge]]:
        state[n] = 1
        for e in out.get(n, []):
            if state.get(e.dst) == 1:
                i = next((k for k, s in enumerate(stack) if s.src == e.dst), len(stack))
                return stack[i:] + [e]
            if e.dst not in state:
                stack.append(e)
                found = visit(e.dst)
                if found:
                    return found
                stack.pop()
        state[n] = 2
        return None

    for n in sorted(out):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def check_layers(sources: Dict[str, Source], layers=LAYERS) -> List[str]:
    """Every problem of the import graph, each naming the offending import."""
    modules, edges, problems = graph(sources)
    for m in modules:
        if layer_of(m, layers) is None:
            problems.append(f"{m}: not in the layer table (tests/test_layers.py LAYERS): place it")
    for e in edges:
        a, b = layer_of(e.src, layers), layer_of(e.dst, layers)
        if a is not None and b is not None and b > a:
            problems.append(f"{e.where}: upward import: {e.src} ({layers[a][0]}) imports "
                            f"{e.dst} ({layers[b][0]})")
    cycle = find_cycle(modules, edges)
    if cycle:
        problems.append("import cycle: " + cycle[0].src + "".join(
            f" -> {e.dst} ({e.where})" for e in cycle))
    return problems


# -- the tests ----------------------------------------------------------------------------------
def test_the_imports_of_pymm_and_mmcore_run_one_way():
    sources = discover()
    problems = check_layers(sources)
    assert not problems, "\n".join(problems)


def test_the_checker_sees_the_real_tree():
    """Not a vacuous pass: the modules and the arrows between them are all read."""
    modules, edges, _ = graph(discover())
    for m in ("pymm", "pymm.mm", "pymm.mm.mremap", "pymm.describe", "pymm.host", "pymm.cli",
              "mmcore", "mmcore._core", "mmcore.mremap", "mmcore._entries"):
        assert m in modules
    pairs = {(e.src, e.dst) for e in edges}
    assert ("pymm.mm.mremap", "mmcore") in pairs                   # import mmcore
    assert ("mmcore.mremap", "mmcore._core") in pairs              # from mmcore._core cimport (...)
    assert ("mmcore._core", "mmcore._region") in pairs             # the .pxd's cimport
    assert ("pymm.mm.mm_struct", "pymm.describe") in pairs         # lazy, inside MM.describe()
    assert ("pymm.host", "pymm.mm") in pairs                       # parent package of pymm.mm.vma
    assert ("pymm.mm.mremap", "pymm.mm") not in pairs              # its own package: already running


def _src(module: str, path: str, text: str) -> Source:
    return Source(module, path, text, not path.endswith(".py"), path.endswith("__init__.py"))


def _toy(**modules: str) -> Dict[str, Source]:
    """A tiny tree: module name (dots as "__") -> source text."""
    out = {}
    for key, text in modules.items():
        name = key.replace("__", ".")
        package = name in ("pymm", "mmcore", "pymm.mm")
        path = name.replace(".", "/") + ("/__init__.py" if package else ".py")
        out[path] = _src(name, path, text)
    return out


TOY_BASE = dict(pymm="from pymm.mm import MM\nfrom pymm import show\n",
                pymm__mm="from pymm.mm.mm_struct import MM\n",
                pymm__mm__mm_struct="import mmcore\nfrom pymm import constants as C\n",
                pymm__constants="X = 1\n", pymm__show="from pymm.mm import MM\n",
                mmcore="")


def test_a_clean_toy_tree_passes():
    assert check_layers(_toy(**TOY_BASE)) == []


def test_a_planted_upward_import_is_named_with_its_line():
    toy = _toy(**dict(TOY_BASE, pymm__mm__mm_struct="import mmcore\n\nimport pymm.show\n"))
    problems = check_layers(toy)
    assert any(p.startswith("pymm/mm/mm_struct.py:3: upward import: pymm.mm.mm_struct (L1 model) "
                            "imports pymm.show (L2 tools)") for p in problems), problems


def test_a_lazy_upward_import_counts_too():
    toy = _toy(**dict(TOY_BASE, pymm__constants="def f():\n    from pymm.show import g\n    return g\n"))
    assert any("pymm/constants.py:2: upward import" in p for p in check_layers(toy))


def test_importing_the_facade_from_below_is_upward():
    toy = _toy(**dict(TOY_BASE, pymm__constants="import pymm\n"))
    assert any("pymm/constants.py:1: upward import: pymm.constants (L1 model) imports pymm (L3 cli)" in p
               for p in check_layers(toy))


def test_a_cycle_through_a_parent_package_is_found():
    # kernels -> pymm.mm.vma runs pymm/mm/__init__ -> mm_struct -> kernels: the old lazy import.
    toy = _toy(**dict(TOY_BASE, pymm__kernels="def view(v):\n    from pymm.mm.vma import view\n",
                      pymm__mm__vma="", pymm__mm__mm_struct="from pymm.kernels import view\n"))
    problems = check_layers(toy)
    cycles = [p for p in problems if p.startswith("import cycle:")]
    assert cycles and "pymm/kernels.py:2" in cycles[0] and "pymm/mm/mm_struct.py:1" in cycles[0], problems


def test_a_module_the_table_does_not_place_fails():
    toy = _toy(**dict(TOY_BASE, pymm__newtool="import pymm.mm\n"))
    assert "pymm.newtool: not in the layer table (tests/test_layers.py LAYERS): place it" in check_layers(toy)


def test_an_import_of_a_missing_module_fails():
    toy = _toy(**dict(TOY_BASE, pymm__show="from pymm.vma import VMA\n"))
    assert any("pymm/show.py:1: imports pymm.vma, which is no module" in p for p in check_layers(toy))


@pytest.mark.parametrize("text, line, target", [
    ("from pymm.mm cimport MM\n", 1, "pymm.mm (L1 model)"),
    ('"""a docstring\nimport pymm.show (not an import)\n"""\nfrom mmcore._entries cimport (A,  # a comment\n'
     '    B)\ncimport pymm.show\n', 6, "pymm.show (L2 tools)"),
])
def test_cython_imports_are_read_by_line(text, line, target):
    toy = _toy(**TOY_BASE)
    toy["mmcore/_entries.pxd"] = _src("mmcore._entries", "mmcore/_entries.pxd", "")
    toy["mmcore/_core.pyx"] = _src("mmcore._core", "mmcore/_core.pyx", text)
    problems = check_layers(toy)
    head = f"mmcore/_core.pyx:{line}: upward import: mmcore._core (L0 core) imports {target}"
    assert any(p.startswith(head) for p in problems), problems
    assert not any(p.startswith("mmcore/_core.pyx:2:") for p in problems)      # the docstring
    edges = {(e.src, e.dst, e.where) for e in graph(toy)[1]}
    assert (("mmcore._core", "mmcore._entries", "mmcore/_core.pyx:4") in edges) == ("_entries" in text)


def test_a_planted_upward_import_in_the_real_tree_fails():
    sources = discover()
    vma = sources["pymm/mm/vma.py"]
    sources["pymm/mm/vma.py"] = vma._replace(text=vma.text + "\n\ndef _planted():\n    import pymm.show\n")
    line = vma.text.count("\n") + 4
    problems = check_layers(sources)
    assert any(p.startswith(f"pymm/mm/vma.py:{line}: upward import: pymm.mm.vma (L1 model) imports pymm.show")
               for p in problems), problems
