"""Issue 12 items 10 and 11, each checked on pymm and on this machine's kernel.

10. mprotect_fixup(): "Private VM_LOCKED VMA becoming writable: trigger COW to
    avoid major fault on access" (36f881883c57, 2016: every catalogued kernel).
11. MADV_FREE is EINVAL on shared memory (madvise_free_single_vma(): not
    anonymous); MADV_FREE, MADV_COLD and MADV_PAGEOUT are EINVAL on a
    VM_LOCKED VMA (madvise_dontneed_free_valid_vma(), can_madv_lru_vma());
    over part of a THP both split it.  Not modelled: since 6.12
    (b1f202060afe) the split maps zero-filled subpages to the shared zero
    page; the tests fill the THP with non-zero bytes, where both agree.
"""
import errno
import os

import numpy as np
import pytest

import pymm

from helpers import err, host_or_skip

P = 4096
M = 1 << 20
RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS
SHARED = pymm.MAP_SHARED | pymm.MAP_ANONYMOUS
PRESENT, EXCLUSIVE = np.uint64(1 << 63), np.uint64(1 << 56)



def targets():
    """pymm, and the host when it can run here."""
    from pymm import host
    out = [("pymm", lambda: pymm.MM(window=host.DEFAULT_WINDOW, check=True))]
    if host.available():
        out.append(("host", lambda: pin(host.HostMM())))
    return out


def pin(h):
    """The host helper on one CPU: MADV_PAGEOUT skips a page whose folio is still
    in another CPU's LRU-add batch (lru_add_drain() drains only the caller's)."""
    os.sched_setaffinity(h._proc.pid, {min(os.sched_getaffinity(0))})
    return h


def bits(mm, addr, n):
    """(present, exclusively mapped) per page: a COW-broken page is both; the zero page only present."""
    pm = mm.pagemap(addr, n * P)
    return [(bool(x & PRESENT), bool(x & EXCLUSIVE)) for x in pm]


def locked_made_writable(mm):
    a = mm.mmap(0, 4 * P, pymm.PROT_READ, ANON | pymm.MAP_LOCKED)
    before = bits(mm, a, 4)
    mm.mprotect(a, 4 * P, RW)
    return before, bits(mm, a, 4)


def test_mprotect_write_on_locked_populates():
    before, after = locked_made_writable(pymm.MM(check=True))
    assert before == [(True, False)] * 4          # MAP_LOCKED read-populates: the zero page
    assert after == [(True, True)] * 4            # COW broken: private pages


def test_mprotect_write_on_locked_matches_the_host():
    host_or_skip()
    from pymm import host
    with host.HostMM() as h:
        assert locked_made_writable(h) == locked_made_writable(pymm.MM(window=h.window))


def test_mprotect_write_on_unlocked_or_shared_does_not_populate():
    mm = pymm.MM(check=True)
    a = mm.mmap(0, 4 * P, pymm.PROT_READ, ANON)
    mm.mprotect(a, 4 * P, RW)
    s = mm.mmap(0, 4 * P, pymm.PROT_READ, SHARED | pymm.MAP_LOCKED)
    before = bits(mm, s, 4)
    mm.mprotect(s, 4 * P, RW)
    assert bits(mm, a, 4) == [(False, False)] * 4 and bits(mm, s, 4) == before


ADVICE_CASES = [
    ("FREE shared", SHARED, pymm.MADV_FREE, errno.EINVAL),
    ("COLD shared", SHARED, pymm.MADV_COLD, 0),
    ("PAGEOUT shared", SHARED, pymm.MADV_PAGEOUT, 0),
    ("FREE locked", ANON | pymm.MAP_LOCKED, pymm.MADV_FREE, errno.EINVAL),
    ("COLD locked", ANON | pymm.MAP_LOCKED, pymm.MADV_COLD, errno.EINVAL),
    ("PAGEOUT locked", ANON | pymm.MAP_LOCKED, pymm.MADV_PAGEOUT, errno.EINVAL),
    ("FREE private", ANON, pymm.MADV_FREE, 0),
    ("COLD private", ANON, pymm.MADV_COLD, 0),
]


