"""Issue 12 item 3: exec's temporary stack never gets THP.

__transparent_hugepage_enabled() / thp_vma_allowable_order() refuse a VMA
for which vma_is_temporary_stack() holds (VM_GROWSDOWN with both bits of
VM_STACK_INCOMPLETE_SETUP), and setup_arg_pages() clears
VM_STACK_INCOMPLETE_SETUP once the stack has been shifted (fs/exec.c).
"""
import pytest

import pymm
from pymm.constants import VM_STACK_INCOMPLETE_SETUP

M = 1 << 20


@pytest.mark.filterwarnings("ignore::pymm.KernelWarning")
@pytest.mark.parametrize("kernel", ["5.8", "6.7", "6.18"])
def test_temporary_stack_gets_no_thp_under_always(kernel):
    mm = pymm.MM(kernel, thp="always")
    start = mm.setup_exec_stack(8 * M)
    assert mm.stats["huge_pmd_moves"] == 0
    mm.shift_arg_pages(start, 2 * M)
    assert [w for w in mm.warnings if w.function.startswith("move_huge_pmd")] == []
    assert mm.stats["huge_pmd_moves"] == 0


@pytest.mark.parametrize("shift", [0, 2 * M])
def test_setup_arg_pages_clears_incomplete_setup_after_the_shift(shift):
    mm = pymm.MM("6.18")
    start = mm.setup_exec_stack(1 * M)
    assert mm._tree.lookup(start).vm_flags & VM_STACK_INCOMPLETE_SETUP == VM_STACK_INCOMPLETE_SETUP
    mm.shift_arg_pages(start, shift)
    assert not mm._tree.lookup(start - shift).vm_flags & VM_STACK_INCOMPLETE_SETUP


def test_partial_shift_keeps_the_stack_temporary():
    mm = pymm.MM("5.8")
    start = mm.setup_exec_stack(4 * M)
    mm.shift_arg_pages(start, 2 * M, partial=2 * M)
    assert mm._tree.lookup(start - 2 * M).vm_flags & VM_STACK_INCOMPLETE_SETUP


# -- item 7: a failed shift kills the process, with or without check=True ----------------------
@pytest.mark.filterwarnings("ignore::pymm.KernelWarning")
@pytest.mark.parametrize("check", [False, True])
def test_failed_shift_kills_the_process_half_shifted(check):
    # 5.8+linus-v4: try_to_align_end() inflates move_page_tables()'s return past the
    # stack's unaligned end, so shift_arg_pages()'s "length != move_page_tables()" is
    # -ENOMEM after every table moved; the VMA is still expanded ([new_start, old_end)),
    # and bprm_execve(), past the point of no return, force_fatal_sig(SIGSEGV)s.
    mm = pymm.MM("5.8+linus-v4", check=check)
    start = mm.setup_exec_stack(4 * M)
    top = mm.maps()[0].end
    with pytest.raises(OSError) as e:
        mm.shift_arg_pages(start, 2 * M)
    assert e.value.errno == 12
    assert "SIGSEGV" in mm.dead
    assert [(v.start, v.end) for v in mm.maps()] == [(start - 2 * M, top)]
    assert pymm.check(mm) == []
    assert mm.read(start - 2 * M, 8) == (start >> 12).to_bytes(8, "little")   # the stamp moved down
    with pytest.raises(pymm.KernelOops, match="dead MM"):
        mm.mmap(0, 4096, pymm.PROT_READ, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)


@pytest.mark.filterwarnings("ignore::pymm.KernelWarning")
def test_successful_shift_leaves_the_process_alive():
    mm = pymm.MM("5.8", check=True)
    start = mm.setup_exec_stack(4 * M)
    mm.shift_arg_pages(start, 2 * M)
    assert mm.dead is None
    mm.mmap(0, 4096, pymm.PROT_READ, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
