"""Differential testing of fork: pymm's mm.fork() against the real kernel's.

A hypothesis RuleBasedStateMachine keeps up to three processes, each a pair
(``pymm.MM(check=True)``, ``HostMM``): it forks any of them, runs the
random ops of tests/test_differential.py (mmap, munmap, mremap, mprotect,
madvise, write, memset, read) on any of them, applies MADV_DONTFORK /
DOFORK / WIPEONFORK / KEEPONFORK, and lets a child exit.  After every step
it compares, for every process: the VMAs (start, end, perms), which pages
are present and which are mapped exclusively (pagemap bits 63 and 56), and
the contents of a sample of present pages.  pymm's invariants, across the
whole fork family, are checked after every call by check=True.

The normal run is bounded (CI: well under a minute); PYMM_LONG=1 runs long.
"""
import gc

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pymm
from pymm import constants as C
from pymm import host
from pymm.ops import PMD, Op, op_strategy

from helpers import PAGE, host_or_skip, long_runs

BASE = host.DEFAULT_WINDOW[0] + (1 << 40)
SLOTS = 8
PRESENT = np.uint64(1 << 63)
EXCLUSIVE = np.uint64(1 << 56)
FORK_ADVICE = (C.MADV_DONTFORK, C.MADV_DOFORK, C.MADV_WIPEONFORK, C.MADV_KEEPONFORK)
MAX_PROCS = 3
STATS = {"steps": 0, "forks": 0, "sequences": 0, "pages_compared": 0}


