"""madvise(): mm/madvise.c of Linux 6.18.

``do_madvise()`` walks the VMAs of the range (``madvise_walk_vmas()``) and
applies the advice to each mapped part: VMA flag changes merge or split
(``madvise_update_vma()``), ``MADV_DONTNEED`` zaps, ``MADV_POPULATE_*``
faults in as GUP does.  A hole is ENOMEM, reported after the mapped parts
were done.

Example (``mm.madvise()`` is a thin wrapper around :func:`do_madvise`)::

    >>> a = mm.mmap(0, 4 << 20, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> do_madvise(mm, a, 2 << 20, pymm.MADV_HUGEPAGE)
    >>> len(mm.maps())
    2
"""
from __future__ import annotations

import numpy as np

import mmcore
from pymm import constants as C
from pymm.errors import EFAULT, EINVAL, ENOMEM, EPERM
from pymm.mm.memory import fault_past_object, fault_range, shmem_clip
from pymm.mm.mseal import can_madvise_modify
from pymm.mm.syscall import U64, _Errno
from pymm.mm.vma import page_align, vma_modify

# The advice that only changes VM_* flags: (flags cleared, flags set).
FLAG_CHANGES = {
    C.MADV_NORMAL: (C.VM_SEQ_READ | C.VM_RAND_READ, 0),
    C.MADV_RANDOM: (C.VM_SEQ_READ, C.VM_RAND_READ),
    C.MADV_SEQUENTIAL: (C.VM_RAND_READ, C.VM_SEQ_READ),
    C.MADV_HUGEPAGE: (C.VM_NOHUGEPAGE, C.VM_HUGEPAGE),
    C.MADV_NOHUGEPAGE: (C.VM_HUGEPAGE, C.VM_NOHUGEPAGE),
    C.MADV_DONTDUMP: (0, C.VM_DONTDUMP),
    C.MADV_DODUMP: (C.VM_DONTDUMP, 0),
}


def do_madvise(mm, start: int, len_in: int, advice: int) -> None:
    """do_madvise() -> madvise_walk_vmas(): apply advice to each mapped part of the range."""
    if advice not in C.MADV_VALID:
        raise _Errno(EINVAL)
    if (mm._pmask & start):
        raise _Errno(EINVAL)
    length = page_align(mm, len_in)
    if len_in and not length:
        raise _Errno(EINVAL)
    end = start + length
    if end > U64:
        raise _Errno(EINVAL)
    if end == start:
        return
    if advice in (C.MADV_POPULATE_READ, C.MADV_POPULATE_WRITE):
        madvise_populate(mm, start, end, advice == C.MADV_POPULATE_WRITE)
        return
    handler = madvise_vma_behavior(mm, advice)
    # madvise_walk_vmas(): apply to each mapped part; a hole is ENOMEM at the end
    unmapped = False
    vma = mm._tree.find_vma(start)
    while True:
        if vma is None:
            raise _Errno(ENOMEM)
        if start < vma.start:
            unmapped = True
            start = vma.start
            if start >= end:
                break
        tmp = min(vma.end, end)
        if not can_madvise_modify(vma, advice):
            raise _Errno(EPERM)                        # mseal: sealed read-only anonymous memory
        vma = handler(vma, start, tmp)                 # becomes "prev"
        mm._partial_ok = True
        start = max(tmp, vma.end) if vma.start < tmp else tmp
        if start >= end:
            break
        vma = mm._tree.find_vma(vma.end if vma.end > start else start)
    if unmapped:
        raise _Errno(ENOMEM)


def madvise_vma_behavior(mm, advice: int):
    """madvise_vma_behavior(): the function that applies ``advice`` to one
    VMA's part [start, end) and returns the VMA the walk goes on from."""
    if advice in FLAG_CHANGES:
        clear, set_ = FLAG_CHANGES[advice]

        def update(vma, start, end):
            newflags = (vma.vm_flags & ~clear) | set_
            if newflags == vma.vm_flags:
                return vma
            return vma_modify(mm, vma, start, end, newflags)  # madvise_update_vma()
        return update
    if advice in (C.MADV_DONTNEED, C.MADV_DONTNEED_LOCKED):
        def dontneed(vma, start, end):
            if vma.vm_flags & C.VM_LOCKED and advice == C.MADV_DONTNEED:
                raise _Errno(EINVAL)
            # madvise_dontneed_single_vma(): zap_details.reclaim_pt
            mmcore.zap_page_range(mm.engine, start, end, reclaim_pt=pt_reclaim(mm))
            return vma
        return dontneed
    if advice in (C.MADV_COLD, C.MADV_PAGEOUT, C.MADV_FREE):
        def cold_or_free(vma, start, end):
            if advice == C.MADV_FREE and vma.shm is not None:
                raise _Errno(EINVAL)                    # madvise_free_single_vma(): not anonymous
            if vma.vm_flags & C.VM_LOCKED:
                raise _Errno(EINVAL)  # madvise_dontneed_free_valid_vma(), can_madv_lru_vma()
            if advice == C.MADV_PAGEOUT and vma.shm is not None:
                pageout_shmem(mm, vma, start, end)
                return vma
            if advice == C.MADV_PAGEOUT:
                split_every_thp(mm, start, end)
            else:
                split_partial_thp(mm, start, end)
            return vma
        return cold_or_free
    if advice == C.MADV_WILLNEED:
        return lambda vma, start, end: vma
    raise NotImplementedError(f"madvise advice {advice} is valid on Linux but not modelled by pymm")


