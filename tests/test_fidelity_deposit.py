"""Issue 12 item 5: the PTE table deposited with every anonymous huge PMD.

mm/huge_memory.c: __do_huge_pmd_anonymous_page() and set_huge_zero_folio()
allocate a PTE table with each anonymous THP and huge zero PMD and deposit
it (pgtable_trans_huge_deposit(), mm_inc_nr_ptes(): it counts in VmPTE);
move_huge_pmd() carries it to another PMD table (pmd_move_must_withdraw());
__split_huge_pmd_locked() withdraws it instead of allocating, so a split
cannot fail; zap_huge_pmd() frees it (zap_deposited_table()).

``mm.status()`` against the host's ``/proc/PID/status``: the same calls on a
pymm.MM and on a HostMM, and after each step the change of every figure
since the start must be the same on both.
"""
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant

import mmcore
import pymm
from pymm import host

from helpers import host_or_skip, long_runs
from test_differential import Differential

K = 1 << 10
M = 1 << 20
RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS
FIGURES = ("VmSize", "VmLck", "VmRSS", "RssAnon", "RssShmem", "VmPTE")


def thp_region(mm, length=8 * M):
    """A PMD-aligned anonymous region with MADV_HUGEPAGE (THP=madvise here)."""
    a = mm.mmap(0, length, RW, ANON)
    assert a % (2 * M) == 0
    mm.madvise(a, length, pymm.MADV_HUGEPAGE)
    return a


# -- pymm alone: the counters ---------------------------------------------------------
def test_thp_fault_deposits_one_pte_table():
    mm = pymm.MM(check=True)
    a = thp_region(mm)
    mm.reset_stats()
    mm.write(a, b"x")
    # a PUD table, a PMD table and the deposit; no PTE table is mapped
    assert mm.stats["pgtables_allocated"] == 3
    assert mm.engine.deposited_tables == 1
    assert mm.status()["VmPTE"] == 12 and mm.status()["RssAnon"] == 2048


def test_huge_zero_pmd_deposits_and_its_write_keeps_the_deposit():
    mm = pymm.MM(check=True)
    a = thp_region(mm)
    mm.read(a, 1)
    assert mm.engine.deposited_tables == 1 and mm.status()["VmPTE"] == 12
    assert mm.status()["RssAnon"] == 0
    mm.write(a, b"y")                # do_huge_zero_wp_pmd(): a THP in place, same deposit
    assert mm.engine.deposited_tables == 1 and mm.status()["VmPTE"] == 12
    assert mm.status()["RssAnon"] == 2048


@pytest.mark.parametrize("kernel,thp", [("4.19", True), ("5.8", False), ("5.11", False),
                                        ("6.7", False), ("6.18", True)])
def test_write_to_the_huge_zero_pmd_per_kernel(kernel, thp):
    """4.19's do_huge_pmd_wp_page() allocates a THP for the huge zero PMD
    ("goto alloc"); 3917c80280c9 (5.8, "thp: change CoW semantics for
    anon-THP") sends it to "fallback": __split_huge_pmd() and a 4 KiB COW;
    1ced09e0331f (6.13, do_huge_zero_wp_pmd()) brings the THP back.  The
    split uses the deposit: VmPTE is the same either way."""
    mm = pymm.MM(kernel, thp="always", check=True)
    a = mm.mmap(1 << 32, 2 * M, RW, ANON | pymm.MAP_FIXED)
    mm.read(a, 1)
    mm.reset_stats()
    mm.write(a + 4096, b"y")
    assert mm.status()["RssAnon"] == (2048 if thp else 4)
    assert mm.stats["huge_pmd_splits"] == (0 if thp else 1)
    assert mm.status()["VmPTE"] == 12 and mm.stats["pgtables_allocated"] == 0
    assert mm.read(a, 1) == b"\0" and mm.read(a + 4096, 1) == b"y"


def test_split_withdraws_instead_of_allocating():
    mm = pymm.MM(check=True)
    a = thp_region(mm)
    mm.write(a, b"x")
    mm.reset_stats()
    mm.mprotect(a + 4096, 4096, pymm.PROT_READ)
    assert mm.stats["huge_pmd_splits"] == 1
    assert mm.stats["pgtables_allocated"] == 0
    assert mm.engine.deposited_tables == 0 and mm.status()["VmPTE"] == 12


def test_zap_frees_the_deposit():
    mm = pymm.MM(check=True)
    a = thp_region(mm)
    mm.write(a, b"x")
    mm.reset_stats()
    mm.madvise(a, 2 * M, pymm.MADV_DONTNEED)
    assert mm.stats["pgtables_freed"] == 1
    assert mm.engine.deposited_tables == 0 and mm.status()["VmPTE"] == 8


def test_munmap_of_a_thp_frees_everything():
    mm = pymm.MM(check=True)
    a = thp_region(mm, 2 * M)
    mm.write(a, b"x")
    mm.munmap(a, 2 * M)
    assert mm.engine.n_tables == 0 and mm.engine.deposited_tables == 0


