"""Faults and populate: mm/memory.c and mm/gup.c of Linux 6.18, and the CPU.

The fault path as arch/x86/mm/fault.c ``do_user_addr_fault()`` walks it (find
the VMA, grow a stack with ``expand_downwards()``, check the access), then
``handle_mm_fault()`` on a whole range at once: the loop over its pages runs
in mmcore (``Engine.fault``).  ``mm_populate()`` and ``madvise(POPULATE)``
fault in ranges as GUP does.  The ``cpu_*`` functions are the CPU's side: the
page tables are used first, and only a miss enters the fault handler.

Example (``mm.write()`` is a thin wrapper around :func:`cpu_write`)::

    >>> a = mm.mmap(0, 8192, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> cpu_write(mm, a + 4090, b"hello, world")   # two faults, one per page
    >>> mm.stats["faults"]
    2
"""
from __future__ import annotations

import mmcore
from pymm import constants as C
from pymm.errors import BusError, SegmentationFault
from pymm.mm.rlimit import account_locked, may_expand_vm, mlock_future_ok
from pymm.mm.vma import Vma, anon_vma_prepare, page_align, perms

FAULT_AROUND_BYTES = 65536    # /sys/kernel/debug/fault_around_bytes
READ_CHUNK = 1 << 26          # cpu_read() copies out at most this much per engine call


# ---------------------------------------------------------------- handle_mm_fault()
def vma_is_temporary_stack(vma: Vma) -> bool:
    """vma_is_temporary_stack(): exec's stack before setup_arg_pages() is done."""
    f = vma.vm_flags
    return bool(f & C.VM_GROWSDOWN) and \
        f & C.VM_STACK_INCOMPLETE_SETUP == C.VM_STACK_INCOMPLETE_SETUP


def thp_vma_allowable(mm, vma: Vma) -> bool:
    """thp_vma_allowable_order(PMD_ORDER) for a fault (no THP on exec's
    temporary stack, in every catalogued kernel)."""
    if vma.shm is not None or mm.thp == "never" or vma.vm_flags & C.VM_NOHUGEPAGE:
        return False
    if vma_is_temporary_stack(vma):
        return False
    return mm.thp == "always" or bool(vma.vm_flags & C.VM_HUGEPAGE)


def shmem_clip(mm, vma: Vma, start: int, end: int) -> int:
    """The end of [start, end) that lies inside the shmem object (shmem_fault()'s i_size check)."""
    if vma.shm is None:
        return end
    obj_end = vma.start + ((vma.shm.npages - vma.pgoff) << mm.page_shift)
    return max(start, min(end, obj_end))


def zero_page_owner(mm) -> int:
    """The owner id read faults map the zero page under, for VMAs without an anon_vma."""
    # The engine wants an owner id even for zero-page mappings; one shared
    # placeholder anon owner serves every VMA without an anon_vma.
    if not mm._zero_owner:
        mm._zero_owner = mm.engine.owner_new("anon")
    return mm._zero_owner


def fault_range(mm, vma: Vma, start: int, end: int, write: bool, fill: int = -1) -> None:
    """handle_mm_fault() for each page of [start, end) inside vma (and,
    with ``fill``, the memset of each page in the same pass)."""
    if end <= start:
        return
    thp = thp_vma_allowable(mm, vma)
    if vma.shm is None and (write or thp and huge_pmd_attempted(mm, vma, start, end)):
        anon_vma_prepare(mm, vma)
    owner = vma.owner
    if not owner:
        # read faults without an anon_vma map the zero page only
        owner = zero_page_owner(mm)
    mmcore.handle_mm_fault(mm.engine, start, end, vma_start=vma.start, vma_end=vma.end, owner=owner,
                    pgoff=vma.pgoff, write=write, writable=bool(vma.vm_flags & C.VM_WRITE),
                    shared=vma.shm is not None, thp=thp,
                    exec_=bool(vma.vm_flags & C.VM_EXEC), fill=fill,
                    fault_around=mm._fault_around_pages, huge_zero_thp=mm.kernel.huge_zero_wp_thp)


