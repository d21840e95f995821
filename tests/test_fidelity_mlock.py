"""Issue 12 item 2: an mlocked mapping grown by moving has its new part populated.

5.8 sys_mremap(): ``if (locked && new_len > old_len) mm_populate(new_addr +
old_len, new_len - old_len)`` after move_vma() (both the MAYMOVE and the
mremap_to() path set ``locked``); 6.17+: check_prep_vma() sets
``populate_expand`` and do_mremap() populates the same range.
"""
import numpy as np
import pytest

import pymm
from pymm import host

from helpers import host_or_skip

K = 1 << 10
M = 1 << 20
RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS
PRESENT = np.uint64(1 << 63)


def grow_locked(mm, fixed):
    """A 64 KiB MAP_LOCKED mapping under a read-only fence, grown to 128 KiB
    by moving (MAYMOVE, or FIXED to 16 MiB below).  Returns the new start."""
    fence = mm.mmap(0, 4096, pymm.PROT_READ, ANON)
    a = mm.mmap(0, 64 * K, RW, ANON | pymm.MAP_LOCKED)
    assert a + 64 * K == fence
    if fixed:
        return mm.mremap(a, 64 * K, 128 * K, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, a - 16 * M)
    return mm.mremap(a, 64 * K, 128 * K, pymm.MREMAP_MAYMOVE)


def present(mm, addr, length):
    return ((mm.pagemap(addr, length) & PRESENT) != 0).tolist()


@pytest.mark.parametrize("kernel", ["5.8", "6.18"])
@pytest.mark.parametrize("fixed", [False, True])
def test_locked_grow_by_move_populates_the_new_part(kernel, fixed):
    mm = pymm.MM(kernel, check=True)
    b = grow_locked(mm, fixed)
    assert present(mm, b, 128 * K) == [True] * 32


def test_unlocked_grow_by_move_does_not_populate():
    mm = pymm.MM(check=True)
    fence = mm.mmap(0, 4096, pymm.PROT_READ, ANON)
    a = mm.mmap(fence - 64 * K, 64 * K, RW, ANON | pymm.MAP_FIXED)
    mm.memset(a, 1, 64 * K)
    b = mm.mremap(a, 64 * K, 128 * K, pymm.MREMAP_MAYMOVE)
    assert present(mm, b, 128 * K) == [True] * 16 + [False] * 16


@pytest.mark.parametrize("fixed", [False, True])
def test_locked_grow_by_move_matches_the_host(fixed):
    host_or_skip()
    m = pymm.MM(window=host.DEFAULT_WINDOW, check=True)
    with host.HostMM() as h:
        b = [grow_locked(mm, fixed) for mm in (m, h)]
        assert b[0] == b[1]
        assert present(m, b[0], 128 * K) == present(h, b[1], 128 * K) == [True] * 32
