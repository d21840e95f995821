"""mmap(): mm/mmap.c and arch/x86/kernel/sys_x86_64.c of Linux 6.18.

``do_mmap()`` for anonymous memory, private or shared, and where a mapping
goes: ``__get_unmapped_area()`` with THP alignment
(``thp_get_unmapped_area_vmflags()``, mm/huge_memory.c) over x86's top-down
search and its bottom-up fallback.  Recent kernels keep ``mmap_region()``
and the gap searches ``unmapped_area()`` / ``unmapped_area_topdown()`` in
mm/vma.c; they live here, next to their only callers.

Example (``mm.mmap()`` is a thin wrapper around :func:`sys_mmap`)::

    >>> mm = pymm.MM()
    >>> hex(get_unmapped_area(mm, 0, 2 << 20, pymm.MAP_PRIVATE, shared_file=False))
    '0x7ffff7c00000'
"""
from __future__ import annotations

from typing import Optional

from pymm import constants as C
from pymm.errors import EAGAIN, EBADF, EEXIST, EINVAL, ENOMEM, EPERM
from pymm.mm.memory import mm_populate
from pymm.mm.rlimit import account_locked, can_do_mlock, may_expand_vm, mlock_future_ok
from pymm.mm.mseal import range_sealed
from pymm.mm.syscall import U64, _Errno
from pymm.mm.vma import (ShmemObject, Vma, do_vmi_munmap, page_align, vm_start_gap, vma_link,
                         vma_merge_new_range)


# ---------------------------------------------------------------- include/linux/mman.h
def calc_vm_prot_bits(prot: int) -> int:
    """calc_vm_prot_bits(): PROT_* to VM_READ/VM_WRITE/VM_EXEC."""
    return ((C.VM_READ if prot & C.PROT_READ else 0) | (C.VM_WRITE if prot & C.PROT_WRITE else 0)
            | (C.VM_EXEC if prot & C.PROT_EXEC else 0))


def calc_vm_flag_bits(flags: int, map_stack_nohugepage: bool = True) -> int:
    """calc_vm_flag_bits(): the MAP_* flags that become VM_* flags
    (MAP_STACK -> VM_NOHUGEPAGE since c4608d1bf7c6, 6.8: ``Kernel.map_stack_nohugepage``)."""
    return ((C.VM_GROWSDOWN if flags & C.MAP_GROWSDOWN else 0)
            | (C.VM_LOCKED if flags & C.MAP_LOCKED else 0)
            | (C.VM_NOHUGEPAGE if flags & C.MAP_STACK and map_stack_nohugepage else 0))


# ---------------------------------------------------------------- get_unmapped_area
def unmapped_area_topdown(mm, low: int, high: int, length: int) -> Optional[int]:
    """unmapped_area_topdown(): the end of the highest free gap in
    [low, high) at least ``length`` long, as ``mm.kernel.unmapped_area``
    searches: "maple" (58c5d0d6d522, 6.3+) takes the highest empty range and,
    when the VMA above it is VM_GROWSDOWN and its guard gap reaches into it,
    searches again below that guard gap's start; "rbtree" (before 6.1)
    clips each gap by the guard gap of its own upper VMA."""
    if mm.kernel.unmapped_area == "rbtree":
        return rbtree_unmapped_area_topdown(mm, low, high, length)
    while True:
        found = highest_empty_area(mm, low, high, length)
        if found is None:
            return None
        gap_end, tmp = found
        if tmp is not None and tmp.vm_flags & C.VM_GROWSDOWN and vm_start_gap(mm, tmp) < gap_end:
            high = vm_start_gap(mm, tmp)                   # retry below the guard gap
            continue
        return gap_end


def highest_empty_area(mm, low: int, high: int, length: int):
    """mas_empty_area_rev() on the VMA tree: (end, the VMA above) of the
    highest empty range whose part inside [low, high) holds ``length``."""
    tree = mm._tree
    vmas = tree._vmas
    nxt = tree.find_vma(high)
    i = len(vmas) if nxt is None else tree.index(nxt)
    while True:
        gap_end = min(vmas[i].start, high) if i < len(vmas) else high
        prev_end = vmas[i - 1].end if i > 0 else 0
        if gap_end >= max(prev_end, low) + length:
            return gap_end, (vmas[i] if i < len(vmas) else None)
        if i == 0 or prev_end <= low:
            return None
        i -= 1


