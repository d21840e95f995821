"""Arches as data (issue 13, item 4): geometry, user space, HAVE_MOVE_PMD/PUD per
kernel version, walks in the arch's own descriptor format, every scenario on every arch."""
import warnings

import pytest

import pymm
from pymm import constants as C
from pymm import scenarios as S
from pymm.arches import ARCHES, get_arch, kernel_version
from pymm.walk import (ARM64_AF, ARM64_AP_RDONLY, ARM64_AP_USER, ARM64_DBM, ARM64_PXN, ARM64_TABLE,
                       ARM64_UXN, ARM64_VALID)

MiB, GiB = 1 << 20, 1 << 30
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS
ALL_ARCHES = list(ARCHES)


@pytest.mark.parametrize("arch,levels,page,pmd,task_size", [
    ("x86_64", 4, 4096, 2 * MiB, (1 << 47) - 4096),
    ("x86_64-la57", 5, 4096, 2 * MiB, (1 << 56) - 4096),
    ("i386-pae", 3, 4096, 2 * MiB, 0xC0000000),
    ("i386", 2, 4096, 4 * MiB, 0xC0000000),
    ("arm64-4k", 4, 4096, 2 * MiB, 1 << 48),
    ("arm64-16k", 4, 16384, 32 * MiB, 1 << 48),
    ("arm64-64k", 3, 65536, 512 * MiB, 1 << 48)])
def test_each_arch_has_its_geometry_and_user_space(arch, levels, page, pmd, task_size):
    mm = pymm.MM(arch=arch)
    assert (mm.geometry.levels, mm.page_size, mm.pmd_size, mm.task_size) == (levels, page, pmd, task_size)
    assert mm.stack_top == get_arch(arch).stack_top and mm.stack_top % page == 0
    assert mm.mmap_base < mm.stack_top and mm.mmap_base % page == 0
    a = mm.mmap(0, 3 * page, RW, ANON)                      # top-down, below the stack gap
    assert mm.mmap_min_addr <= a < mm.mmap_base
    start = mm.setup_exec_stack(arg_bytes=page)            # the stack at STACK_TOP_MAX
    assert mm.maps()[-1].end == mm.stack_top and start == mm.stack_top - page


def test_i386_boards_stack_top_is_pmd_aligned():
    for arch in ("i386", "i386-pae"):
        a = get_arch(arch)
        assert a.stack_top == 0xC0000000 and a.stack_top % a.geometry.pmd_size == 0


@pytest.mark.parametrize("arch,kernel,pmd,pud", [
    ("x86_64", "4.19", False, False), ("x86_64", "5.8", True, False), ("x86_64", "5.11", True, True),
    ("i386-pae", "5.8", True, False), ("i386-pae", "6.18", True, True),      # folded PUD: the PDPTE
    ("i386", "5.8", True, False), ("i386", "6.18", True, False),             # 2 levels: no move_normal_pud
    ("arm64-4k", "5.8", False, False), ("arm64-4k", "5.9", False, False),    # arm64: PMD since 5.10
    ("arm64-4k", "5.11", True, True), ("arm64-16k", "6.7", True, True),
    ("arm64-64k", "6.18", True, True)])
def test_have_move_pmd_and_pud_per_arch_and_kernel(arch, kernel, pmd, pud):
    m = pymm.Machine(kernel=kernel, arch=arch)
    assert (m.move_pmd, m.move_pud) == (pmd and pymm.KERNELS[kernel].pmd_moves, pud)
    mm = m.spawn(check=True)
    n = 4 * mm.pmd_size
    src, dst = mm.pmd_size * 64, mm.pmd_size * 128
    mm.mmap(src, n, RW, ANON | C.MAP_FIXED)
    mm.madvise(src, n, C.MADV_NOHUGEPAGE)
    mm.memset(src, 0x5A, n)
    mm.mremap(src, n, n, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, dst)
    ptes = n // mm.page_size
    assert mm.stats["pmd_moves"] == (4 if m.move_pmd else 0)
    assert mm.stats["pte_moves"] == (0 if m.move_pmd else ptes)
    assert mm.read(dst + n - 1, 1) == b"\x5a"