@pytest.mark.parametrize("offset", [0, 1 << 30])
def test_move_carries_the_deposit(offset):
    """move_huge_pmd(): to another PMD table (1 GiB away) the deposit moves
    with the leaf; within the same PMD table it stays where it is."""
    mm = pymm.MM(check=True)
    a = thp_region(mm, 4 * M)
    mm.write(a, b"x")
    dest = a - 64 * M - offset
    mm.reset_stats()
    b = mm.mremap(a, 2 * M, 2 * M, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, dest)
    assert mm.stats["huge_pmd_moves"] == 1
    assert mm.engine.deposited_tables == 1
    mm.mprotect(b + 4096, 4096, pymm.PROT_READ)      # the split finds the deposit
    assert mm.engine.deposited_tables == 0


def test_move_cannot_stop_at_a_split_out_of_memory():
    """An unaligned move splits the THP.  With only the destination's two PTE
    tables to spare the kernel's split still succeeds (it uses the deposit),
    so the whole range moves."""
    mm = pymm.MM(check=True)
    a = mm.mmap((4 << 30) + 64 * M, 4 * M, RW, ANON | pymm.MAP_FIXED)
    mm.madvise(a, 4 * M, pymm.MADV_HUGEPAGE)
    mm.write(a, b"x")
    dest = a - 16 * M + 4096               # same PUD and PMD tables; two PTE tables needed
    mm.engine.max_pages = mm.engine.pages_used + 2
    mm.reset_stats()
    b = mm.mremap(a, 2 * M, 2 * M, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, dest)
    assert b == dest and mm.stats["huge_pmd_splits"] == 1
    assert mm.stats["pgtables_allocated"] == 2
    assert mm.read(dest, 1) == b"x"


def test_thp_fault_falls_back_to_small_pages():
    """No room for a PMD-sized folio: do_huge_pmd_anonymous_page() returns
    VM_FAULT_FALLBACK and the fault maps one 4 KiB page."""
    mm = pymm.MM(check=True)
    a = thp_region(mm, 2 * M)
    mm.engine.max_pages = mm.engine.pages_used + 2 + 2      # PUD and PMD table, PTE table, a page
    mm.write(a, b"x")
    assert mm.status()["RssAnon"] == 4 and mm.engine.deposited_tables == 0


def test_write_to_the_huge_zero_pmd_falls_back_to_a_split():
    """No room for the THP that do_huge_zero_wp_pmd() wants: the huge zero
    PMD is split (into its deposit) and one 4 KiB page is copied."""
    mm = pymm.MM(check=True)
    a = thp_region(mm, 2 * M)
    mm.read(a, 1)
    mm.engine.max_pages = mm.engine.pages_used + 1
    mm.write(a + 4096, b"y")
    assert mm.stats["huge_pmd_splits"] == 1 and mm.status()["RssAnon"] == 4
    assert mm.read(a, 1) == b"\0" and mm.read(a + 4096, 1) == b"y"


def test_vmpte_leaves_out_p4d_tables():
    """With 5 levels, __p4d_alloc() does not count the P4D table in
    mm_pgtables_bytes(): a THP costs a PUD, a PMD and the deposit, as on 4 levels."""
    mm = pymm.MM(arch="x86_64-la57", check=True)
    a = thp_region(mm, 2 * M)
    mm.write(a, b"x")
    assert mm.engine.n_tables == 4 and mm.status()["VmPTE"] == 12


def test_describe_names_the_deposit_and_sees_no_leak():
    mm = pymm.MM(check=True)
    a = thp_region(mm, 2 * M)
    mm.write(a, b"x")
    d = mm.describe()
    assert d.unreachable_tables == 0 and d.deposited_tables == 1
    assert "(+ 1 deposited with huge PMDs)" in str(d) and "not reachable" not in str(d)


def test_checker_counts_deposited_tables_as_reached():
    """A deposited table hangs off its PMD table, not off an entry: the
    checker finds it there (otherwise it would be "table-unreachable")."""
    import numpy as np
    eng = mmcore.Engine(mmcore.X86_64)
    o = eng.owner_new("anon")
    G = 1 << 30
    mmcore.handle_mm_fault(eng, G, G + 2 * M, vma_start=G, vma_end=G + 2 * M, owner=o,
                           pgoff=G >> 12, write=True, thp=True)
    assert eng.deposited_tables == 1 and eng.n_tables == 3
    v = lambda *xs, t=np.uint64: np.array(xs, dtype=t)   # noqa: E731
    assert mmcore.check_scan(eng, v(G), v(G + 2 * M), v(o, t=np.int64), v(G >> 12)) == []


# -- against the host -------------------------------------------------------------------
def delta(now, start):
    return {k: now[k] - start[k] for k in FIGURES}