def pt_reclaim(mm) -> bool:
    """CONFIG_PT_RECLAIM: MADV_DONTNEED frees the PTE tables whose whole
    PMD range it zapped (6375e95f381e, 6.14), where the kernel has it
    (``Kernel.pt_reclaim``) and the arch selects ARCH_SUPPORTS_PT_RECLAIM.

    Example::

        >>> pt_reclaim(pymm.MM("6.18")), pt_reclaim(pymm.MM("6.7")), pt_reclaim(pymm.MM(arch="i386-pae"))
        (True, False, False)
    """
    return mm.kernel.pt_reclaim and mm.machine.arch_info.pt_reclaim


def split_partial_thp(mm, start: int, end: int) -> None:
    """madvise_free_huge_pmd() / madvise_cold_or_pageout_pte_range(): a THP
    only partly inside the range is split, so that only the subpages in it
    are freed or aged.  (No reclaim here: the pages stay, as they do until
    memory pressure.  Not modelled: since 6.12 the split maps zero-filled
    subpages to the shared zero page, b1f202060afe; pymm keeps them.)"""
    for addr in (start, end):
        if addr & (mm.pmd_size - 1):
            split_anon_thp(mm, addr)


def split_anon_thp(mm, addr: int) -> None:
    """split_folio() of the THP a huge PMD maps at addr; the huge zero page
    is left alone (``is_huge_zero_pmd()``: nothing to free or age)."""
    level, _, _, entry = mmcore.walk(mm.engine, addr)[-1]
    if level != mm.geometry.levels - 2 or not entry:
        return
    frame = mmcore.translate(mm.engine, addr)
    huge_zero = mm.engine.zero_frames[1]
    if frame >= 0 and not huge_zero <= frame < huge_zero + (mm.pmd_size >> mm.page_shift):
        mmcore.split_huge_pmd_address(mm.engine, addr)


def pageout_shmem(mm, vma, start: int, end: int) -> None:
    """MADV_PAGEOUT of shmem: reclaim_pages() unmaps each page and, with no
    swap, keeps it in the object; a page mapped elsewhere too (the same
    object mapped twice: mremap() duplicates, MREMAP_DONTUNMAP) is skipped
    (folio_maybe_mapped_shared()).  Python work per other mapping of the
    object, and per run of pages to unmap."""
    shift = mm.page_shift
    n = (end - start) >> shift
    keep = np.zeros(n, dtype=bool)
    pg0 = vma.pgoff + ((start - vma.start) >> shift)
    for w in mm._tree:
        if w is vma or w.shm is not vma.shm:
            continue
        lo = max(pg0, w.pgoff)
        hi = min(pg0 + n, w.pgoff + ((w.end - w.start) >> shift))
        if lo < hi:
            at = w.start + ((lo - w.pgoff) << shift)
            keep[lo - pg0:hi - pg0] |= (mm.pagemap(at, (hi - lo) << shift) >> np.uint64(63)) != 0
    if not keep.any():
        mmcore.zap_page_range(mm.engine, start, end)
        return
    edges = np.flatnonzero(np.diff(np.concatenate(([True], keep, [True])).astype(np.int8)))
    for a, b in zip(edges[::2], edges[1::2]):          # runs of pages mapped only here
        mmcore.zap_page_range(mm.engine, start + (int(a) << shift), start + (int(b) << shift))


def split_every_thp(mm, start: int, end: int) -> None:
    """MADV_PAGEOUT on private anonymous memory without swap: a THP only
    partly in the range is split by the advice, a whole one by reclaim
    (shrink_folio_list(): add_to_swap() fails, split_folio_to_list(), and
    the subpages stay mapped).  One call per PMD of the range."""
    pmd = mm.pmd_size
    addr = start & ~(pmd - 1)
    while addr < end:
        split_anon_thp(mm, max(addr, start))
        addr += pmd


def madvise_populate(mm, start: int, end: int, write: bool) -> None:
    """madvise_populate(): fault in from start as GUP does; a hole is
    ENOMEM, a VMA GUP refuses (check_vma_flags()) is EINVAL, a page
    beyond a shmem object is EFAULT.  What came before stays populated."""
    pos = start
    while pos < end:
        vma = mm._tree.lookup(pos)
        if vma is None:
            raise _Errno(ENOMEM)
        if write and not vma.vm_flags & C.VM_WRITE or not write and not vma.vm_flags & C.VM_READ:
            raise _Errno(EINVAL)
        stop = min(end, vma.end)
        clipped = shmem_clip(mm, vma, pos, stop)
        fault_range(mm, vma, pos, clipped, write)
        mm._partial_ok = True
        if clipped < stop:
            fault_past_object(mm, vma, clipped, write)
            raise _Errno(EFAULT)                     # VM_FAULT_SIGBUS
        pos = stop
