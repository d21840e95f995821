"""mlock(): mm/mlock.c of Linux 6.18.

``do_mlock()`` checks RLIMIT_MEMLOCK against the pages already locked,
``apply_vma_lock_flags()`` walks the VMAs of the range setting or clearing
VM_LOCKED (``mlock_fixup()``: merge or split), then ``__mm_populate()``
faults the range in.  The limits are :mod:`pymm.mm.rlimit`'s.

Example (``mm.mlock()`` is a thin wrapper around :func:`do_mlock`)::

    >>> a = mm.mmap(0, 4 << 12, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> do_mlock(mm, a + 4096, 8192, pymm.VM_LOCKED)
    >>> [v.vm_flags & pymm.VM_LOCKED != 0 for v in mm.maps()], locked_vm(mm)
    ([False, True, False], 2)
"""
from __future__ import annotations

from pymm import constants as C
from pymm.errors import EINVAL, ENOMEM, EPERM
from pymm.mm.memory import fault_range, shmem_clip
from pymm.mm.rlimit import can_do_mlock, locked_vm, rlimit
from pymm.mm.syscall import U64, _Errno
from pymm.mm.vma import Vma, vma_modify

# mlock_fixup() leaves these alone (VM_SPECIAL, and MAP_DROPPABLE memory)
VM_NO_MLOCK = C.VM_IO | C.VM_DONTEXPAND | C.VM_PFNMAP | C.VM_DROPPABLE


# ---------------------------------------------------------------- mlock(), munlock()
def do_mlock(mm, start: int, length: int, flags: int) -> None:
    """do_mlock(): lock [start, start+length) with ``flags`` (VM_LOCKED,
    plus VM_LOCKONFAULT for mlock2(MLOCK_ONFAULT)), then populate it.

    Over RLIMIT_MEMLOCK (counting what the range already has locked) is
    ENOMEM; RLIMIT_MEMLOCK 0 is EPERM; a hole is ENOMEM after the VMAs
    before it were locked; a range that cannot be populated (PROT_NONE,
    beyond a shmem object) is locked but fails with ENOMEM
    (``__mlock_posix_error_return()`` of GUP's EFAULT)."""
    if not can_do_mlock(mm):
        raise _Errno(EPERM)
    length = (length + (start & mm._pmask) + mm._pmask) & ~mm._pmask & U64   # PAGE_ALIGN()
    start &= ~mm._pmask
    if not mm.privileged:
        lock_limit = rlimit(mm, C.RLIMIT_MEMLOCK) >> mm.page_shift
        locked = (length >> mm.page_shift) + locked_vm(mm)
        if locked > lock_limit:
            locked -= count_mm_mlocked_page_nr(mm, start, length)
        if locked > lock_limit:
            raise _Errno(ENOMEM)
    apply_vma_lock_flags(mm, start, length, flags)
    if not flags & C.VM_LOCKONFAULT:
        populate_locked(mm, start, start + length)


def do_munlock(mm, start: int, length: int) -> None:
    """SYSCALL_DEFINE2(munlock): clear VM_LOCKED/VM_LOCKONFAULT over the range."""
    length = (length + (start & mm._pmask) + mm._pmask) & ~mm._pmask & U64
    start &= ~mm._pmask
    apply_vma_lock_flags(mm, start, length, 0)


def count_mm_mlocked_page_nr(mm, start: int, length: int) -> int:
    """count_mm_mlocked_page_nr(): pages of [start, start+length) already in VM_LOCKED VMAs."""
    end = start + length
    n = 0
    for v in mm._tree.intersecting(start, end):
        if v.vm_flags & C.VM_LOCKED:
            n += min(v.end, end) - max(v.start, start)
    return n >> mm.page_shift


def apply_vma_lock_flags(mm, start: int, length: int, flags: int) -> None:
    """apply_vma_lock_flags(): mlock_fixup() each VMA of the range; a
    range starting in a hole, or with one, is ENOMEM (what came before stays)."""
    end = start + length
    if end > U64:
        raise _Errno(EINVAL)
    if end == start:
        return
    vma = mm._tree.lookup(start)
    if vma is None:
        raise _Errno(ENOMEM)
    nstart, tmp = start, vma.start
    while vma is not None and vma.start < end:           # for_each_vma_range()
        if vma.start != tmp:
            raise _Errno(ENOMEM)
        newflags = (vma.vm_flags & ~C.VM_LOCKED_MASK) | flags
        tmp = min(vma.end, end)
        vma = mlock_fixup(mm, vma, nstart, tmp, newflags)
        mm._partial_ok = True
        tmp = nstart = max(tmp, vma.end)                 # go on after a merged VMA
        vma = mm._tree.find_vma(tmp)
    if tmp < end:
        raise _Errno(ENOMEM)


def mlock_fixup(mm, vma: Vma, start: int, end: int, newflags: int) -> Vma:
    """mlock_fixup(): new lock flags for [start, end) of vma (merge or
    split); VM_SPECIAL and droppable VMAs are left as they are."""
    oldflags = vma.vm_flags
    if newflags == oldflags or oldflags & VM_NO_MLOCK:
        return vma
    vma = vma_modify(mm, vma, start, end, newflags)
    if not newflags & C.VM_LOCKED:
        mm.locked_vm -= (end - start) >> mm.page_shift
    elif not oldflags & C.VM_LOCKED:
        mm.locked_vm += (end - start) >> mm.page_shift
    if vma.start == start and vma.end == end:
        vma.vm_flags = newflags
    return vma


def populate_locked(mm, start: int, end: int) -> None:
    """__mm_populate(start, len, ignore_errors=0) for mlock(): fault in
    each VMA as GUP does (a write fault on private writable memory); a VMA
    GUP refuses (PROT_NONE) or a page beyond a shmem object ends it with
    ENOMEM."""
    pos = start
    while pos < end:
        vma = mm._tree.find_vma(pos)
        if vma is None or vma.start >= end:
            return
        pos = max(pos, vma.start)
        stop = min(end, vma.end)
        if not vma.vm_flags & C.VM_ACCESS_FLAGS:
            raise _Errno(ENOMEM)                         # check_vma_flags(): EFAULT
        if not vma.vm_flags & C.VM_LOCKONFAULT:
            write = vma.vm_flags & (C.VM_WRITE | C.VM_SHARED) == C.VM_WRITE
            clipped = shmem_clip(mm, vma, pos, stop)
            fault_range(mm, vma, pos, clipped, write)
            if clipped < stop:
                raise _Errno(ENOMEM)                     # VM_FAULT_SIGBUS: EFAULT
        pos = stop

