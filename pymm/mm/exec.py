"""exec's stack: mm/vma_exec.c and fs/exec.c of Linux 6.18.

``create_init_stack_vma()`` places the new process's stack at
STACK_TOP_MAX and ``copy_strings()`` fills it with the arguments;
``setup_arg_pages()`` then moves it down with ``relocate_vma_down()``
(``shift_arg_pages()`` in fs/exec.c in older kernels): expand the VMA over the
old and new ranges, ``move_page_tables()`` with ``for_stack``, free the page
tables of the tail, shrink the VMA.  The ranges overlap when the shift is
smaller than the stack, which is what the July 2020 ``move_normal_pmd()``
warning was about.

Example (``mm.shift_arg_pages()`` is a thin wrapper around :func:`relocate_vma_down`)::

    >>> mm = pymm.MM(kernel="5.8")
    >>> start = create_init_stack_vma(mm, mm.task_size - (4 << 20), mm.task_size)
    >>> relocate_vma_down(mm, mm._tree.lookup(start), 2 << 20)
    >>> mm.warnings[0].location
    'mm/mremap.c:211'
"""
from __future__ import annotations

from typing import Optional

import mmcore
from pymm import constants as C
from pymm.errors import EFAULT, ENOMEM
from pymm.mm.memory import fault_range
from pymm.mm.mremap import move_page_tables
from pymm.mm.syscall import _Errno, _u64
from pymm.mm.vma import Vma, vma_adjust_trans_huge, vma_link


def create_init_stack_vma(mm, start: int, top: int) -> int:
    """create_init_stack_vma() + copy_strings(): the stack VMA [start, top),
    populated and stamped as arguments would fill it.  Returns its start."""
    flags = C.VM_STACK_FLAGS | C.VM_STACK_INCOMPLETE_SETUP | C.VM_SOFTDIRTY
    vma = vma_link(mm, Vma(start, top, flags, start >> mm.page_shift, name="[stack]"))
    fault_range(mm, vma, start, top, True)
    mmcore.stamp_pages(mm.engine, start, top)
    mm.start_stack = top - 8
    return start


EXEC_KILLED = ("exec failed after its point of no return (shift_arg_pages() returned -ENOMEM "
               "with the stack half-shifted): killed by SIGSEGV")


def exec_killed(mm) -> None:
    """The kernel's answer to a failed shift: setup_arg_pages() returns the
    error with the VMA expanded and the page tables moved, and exec, past
    its point of no return, kills the process (bprm_execve():
    force_fatal_sig(SIGSEGV)).  The MM keeps that half-shifted state and is
    dead: reads still work, every other call is refused."""
    mm._partial_ok = True
    mm.dead = EXEC_KILLED


def relocate_vma_down(mm, vma: Vma, shift: int, partial: Optional[int] = None) -> None:
    """relocate_vma_down(): move vma down by shift bytes; ``partial=n``
    stops after the first n bytes of the page-table move (see MM.shift_arg_pages)."""
    old_start, old_end = vma.start, vma.end
    length = old_end - old_start
    new_start, new_end = old_start - shift, old_end - shift
    if mm._tree.find_vma(new_start) is not vma:
        raise _Errno(EFAULT)                         # a VMA sits in between
    if not shift:
        vma.vm_flags &= ~C.VM_STACK_INCOMPLETE_SETUP    # setup_arg_pages(), after the shift
        return
    if partial is not None:
        partial = _u64(partial, "partial")
        if partial & mm._pmask or not 0 < partial <= length:
            raise ValueError("partial must be page aligned and within the VMA")
    mm._tree.set_start(vma, new_start)               # vma_expand()
    if partial is not None:
        move_page_tables(mm, vma, vma, old_start, new_start, partial, True)
        return
    moved = move_page_tables(mm, vma, vma, old_start, new_start, length, True)
    if moved != length:
        exec_killed(mm)
        raise _Errno(ENOMEM)                         # "rely on process cleanup"
    nxt = mm._tree.next(vma)
    ceiling = nxt.start if nxt is not None else 0
    if new_end > old_start:                          # overlapping: clear from new_end
        mmcore.free_pgd_range(mm.engine, new_end, old_end, new_end, ceiling)
    else:
        mmcore.free_pgd_range(mm.engine, old_start, old_end, new_end, ceiling)
    vma_adjust_trans_huge(mm, new_end)
    vma.end = new_end                                # vma_shrink()
    vma.vm_flags &= ~C.VM_STACK_INCOMPLETE_SETUP        # setup_arg_pages(), after the shift
    if mm.start_stack and old_start <= mm.start_stack < old_end:
        mm.start_stack -= shift