def rbtree_unmapped_area_topdown(mm, low: int, high: int, length: int) -> Optional[int]:
    """The rbtree unmapped_area_topdown() (before 6.1): each gap is
    [vm_end_gap(prev), vm_start_gap(vma)); the highest one that fits."""
    tree = mm._tree
    vmas = tree._vmas
    nxt = tree.find_vma(high)
    i = len(vmas) if nxt is None else tree.index(nxt)
    gap_end = high
    while True:
        if i < len(vmas):
            gap_end = min(gap_end, vm_start_gap(mm, vmas[i]), high)
        prev_end = vmas[i - 1].end if i > 0 else 0
        gap_start = max(prev_end, low)
        if gap_end >= gap_start and gap_end - gap_start >= length:
            return gap_end
        if i == 0 or prev_end <= low:
            return None
        i -= 1
        gap_end = high


def unmapped_area(mm, low: int, high: int, length: int) -> Optional[int]:
    """unmapped_area(): the start of the lowest free gap in [low, high)."""
    tree = mm._tree
    v = tree.find_vma(low)
    i = len(tree) if v is None else tree.index(v)
    vmas = tree._vmas
    start = max(low, vmas[i - 1].end if i > 0 else 0)
    while start + length <= high:
        end = min(high, vm_start_gap(mm, vmas[i])) if i < len(vmas) else high
        if end >= start and end - start >= length:
            return start
        if i >= len(vmas):
            return None
        start = max(start, vmas[i].end)
        i += 1
    return None


def mmap_address_hint_valid(mm, addr: int, length: int) -> bool:
    """mmap_address_hint_valid() plus its caller's check that the hint's hole is free."""
    if mm.task_size - length < addr:
        return False
    if (addr > mm.map_window) != (addr + length > mm.map_window):
        return False
    if mm.window and not (mm.window[0] <= addr and addr + length <= mm.window[1]):
        return False
    vma = mm._tree.find_vma(addr)
    return vma is None or addr + length <= vm_start_gap(mm, vma)


def arch_get_unmapped_area_topdown(mm, addr: int, length: int, flags: int) -> int:
    """arch_get_unmapped_area_topdown() (arch/x86/kernel/sys_x86_64.c)."""
    if length > mm.task_size:
        raise _Errno(ENOMEM)
    if flags & C.MAP_FIXED:
        return addr
    if addr:
        addr &= ~(mm.page_size - 1) & U64
        if mmap_address_hint_valid(mm, addr, length):
            return addr
    if flags & C.MAP_32BIT:
        return arch_get_unmapped_area(mm, addr, length, flags)
    low = max(mm.page_size, mm.mmap_min_addr)
    high = mm.mmap_base
    if flags & C.MAP_ABOVE4G:
        low = max(low, 1 << 32)
    if addr > mm.map_window:
        high += mm.task_size - mm.map_window
    if mm.window:
        low, high = max(low, mm.window[0]), min(high, mm.window[1])
    end = unmapped_area_topdown(mm, low, high, length)
    if end is not None:
        return end - length
    return arch_get_unmapped_area(mm, addr, length, flags)


def arch_get_unmapped_area(mm, addr: int, length: int, flags: int) -> int:
    """arch_get_unmapped_area(): the legacy bottom-up search, the top-down one's fallback."""
    if flags & C.MAP_32BIT:
        low, high = 0x40000000, 0x80000000
    else:
        low = mm.mmap_legacy_base
        high = mm.task_size if addr > mm.map_window else mm.map_window
    if mm.window:
        low, high = max(low, mm.window[0]), min(high, mm.window[1])
    start = unmapped_area(mm, low, high, length)
    if start is None:
        raise _Errno(ENOMEM)
    return start


def thp_get_unmapped_area(mm, length: int, flags: int) -> int:
    """thp_get_unmapped_area_vmflags() for anonymous memory: pad the
    request by a PMD, then align inside the padding."""
    size = mm.pmd_size
    try:
        ret = arch_get_unmapped_area_topdown(mm, 0, length + size, flags)
    except _Errno:
        return arch_get_unmapped_area_topdown(mm, 0, length, flags)
    off_sub = (0 - ret) & (size - 1)
    if not off_sub:
        return ret + size  # MMF_TOPDOWN: keep to the top of the padded area
    return ret + off_sub


def thp_aligns(mode: str, length: int, pmd_size: int) -> bool:
    """Whether __get_unmapped_area() tries THP alignment for an anonymous
    mapping of ``length`` bytes without a hint, per ``Kernel.thp_align``:
    never before 6.7; 6.7's efa7df3e3bb5 for any length >= PMD_SIZE
    (__thp_get_unmapped_area() gives up below one PMD); PMD multiples only
    since d4148aeab412.

        >>> thp_aligns("any", 3 << 20, 2 << 20), thp_aligns("pmd-multiple", 3 << 20, 2 << 20)
        (True, False)
    """
    if mode == "any":
        return length >= pmd_size
    if mode == "pmd-multiple":
        return length % pmd_size == 0
    return False