def run_both(steps):
    """Run ``steps(mm)`` (a generator yielding a label after each step) on a
    pymm.MM in the host's window and on a HostMM; the status deltas after
    each step must agree."""
    host_or_skip()
    m = pymm.MM(window=host.DEFAULT_WINDOW, check=True)
    with host.HostMM() as h:
        h0, m0 = h.status(), m.status()
        for label_m, label_h in zip(steps(m), steps(h)):
            assert label_m == label_h
            dm, dh = delta(m.status(), m0), delta(h.status(), h0)
            assert dm == dh, f"after {label_m}: pymm {dm} host {dh}"


def thp_fault_and_zero(mm):
    a = thp_region(mm)
    mm.write(a, b"x")
    yield "THP write fault"
    mm.read(a + 2 * M, 1)
    yield "huge zero PMD"
    mm.write(a + 2 * M, b"y")
    yield "write to the huge zero PMD"
    mm.memset(a + 4 * M, 7, 4 * M)
    yield "two more THPs"
    mm.madvise(a + 4 * M, 2 * M, pymm.MADV_DONTNEED)
    yield "zap of a THP"
    mm.munmap(a, 8 * M)
    yield "munmap"


def splits(mm):
    a = thp_region(mm)
    mm.memset(a, 1, 8 * M)
    yield "four THPs"
    mm.mprotect(a + 4096, 4096, pymm.PROT_READ)
    yield "split by mprotect of part"
    mm.munmap(a + 2 * M + 8192, 4096)
    yield "split by munmap of part"
    mm.read(a + 6 * M, 1)
    mm.madvise(a + 4 * M + 4096, 4096, pymm.MADV_DONTNEED)
    yield "split by a partial zap"
    mm.munmap(a, 8 * M)
    yield "munmap"


def moves(mm):
    a = thp_region(mm)
    mm.memset(a, 1, 8 * M)
    yield "four THPs"
    b = mm.mremap(a, 2 * M, 2 * M, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, a - 64 * M)
    yield "THP moved to an aligned place"
    c = mm.mremap(a + 2 * M, 2 * M, 2 * M, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED,
                  a - (1 << 30))
    yield "THP moved to an aligned place in another PMD table"
    d = mm.mremap(a + 4 * M, 2 * M, 2 * M, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED,
                  a - 128 * M + 4096)
    yield "THP moved to an unaligned place (split)"
    mm.mprotect(b + 4096, 4096, pymm.PROT_READ)
    mm.mprotect(c + 4096, 4096, pymm.PROT_READ)
    yield "the moved THPs split"
    for x in (b, c, d, a + 6 * M):
        mm.munmap(x, 2 * M)
    yield "munmap"


@pytest.mark.parametrize("steps", [thp_fault_and_zero, splits, moves], ids=lambda f: f.__name__)
def test_status_deltas_match_the_host(steps):
    run_both(steps)


def test_faults_past_a_shmem_object_leave_their_upper_tables():
    """__handle_mm_fault() allocates the PUD and PMD tables before
    shmem_fault() returns VM_FAULT_SIGBUS; they stay (found by the status
    differential: a shared mapping duplicated by mremap(old_size=0))."""
    SH = pymm.MAP_SHARED | pymm.MAP_ANONYMOUS
    W = host.DEFAULT_WINDOW[0]

    def steps(mm):
        a = mm.mmap(W + (5 << 30), 4096, RW, SH | pymm.MAP_FIXED)
        b = mm.mremap(a, 0, 4 * M, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, W + (3 << 30))
        with pytest.raises(pymm.BusError):
            mm.write(b + 2 * M, b"x")
        yield "SIGBUS on a write"
        c = mm.mremap(a, 0, 4 * M, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, W + (7 << 30))
        with pytest.raises(pymm.BusError):
            mm.read(c + 2 * M, 1)
        yield "SIGBUS on a read"
        d = mm.mremap(a, 0, 4 * M, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, W + (9 << 30) - 4096)
        with pytest.raises(OSError):
            mm.madvise(d, 4 * M, pymm.MADV_POPULATE_WRITE)
        yield "EFAULT from MADV_POPULATE_WRITE across a PUD boundary"
    run_both(steps)


def test_vmlck_matches_the_host():
    def locked(mm):
        a = mm.mmap(0, 64 * K, RW, ANON | pymm.MAP_LOCKED)
        yield "MAP_LOCKED"
        mm.munmap(a + 16 * K, 16 * K)
        yield "munmap of part"
    run_both(locked)


# -- the differential state machine, with the status figures too ----------------------
class StatusDifferential(Differential):
    """test_differential's random syscall sequences; after every step the
    status deltas since the start must agree as well."""

    def __init__(self):
        super().__init__()
        self.h0, self.m0 = self.h.status(), self.m.status()

    @invariant()
    def same_status(self):
        dm, dh = delta(self.m.status(), self.m0), delta(self.h.status(), self.h0)
        assert dm == dh, f"status deltas: pymm {dm} host {dh} after {self.log}"


TestStatusDifferential = StatusDifferential.TestCase
TestStatusDifferential.settings = settings(
    max_examples=800 if long_runs() else 12,
    stateful_step_count=40 if long_runs() else 20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(autouse=True)
def _status_differential_needs_host(request):
    if request.node.name.startswith("runTest"):
        host_or_skip()
