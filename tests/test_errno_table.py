"""A table of bad (and borderline) calls, run on pymm and on this machine's
kernel; errno, return value and the resulting maps must agree.

Each row: a setup (mappings made with MAP_FIXED inside the window) and one
call.  pymm runs with check=True, so a failed call that changed anything, or a
broken invariant, fails the row on the pymm side as well.
"""
import errno

import pytest

import mmcore
import pymm
from pymm import host

from helpers import GiB, MiB, PAGE, PRIV, RW, SHARED, host_or_skip

W = host.DEFAULT_WINDOW[0] + 64 * GiB      # a quiet spot inside the window
A = W + GiB                                 # where setups put their mapping
TASK = 0x7FFFFFFFF000
U64 = (1 << 64) - 1
FIXED = pymm.MAP_FIXED
MAY, FIX, DONT = pymm.MREMAP_MAYMOVE, pymm.MREMAP_FIXED, pymm.MREMAP_DONTUNMAP

PRIV4 = [("mmap", A, 4 * PAGE, RW, PRIV | FIXED)]
SHARED4 = [("mmap", A, 4 * PAGE, RW, SHARED | FIXED)]
TWO_VMAS = [("mmap", A, 4 * PAGE, RW, PRIV | FIXED), ("mprotect", A + 2 * PAGE, PAGE, pymm.PROT_READ)]
GAP = [("mmap", A, PAGE, RW, PRIV | FIXED), ("mmap", A + 2 * PAGE, PAGE, RW, PRIV | FIXED)]
BLOCKED = [("mmap", A, 4 * PAGE, RW, PRIV | FIXED), ("mmap", A + 4 * PAGE, PAGE, pymm.PROT_READ, PRIV | FIXED)]