def get_unmapped_area(mm, addr: int, length: int, flags: int, shared_file: bool) -> int:
    """__get_unmapped_area(): pick (or check) where a mapping goes."""
    if length > mm.task_size:
        raise _Errno(ENOMEM)
    if not shared_file and not addr and not (flags & C.MAP_FIXED) \
            and thp_aligns(mm.kernel.thp_align, length, mm.pmd_size):
        addr = thp_get_unmapped_area(mm, length, flags)
    else:
        addr = arch_get_unmapped_area_topdown(mm, addr, length, flags)
    if addr > mm.task_size - length:
        raise _Errno(ENOMEM)
    if (mm._pmask & addr):
        raise _Errno(EINVAL)
    if addr < mm.mmap_min_addr and not mm.privileged:
        raise _Errno(EPERM)  # security_mmap_addr()
    return addr


# ---------------------------------------------------------------- mmap
def sys_mmap(mm, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    """SYSCALL_DEFINE6(mmap) -> ksys_mmap_pgoff(): the offset check, fget(), then do_mmap()."""
    if (mm._pmask & offset):                          # sys_mmap() on x86-64
        raise _Errno(EINVAL)
    if not flags & C.MAP_ANONYMOUS:
        raise _Errno(EBADF)                           # fget(fd) finds no file
    if flags & C.MAP_HUGETLB:
        raise NotImplementedError("MAP_HUGETLB (hugetlbfs) is not modelled by pymm")
    return do_mmap(mm, addr, length, prot, flags)


def do_mmap(mm, addr: int, length: int, prot: int, flags: int) -> int:
    """do_mmap() for anonymous memory."""
    if not length:
        raise _Errno(EINVAL)
    if flags & C.MAP_FIXED_NOREPLACE:
        flags |= C.MAP_FIXED
    if not flags & C.MAP_FIXED and addr and addr < mm.mmap_min_addr:
        addr = page_align(mm, mm.mmap_min_addr)       # round_hint_to_min()
    length = page_align(mm, length)
    if not length:
        raise _Errno(ENOMEM)
    if mm.map_count > mm.max_map_count:
        raise _Errno(ENOMEM)
    map_type = flags & C.MAP_TYPE
    droppable = map_type == C.MAP_DROPPABLE and mm.kernel.map_droppable
    if map_type not in (C.MAP_SHARED, C.MAP_PRIVATE) and not droppable:
        raise _Errno(EINVAL)
    shared = map_type == C.MAP_SHARED
    vm_flags = calc_vm_prot_bits(prot) | calc_vm_flag_bits(flags, mm.kernel.map_stack_nohugepage) \
        | C.VM_MAYREAD | C.VM_MAYWRITE | C.VM_MAYEXEC
    if droppable:
        vm_flags |= map_droppable_flags(flags, vm_flags)
    addr = get_unmapped_area(mm, addr, length, flags, shared_file=shared)
    if flags & C.MAP_FIXED_NOREPLACE and mm._tree.first_intersecting(addr, addr + length):
        raise _Errno(EEXIST)
    if flags & C.MAP_LOCKED and not can_do_mlock(mm):
        raise _Errno(EPERM)
    if not mlock_future_ok(mm, vm_flags, length):
        raise _Errno(EAGAIN)
    if shared:
        if vm_flags & C.VM_GROWSDOWN:
            raise _Errno(EINVAL)
        pgoff = 0
        vm_flags |= C.VM_SHARED | C.VM_MAYSHARE
    else:
        pgoff = addr >> mm.page_shift
    if flags & C.MAP_NORESERVE:
        vm_flags |= C.VM_NORESERVE
    mmap_region(mm, addr, length, vm_flags, pgoff, shared)
    if vm_flags & C.VM_LOCKED or flags & (C.MAP_POPULATE | C.MAP_NONBLOCK) == C.MAP_POPULATE:
        try:
            mm_populate(mm, addr, length)
        except MemoryError:
            pass        # do_mmap()'s caller ignores __mm_populate()'s result: the pages done stay
    return addr


def map_droppable_flags(flags: int, vm_flags: int) -> int:
    """do_mmap()'s MAP_DROPPABLE case (6.11+, 9651fcedf7b9): not with
    MAP_LOCKED, MAP_HUGETLB or a grows-down area; never reserved, wiped on
    fork, left out of core dumps; otherwise private anonymous memory."""
    if flags & (C.MAP_LOCKED | C.MAP_HUGETLB) or vm_flags & C.VM_GROWSDOWN:
        raise _Errno(EINVAL)
    return C.VM_DROPPABLE | C.VM_NORESERVE | C.VM_WIPEONFORK | C.VM_DONTDUMP


def accountable_mapping(vm_flags: int) -> bool:
    """accountable_mapping(): private writable memory is charged."""
    return vm_flags & (C.VM_NORESERVE | C.VM_SHARED | C.VM_WRITE) == C.VM_WRITE


def mmap_region(mm, addr: int, length: int, vm_flags: int, pgoff: int, shared: bool) -> Vma:
    """__mmap_region(): unmap what MAP_FIXED covers, charge, merge or insert.

    As in 6.18, a check that fails in __mmap_prepare() (the commit charge)
    leaves the old VMAs in place, reattached (vms_abort_munmap_vmas() with
    the PTEs still there); one that fails after vms_clean_up_area() cleared
    them (shmem_zero_setup()'s charge) leaves a gap where they were.
    """
    end = addr + length
    if range_sealed(mm, addr, end):
        raise _Errno(EPERM)                    # vms_gather_munmap_vmas(): can_modify_vma()
    if not may_expand_vm(mm, vm_flags, (length - mapped_bytes(mm, addr, end)) >> mm.page_shift):
        raise _Errno(ENOMEM)
    if accountable_mapping(vm_flags):
        # __mmap_prepare(): charge the length less what the replaced VMAs had charged
        charged = length - sum(min(v.end, end) - max(v.start, addr)
                               for v in mm._tree.intersecting(addr, end) if v.vm_flags & C.VM_ACCOUNT)
        if charged and not mm.machine.vm_enough_memory(mm, charged):
            raise _Errno(ENOMEM)
        vm_flags |= C.VM_ACCOUNT
    shm = shmem_zero_setup(mm, addr, length, vm_flags) if shared else None
    try:
        if mm._tree.first_intersecting(addr, end) is not None:
            do_vmi_munmap(mm, addr, length)
    except BaseException:
        shmem_put_unused(mm, shm)
        raise
    vm_flags |= C.VM_SOFTDIRTY
    account_locked(mm, vm_flags, length)     # __mmap_complete(): mm->locked_vm += len
    if shared:
        return vma_link(mm, Vma(addr, end, vm_flags, pgoff, 0, shm))
    merged = vma_merge_new_range(mm, addr, end, vm_flags, 0, None, pgoff)
    if merged is not None:
        return merged
    return vma_link(mm, Vma(addr, end, vm_flags, pgoff))


def mapped_bytes(mm, start: int, end: int) -> int:
    """count_vma_pages_range() in bytes: what MAP_FIXED would replace."""
    return sum(min(v.end, end) - max(v.start, start) for v in mm._tree.intersecting(start, end))


def shmem_acct_size(mm, length: int, vm_flags: int) -> bool:
    """shmem_acct_size() (mm/shmem.c): a shared object is charged in full
    unless VM_NORESERVE; False when the machine's overcommit policy
    refuses the charge (:meth:`pymm.Machine.vm_enough_memory`)."""
    return bool(vm_flags & C.VM_NORESERVE) or mm.machine.vm_enough_memory(mm, length)


def shmem_zero_setup(mm, addr: int, length: int, vm_flags: int) -> ShmemObject:
    """shmem_zero_setup() (mm/shmem.c): the "/dev/zero (deleted)" object
    behind a shared anonymous mapping.

    A refused charge (the machine's overcommit policy) fails with ENOMEM
    after the MAP_FIXED range was cleared, as in 6.18 (the host leaves the
    gap too).  The object's pages are stored sparsely, so making it costs
    nothing per page of its size; should pymm run out of owner ids the call
    fails with ENOMEM and changes nothing."""
    if not shmem_acct_size(mm, length, vm_flags):
        if mm._tree.first_intersecting(addr, addr + length) is not None:
            do_vmi_munmap(mm, addr, length)       # vms_clean_up_area(), then the gap
            mm._partial_ok = True
        raise _Errno(ENOMEM)
    npages = length >> mm.page_shift
    try:
        owner = mm.engine.owner_new("shmem", npages=npages)
    except (MemoryError, ValueError):
        raise _Errno(ENOMEM) from None
    mm._shm_inode += 1
    return ShmemObject(owner, npages, mm._shm_inode)


def shmem_put_unused(mm, shm: Optional[ShmemObject]) -> None:
    """fput() of an object no VMA took: free its (empty) storage."""
    if shm is not None and shm.refs == 0:
        mm.engine.owner_free(shm.owner)
