"""Issue 12 item 1: where an anonymous mmap goes depends on the kernel.

THP alignment of anonymous mappings in __get_unmapped_area():
  up to 6.6  none (f35b5d7d676e, 6.1-rc1, was reverted by 0ba09b173387 before 6.1)
  6.7        efa7df3e3bb5: any length >= PMD_SIZE
  6.8+       ... d4148aeab412 later limits it to PMD-multiple lengths
MAP_STACK -> VM_NOHUGEPAGE: c4608d1bf7c6 (6.8).
"""
import pytest

import pymm
from pymm import host
from pymm.constants import VM_NOHUGEPAGE
from pymm.mm.mmap import calc_vm_flag_bits

from helpers import host_or_skip

M = 1 << 20
RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS


def grow_past_blocker(mm):
    """a = mmap(0, 4M) written, blocker at a+4M, mremap(a, 4M, 8M, MAYMOVE)."""
    a = mm.mmap(0, 4 * M, RW, ANON)
    mm.memset(a, 0x5A, 4 * M)
    mm.mmap(a + 4 * M, 4096, RW, ANON | pymm.MAP_FIXED)
    mm.reset_stats()
    b = mm.mremap(a, 4 * M, 8 * M, pymm.MREMAP_MAYMOVE)
    return a, b


def test_5_8_places_anon_mmap_off_the_pmd_and_moves_one_pmd_plus_512_ptes():
    mm = pymm.MM("5.8", check=True)
    a, b = grow_past_blocker(mm)
    assert a % (2 * M) != 0                       # no THP alignment on 5.8
    assert (mm.stats["pmd_moves"], mm.stats["pte_moves"]) == (1, 512)
    assert mm.read(b + 4 * M - 1, 1) == b"\x5a"


@pytest.mark.parametrize("kernel", ["4.19", "5.9", "5.11"])
def test_old_kernels_place_without_thp_alignment(kernel):
    mm = pymm.MM(kernel)
    assert mm.mmap(0, 4 * M, RW, ANON) % (2 * M) != 0


def test_6_7_aligns_any_length_from_one_pmd_6_18_only_pmd_multiples():
    assert pymm.MM("6.7").mmap(0, 3 * M, RW, ANON) % (2 * M) == 0
    assert pymm.MM("6.18").mmap(0, 3 * M, RW, ANON) % (2 * M) != 0
    assert pymm.MM("6.7").mmap(0, M, RW, ANON) % (2 * M) != 0       # below a PMD: no try


def test_6_18_moves_two_pmds():
    mm = pymm.MM("6.18", check=True)
    a, b = grow_past_blocker(mm)
    assert a % (2 * M) == 0 and b % (2 * M) == 0
    assert (mm.stats["pmd_moves"], mm.stats["pte_moves"]) == (2, 0)


def test_user_kernel_sets_placement():
    mine = pymm.KERNELS["6.18"].replace(thp_align="none")
    assert pymm.MM(mine).mmap(0, 4 * M, RW, ANON) % (2 * M) != 0
    with pytest.raises(ValueError, match="thp_align"):
        pymm.KERNELS["6.18"].replace(thp_align="sometimes")


def test_map_stack_nohugepage_is_6_8_on():
    assert calc_vm_flag_bits(pymm.MAP_STACK, True) & VM_NOHUGEPAGE
    assert not calc_vm_flag_bits(pymm.MAP_STACK, False) & VM_NOHUGEPAGE
    assert pymm.KERNELS["6.18"].map_stack_nohugepage
    assert not pymm.KERNELS["6.7"].map_stack_nohugepage
    assert not pymm.KERNELS["5.8"].map_stack_nohugepage


@pytest.mark.parametrize("length", [4 * M, 3 * M, M])
def test_6_18_placement_matches_the_host(length):
    host_or_skip()
    m = pymm.MM("6.18", window=host.DEFAULT_WINDOW)
    with host.HostMM() as h:
        # a read-only fence at the window's top: the mapping goes below it
        fence = [mm.mmap(0, 4096, pymm.PROT_READ, ANON) for mm in (m, h)]
        assert fence[0] == fence[1]
        a = [mm.mmap(0, length, RW, ANON) for mm in (m, h)]
        assert a[0] == a[1]
        if length == 4 * M:
            b = []
            for mm in (m, h):
                mm.memset(a[0], 0x5A, length)
                if a[0] + length != fence[0]:
                    mm.mmap(a[0] + length, 4096, RW, ANON | pymm.MAP_FIXED)
                b.append(mm.mremap(a[0], length, 2 * length, pymm.MREMAP_MAYMOVE))
            assert b[0] == b[1] and b[0] % (2 * M) == 0
        assert [(v.start, v.end) for v in m.maps()] == [(v.start, v.end) for v in h.maps()]
