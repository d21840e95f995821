"""Issue 12 item 12: CONFIG_PT_RECLAIM.

6375e95f381e ("mm: pgtable: reclaim empty PTE page in
madvise(MADV_DONTNEED)", v6.14-rc1): madvise_dontneed_single_vma() zaps with
``zap_details.reclaim_pt``; zap_pte_range() frees the PTE table when its
range is a whole PMD (reclaim_pt_is_enabled(): ``end - start >= PMD_SIZE``)
and every entry is then none (try_get_and_clear_pmd() + free_pte(), or
try_to_free_pte()'s rescan).  PT_RECLAIM depends on
ARCH_SUPPORTS_PT_RECLAIM, which only x86_64 selects (4817f70c25b6, also
6.14) up to 6.18.  So of the catalogue only 6.18 has it, on x86_64.
"""
import pytest

import pymm
from pymm import host

from helpers import host_or_skip

M = 1 << 20
RW = pymm.PROT_READ | pymm.PROT_WRITE
ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS
FIGURES = ("VmSize", "VmRSS", "RssAnon", "RssShmem", "VmPTE")


BASE = host.DEFAULT_WINDOW[0] + (1 << 30)     # inside the host's window, PMD-aligned


def two_pmds(mm, flags=ANON, at=BASE):
    """4 MiB at a PMD-aligned address, one page written in each PMD."""
    a = mm.mmap(at, 4 * M, RW, flags | pymm.MAP_FIXED)
    mm.write(a, b"x")
    mm.write(a + 2 * M, b"x")
    return a


def test_the_catalogue():
    assert [k for k, v in pymm.KERNELS.items() if v.pt_reclaim] == ["6.18"]
    with pytest.raises(TypeError, match="pt_reclaim"):
        pymm.KERNELS["6.18"].replace(pt_reclaim="yes")


@pytest.mark.parametrize("flags", [ANON, pymm.MAP_SHARED | pymm.MAP_ANONYMOUS], ids=["anon", "shmem"])
def test_dontneed_over_a_whole_pmd_frees_its_pte_table(flags):
    mm = pymm.MM(check=True)
    a = two_pmds(mm, flags)
    vmpte = mm.status()["VmPTE"]
    mm.reset_stats()
    mm.madvise(a, 2 * M, pymm.MADV_DONTNEED)
    assert mm.stats["pgtables_freed"] == 1 and mm.status()["VmPTE"] == vmpte - 4
    mm.madvise(a + 2 * M, 1 * M, pymm.MADV_DONTNEED)        # half a PMD: the table stays
    assert mm.stats["pgtables_freed"] == 1
    mm.madvise(a + 2 * M, 2 * M, pymm.MADV_DONTNEED)        # an emptied table goes too
    assert mm.stats["pgtables_freed"] == 2 and mm.status()["VmPTE"] == vmpte - 8


def test_a_pmd_split_between_two_vmas_keeps_its_table():
    """madvise works VMA by VMA: no one zap_pte_range() covers the PMD."""
    mm = pymm.MM(check=True)
    a = two_pmds(mm)
    mm.mprotect(a + 4096, 4096, pymm.PROT_READ)
    mm.reset_stats()
    mm.madvise(a, 2 * M, pymm.MADV_DONTNEED)
    assert mm.stats["pgtables_freed"] == 0


@pytest.mark.parametrize("kernel,arch", [("6.7", "x86_64"), ("6.18", "i386-pae"), ("6.18", "arm64-4k")])
def test_kernels_and_arches_without_it_keep_the_table(kernel, arch):
    mm = pymm.MM(kernel, arch, check=True)
    a = two_pmds(mm, at=1 << 30)
    mm.reset_stats()
    mm.madvise(a, 2 * M, pymm.MADV_DONTNEED)
    assert mm.stats["pgtables_freed"] == 0


def test_the_next_write_gets_a_thp():
    mm = pymm.MM(check=True)
    a = two_pmds(mm)
    mm.madvise(a, 4 * M, pymm.MADV_HUGEPAGE)
    mm.madvise(a, 2 * M, pymm.MADV_DONTNEED)
    before = mm.status()["RssAnon"]
    mm.write(a, b"y")
    assert mm.status()["RssAnon"] - before == 2048      # a PMD-sized folio, not one page
    assert mm.engine.deposited_tables == 1


def test_matches_the_host():
    host_or_skip()
    m = pymm.MM(window=host.DEFAULT_WINDOW, check=True)

    def steps(mm):
        a = two_pmds(mm)
        yield "two PTE tables"
        mm.madvise(a, 2 * M, pymm.MADV_DONTNEED)
        yield "DONTNEED over a whole PMD"
        mm.madvise(a + 2 * M, 1 * M, pymm.MADV_DONTNEED)
        yield "DONTNEED over half a PMD"
        mm.madvise(a + 2 * M, 2 * M, pymm.MADV_DONTNEED)
        yield "DONTNEED over an emptied PMD"
        mm.madvise(a, 4 * M, pymm.MADV_HUGEPAGE)
        mm.write(a, b"y")
        yield "the next write in a VM_HUGEPAGE VMA"
        b = two_pmds(mm, pymm.MAP_SHARED | pymm.MAP_ANONYMOUS, BASE + 64 * M)
        mm.madvise(b, 2 * M, pymm.MADV_DONTNEED)
        yield "shmem"
        mm.mprotect(b + 2 * M + 4096, 4096, pymm.PROT_READ)
        mm.write(b + 2 * M, b"s")
        mm.madvise(b + 2 * M, 2 * M, pymm.MADV_DONTNEED)
        yield "a PMD split between VMAs"

    with host.HostMM() as h:
        h0, m0 = h.status(), m.status()
        for label_m, label_h in zip(steps(m), steps(h)):
            dm = {k: m.status()[k] - m0[k] for k in FIGURES}
            dh = {k: h.status()[k] - h0[k] for k in FIGURES}
            assert dm == dh, f"after {label_m}: pymm {dm} host {dh}"
