"""Differential testing: random syscall sequences on pymm and on the real kernel.

A hypothesis RuleBasedStateMachine applies mmap/munmap/mremap (every flag
combination, aligned and misaligned destinations, PMD- and PUD-sized
lengths)/mprotect/madvise/write/memset/read to ``pymm.MM(check=True)`` and to
``HostMM``, and after every step compares the outcome (address, errno or
signal), the VMAs (start, end, perms), which pages are present, and the
contents of a sample of them.  pymm's own invariants are checked after every
call by check=True.

The normal run is bounded; ``pytest --long`` (or PYMM_LONG=1) runs thousands.
Divergences found this way are pinned as regression tests at the bottom.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import pymm
from pymm import host
from pymm.ops import PUD, Op, op_strategy

from helpers import GiB, MiB, PAGE, PRIV, RW, SHARED, host_or_skip, long_runs

BASE = host.DEFAULT_WINDOW[0] + (1 << 40)     # the op grid, PUD-aligned, inside the window
PRESENT = np.uint64(1 << 63)
STATS = {"steps": 0, "sequences": 0, "pages_compared": 0}


def present_pages(mm, vmas):
    """Present-page bitmap over every VMA (pagemap bit 63)."""
    out = []
    for start, end, _ in vmas:
        out.append((mm.pagemap(start, end - start) & PRESENT) != 0)
    return out


class Differential(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.h = host.HostMM()
        self.m = pymm.MM(window=host.DEFAULT_WINDOW, check=True)
        self.log = []
        STATS["sequences"] += 1

    def teardown(self):
        self.h.close()

    @rule(op=op_strategy(base=BASE, slots=8, big=True))
    def step(self, op):
        mine = op.apply(self.m)
        theirs = op.apply(self.h)
        self.log.append(op)
        STATS["steps"] += 1
        assert mine == theirs, f"{op}: pymm {mine} != kernel {theirs}\nafter {self.log}"

    @invariant()
    def same_address_space(self):
        mine = [(v.start, v.end, v.perms) for v in self.m.maps()]
        theirs = [(v.start, v.end, v.perms) for v in self.h.maps()]
        assert mine == theirs, f"maps differ after {self.log}\npymm:\n{self.m.format_maps()}\n" \
                               f"kernel:\n{self.h.format_maps()}"
        pm_mine = present_pages(self.m, mine)
        pm_theirs = present_pages(self.h, mine)
        for (start, end, perms), a, b in zip(mine, pm_mine, pm_theirs):
            if not np.array_equal(a, b):
                diff = int(np.nonzero(a != b)[0][0])
                raise AssertionError(f"present pages differ in {start:#x}-{end:#x} at "
                                     f"{start + diff * PAGE:#x} (pymm {bool(a[diff])}) after {self.log}")
            if perms[0] == "r":
                idx = np.nonzero(a)[0]
                for i in idx[:: max(1, len(idx) // 6)][:8]:
                    addr = start + int(i) * PAGE
                    STATS["pages_compared"] += 1
                    assert self.m.read(addr, PAGE) == self.h.read(addr, PAGE), \
                        f"contents differ at {addr:#x} after {self.log}"


TestDifferential = Differential.TestCase
TestDifferential.settings = settings(
    max_examples=2000 if long_runs() else 40,
    stateful_step_count=40 if long_runs() else 20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(autouse=True)
def _needs_host(request):
    if request.node.name.startswith("runTest") or "regression" in request.node.name:
        host_or_skip()


# -- regressions: divergences the state machine found, pinned ----------------------
def replay_both(program):
    h = host.HostMM()
    m = pymm.MM(window=host.DEFAULT_WINDOW, check=True)
    try:
        for op in program:
            assert op.apply(m) == op.apply(h), op
        assert [(v.start, v.end, v.perms) for v in m.maps()] == \
            [(v.start, v.end, v.perms) for v in h.maps()]
    finally:
        h.close()


B = BASE
RWP = pymm.MAP_PRIVATE | pymm.MAP_FIXED | pymm.MAP_ANONYMOUS


def test_regression_merge_hands_the_anon_vma_over_before_dropping_it():
    # A moved, unfaulted VMA merges with a prev without and a next with an
    # anon_vma: the survivor must keep that anon_vma alive (pymm used to free it).
    replay_both([
        Op("mmap", (B + 0xA00000, PAGE, RW, RWP)), Op("write", (B + 0xA00000, b"\x01")),
        Op("mmap", (B, PAGE, RW, RWP)), Op("mmap", (B + 0x602000, 0x1FF000, RW, RWP)),
        Op("mremap", (B, PAGE, 0x1FF000, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, B + 0x801000)),
        Op("mmap", (B, GiB, RW, RWP)), Op("read", (B + 0xA00000, 1))])


def test_regression_madv_populate_starting_in_a_hole_is_enomem_and_populates_nothing():
    replay_both([
        Op("mmap", (B, 0x40200000, RW, RWP)),
        Op("mremap", (B, 0x800000, 0x1FF000, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, B + 0xAFF000)),
        Op("madvise", (B + 0x7FF000, 2 * MiB, pymm.MADV_POPULATE_WRITE))])
    m = pymm.MM(window=host.DEFAULT_WINDOW, check=True)
    m.mmap(B + PAGE, 4 * PAGE, RW, RWP)
    with pytest.raises(OSError) as e:
        m.madvise(B, 5 * PAGE, pymm.MADV_POPULATE_WRITE)
    assert e.value.errno == 12 and m.rss == 0


def test_regression_madv_populate_on_prot_none_is_einval():
    replay_both([Op("mmap", (B + 0x201000, 4 * MiB, pymm.PROT_NONE, RWP)),
                 Op("madvise", (B + 0x3FE000, 2 * MiB, pymm.MADV_POPULATE_WRITE))])


def test_regression_dontunmap_source_keeps_vm_account_and_remerges():
    replay_both([Op("mmap", (B, 0x201000, RW, RWP)),
                 Op("mremap", (B, PAGE, PAGE, pymm.MREMAP_MAYMOVE | pymm.MREMAP_DONTUNMAP, B + PAGE)),
                 Op("mmap", (B, PAGE, RW, RWP))])


def test_regression_mprotect_continues_after_a_merge():
    # The kernel's VMA iterator goes on from the end of the merged VMA; pymm
    # used to revisit the VMA that had just been merged away (ENOMEM).
    replay_both([Op("mmap", (B, 2 * PAGE, pymm.PROT_READ, RWP)), Op("mmap", (B, PAGE, RW, RWP)),
                 Op("mprotect", (B, 2 * PAGE, pymm.PROT_READ))])
    replay_both([Op("mmap", (B, 3 * PAGE, RW, RWP)), Op("mmap", (B + PAGE, PAGE, pymm.PROT_READ, RWP)),
                 Op("mprotect", (B, 16 * PAGE, pymm.PROT_READ))])
