"""Differential testing: random syscall sequences on pymm and on the real kernel.

A hypothesis RuleBasedStateMachine applies mmap/munmap/mremap (every flag
combination, aligned and misaligned destinations, PMD- and PUD-sized
lengths)/mprotect/madvise/write/memset/read to ``pymm.MM(check=True)`` and to
``HostMM``, and after every step compares the outcome (address, errno or
signal), the VMAs (start, end, perms), which pages are present, and the
contents of a sample of them.  pymm's own invariants are checked after every
call by check=True.

Besides the generic ops, rules aim at what issue 12 touched: mlock (MAP_LOCKED,
mlock/munlock, MLOCK_ONFAULT), MAP_POPULATE, MADV_POPULATE_READ/WRITE,
MADV_FREE/COLD/PAGEOUT, THP regions (MADV_HUGEPAGE on aligned 2 MiB, filled)
moved to aligned and unaligned places, MAP_GROWSDOWN stacks touched below
their start, PROT_NONE, and reads as well as writes on shared memory.  The
invariant also compares each VMA's VM_LOCKED, VM_GROWSDOWN, VM_HUGEPAGE,
VM_NOHUGEPAGE and VM_ACCOUNT (smaps' VmFlags on the host) and the THP bytes
(AnonHugePages).

The normal run is bounded; ``pytest --long`` (or PYMM_LONG=1) runs thousands.
Divergences found this way are pinned as regression tests at the bottom.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import pymm
from pymm import host
from pymm.ops import PUD, Op, op_strategy

from helpers import GiB, MiB, PAGE, PRIV, RW, SHARED, host_or_skip, long_runs

BASE = host.DEFAULT_WINDOW[0] + (1 << 40)     # the op grid, PUD-aligned, inside the window
PRESENT = np.uint64(1 << 63)
STATS = {"steps": 0, "sequences": 0, "pages_compared": 0}


PMD = 2 * MiB
PRIV_FIXED = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED
SHARED_FIXED = pymm.MAP_SHARED | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED
SPECIAL_MAPS = (PRIV_FIXED | pymm.MAP_LOCKED, PRIV_FIXED | pymm.MAP_POPULATE,
                SHARED_FIXED | pymm.MAP_POPULATE, PRIV_FIXED | pymm.MAP_GROWSDOWN, SHARED_FIXED,
                SHARED_FIXED | pymm.MAP_LOCKED, PRIV_FIXED)
SMALL = (PAGE, 3 * PAGE, 16 * PAGE, PMD - PAGE, PMD, 2 * PMD)
OFFSETS = (0, 0, PAGE, 3 * PAGE, 256 * PAGE, 511 * PAGE)
# VmFlags mnemonics (fs/proc/task_mmu.c show_smap_vma_flags()) and pymm's VM_* bits
FLAG_NAMES = {"lo": pymm.VM_LOCKED, "gd": pymm.VM_GROWSDOWN, "hg": pymm.VM_HUGEPAGE,
              "nh": pymm.VM_NOHUGEPAGE, "ac": pymm.VM_ACCOUNT}


def slot(i, off=0):
    return BASE + i * PMD + off


def host_smaps(h):
    """Per VMA of the window: (start, VmFlags we compare, AnonHugePages kB)."""
    out, cur = [], None
    with open(f"/proc/{h._proc.pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and ":" not in head:
                start = int(head.split("-")[0], 16)
                cur = [start, "", 0] if h.window[0] <= start < h.window[1] else None
            elif cur is None:
                continue
            elif line.startswith("AnonHugePages:"):
                cur[2] = int(line.split()[1])
            elif line.startswith("VmFlags:"):
                cur[1] = " ".join(sorted(set(line.split()[1:]) & set(FLAG_NAMES)))
                out.append(tuple(cur))
    return out


def pymm_smaps(m):
    """The same from pymm: VM_* flags by name, 2M leaves in each VMA."""
    out = []
    for v in m.maps():
        names = " ".join(sorted(n for n, bit in FLAG_NAMES.items() if v.vm_flags & bit))
        huge = sum(r.end - r.start for r in m.describe(v.start, v.end, check=False).ranges
                   if r.page == "2M" and not r.zero_page) >> 10
        out.append((v.start, names, huge))
    return out


def pin(h):
    """Keep the host helper on one CPU: MADV_PAGEOUT/COLD skip pages whose folio
    still sits in another CPU's LRU-add batch (lru_add_drain() drains only the
    caller's), which would make their outcome depend on the scheduler."""
    try:
        import os
        os.sched_setaffinity(h._proc.pid, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    return h


def present_pages(mm, vmas):
    """Present-page bitmap over every VMA (pagemap bit 63)."""
    out = []
    for start, end, _ in vmas:
        out.append((mm.pagemap(start, end - start) & PRESENT) != 0)
    return out


class Differential(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.h = pin(host.HostMM())
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

    def both(self, *ops):
        for op in ops:
            self.step(op)

    @rule(i=st.integers(0, 7), off=st.sampled_from(OFFSETS), n=st.sampled_from(SMALL),
          how=st.sampled_from(("mlock", "mlock", "munlock", "onfault")))
    def lock(self, i, off, n, how):
        if how == "onfault":
            self.both(Op("mlock", (slot(i, off), n, pymm.MLOCK_ONFAULT)))
        else:
            self.both(Op(how, (slot(i, off), n)))

    @rule(i=st.integers(0, 7), off=st.sampled_from(OFFSETS), n=st.sampled_from(SMALL),
          flags=st.sampled_from(SPECIAL_MAPS),
          prot=st.sampled_from((RW, RW, pymm.PROT_READ, pymm.PROT_NONE)))
    def map_special(self, i, off, n, flags, prot):
        self.both(Op("mmap", (slot(i, off), n, prot, flags)))

    @rule(i=st.integers(0, 7), off=st.sampled_from(OFFSETS), n=st.sampled_from(SMALL),
          advice=st.sampled_from((pymm.MADV_POPULATE_READ, pymm.MADV_POPULATE_WRITE, pymm.MADV_FREE,
                                  pymm.MADV_COLD, pymm.MADV_PAGEOUT, pymm.MADV_HUGEPAGE)))
    def advise(self, i, off, n, advice):
        self.both(Op("madvise", (slot(i, off), n, advice)))

    @rule(i=st.integers(0, 6), fill=st.integers(1, 255), shared=st.booleans())
    def thp_region(self, i, fill, shared):
        """A THP: an aligned 2 MiB with MADV_HUGEPAGE, filled (shared: no THP, the same calls)."""
        self.both(Op("mmap", (slot(i), PMD, RW, SHARED_FIXED if shared else PRIV_FIXED)),
                  Op("madvise", (slot(i), PMD, pymm.MADV_HUGEPAGE)),
                  Op("memset", (slot(i), fill, PMD)))

    @rule(src=st.integers(0, 6), dst=st.integers(0, 7), off=st.sampled_from(OFFSETS),
          n=st.sampled_from((PMD, PMD, 2 * PMD, PMD - PAGE, PMD + 16 * PAGE)),
          flags=st.sampled_from((pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED,) * 3 +
                                (pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED | pymm.MREMAP_DONTUNMAP,
                                 pymm.MREMAP_MAYMOVE)),
          grow=st.sampled_from((0, 0, PMD)))
    def move_thp(self, src, dst, off, n, flags, grow):
        """Move a (THP) region to an aligned (off 0) or unaligned place, maybe growing it."""
        if flags & pymm.MREMAP_DONTUNMAP:
            grow = 0
        self.both(Op("mremap", (slot(src), n, n + grow, flags, slot(dst, off))))

    @rule(i=st.integers(0, 7), off=st.sampled_from(OFFSETS), below=st.sampled_from((1, 2, 17, 300)),
          write=st.booleans())
    def touch_below(self, i, off, below, write):
        """An access just below an address: grows a MAP_GROWSDOWN stack, or faults."""
        addr = slot(i, off) - below * PAGE
        self.both(Op("write", (addr, b"s")) if write else Op("read", (addr, 1)))

    @rule(i=st.integers(0, 7), off=st.sampled_from(OFFSETS), n=st.sampled_from(SMALL),
          at=st.sampled_from((0, PAGE, 5 * PAGE, 40 * PAGE)), write=st.booleans())
    def shared_access(self, i, off, n, at, write):
        """Shared memory read (fault-around) or written, maybe through another mapping's offset."""
        a = slot(i, off)
        self.both(Op("mmap", (a, n, RW, SHARED_FIXED)),
                  Op("write", (a + at, b"w")) if write else Op("read", (a + at, 8)))

    @invariant()
    def same_flags_and_thp(self):
        mine, theirs = pymm_smaps(self.m), host_smaps(self.h)
        assert mine == theirs, f"VmFlags/AnonHugePages differ after {self.log}\npymm:  {mine}\nkernel: {theirs}"

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