def fault_past_object(mm, vma: Vma, page: int, write: bool) -> None:
    """handle_mm_fault() on a shmem page past the object's end, up to the
    VM_FAULT_SIGBUS: __handle_mm_fault() has allocated the tables down to
    the PMD table, and a read's do_read_fault() has mapped the cached
    neighbours (do_fault_around()) before shmem_fault() fails."""
    mmcore.pmd_alloc(mm.engine, page)
    if not write and mm._fault_around_pages > 1:
        mmcore.do_fault_around(mm.engine, page, vma_start=vma.start, vma_end=vma.end, owner=vma.owner,
                               pgoff=vma.pgoff, writable=bool(vma.vm_flags & C.VM_WRITE),
                               exec_=bool(vma.vm_flags & C.VM_EXEC),
                               fault_around=mm._fault_around_pages)


def huge_pmd_attempted(mm, vma: Vma, start: int, end: int) -> bool:
    """Does a read fault on [start, end) try a huge PMD anywhere?
    __handle_mm_fault() calls create_huge_pmd() only on an empty PMD, and
    do_huge_pmd_anonymous_page() needs the whole PMD inside the VMA
    (thp_vma_suitable_order()) before vmf_anon_prepare(): elsewhere a read
    maps the zero page and the VMA gets no anon_vma.  One walk per
    candidate PMD, stopping at the first empty one."""
    pmd = mm.pmd_size
    h = max(start & ~(pmd - 1), (vma.start + pmd - 1) & ~(pmd - 1))
    lpmd = mm.geometry.levels - 2
    while h < end and h + pmd <= vma.end:
        last = mmcore.walk(mm.engine, h)[-1]
        if last[0] < lpmd or (last[0] == lpmd and last[3] == 0):
            return True                                    # pmd_none()
        h += pmd
    return False


def mm_populate(mm, start: int, length: int) -> None:
    """__mm_populate() for MAP_POPULATE/VM_LOCKED: fault in what may be,
    ignoring errors (PROT_NONE, beyond a shmem object)."""
    end = start + length
    for vma in mm._tree.intersecting(start, end):
        if not vma.vm_flags & C.VM_ACCESS_FLAGS:
            continue
        s, e = max(start, vma.start), min(end, vma.end)
        write = vma.vm_flags & (C.VM_WRITE | C.VM_SHARED) == C.VM_WRITE
        clipped = shmem_clip(mm, vma, s, e)
        fault_range(mm, vma, s, clipped, write)
        if clipped < e:                  # GUP's fault past the object: -EFAULT, ignored
            fault_past_object(mm, vma, clipped, write)


def do_user_addr_fault(mm, addr: int, write: bool, end: int, fill: int = -1) -> int:
    """do_user_addr_fault(): find the VMA (growing a stack down if need
    be), check the access, then fault [addr, end) within it in one go.
    Returns where the faulted part ends."""
    vma = mm._tree.find_vma(addr)
    if vma is None:
        raise SegmentationFault(addr, "SEGV_MAPERR", "no VMA")
    if vma.start > addr:
        if not vma.vm_flags & C.VM_GROWSDOWN or not expand_downwards(mm, vma, addr):
            raise SegmentationFault(addr, "SEGV_MAPERR", "no VMA")
    if write and not vma.vm_flags & C.VM_WRITE:
        raise SegmentationFault(addr, "SEGV_ACCERR", f"write to {perms(vma.vm_flags)} VMA")
    if not vma.vm_flags & C.VM_ACCESS_FLAGS:
        raise SegmentationFault(addr, "SEGV_ACCERR", "PROT_NONE VMA")
    page = addr & ~(mm.page_size - 1)
    stop = page_align(mm, min(end, vma.end))
    clipped = shmem_clip(mm, vma, page, stop)
    if clipped <= page:
        fault_past_object(mm, vma, page, write)
        raise BusError(addr, "BUS_ADRERR", "beyond the end of the shared memory object")
    fault_range(mm, vma, page, clipped, write, fill)
    return clipped


