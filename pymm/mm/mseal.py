"""mseal(): mm/mseal.c of Linux 6.18 (the syscall is 6.10+, 8be7258aad44).

``do_mseal()`` marks every VMA of a fully mapped range VM_SEALED (merging
or splitting as any flag change does).  A sealed VMA cannot be unmapped,
moved, grown, given a new protection or, when it is private anonymous
memory the process cannot write, discarded by madvise: those calls fail
with EPERM.  The checks sit where 6.18 has them (``can_modify_vma()``):
munmap and MAP_FIXED check the whole range before changing anything;
mprotect and madvise check each VMA as they reach it, so the VMAs before
a sealed one keep the change.  (6.10's first version checked the whole
range up front in every call, ``can_modify_mm()``; pymm models the 6.18
placement for every kernel that has mseal.)

Example (``mm.mseal()`` is a thin wrapper around :func:`do_mseal`)::

    >>> a = mm.mmap(0, 4096, pymm.PROT_READ, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> do_mseal(mm, a, 4096, 0)
    >>> mm.munmap(a, 4096)
    Traceback (most recent call last):
    PermissionError: [Errno 1] Operation not permitted [munmap]
"""
from __future__ import annotations

import errno as _errno

from pymm import constants as C
from pymm.errors import EINVAL, ENOMEM
from pymm.mm.syscall import U64, _Errno
from pymm.mm.vma import Vma, vma_modify

# is_discard() in mm/madvise.c (is_madv_discard() in 6.10's mm/mseal.c)
DISCARD_ADVICE = frozenset({C.MADV_FREE, C.MADV_DONTNEED, C.MADV_DONTNEED_LOCKED, C.MADV_REMOVE,
                            C.MADV_DONTFORK, C.MADV_WIPEONFORK, C.MADV_GUARD_INSTALL})


def can_modify_vma(vma: Vma) -> bool:
    """can_modify_vma(): not sealed."""
    return not vma.vm_flags & C.VM_SEALED


def can_madvise_modify(vma: Vma, advice: int) -> bool:
    """can_madvise_modify(): a discard of sealed private anonymous memory
    the process cannot write is refused (it would lose data)."""
    if advice not in DISCARD_ADVICE or can_modify_vma(vma):
        return True
    if vma.shm is not None:
        return True                                   # shmem: file-backed, nothing lost
    return bool(vma.vm_flags & C.VM_WRITE)


def range_sealed(mm, start: int, end: int) -> bool:
    """Is any VMA of [start, end) sealed? (vms_gather_munmap_vmas()' check)."""
    return any(v.vm_flags & C.VM_SEALED for v in mm._tree.intersecting(start, end))


def do_mseal(mm, start: int, len_in: int, flags: int) -> None:
    """do_mseal(): seal every VMA of [start, start+len); ENOSYS before 6.10
    (``Kernel.mseal``), EINVAL for flags or an unaligned start, ENOMEM if
    any part of the range is unmapped (then nothing is sealed)."""
    if not mm.kernel.mseal:
        raise _Errno(_errno.ENOSYS)
    if flags:
        raise _Errno(EINVAL)
    if start & mm._pmask:
        raise _Errno(EINVAL)
    length = (len_in + mm._pmask) & ~mm._pmask
    end = start + length
    if end > U64:
        raise _Errno(EINVAL)
    if end == start:
        return
    # check_mm_seal(): the whole range must be mapped
    pos = start
    for v in mm._tree.intersecting(start, end):
        if v.start > pos:
            raise _Errno(ENOMEM)
        pos = v.end
    if pos < end:
        raise _Errno(ENOMEM)
    # mseal_apply(): each VMA gets VM_SEALED (merging or splitting)
    pos = start
    while pos < end:
        vma = mm._tree.lookup(pos)
        stop = min(vma.end, end)
        if can_modify_vma(vma):
            newflags = vma.vm_flags | C.VM_SEALED
            vma = vma_modify(mm, vma, pos, stop, newflags)
            if vma.start == pos and vma.end == stop:
                vma.vm_flags = newflags
            mm._partial_ok = True                     # a later split may fail at max_map_count
        pos = stop
