"""mmcore's Python surface: the kernel-file modules, their examples, their
argument checks and the direction of their imports.

mmcore mirrors the kernel's files: ``Engine`` (``_core``) holds the storage,
and what acts on it is a function, taking the engine first, in the module
named for the kernel file (``memory``, ``huge_memory``, ``mprotect``,
``mremap``, ``pagewalk``, ``check``).
"""
import doctest
import pathlib
import re

import numpy as np
import pytest

import mmcore
from mmcore import access, check, fork, huge_memory, memory, mprotect, mremap, pagewalk

KERNEL_MODULES = (huge_memory, pagewalk, memory, access, mprotect, mremap, check, fork)
MMCORE = pathlib.Path(mmcore.__file__).parent

# Bottom to top: a module may import or cimport only modules of a lower layer.
# mremap sits above memory: move_vma() unmaps the source with its zap and free_pgd_range.
LAYERS = (("geometry", "_entries", "_region", "_shmem"), ("_core",), ("huge_memory", "pagewalk"),
          ("memory", "access", "mprotect", "check"), ("mremap",), ("fork",))
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _functions(module):
    return [f for name, f in sorted(vars(module).items())
            if callable(f) and getattr(f, "__module__", None) == module.__name__
            and not isinstance(f, type) and not name.startswith("_")]


def _run_examples(text, name, globs):
    test = doctest.DocTestParser().get_doctest(text, globs, name, name, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = []
    runner.run(test, out=report.append)
    return test, runner.summarize(verbose=False), "".join(report)


@pytest.mark.parametrize("module", (mmcore,) + KERNEL_MODULES, ids=lambda m: m.__name__)
def test_module_docstring_names_its_kernel_file_and_its_example_runs(module):
    if module is not mmcore:
        assert re.search(r"\b(mm|fs)/[\w/]+\.c\b", module.__doc__), module.__name__
    test, result, report = _run_examples(module.__doc__, module.__name__, {})
    assert test.examples, f"{module.__name__} has no example"
    assert result.failed == 0, report


def _engine_with_a_range():
    """What the functions' examples start from: [0x40000000, 0x40200000)
    faulted in for writing by anonymous owner ``o``."""
    eng = mmcore.Engine(mmcore.X86_64)
    o = eng.owner_new("anon")
    mmcore.handle_mm_fault(eng, 0x40000000, 0x40200000, vma_start=0x40000000, vma_end=0x40200000,
                           owner=o, pgoff=0x40000, write=True)
    return eng, o


@pytest.mark.parametrize("function", [f for m in KERNEL_MODULES for f in _functions(m)],
                         ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_each_function_documents_an_example_that_runs(function):
    eng, o = _engine_with_a_range()
    globs = dict(vars(__import__(function.__module__, fromlist=["_"])), eng=eng, o=o, np=np,
                 mmcore=mmcore)
    test, result, report = _run_examples(function.__doc__ or "", function.__name__, globs)
    assert test.examples, f"{function.__name__} has no example"
    assert result.failed == 0, report


_A, _B = 0x40000000, 0x40200000
_VMA = dict(vma_start=_A, vma_end=_B, owner=1, pgoff=_A >> 12)
_SHM_VMA = dict(vma_start=_A, vma_end=_A + 16 * 4096, owner=2, pgoff=0)   # owner 2: the shmem object
_U64 = np.array([_A], dtype=np.uint64)
# A valid call of each function but for its first argument.
VALID_CALLS = {
    "split_huge_pmd_address": ((_A,), {}),
    "walk": ((_A,), {}), "translate": ((_A,), {}), "pagemap": ((_A, 1), {}),
    "page_tags": ((_A, 1), {}), "leaf_runs": ((_A, _B), {}), "table_tree": ((), {}),
    "handle_mm_fault": ((_A, _B), _VMA), "do_fault_around": ((_A,), _SHM_VMA),
    "zap_page_range": ((_A, _B), {}), "free_pgd_range": ((_A, _B, 0, 0), {}),
    "pmd_alloc": ((_A,), {}),
    "read_bytes": ((_A, 1), {}), "write_bytes": ((_A, b"x"), {}),
    "memset_pages": ((_A, _B, 0), {}), "stamp_pages": ((_A, _B), {}),
    "change_protection": ((_A, _B), {}),
    "move_page_tables": ((mmcore.MoveControl(_A, _B, 4096),), {}),
    "move_range": ((_A, _B, _A + 4096, 4096, mmcore.MoveControl(0, 0, 0)), {}),
    "move_vma_tables": ((_A, _B, 4096, mmcore.MoveControl(0, 0, 0), 0, 0), {}),
    "check_scan": ((_U64, _U64 + 4096, np.array([1], dtype=np.int64), _U64 >> 12), {}),
    "digest": ((), {}),
    "check_processes": (([(0, _U64, _U64 + 4096, np.array([1], dtype=np.int64), _U64 >> 12)],), {}),
    "copy_page_range": ((0, 1, _A, _B), {}),        # context 1: mmcore.mm_alloc(eng) (NEEDS_CHILD)
    "exit_mmap": ((0,), {}),
    "mm_alloc": ((), {}), "switch_mm": ((0,), {}), "mmdrop": ((1,), {}), "mm_contexts": ((), {}),
    "folio_mapcount": ((1,), {}), "anon_vma_parent": ((1,), {}),
}
NEEDS_CHILD = {"copy_page_range", "mmdrop"}


def test_the_argument_check_list_covers_every_function():
    assert sorted(VALID_CALLS) == sorted(f.__name__ for m in KERNEL_MODULES for f in _functions(m))


@pytest.mark.parametrize("name", sorted(VALID_CALLS))
@pytest.mark.parametrize("not_an_engine", [None, 0, "eng", mmcore.X86_64], ids=repr)
def test_functions_refuse_anything_but_an_engine_first(name, not_an_engine):
    args, kwargs = VALID_CALLS[name]
    eng, _ = _engine_with_a_range()
    assert eng.owner_new("shmem", npages=16) == 2
    if name in NEEDS_CHILD:
        mmcore.mm_alloc(eng)
    getattr(mmcore, name)(eng, *args, **kwargs)          # the call itself is valid
    with pytest.raises(TypeError, match="Argument 'eng' has incorrect type"):
        getattr(mmcore, name)(not_an_engine, *args, **kwargs)


def test_every_function_is_exported_at_the_top():
    for module in KERNEL_MODULES:
        for f in _functions(module):
            assert getattr(mmcore, f.__name__) is f, f"mmcore.{f.__name__}"
            assert f.__name__ in mmcore.__all__


def _imports(path):
    """The mmcore modules a .pyx/.pxd/.py file imports or cimports."""
    found = set()
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(?:from\s+mmcore\.(\w+)\s+c?import|c?import\s+mmcore\.(\w+))", line)
        if m:
            found.add(m.group(1) or m.group(2))
    return found


@pytest.mark.parametrize("path", sorted(p for p in MMCORE.iterdir()
                                        if p.suffix in (".pyx", ".pxd", ".py")
                                        and p.name != "__init__.py"), ids=lambda p: p.name)
def test_imports_inside_mmcore_only_go_down(path):
    assert path.stem in LAYER, f"{path.name}: add it to LAYERS"
    for target in _imports(path):
        if target == path.stem:
            continue                      # a .pyx and its own .pxd
        assert LAYER[target] < LAYER[path.stem], f"{path.name} imports {target}, which is not below it"
