"""Issue 12 item 4: where the "destination PMD already established" warning reports.

Up to 5.10 the WARN sits in move_normal_pmd(), inlined into
move_page_tables(); from 5.11 (c49dd3401802) move_page_tables() reaches it
through move_pgt_entry(), so real reports read "at mm/mremap.c:NNN
move_pgt_entry+0x.../0x...".
"""
import pytest

import pymm

M = 1 << 20


def stack_shift_warnings(kernel):
    mm = pymm.MM(kernel)
    start = mm.setup_exec_stack(4 * M, top=mm.task_size - 4 * M)
    # the overlapping shift of the 2020 thread, with for_stack off as 5.x passed it
    mm.move_page_tables(start, start - 2 * M, 4 * M)
    return mm.warnings


@pytest.mark.filterwarnings("ignore::pymm.KernelWarning")
@pytest.mark.parametrize("kernel,function", [("5.8", "move_page_tables"),
                                             ("5.9", "move_page_tables"),
                                             ("5.11", "move_pgt_entry"),
                                             ("6.18", "move_pgt_entry")])
def test_pmd_warning_names_the_function_of_that_release(kernel, function):
    ws = [w for w in stack_shift_warnings(kernel) if "PMD already established" in w.message]
    assert ws and ws[0].function == function
    assert ws[0].location.startswith("mm/mremap.c")


def test_pud_site_is_move_pgt_entry_from_5_11():
    assert pymm.KERNELS["5.11"].site("pud_not_none").function == "move_pgt_entry"
    assert pymm.KERNELS["6.7"].site("pmd_not_none").function == "move_pgt_entry"
    assert pymm.KERNELS["5.9"].site("pmd_not_none").location == "mm/mremap.c:230"