@pytest.mark.parametrize("target", [t[0] for t in targets()])
@pytest.mark.parametrize("name,flags,advice,expected", ADVICE_CASES, ids=[c[0] for c in ADVICE_CASES])
def test_free_cold_validity(target, name, flags, advice, expected):
    mm = dict(targets())[target]()
    a = mm.mmap(0, 4 * P, RW, flags)
    mm.memset(a, 5, 4 * P)
    assert err(mm.madvise, a, 4 * P, advice) == expected
    assert mm.read(a, 4) == b"\x05" * 4          # no reclaim here: the data stays


def thp_then_advise(mm, advice, offset, length):
    """A THP (MADV_HUGEPAGE on an aligned 2 MiB, filled with 0x11), then
    ``advice`` over [offset, offset+length) of it.  Returns the anon THP
    bytes left (smaps AnonHugePages on the host) and the data."""
    a = mm.mmap(0, 4 * M, RW, ANON)
    b = (a + 2 * M - 1) & ~(2 * M - 1)
    mm.madvise(b, 2 * M, pymm.MADV_HUGEPAGE)
    mm.memset(b, 0x11, 2 * M)
    mm.madvise(b + offset, length, advice)
    return anon_huge(mm, b), mm.read(b + offset, 2), bits(mm, b, 512) == [(True, True)] * 512


def anon_huge(mm, addr):
    """AnonHugePages of the VMA holding addr, in kB."""
    if isinstance(mm, pymm.MM):
        return 2048 * sum(1 for r in mm.describe(addr, addr + 2 * M).ranges if r.page == "2M")
    cur = None
    with open(f"/proc/{mm._proc.pid}/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                cur = lo <= addr < hi
            elif cur and line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    raise AssertionError("no VMA")


THP_CASES = [(adv, off, n, split) for adv in (pymm.MADV_FREE, pymm.MADV_COLD, pymm.MADV_PAGEOUT)
             for off, n, split in ((0, P, True), (5 * P, 7 * P, True), (0, 2 * M, adv == pymm.MADV_PAGEOUT))]


@pytest.mark.parametrize("target", [t[0] for t in targets()])
@pytest.mark.parametrize("advice,offset,length,split", THP_CASES,
                         ids=[f"{a}-{o}-{n}" for a, o, n, _ in THP_CASES])
def test_free_cold_pageout_split_thps(target, advice, offset, length, split):
    # a partly covered THP is split by the advice; PAGEOUT of a whole one by reclaim
    # (shrink_folio_list(): no swap, add_to_swap() fails, split_folio_to_list())
    mm = dict(targets())[target]()
    huge, data, populated = thp_then_advise(mm, advice, offset, length)
    assert (huge, data, populated) == ((0 if split else 2048), b"\x11\x11", True)


@pytest.mark.parametrize("target", [t[0] for t in targets()])
def test_pageout_unmaps_shmem_pages_and_keeps_their_data(target):
    # madvise_cold_or_pageout_pte_range() -> reclaim_pages(): a shmem page mapped once is
    # unmapped and, with no swap, stays in the object; private anonymous pages stay mapped
    # (found by the differential run against this machine's kernel)
    mm = dict(targets())[target]()
    s = mm.mmap(0, 4 * P, RW, SHARED)
    a = mm.mmap(0, 4 * P, RW, ANON)
    for x in (s, a):
        mm.memset(x, 9, 4 * P)
        mm.madvise(x, 2 * P, pymm.MADV_PAGEOUT)
    assert [p for p, _ in bits(mm, s, 4)] == [False, False, True, True]
    assert [p for p, _ in bits(mm, a, 4)] == [True] * 4
    assert mm.read(s, 1) == mm.read(a, 1) == b"\x09"


@pytest.mark.parametrize("target", [t[0] for t in targets()])
def test_pageout_keeps_shmem_pages_mapped_twice(target):
    # MREMAP_DONTUNMAP of shared memory leaves the object mapped at both places; reclaim
    # skips a folio mapped more than once (found by the long differential run)
    mm = dict(targets())[target]()
    s = mm.mmap(0, 4 * P, RW, SHARED)
    mm.memset(s, 3, 4 * P)
    t = mm.mremap(s, 4 * P, 4 * P, pymm.MREMAP_MAYMOVE | pymm.MREMAP_DONTUNMAP)
    mm.read(s + 2 * P, 1)                        # refault two pages of the old place (fault-around maps all)
    mm.madvise(t, 4 * P, pymm.MADV_PAGEOUT)
    assert [p for p, _ in bits(mm, t, 4)] == [p for p, _ in bits(mm, s, 4)]