class ForkDifferential(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.procs = [(pymm.MM(window=host.DEFAULT_WINDOW, check=True), host.HostMM())]
        self.log = []
        STATS["sequences"] += 1

    def teardown(self):
        for _, h in self.procs:
            h.close()

    def _pick(self, which):
        i = which % len(self.procs)
        return i, self.procs[i]

    @rule(op=op_strategy(base=BASE, slots=SLOTS, big=False), which=st.integers(0, MAX_PROCS - 1))
    def step(self, op, which):
        i, (m, h) = self._pick(which)
        mine, theirs = op.apply(m), op.apply(h)
        self.log.append((i, op))
        STATS["steps"] += 1
        assert mine == theirs, f"process {i}: {op}: pymm {mine} != kernel {theirs}\nafter {self._trace()}"

    @precondition(lambda self: len(self.procs) < MAX_PROCS)
    @rule(which=st.integers(0, MAX_PROCS - 1))
    def fork(self, which):
        i, (m, h) = self._pick(which)
        self.procs.append((m.fork(), h.fork()))
        self.log.append((i, "fork"))
        STATS["forks"] += 1

    @rule(which=st.integers(0, MAX_PROCS - 1), slot=st.integers(0, SLOTS - 1),
          pages=st.sampled_from((1, 2, 16, 511, 512, 1024)), advice=st.sampled_from(FORK_ADVICE))
    def fork_advice(self, which, slot, pages, advice):
        self.step(Op("madvise", (BASE + slot * PMD, pages * PAGE, advice)), which)

    @precondition(lambda self: len(self.procs) > 1)
    @rule(which=st.integers(1, MAX_PROCS - 1))
    def exit(self, which):
        i = 1 + (which - 1) % (len(self.procs) - 1)
        m, h = self.procs.pop(i)
        h.close()
        del m
        gc.collect()                             # pymm reaps the process at the next call
        self.log.append((i, "exit"))

    def _trace(self):
        return "\n".join(f"  [{i}] {op}" for i, op in self.log)

    @invariant()
    def same_address_spaces(self):
        for i, (m, h) in enumerate(self.procs):
            mine = [(v.start, v.end, v.perms) for v in m.maps()]
            theirs = [(v.start, v.end, v.perms) for v in h.maps()]
            assert mine == theirs, f"process {i}: maps differ after\n{self._trace()}\n" \
                                   f"pymm:\n{m.format_maps()}\nkernel:\n{h.format_maps()}"
            for start, end, perms in mine:
                a, b = m.pagemap(start, end - start), h.pagemap(start, end - start)
                for bit, what in ((PRESENT, "present"), (EXCLUSIVE, "exclusively mapped")):
                    pa, pb = (a & bit) != 0, (b & bit) != 0
                    if not np.array_equal(pa, pb):
                        d = int(np.nonzero(pa != pb)[0][0])
                        raise AssertionError(f"process {i}: {what} pages differ in {start:#x}-{end:#x} "
                                             f"at {start + d * PAGE:#x} (pymm {bool(pa[d])}) after\n"
                                             f"{self._trace()}")
                if perms[0] == "r":
                    idx = np.nonzero((a & PRESENT) != 0)[0]
                    for k in idx[:: max(1, len(idx) // 4)][:6]:
                        addr = start + int(k) * PAGE
                        STATS["pages_compared"] += 1
                        assert m.read(addr, PAGE) == h.read(addr, PAGE), \
                            f"process {i}: contents differ at {addr:#x} after\n{self._trace()}"


TestForkDifferential = ForkDifferential.TestCase
TestForkDifferential.settings = settings(
    max_examples=400 if long_runs() else 20,
    stateful_step_count=40 if long_runs() else 15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(autouse=True)
def _needs_host(request):
    host_or_skip()


def test_hostmm_fork_gives_a_second_process_with_its_own_pipe():
    with host.HostMM() as h:
        a = h.mmap(0, 2 * PAGE, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
        h.write(a, b"parent")
        h.madvise(a + PAGE, PAGE, C.MADV_WIPEONFORK)
        h.write(a + PAGE, b"wiped")
        with h.fork() as c:
            c.write(a, b"child!")
            assert (h.read(a, 6), c.read(a, 6)) == (b"parent", b"child!")
            assert c.read(a + PAGE, 5) == bytes(5) and h.read(a + PAGE, 5) == b"wiped"
            assert c.format_maps() == h.format_maps()
        assert h.read(a, 6) == b"parent"          # the parent outlives its child


def test_the_same_program_on_both_sides_after_fork():
    m = pymm.MM(window=host.DEFAULT_WINDOW, check=True)
    with host.HostMM() as h:
        for p in (m, h):
            a = p.mmap(BASE, 4 * PMD, C.PROT_READ | C.PROT_WRITE,
                       C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
            p.madvise(a, 4 * PMD, C.MADV_HUGEPAGE)
            p.memset(a, 0x5A, 4 * PMD)
        cm, ch = m.fork(), h.fork()
        try:
            for p in (cm, ch):
                p.write(BASE + 3 * PAGE, b"c")
                p.mremap(BASE, 2 * PMD, 2 * PMD, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, BASE + 8 * PMD)
            for p in (m, h):
                p.munmap(BASE + 2 * PMD, PMD)
                p.write(BASE + 3 * PMD, b"p")
            for x, y in ((m, h), (cm, ch)):
                assert x.format_maps().split() == y.format_maps().split() or \
                    [(v.start, v.end, v.perms) for v in x.maps()] == [(v.start, v.end, v.perms) for v in y.maps()]
                for v in y.maps():
                    pa, pb = x.pagemap(v.start, v.end - v.start), y.pagemap(v.start, v.end - v.start)
                    assert np.array_equal((pa & PRESENT) != 0, (pb & PRESENT) != 0)
                    assert np.array_equal((pa & EXCLUSIVE) != 0, (pb & EXCLUSIVE) != 0)
                    assert x.read(v.start, PAGE) == y.read(v.start, PAGE)
        finally:
            ch.close()


def test_a_fork_childs_faulted_vma_does_not_merge_with_an_unfaulted_one():
    # is_mergeable_anon_vma() (6.13+): vma_had_uncowed_parents() refuses to hand a
    # forked anon_vma to, or take one from, a VMA without one.
    rwp = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
    m = pymm.MM(window=host.DEFAULT_WINDOW, check=True)
    with host.HostMM() as h:
        for p in (m, h):
            p.mmap(BASE, PAGE, C.PROT_READ | C.PROT_WRITE, rwp)
            p.write(BASE, b"x")
            p.mmap(BASE + 4 * PAGE, PAGE, C.PROT_READ, rwp)
        cm, ch = m.fork(), h.fork()
        try:
            for p in (m, h, cm, ch):
                p.mmap(BASE + PAGE, PAGE, C.PROT_READ | C.PROT_WRITE, rwp)     # next to the faulted VMA
                p.mmap(BASE + 3 * PAGE, PAGE, C.PROT_READ, rwp)                # next to an unfaulted one
            for x, y in ((m, h), (cm, ch)):
                assert [(v.start, v.end, v.perms) for v in x.maps()] == \
                    [(v.start, v.end, v.perms) for v in y.maps()]
            assert (m.map_count, cm.map_count) == (2, 3)
        finally:
            ch.close()