ROWS = [
    # -- mmap ----------------------------------------------------------------------
    ("mmap len 0", [], ("mmap", A, 0, RW, PRIV)),
    ("mmap len beyond the address space", [], ("mmap", 0, 1 << 47, RW, PRIV)),
    ("mmap len 2**64-1", [], ("mmap", 0, U64, RW, PRIV)),
    ("mmap len -4096 (2**64-4096)", [], ("mmap", 0, -PAGE, RW, PRIV)),
    ("mmap len rounding to 2**64", [], ("mmap", 0, U64 - 10, RW, PRIV)),
    ("mmap MAP_FIXED unaligned", [], ("mmap", A + 1, PAGE, RW, PRIV | FIXED)),
    ("mmap neither shared nor private", [], ("mmap", 0, PAGE, RW, pymm.MAP_ANONYMOUS)),
    ("mmap MAP_SHARED|MAP_PRIVATE", [], ("mmap", 0, PAGE, RW, SHARED | PRIV)),
    ("mmap MAP_SHARED_VALIDATE anon", [], ("mmap", 0, PAGE, RW, 3 | pymm.MAP_ANONYMOUS)),
    ("mmap unknown flag is ignored", [], ("mmap", A, PAGE, RW, PRIV | 0x4000000)),
    ("mmap unknown prot bits are ignored", [], ("mmap", A, PAGE, 0x100 | pymm.PROT_READ, PRIV)),
    ("mmap offset unaligned", [], ("mmap", 0, PAGE, RW, PRIV, -1, 1)),
    ("mmap offset ignored for anon", [], ("mmap", A, PAGE, RW, PRIV, -1, 5 * PAGE)),
    ("mmap fd ignored for anon", [], ("mmap", A, PAGE, RW, PRIV, 5, 0)),
    ("mmap without MAP_ANONYMOUS", [], ("mmap", 0, PAGE, RW, pymm.MAP_PRIVATE)),
    ("mmap MAP_FIXED beyond task_size", [], ("mmap", TASK - PAGE, 2 * PAGE, RW, PRIV | FIXED)),
    ("mmap MAP_FIXED_NOREPLACE over a mapping", PRIV4, ("mmap", A, PAGE, RW, PRIV | pymm.MAP_FIXED_NOREPLACE)),
    ("mmap MAP_FIXED_NOREPLACE half over", PRIV4, ("mmap", A - PAGE, 2 * PAGE, RW, PRIV | pymm.MAP_FIXED_NOREPLACE)),
    ("mmap MAP_FIXED_NOREPLACE unaligned", [], ("mmap", A + 1, PAGE, RW, PRIV | pymm.MAP_FIXED_NOREPLACE)),
    ("mmap MAP_FIXED replaces", PRIV4, ("mmap", A + PAGE, PAGE, pymm.PROT_READ, PRIV | FIXED)),
    ("mmap hint taken when free", [], ("mmap", A + 3 * PAGE, PAGE, RW, PRIV)),
    ("mmap unaligned hint rounds down", [], ("mmap", A + 123, PAGE, RW, PRIV)),
    ("mmap hint over a mapping moves", PRIV4, ("mmap", A, PAGE, RW, PRIV)),
    ("mmap MAP_SHARED|MAP_GROWSDOWN", [], ("mmap", A, PAGE, RW, SHARED | pymm.MAP_GROWSDOWN)),
    ("mmap merges with its neighbour", PRIV4, ("mmap", A + 4 * PAGE, PAGE, RW, PRIV | FIXED)),
    # -- munmap ---------------------------------------------------------------------
    ("munmap len 0", PRIV4, ("munmap", A, 0)),
    ("munmap unaligned", PRIV4, ("munmap", A + 1, PAGE)),
    ("munmap nothing there", [], ("munmap", A, PAGE)),
    ("munmap beyond task_size", [], ("munmap", TASK - PAGE, 2 * PAGE)),
    ("munmap len 2**64-4096", PRIV4, ("munmap", A, -PAGE)),
    ("munmap unaligned length rounds up", PRIV4, ("munmap", A, 1)),
    ("munmap the middle", PRIV4, ("munmap", A + PAGE, PAGE)),
    ("munmap across a gap", GAP, ("munmap", A, 3 * PAGE)),
    # -- mprotect -------------------------------------------------------------------------
    ("mprotect unmapped", [], ("mprotect", A, PAGE, pymm.PROT_READ)),
    ("mprotect len 0", [], ("mprotect", A, 0, pymm.PROT_READ)),
    ("mprotect unaligned", PRIV4, ("mprotect", A + 1, PAGE, pymm.PROT_READ)),
    ("mprotect bad prot", PRIV4, ("mprotect", A, PAGE, 0x100)),
    ("mprotect PROT_SEM accepted", PRIV4, ("mprotect", A, PAGE, pymm.PROT_READ | 8)),
    ("mprotect GROWSDOWN|GROWSUP", PRIV4, ("mprotect", A, PAGE, 0x03000000)),
    ("mprotect GROWSDOWN on a plain VMA", PRIV4, ("mprotect", A, PAGE, 0x01000000 | 1)),
    ("mprotect length wraps", PRIV4, ("mprotect", A, -PAGE, pymm.PROT_READ)),
    ("mprotect over a gap: first part changes", GAP, ("mprotect", A, 3 * PAGE, pymm.PROT_READ)),
    ("mprotect starting in a gap", GAP, ("mprotect", A + PAGE, 2 * PAGE, pymm.PROT_READ)),
    ("mprotect merges back", TWO_VMAS, ("mprotect", A + 2 * PAGE, PAGE, RW)),
    # -- madvise -------------------------------------------------------------------------------
    ("madvise unmapped", [], ("madvise", A, PAGE, pymm.MADV_DONTNEED)),
    ("madvise len 0", [], ("madvise", A, 0, pymm.MADV_DONTNEED)),
    ("madvise unaligned", PRIV4, ("madvise", A + 1, PAGE, pymm.MADV_DONTNEED)),
    ("madvise bad advice", PRIV4, ("madvise", A, PAGE, 999)),
    ("madvise len rounding to 0", PRIV4, ("madvise", A, U64 - 10, pymm.MADV_DONTNEED)),
    ("madvise hugepage over a gap", GAP, ("madvise", A, 3 * PAGE, pymm.MADV_HUGEPAGE)),
    ("madvise nohugepage splits", PRIV4, ("madvise", A + PAGE, PAGE, pymm.MADV_NOHUGEPAGE)),
    # -- mremap -------------------------------------------------------------------------------
    ("mremap unmapped source", [], ("mremap", A, PAGE, PAGE, 0)),
    ("mremap unaligned source", PRIV4, ("mremap", A + 1, PAGE, PAGE, 0)),
    ("mremap new_size 0", PRIV4, ("mremap", A, PAGE, 0, 0)),
    ("mremap unknown flags", PRIV4, ("mremap", A, PAGE, PAGE, 8)),
    ("mremap FIXED without MAYMOVE", PRIV4, ("mremap", A, PAGE, PAGE, FIX, W)),
    ("mremap DONTUNMAP without MAYMOVE", PRIV4, ("mremap", A, PAGE, PAGE, DONT, 0)),
    ("mremap DONTUNMAP with a size change", PRIV4, ("mremap", A, PAGE, 2 * PAGE, MAY | DONT, 0)),
    ("mremap FIXED overlapping ranges", PRIV4, ("mremap", A, 2 * PAGE, 2 * PAGE, MAY | FIX, A + PAGE)),
    ("mremap FIXED unaligned destination", PRIV4, ("mremap", A, PAGE, PAGE, MAY | FIX, W + 1)),
    ("mremap FIXED beyond task_size", PRIV4, ("mremap", A, PAGE, PAGE, MAY | FIX, TASK)),
    ("mremap old_size 0 on private memory", PRIV4, ("mremap", A, 0, PAGE, MAY)),
    ("mremap old_size 0 on shared memory", SHARED4, ("mremap", A, 0, PAGE, MAY)),
    ("mremap expand, no room, no MAYMOVE", BLOCKED, ("mremap", A, 4 * PAGE, 8 * PAGE, 0)),
    ("mremap expand, no room, MAYMOVE", BLOCKED, ("mremap", A, 4 * PAGE, 8 * PAGE, MAY)),
    ("mremap expand in place", PRIV4, ("mremap", A, 4 * PAGE, 8 * PAGE, 0)),
    ("mremap expand across the VMA end", PRIV4, ("mremap", A + PAGE, 4 * PAGE, 8 * PAGE, MAY)),
    ("mremap same size beyond the VMA", PRIV4, ("mremap", A, 8 * PAGE, 8 * PAGE, 0)),
    ("mremap same size is a no-op", PRIV4, ("mremap", A + PAGE, PAGE, PAGE, MAY)),
    ("mremap shrink", PRIV4, ("mremap", A, 4 * PAGE, PAGE, 0)),
    ("mremap shrink across a gap", GAP, ("mremap", A, 3 * PAGE, PAGE, 0)),
    ("mremap new_size beyond the address space", PRIV4, ("mremap", A, PAGE, 1 << 47, MAY)),
    ("mremap new_size 2**64-1", PRIV4, ("mremap", A, PAGE, U64, MAY)),
    ("mremap old_size huge (shrink beyond)", PRIV4, ("mremap", A, 1 << 47, PAGE, 0)),
    ("mremap FIXED move with a gap at the start", GAP, ("mremap", A - PAGE, 3 * PAGE, 3 * PAGE, MAY | FIX, W)),
    ("mremap FIXED move of two VMAs and a gap", GAP, ("mremap", A, 3 * PAGE, 3 * PAGE, MAY | FIX, W)),
    ("mremap FIXED move of a VMA pair", TWO_VMAS, ("mremap", A, 4 * PAGE, 4 * PAGE, MAY | FIX, W)),
    ("mremap DONTUNMAP of a shared mapping", SHARED4, ("mremap", A, 4 * PAGE, 4 * PAGE, MAY | DONT, W)),
    ("mremap FIXED shrink", PRIV4, ("mremap", A, 4 * PAGE, 2 * PAGE, MAY | FIX, W)),
    ("mremap FIXED grow", PRIV4, ("mremap", A, 2 * PAGE, 4 * PAGE, MAY | FIX, W)),
    ("mremap MAYMOVE expand across VMAs", TWO_VMAS, ("mremap", A, 4 * PAGE, 8 * PAGE, MAY)),
]


