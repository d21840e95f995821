"""mprotect(): mm/mprotect.c of Linux 6.18.

``do_mprotect_pkey()`` walks the VMAs of the range; ``mprotect_fixup()``
keeps the VM_ACCOUNT charge right, merges or splits (``vma_modify_flags()``)
and changes the page-table entries (``change_protection()``, a loop in
mmcore).

Example (``mm.mprotect()`` is a thin wrapper around :func:`do_mprotect_pkey`)::

    >>> a = mm.mmap(0, 3 << 12, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> do_mprotect_pkey(mm, a + 4096, 4096, pymm.PROT_READ)
    >>> [v.perms for v in mm.maps()]
    ['rw-p', 'r--p', 'rw-p']
"""
from __future__ import annotations

import mmcore
from pymm import constants as C
from pymm.errors import EACCES, EINVAL, ENOMEM, EPERM
from pymm.mm.memory import fault_range, shmem_clip
from pymm.mm.mmap import calc_vm_prot_bits
from pymm.mm.mseal import can_modify_vma
from pymm.mm.syscall import U64, _Errno
from pymm.mm.vma import Vma, page_align, vma_modify


def do_mprotect_pkey(mm, start: int, length: int, prot: int) -> None:
    """do_mprotect_pkey(): new protection for [start, start+length); the
    VMAs before a hole keep it when the call then fails with ENOMEM."""
    grows = prot & (C.PROT_GROWSDOWN | C.PROT_GROWSUP)
    prot &= ~(C.PROT_GROWSDOWN | C.PROT_GROWSUP)
    if grows == C.PROT_GROWSDOWN | C.PROT_GROWSUP:
        raise _Errno(EINVAL)
    if (mm._pmask & start):
        raise _Errno(EINVAL)
    if not length:
        return
    length = page_align(mm, length)
    end = start + length
    if end <= start or end > U64:
        raise _Errno(ENOMEM)
    if prot & ~(C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC | C.PROT_SEM):
        raise _Errno(EINVAL)                             # arch_validate_prot()
    vma = mm._tree.find_vma(start)
    if vma is None or vma.start >= end:
        raise _Errno(ENOMEM)
    if grows & C.PROT_GROWSDOWN:
        start = vma.start
        if not vma.vm_flags & C.VM_GROWSDOWN:
            raise _Errno(EINVAL)
    elif vma.start > start:
        raise _Errno(ENOMEM)
    elif grows & C.PROT_GROWSUP:
        raise _Errno(EINVAL)                             # no VM_GROWSUP on x86
    nstart, tmp = start, vma.start
    while vma is not None and vma.start < end:           # for_each_vma_range()
        if vma.start != tmp:
            raise _Errno(ENOMEM)                         # a hole
        newflags = calc_vm_prot_bits(prot) | (vma.vm_flags & ~C.VM_ACCESS_FLAGS)
        if (newflags & ~(newflags >> 4)) & C.VM_ACCESS_FLAGS:
            raise _Errno(EACCES)                         # beyond VM_MAY*
        tmp = min(vma.end, end)
        vma = mprotect_fixup(mm, vma, nstart, tmp, newflags)
        mm._partial_ok = True                            # later errors keep this
        # the iterator sits on the (maybe merged) VMA: go on from its end
        tmp = nstart = vma.end
        vma = mm._tree.find_vma(tmp)
    if tmp < end:
        raise _Errno(ENOMEM)


def mprotect_fixup(mm, vma: Vma, start: int, end: int, newflags: int) -> Vma:
    """mprotect_fixup(): VM_ACCOUNT bookkeeping, merge/split, then
    change_protection() on the page tables."""
    oldflags = vma.vm_flags
    if not can_modify_vma(vma):
        raise _Errno(EPERM)                                  # mseal (6.10+)
    if newflags == oldflags:
        return vma
    if newflags & C.VM_WRITE:
        if not oldflags & (C.VM_ACCOUNT | C.VM_WRITE | C.VM_SHARED | C.VM_NORESERVE):
            if not mm.machine.vm_enough_memory(mm, end - start):   # the charge for [start, end)
                raise _Errno(ENOMEM)
            newflags |= C.VM_ACCOUNT
    elif oldflags & C.VM_ACCOUNT and vma.shm is None and not vma.anon:
        newflags &= ~C.VM_ACCOUNT  # no anon_vma yet: the charge can go
    vma = vma_modify(mm, vma, start, end, newflags)
    vma.vm_flags = newflags if vma.start == start and vma.end == end else vma.vm_flags
    mmcore.change_protection(mm.engine, start, end, read=bool(newflags & C.VM_ACCESS_FLAGS),
                                write=bool(newflags & C.VM_WRITE),
                                exec_=bool(newflags & C.VM_EXEC))
    # "Private VM_LOCKED VMA becoming writable: trigger COW to avoid major
    # fault on access" (36f881883c57, 4.5: every catalogued kernel)
    if oldflags & (C.VM_WRITE | C.VM_SHARED | C.VM_LOCKED) == C.VM_LOCKED and newflags & C.VM_WRITE:
        populate_vma_page_range(mm, vma, start, end)
    return vma


def populate_vma_page_range(mm, vma: Vma, start: int, end: int) -> None:
    """populate_vma_page_range() (mm/gup.c): fault in [start, end) as GUP
    does, a write fault on private writable memory; nothing for VM_LOCKONFAULT."""
    if vma.vm_flags & C.VM_LOCKONFAULT or not vma.vm_flags & C.VM_ACCESS_FLAGS:
        return
    write = vma.vm_flags & (C.VM_WRITE | C.VM_SHARED) == C.VM_WRITE
    fault_range(mm, vma, start, shmem_clip(mm, vma, start, end), write)
