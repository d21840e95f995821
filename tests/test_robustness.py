"""No input, however wrong, crashes the interpreter or corrupts state.

Every public entry point (pymm.MM's syscalls, accesses and introspection,
and mmcore's engine functions and methods) is called with arbitrary values: negative,
huge, unaligned, beyond task_size, 2**64 - 1, and wrong types.  The answer
is always a clear exception (OSError carrying Linux's errno where Linux
would answer; TypeError, ValueError or OverflowError otherwise, NotImplementedError
for a valid request pymm does not model; a
SegmentationFault/BusError for an access) and pymm.check finds nothing
wrong afterwards (MM(check=True) also verifies that a failed call changed
nothing).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmcore
import pymm

from helpers import GiB, MiB, PAGE, PRIV, RW, long_runs

EXAMPLES = 3000 if long_runs() else 150
CFG = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
# NotImplementedError: a valid Linux request pymm does not model (MAP_HUGETLB, ...), said plainly.
# OutOfMemory: the simulated RAM (ram= below) ran out, the OOM killer ended the process;
# KernelOops: later calls on that dead MM are refused
CLEAR = (OSError, TypeError, ValueError, OverflowError, NotImplementedError, pymm.MemoryFault,
         pymm.OutOfMemory, pymm.KernelOops)
RAM = 1 << 30       # bounds each MM's frames + page tables: the long run stays small on the host

TASK_SIZE = (1 << 47) - PAGE
# integers that hurt: around 0, page and PMD boundaries, task_size, 2**63, 2**64
EDGES = [0, 1, PAGE - 1, PAGE, PAGE + 1, MiB, 2 * MiB - 1, 2 * MiB, GiB, TASK_SIZE - PAGE, TASK_SIZE,
         TASK_SIZE + 1, 1 << 47, 1 << 48, 1 << 57, (1 << 63) - 1, 1 << 63, (1 << 64) - PAGE,
         (1 << 64) - 1, 1 << 64, 1 << 100, -1, -PAGE, -(1 << 63), -(1 << 64), -(1 << 70)]
nasty_int = st.one_of(st.sampled_from(EDGES), st.integers(-(1 << 66), 1 << 66),
                      st.integers(0, 1 << 32).map(lambda x: GiB + x))
wrong_type = st.sampled_from([None, "0x1000", 1.5, float("nan"), b"\x00", [], (1,), {}, object(),
                              True, np.float64(4096.0)])
numpy_int = st.sampled_from([np.int64(PAGE), np.uint64(GiB), np.int32(-1), np.uint64((1 << 64) - 1)])
arg = st.one_of(nasty_int, nasty_int, nasty_int, wrong_type, numpy_int)
data_arg = st.one_of(st.binary(max_size=64), wrong_type, st.just(bytearray(b"ab")),
                     st.just(memoryview(b"xyz")))

CALLS = {
    "mmap": (arg, arg, arg, arg, arg, arg),
    "munmap": (arg, arg),
    "mremap": (arg, arg, arg, arg, arg),
    "mprotect": (arg, arg, arg),
    "madvise": (arg, arg, arg),
    "read": (arg, arg),
    "write": (arg, data_arg),
    "memset": (arg, arg, arg),
    "stamp": (arg, arg),
    "pagemap": (arg, arg),
    "walk": (arg,),
    "describe": (arg, arg),
    "move_page_tables": (arg, arg, arg),
    "shift_arg_pages": (arg, arg),
}


def fresh_mm():
    """An address space with something in it: a populated anonymous VMA
    across a PMD boundary, a read-only one, a shared one and a THP."""
    mm = pymm.MM(check=True, thp="always", ram=RAM)
    a = mm.mmap(GiB - MiB, 4 * MiB, RW, PRIV | pymm.MAP_FIXED)
    mm.madvise(a, 4 * MiB, pymm.MADV_NOHUGEPAGE)
    mm.memset(a, 0x42, 4 * MiB)
    b = mm.mmap(2 * GiB, 16 * PAGE, pymm.PROT_READ, PRIV | pymm.MAP_FIXED)
    mm.read(b, 1)
    c = mm.mmap(3 * GiB, 8 * PAGE, RW, pymm.MAP_SHARED | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED)
    mm.write(c + 5, b"shared")
    d = mm.mmap(4 * GiB, 4 * MiB, RW, PRIV | pymm.MAP_FIXED)
    mm.write(d, b"huge")
    return mm


def call_ok(mm, name, args):
    try:
        getattr(mm, name)(*args)
    except CLEAR:
        pass
    except pymm.KernelBUG:            # a raw move_page_tables onto a huge PMD: the kernel's VM_BUG_ON
        assert name == "move_page_tables"
        return False
    return True


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_entry_point_answers_bad_input_with_a_clear_exception(name):
    mm = fresh_mm()

    @CFG
    @given(st.tuples(*CALLS[name]))
    def run(args):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            intact = call_ok(mm, name, args)
        if intact and name not in ("move_page_tables",):
            assert pymm.check(mm) == []
    run()


@CFG
@given(st.lists(st.tuples(st.sampled_from(sorted(set(CALLS) - {"move_page_tables", "shift_arg_pages"})),
                          st.data()), min_size=1, max_size=8))
def test_sequences_of_bad_calls_leave_a_consistent_address_space(calls):
    mm = fresh_mm()
    for name, data in calls:
        args = data.draw(st.tuples(*CALLS[name]))
        call_ok(mm, name, args)
        assert pymm.check(mm) == []


def test_a_failed_call_changes_nothing():
    mm = fresh_mm()
    before = (mm.format_maps(), mmcore.digest(mm.engine))
    for name, args in [("mremap", (GiB, 4 * MiB, 8 * MiB, 0)),                 # ENOMEM: cannot grow in place
                       ("mremap", (GiB - MiB, PAGE, PAGE, pymm.MREMAP_FIXED, 0)),  # EINVAL
                       ("munmap", (GiB + 1, PAGE)),                          # EINVAL
                       ("mprotect", (GiB, PAGE, 1 << 30)),                   # EINVAL
                       ("madvise", (GiB, PAGE, 12345)),                      # EINVAL
                       ("mmap", (GiB, PAGE, RW, PRIV | pymm.MAP_FIXED_NOREPLACE))]:  # EEXIST
        with pytest.raises(OSError):
            getattr(mm, name)(*args)
        assert (mm.format_maps(), mmcore.digest(mm.engine)) == before, name


# -- the engine's own boundary --------------------------------------------------------------
engine_arg = st.one_of(st.sampled_from(EDGES), st.integers(-(1 << 65), 1 << 65), wrong_type)
ENGINE_CALLS = {
    "zap_page_range": 2, "split_huge_pmd_address": 1, "free_pgd_range": 4, "translate": 1,
    "walk": 1, "memset_pages": 3, "stamp_pages": 2, "read_bytes": 2, "page_tags": 2, "pagemap": 2,
    "table_row": 1, "frame_info": 1, "frame_bytes": 1, "leaf_runs": 2, "owner_free": 1,
    "owner_kind": 1, "shmem_resident": 1, "owner_new": 2,
}


# Kernel internals whose preconditions are the caller's, as in the kernel:
# free_pgd_range() with a floor/ceiling that lie about the neighbours frees
# tables still in use (the kernel would leak them too).  The checker names
# the damage; nothing crashes.
CALLERS_CONTRACT = {"free_pgd_range"}
VSTART, VEND = (np.array([x], dtype=np.uint64) for x in (GiB, GiB + 4 * MiB))


def engine_call(eng, name, args):
    """Storage is Engine's methods; the kernel-file modules' functions take the engine first."""
    method = getattr(eng, name, None)
    return method(*args) if method is not None else getattr(mmcore, name)(eng, *args)


def engine_problems(eng, anon):
    return [c for c, *_ in mmcore.check_scan(eng, VSTART, VEND, np.array([anon], dtype=np.int64),
                                             np.array([GiB >> 12], dtype=np.uint64))]


@pytest.mark.parametrize("name", sorted(ENGINE_CALLS))
def test_engine_methods_validate_their_arguments(name):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(engine_arg, min_size=ENGINE_CALLS[name], max_size=ENGINE_CALLS[name]))
    def run(args):
        eng = mmcore.Engine(mmcore.X86_64)
        anon = eng.owner_new("anon")
        mmcore.handle_mm_fault(eng, GiB, GiB + 4 * MiB, vma_start=GiB, vma_end=GiB + 4 * MiB,
                               owner=anon, pgoff=GiB >> 12, write=True)
        try:
            engine_call(eng, name, args)
        except (TypeError, ValueError, OverflowError):
            pass
        problems = engine_problems(eng, anon)
        if name in CALLERS_CONTRACT:
            assert set(problems) <= {"table-unreachable", "lost-frame", "frame-count"}
        elif name in ("owner_free", "zap_page_range"):
            assert problems == [] or set(problems) <= {"rmap-owner"} and name == "owner_free"
        else:
            assert problems == []
        # the engine keeps working: fault elsewhere (for a new owner), read it back
        b, o = 8 * GiB, eng.owner_new("anon")
        mmcore.handle_mm_fault(eng, b, b + MiB, vma_start=b, vma_end=b + MiB, owner=o,
                               pgoff=b >> 12, write=True)
        assert mmcore.translate(eng, b + 4096) >= 0
    run()


@CFG
@given(st.tuples(engine_arg, engine_arg, engine_arg, engine_arg))
def test_raw_move_range_rejects_nonsense(args):
    eng = mmcore.Engine(mmcore.X86_64)
    policy = mmcore.MoveControl(0, 0, 0)
    try:
        mmcore.move_range(eng, *args, policy)
    except (TypeError, ValueError, OverflowError, mmcore.KernelBUG):
        pass
    assert len(mmcore.table_tree(eng)["table"]) == eng.n_tables + 1


def test_a_shmem_object_with_mapped_pages_cannot_be_freed_under_them():
    eng = mmcore.Engine(mmcore.X86_64)
    shm = eng.owner_new("shmem", 16)
    frames_before = eng.n_frames
    mmcore.handle_mm_fault(eng, GiB, GiB + 16 * PAGE, vma_start=GiB, vma_end=GiB + 16 * PAGE,
                           owner=shm, pgoff=0, write=True, shared=True)
    with pytest.raises(ValueError, match="still has page 0 mapped"):
        eng.owner_free(shm)
    mmcore.zap_page_range(eng, GiB, GiB + 16 * PAGE)   # what munmap does first
    assert eng.n_frames == frames_before + 16     # the pages stay in the object
    eng.owner_free(shm)
    assert eng.n_frames == frames_before
