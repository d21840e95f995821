"""Every docstring example in pymm runs (issue 14, item 6).

A module docstring gets ``pymm``, ``C`` (pymm.constants), ``np`` and
``mm``, a fresh ``pymm.MM()``.  A function's or method's example may
use a small context: ``mm`` (a fresh ``pymm.MM()``), ``a`` (2 MiB mapped
at 4 GiB, written with zeros) and ``start`` (the start of a new exec's stack in
that ``mm``).  An example that shows no output only has to run; where it
shows output, the output must match.
"""
import doctest
import importlib
import pkgutil
import warnings

import numpy as np
import pytest

import pymm
from pymm import constants as C

MODULES = ["pymm"] + sorted(m.name for m in pkgutil.walk_packages(pymm.__path__, "pymm.")
                            if m.name != "pymm.__main__")


class _Checker(doctest.OutputChecker):
    """An example with no expected output only has to run without error."""

    def check_output(self, want, got, optionflags):
        return not want or super().check_output(want, got, optionflags)


def _context():
    mm = pymm.MM()
    a = mm.mmap(1 << 32, 2 << 20, C.PROT_READ | C.PROT_WRITE,
                C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
    mm.memset(a, 0, 2 << 20)
    return {"pymm": pymm, "C": C, "np": np, "mm": mm, "a": a}


def _tests(name):
    mod = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(mod, name) if t.examples]


CASES = [(name, t.name) for name in MODULES for t in _tests(name)]


def test_every_module_is_covered():
    assert "pymm" in MODULES and "pymm.mm.mm_struct" in MODULES and len(CASES) > 40


@pytest.mark.parametrize("module,test", CASES, ids=[t for _, t in CASES])
def test_docstring_example_runs(module, test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # examples that write files write them here
    t = next(t for t in _tests(module) if t.name == test)
    t.globs.update(pymm=pymm, C=C, np=np, mm=pymm.MM())
    if t.name != module:                 # a function's example: give it the context
        ctx = _context()
        if "start" in t.docstring and "start =" not in t.docstring:
            ctx["mm"] = pymm.MM()
            ctx["start"] = ctx["mm"].setup_exec_stack()
        t.globs.update(ctx)
    runner = doctest.DocTestRunner(checker=_Checker(),
                                   optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = runner.run(t, out=report.append)
    assert result.failed == 0, "".join(report)