def test_pud_moves_where_the_arch_has_a_pud_level():
    for arch, expect in (("arm64-4k", 1), ("x86_64", 1), ("i386-pae", 1), ("i386", 0)):
        mm = pymm.Machine(kernel="6.18", arch=arch).spawn()
        src, dst = (1 * GiB, 2 * GiB) if arch.startswith("i386") else (4 * GiB, 8 * GiB)
        mm.mmap(src, GiB, RW, ANON | C.MAP_FIXED)
        mm.memset(src, 1, GiB)
        mm.mremap(src, GiB, GiB, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, dst)
        assert mm.stats["pud_moves"] == expect, arch
        assert mm.stats["pmd_moves"] == (0 if expect else GiB // mm.pmd_size), arch
        assert mm.read(dst + GiB - 1, 1) == b"\x01" and not pymm.check(mm), arch


def test_kernel_version_of_names():
    assert kernel_version("5.8+linus-v4") == (5, 8) and kernel_version("6.18") == (6, 18)
    assert kernel_version("mine") is None
    assert pymm.Machine(kernel=pymm.KERNELS["6.18"].replace(name="mine"), arch="arm64-4k").move_pmd


# -- walks in the arch's format -----------------------------------------------------------------
def _populated(arch, prot=RW, huge=False):
    mm = pymm.Machine(kernel="6.18", arch=arch, thp="always" if huge else "never").spawn()
    n = 2 * mm.pmd_size
    a = mm.mmap(0, n, RW, ANON)
    a2 = (a + mm.pmd_size - 1) & ~(mm.pmd_size - 1)
    mm.memset(a2 if huge else a, 7, mm.pmd_size if huge else mm.page_size)
    if prot != RW:
        mm.mprotect(a, mm.page_size, prot)
    return mm, (a2 if huge else a)


@pytest.mark.parametrize("arch", ["arm64-4k", "arm64-16k", "arm64-64k"])
def test_arm64_walk_prints_arm64_descriptors(arch):
    mm, a = _populated(arch)
    w = mm.walk(a)
    assert [s.level_name for s in w] == list(mm.geometry.level_names)
    for s in w.steps[:-1]:                                 # table descriptors: valid, table, PXNTable
        assert s.entry & 3 == 3 and s.flags[:2] == ("valid", "table") and "PXNTable" in s.flags
    leaf = w.steps[-1].entry                               # a page descriptor (bits 1:0 = 0b11)
    assert leaf & (ARM64_VALID | ARM64_TABLE) == 3 and "page" in w.steps[-1].flags
    assert leaf & ARM64_AF and leaf & ARM64_AP_USER and leaf & ARM64_PXN and leaf & ARM64_UXN
    assert leaf & ARM64_DBM and not leaf & ARM64_AP_RDONLY   # writable, dirty (AP[2] clear)
    assert (leaf & ((1 << 48) - 1)) >> mm.page_shift == w.frame   # output address, bits [47:page_shift]
    assert not any(f in s.flags for s in w for f in ("P", "RW", "US", "NX"))   # no x86 names
    text = str(w)
    assert f"({arch}, {mm.geometry.levels} levels)" in text and "AF" in text and "UXN" in text


def test_arm64_read_only_page_and_block():
    mm, a = _populated("arm64-4k", prot=C.PROT_READ)
    leaf = mm.walk(a).steps[-1].entry
    assert leaf & ARM64_AP_RDONLY and not leaf & ARM64_DBM
    mm, a = _populated("arm64-4k", huge=True)
    s = mm.walk(a).steps[-1]                               # a PMD block: bit 1 clear
    assert s.leads_to == "huge" and s.entry & 3 == 1 and "block" in s.flags


def test_i386_walks():
    mm, a = _populated("i386")
    w = mm.walk(a)
    assert [s.level_name for s in w] == ["pgd", "pte"]
    assert all(s.entry < 1 << 32 for s in w) and "NX" not in w.steps[-1].flags
    assert " 0x" in str(w) and len(f"{w.steps[-1].entry:#010x}") == 10
    mm, a = _populated("i386-pae")
    w = mm.walk(a)
    assert [s.level_name for s in w] == ["pgd", "pmd", "pte"]
    assert w.steps[0].flags == ("P",) and w.steps[0].entry & 0xFFF == 1    # a PDPTE: present only
    assert "NX" in w.steps[-1].flags                                         # PAE entries have NX


# -- the thread's scenarios on every arch -------------------------------------------------------
@pytest.mark.parametrize("arch", ALL_ARCHES)
def test_every_scenario_runs_on_every_arch(arch):
    for kernel in ("6.18", "5.8+linus-v2"):
        r = S.stack_shift_warning(kernel, arch=arch)
        assert r.data_intact
        r = S.kirill_test_case(kernel, arch=arch)
        assert r.data_intact == (kernel == "6.18")        # v2's overcopy, on every arch
        assert bool(r.orphans) == (kernel == "5.8+linus-v2")
        r = S.kirill_move_up(kernel, arch=arch)
        assert r.data_intact == (kernel == "6.18")
        r = S.pte_none_regression(kernel, arch=arch)
        half_table = get_arch(arch).geometry.entries("pte") // 2     # v2 walks from the PMD start
        assert r.data_intact
        assert r.details["pte_slots_visited"] == (8 if kernel == "6.18" else 8 + half_table)
    loop = S.naresh_runs("5.8", execs=64, arch=arch)
    assert loop.corrupted == 0 and loop.execs == 64


@pytest.mark.parametrize("arch", ["i386-pae", "i386"])
def test_the_warning_replays_on_naresh_boards(arch):
    r = S.stack_shift_warning("5.8", arch=arch)
    assert r.warned and "mm/mremap.c:211" in r.warnings[0] and r.data_intact
    assert not S.stack_shift_warning("6.18", arch=arch).warned
    m = pymm.Machine(kernel="5.9", arch=arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(5):
            mm = m.spawn()
            start = mm.setup_exec_stack(arg_bytes=9 * MiB)
            mm.shift_arg_pages(start, mm.pmd_size)
    assert len(m.warnings) == 1 and m.suppressed.get("pmd_not_none", 0) >= 4


def test_arm64_5_8_never_warns_it_had_no_move_pmd():
    assert not S.stack_shift_warning("5.8", arch="arm64-4k").warned


def test_unknown_arch_names_the_choices():
    with pytest.raises(ValueError, match="arm64-16k"):
        pymm.MM(arch="sparc")


# -- the command line -----------------------------------------------------------------------------
def _cli(capsys, *argv):
    from pymm.cli import main
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out + err


@pytest.mark.parametrize("arch", ALL_ARCHES)
def test_bench_runs_on_every_arch(arch, capsys):
    pmd = get_arch(arch).geometry.pmd_size
    rc, out = _cli(capsys, "bench", "--arch", arch, "--size", str(8 * pmd), "--reps", "1", "--no-host")
    assert rc == 0 and "PMD-aligned [6.18]" in out
    from pymm.bench import measure
    row = measure("6.18", "PMD-aligned", 8 * pmd, 1, arch=arch)
    assert row.path["pmd_moves"] == 8 and row.path["pte_moves"] == 0
    per_pte = measure("6.18", "per-PTE", 8 * pmd, 1, arch=arch)
    assert per_pte.path["pte_moves"] == 8 * pmd // get_arch(arch).page_size


def test_bench_refuses_sizes_the_arch_cannot_hold(capsys):
    rc, out = _cli(capsys, "bench", "--arch", "i386-pae", "--size", "2G", "--no-host")
    assert rc == 2 and "at most 1G" in out
    rc, out = _cli(capsys, "bench", "--arch", "arm64-64k", "--size", "64M", "--no-host")
    assert rc == 2 and "512 MiB" in out
    rc, out = _cli(capsys, "bench", "--arch", "arm64-64k", "--size", "1G", "--reps", "1", "--no-host")
    assert rc == 0 and "2 PMDs" in out                     # the 1 GiB table: two 512 MiB PMDs


def test_demo_replays_on_the_i386_board(capsys):
    rc, out = _cli(capsys, "demo", "--arch", "i386-pae", "--no-host", "--execs", "64")
    assert rc == 0 and "i386-pae: 3 levels" in out and "mm/mremap.c:211" in out


def test_show_and_kernels_take_arch(capsys):
    rc, out = _cli(capsys, "show", "--arch", "arm64-4k", "--kernel", "6.18", "--walk", "0xfffffee00000")
    assert rc == 0 and "arch arm64-4k" in out and "AP[2]=RO read-only" in out
    rc, out = _cli(capsys, "kernels", "--arch", "arm64-4k")
    lines = {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if ln[:1].isdigit()}
    assert lines["5.8"] == "PTE" and lines["5.11"] == "PTE/PMD/PUD" and lines["4.19"] == "PTE"
    rc, out = _cli(capsys, "kernels")
    assert "5.8            PTE/PMD " in out


def test_fuzz_runs_programs_on_an_arch_and_its_reproducer_names_it(capsys):
    from pymm.fuzz import Hit, evaluate
    from pymm.ops import Op
    b = 1 << 30
    prog = [Op("mmap", (b, 0x2000, RW, ANON | C.MAP_FIXED)), Op("memset", (b, 0x33, 0x2000)),
            Op("mremap", (b + 0x1000, 0x1000, 0x1000, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, b + 0x201000))]
    problems, warns, _ = evaluate(pymm.KERNELS["5.8+linus-v2"], prog, "i386-pae")
    assert any("orphan-pte" in p for p in problems)          # Linus's v2 overcopy, on the i386 board
    hit = Hit("5.8+linus-v2", prog, problems, warns, arch="i386-pae")
    assert "pymm.MM(kernel='5.8+linus-v2', arch='i386-pae')" in hit.python
    ns: dict = {}
    exec(hit.python, ns)
    assert ns["mm"].arch == "i386-pae" and "orphan-pte" in capsys.readouterr().out
    rc, out = _cli(capsys, "fuzz", "--arch", "arm64-16k", "--kernel", "6.18", "--max-examples", "20",
                   "--seconds", "20")
    assert rc == 0 and "on arm64-16k" in out


def test_show_demo_draws_the_stack_shift_on_an_arch(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc, out = _cli(capsys, "show", "--demo", "--arch", "i386-pae", "--kernels", "5.8", "--out", str(tmp_path))
    assert rc == 0 and [p.name for p in tmp_path.iterdir()] == ["stack-shift-5.8-i386-pae.png"]