def expand_downwards(mm, vma: Vma, addr: int) -> bool:
    """expand_downwards() (mm/vma.c, via expand_stack()): grow a VM_GROWSDOWN VMA to cover addr."""
    addr &= ~(mm.page_size - 1)
    if addr < mm.mmap_min_addr:
        return False
    prev = mm._tree.prev(vma)
    if prev is not None and not prev.vm_flags & C.VM_GROWSDOWN and \
            prev.vm_flags & C.VM_ACCESS_FLAGS and addr - prev.end < mm.stack_guard_gap:
        return False
    if prev is not None and prev.end > addr:
        return False
    grow = (vma.start - addr) >> mm.page_shift
    if grow > vma.pgoff or vma.end - addr > mm.rlimit_stack:
        return False
    # acct_stack_growth(): RLIMIT_AS, and RLIMIT_MEMLOCK for a locked stack
    if not may_expand_vm(mm, vma.vm_flags, grow) or \
            not mlock_future_ok(mm, vma.vm_flags, grow << mm.page_shift):
        return False
    if not mm.machine.vm_enough_memory(mm, vma.start - addr):   # overcommit: the last test
        return False
    anon_vma_prepare(mm, vma)
    account_locked(mm, vma.vm_flags, grow << mm.page_shift)
    mm._tree.set_start(vma, addr)
    vma.pgoff -= grow
    return True


# ---------------------------------------------------------------- the CPU's loads and stores
# An access reaching past the last user page is a SEGV_MAPERR, whatever is mapped.
def cpu_read(mm, addr: int, length: int) -> bytes:
    """The CPU's loads: through the page tables first (a present entry is
    used even outside every VMA), do_user_addr_fault() on a miss."""
    if addr + length > mm.task_size + mm.page_size:
        raise SegmentationFault(max(addr, mm.task_size), "SEGV_MAPERR", "beyond task_size")
    out = []
    pos, end = addr, addr + length
    while pos < end:
        # in chunks: a read that faults early never allocates the whole buffer
        chunk = min(end - pos, READ_CHUNK)
        data, done = mmcore.read_bytes(mm.engine, pos, chunk)
        out.append(data[:done])
        pos += done
        if done < chunk:
            do_user_addr_fault(mm, pos, False, end)
    return b"".join(out)


def cpu_write(mm, addr: int, data: bytes) -> None:
    """The CPU's stores: copy-on-write, faults and segfaults as a user store meets them."""
    end = addr + len(data)
    if end > mm.task_size + mm.page_size:
        raise SegmentationFault(max(addr, mm.task_size), "SEGV_MAPERR", "beyond task_size")
    pos = addr
    view = memoryview(data)
    while pos < end:
        done = mmcore.write_bytes(mm.engine, pos, view[pos - addr:])
        pos += done
        if pos < end:
            do_user_addr_fault(mm, pos, True, end)


def cpu_memset(mm, addr: int, value: int, length: int) -> None:
    """memset() by the CPU: whole pages take the bulk path (one tag per
    page), faulting and filling each VMA's part in one pass."""
    end = addr + length
    if end > mm.task_size + mm.page_size:
        raise SegmentationFault(max(addr, mm.task_size), "SEGV_MAPERR", "beyond task_size")
    ps = mm.page_size
    head_end = min(end, page_align(mm, addr))
    tail_start = max(head_end, end & ~(ps - 1))
    if head_end > addr:
        cpu_write(mm, addr, bytes([value]) * (head_end - addr))
    pos = head_end
    while pos < tail_start:
        pos = mmcore.memset_pages(mm.engine, pos, tail_start, value)
        if pos < tail_start:
            # fault in the rest of this VMA's part and fill it in one pass
            pos = do_user_addr_fault(mm, pos, True, tail_start, fill=value)
    if end > tail_start:
        cpu_write(mm, tail_start, bytes([value]) * (end - tail_start))


def cpu_stamp(mm, addr: int, length: int) -> None:
    """Store each whole page's own page number into it (see MM.stamp), faulting as a write would."""
    pos, end = addr, addr + length
    while pos < end:
        pos = mmcore.stamp_pages(mm.engine, pos, end)
        if pos < end:
            do_user_addr_fault(mm, pos, True, end)
