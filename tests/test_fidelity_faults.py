"""Issue 12 items 9 and 13, on pymm and on this machine's kernel.

9.  A read fault in a VM_HUGEPAGE VMA prepares an anon_vma only where it
    tries a huge PMD (do_huge_pmd_anonymous_page(): the PMD inside the VMA,
    thp_vma_suitable_order(), and empty, before vmf_anon_prepare()).
    Elsewhere it maps the zero page, and mprotect() can then drop VM_ACCOUNT.
13. unmapped_area_topdown() since 58c5d0d6d522 (6.3): when the VMA above the
    highest empty range is VM_GROWSDOWN and its guard gap reaches into that
    range, the search is retried below the guard gap's start.  The rbtree
    search of 4.19-5.x (mm/mmap.c of v5.8: ``gap_end = vm_start_gap(vma)``
    for each gap) clips each gap by its own upper VMA only.
"""
import pytest

import pymm
from pymm import host

from helpers import host_or_skip

P = 4096
M = 1 << 20
GUARD = 256 * P
RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS


def vm_flags_of(mm):
    """Per VMA: (start, accounted, has an anon_vma) - smaps' "ac" and
    pagemap-free evidence on the host (an anon_vma lets the VMAs' pgoff stay)."""
    if isinstance(mm, pymm.MM):
        return [(v.start, bool(v.vm_flags & pymm.VM_ACCOUNT)) for v in mm.maps()]
    out, start = [], None
    with open(f"/proc/{mm._proc.pid}/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start = int(head.split("-")[0], 16)
            elif line.startswith("VmFlags:") and mm.window[0] <= start < mm.window[1]:
                out.append((start, "ac" in line.split()))
    return out


def hugepage_read_then_protnone(mm, pages):
    """The issue's reproducer: mmap(pages), MADV_HUGEPAGE, read, mprotect(first page, NONE)."""
    a = mm.mmap(0, pages * P, RW, ANON)
    mm.madvise(a, pages * P, pymm.MADV_HUGEPAGE)
    mm.read(a, 1)
    mm.mprotect(a, P, pymm.PROT_NONE)
    return [(s - a, ac) for s, ac in vm_flags_of(mm)]


def test_read_fault_without_a_huge_pmd_prepares_no_anon_vma():
    mm = pymm.MM(check=True)
    assert hugepage_read_then_protnone(mm, 16) == [(0, False), (P, True)]   # VM_ACCOUNT dropped
    assert all(v.anon_vma is None for v in mm.maps())


def test_read_fault_with_a_huge_pmd_prepares_the_anon_vma():
    mm = pymm.MM(check=True)
    a = mm.mmap(0, 4 * M, RW, ANON)
    b = (a + 2 * M - 1) & ~(2 * M - 1)
    mm.madvise(a, 4 * M, pymm.MADV_HUGEPAGE)
    mm.read(b, 1)                                   # the huge zero page, after vmf_anon_prepare()
    assert [v.anon_vma is not None for v in mm.maps()] == [True]
    assert [r.page for r in mm.describe(b, b + 2 * M).ranges] == ["2M"]


@pytest.mark.parametrize("pages", [16, 1024])
def test_hugepage_read_matches_the_host(pages):
    host_or_skip()
    with host.HostMM() as h:
        assert hugepage_read_then_protnone(h, pages) == \
            hugepage_read_then_protnone(pymm.MM(window=h.window, check=True), pages)


def guarded_layout(mm, y_off, gap1, n):
    """A stack G at the top of the window, a VMA Y y_off pages below G's
    start (inside G's 256-page guard gap when y_off < 256), a VMA X gap1
    pages below Y; then mmap(n pages).  Returns where it went, in pages
    relative to G's guard-gap start."""
    lo, hi = mm.window
    g = mm.mmap(hi - 16 * P, 16 * P, RW, ANON | pymm.MAP_FIXED | pymm.MAP_GROWSDOWN)
    y = mm.mmap(g - y_off * P, 4 * P, pymm.PROT_READ, ANON | pymm.MAP_FIXED)
    mm.mmap(y - gap1 * P - 16 * P, 16 * P, RW, ANON | pymm.MAP_FIXED)
    return (mm.mmap(0, n * P, RW, ANON) - (g - GUARD)) // P


LAYOUTS = [  # y_off, gap1, n -> 6.18's answer (pages from the guard gap's start)
    (100, 400, 4, -4),      # the gap above Y fits: retried below G's guard gap, ends at it
    (100, 400, 200, -44),   # it does not: the range below Y is found first, used up to Y
    (250, 10, 4, -4),       # Y's lower gap ends inside the guard gap: clipped there
    (250, 3, 4, -17),       # clipped, too small: below X
    (100, 170, 4, -4),
]


@pytest.mark.parametrize("y_off,gap1,n,expected", LAYOUTS)
def test_topdown_search_below_a_stack_guard_gap(y_off, gap1, n, expected):
    mm = pymm.MM(window=host.DEFAULT_WINDOW, check=True)
    assert guarded_layout(mm, y_off, gap1, n) == expected


@pytest.mark.parametrize("y_off,gap1,n,expected", LAYOUTS)
def test_topdown_search_matches_the_host(y_off, gap1, n, expected):
    host_or_skip()
    with host.HostMM() as h:
        assert guarded_layout(h, y_off, gap1, n) == expected


def test_rbtree_search_of_older_kernels_clips_each_gap():
    # v5.8 mm/mmap.c unmapped_area_topdown(): gap_end = vm_start_gap(vma) per gap, the
    # highest that fits: the gap above Y lies inside G's guard gap, so the gap below Y
    # is used up to Y's start, where 6.18 stops at the guard gap's start (-4).
    mm = pymm.MM("5.8", window=host.DEFAULT_WINDOW, check=True)
    assert guarded_layout(mm, 100, 400, 4) == 256 - 100 - 4
    assert pymm.KERNELS["5.8"].unmapped_area == "rbtree" and pymm.KERNELS["6.7"].unmapped_area == "maple"