def outcome(mm, call):
    name, *args = call
    try:
        return "ok", getattr(mm, name)(*args)
    except OSError as e:
        return "errno", errno.errorcode[e.errno]


def run_row(mm, setup, call):
    for s in setup:
        outcome(mm, s)
    result = outcome(mm, call)
    maps = [(v.start, v.end, v.perms) for v in mm.maps()]
    return result, maps


@pytest.mark.parametrize("name,setup,call", ROWS, ids=[r[0] for r in ROWS])
def test_errno_table_matches_this_kernel(name, setup, call):
    host_or_skip()
    mine = run_row(pymm.MM(window=host.DEFAULT_WINDOW, check=True), setup, call)
    with host.HostMM() as h:
        theirs = run_row(h, setup, call)
    assert mine == theirs


EXPECTED = {  # what Linux 6.18 answers; pinned so the table means something without a host
    "mmap len 0": "EINVAL", "mmap len beyond the address space": "ENOMEM",
    "mmap MAP_FIXED unaligned": "EINVAL", "mmap neither shared nor private": "EINVAL",
    "mmap without MAP_ANONYMOUS": "EBADF", "mmap MAP_FIXED_NOREPLACE over a mapping": "EEXIST",
    "munmap len 0": "EINVAL", "munmap beyond task_size": "EINVAL", "mprotect unmapped": "ENOMEM",
    "madvise bad advice": "EINVAL", "mremap unmapped source": "EFAULT",
    "mremap FIXED without MAYMOVE": "EINVAL", "mremap DONTUNMAP with a size change": "EINVAL",
    "mremap FIXED overlapping ranges": "EINVAL", "mremap old_size 0 on private memory": "EINVAL",
    "mremap expand, no room, no MAYMOVE": "ENOMEM", "mremap expand across the VMA end": "EFAULT",
    "mremap FIXED move with a gap at the start": "EFAULT",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_errno_table_pinned(name):
    setup, call = next((r[1], r[2]) for r in ROWS if r[0] == name)
    (kind, value), _ = run_row(pymm.MM(window=host.DEFAULT_WINDOW, check=True), setup, call)
    assert (kind, value) == ("errno", EXPECTED[name])


def test_a_failed_call_changes_nothing():
    mm = pymm.MM(check=True)
    a = mm.mmap(0, 4 * PAGE, RW, PRIV)
    mm.memset(a, 1, 4 * PAGE)
    before = (mm.format_maps(), mmcore.digest(mm.engine))
    for call in (("mremap", a, 2 * PAGE, 2 * PAGE, MAY | FIX, a + PAGE),
                 ("mremap", a, PAGE, 2 * PAGE, MAY | DONT, 0),
                 ("mmap", a, PAGE, RW, PRIV | pymm.MAP_FIXED_NOREPLACE),
                 ("munmap", a + 1, PAGE),
                 ("mremap", a, 4 * PAGE, 8 * PAGE, 8)):
        with pytest.raises(OSError):
            getattr(mm, call[0])(*call[1:])
        assert (mm.format_maps(), mmcore.digest(mm.engine)) == before
