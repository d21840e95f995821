"""VMAs and their surgery: mm/vma.c of Linux 6.18.

The kernel's ``vm_area_struct`` (:class:`Vma`, include/linux/mm_types.h),
the sorted tree that holds them (:class:`VmaTree`, the maple tree as far as
pymm needs it), and what mm/vma.c does to them: split, merge
(``vma_merge_new_range()``, ``vma_modify_flags()``, ``vma_merge_extend()``),
``copy_vma()``, ``do_vmi_munmap()`` with ``free_pgtables()``, and the
anon_vma bookkeeping (``anon_vma_prepare()``, mm/rmap.c).  Every function
takes the address space (:class:`pymm.MM`) it works on, as the kernel's take
``mm`` or ``vma``.

The tree is a list sorted by start with a parallel list of starts for
``bisect``: lookups are O(log n), and every operation touches only the VMAs
it changes (inserting shifts the list in C, never in Python).

Example (``mm.munmap()`` is a thin wrapper around :func:`do_vmi_munmap`)::

    >>> a = mm.mmap(0, 3 << 12, pymm.PROT_READ, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> do_vmi_munmap(mm, a + 4096, 4096)     # splits the VMA in two
    >>> len(mm.maps())
    2
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import List, Optional

import mmcore
from pymm.constants import (MAP_GROWSDOWN, MAP_PRIVATE, MAP_SHARED, PROT_EXEC, PROT_READ,
                            PROT_WRITE, VM_ACCESS_FLAGS, VM_EXEC, VM_GROWSDOWN, VM_IGNORE_MERGE, VM_LOCKED,
                            VM_MAYSHARE, VM_READ, VM_SEALED, VM_SOFTDIRTY, VM_WRITE)
from pymm.errors import EINVAL, ENOMEM, EPERM
from pymm.mm.syscall import U64, _Errno


class ShmemObject:
    """The shmem file behind a MAP_SHARED|MAP_ANONYMOUS mapping ("/dev/zero
    (deleted)"): its pages live here, whatever maps them."""

    __slots__ = ("owner", "npages", "inode", "refs")

    def __init__(self, owner: int, npages: int, inode: int):
        self.owner = owner
        self.npages = npages
        self.inode = inode
        self.refs = 0


class Vma:
    """The mutable, internal vm_area_struct."""

    __slots__ = ("start", "end", "vm_flags", "pgoff", "anon", "shm", "name")

    def __init__(self, start, end, vm_flags, pgoff, anon=0, shm=None, name=""):
        self.start = start
        self.end = end
        self.vm_flags = vm_flags
        self.pgoff = pgoff
        self.anon = anon          # anon_vma id (0: none yet)
        self.shm = shm            # ShmemObject for shared anonymous memory
        self.name = name

    def pages(self, shift=12):
        return (self.end - self.start) >> shift

    @property
    def owner(self):
        return self.shm.owner if self.shm is not None else self.anon

    def __repr__(self):
        return f"<Vma {self.start:#x}-{self.end:#x} {perms(self.vm_flags)} pgoff={self.pgoff:#x}>"


def perms(vm_flags: int) -> str:
    """The ``rw-p`` column of /proc/pid/maps."""
    return "".join((
        "r" if vm_flags & VM_READ else "-",
        "w" if vm_flags & VM_WRITE else "-",
        "x" if vm_flags & VM_EXEC else "-",
        "s" if vm_flags & VM_MAYSHARE else "p",
    ))


@dataclass(frozen=True)
class VMA:
    """A VMA as ``mm.maps()`` reports it (a snapshot; changing it changes nothing).

    ``prot`` uses PROT_* bits, ``flags`` MAP_* bits (MAP_SHARED or MAP_PRIVATE,
    plus MAP_GROWSDOWN), ``vm_flags`` the kernel's VM_* bits, ``pgoff`` the
    vm_pgoff, ``anon_vma`` the anon_vma id (None until the first write fault)
    and ``shmem`` the shmem object id of shared anonymous memory.

    Example::

        >>> v = mm.maps()[0]
        >>> v.perms, v.size // 4096
        ('rw-p', 512)
    """

    start: int
    end: int
    prot: int
    flags: int
    vm_flags: int
    pgoff: int
    anon_vma: Optional[int]
    shmem: Optional[int]
    name: str = ""

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def perms(self) -> str:
        return perms(self.vm_flags)

    def __contains__(self, addr) -> bool:
        return self.start <= addr < self.end

    def __repr__(self):
        return f"VMA({self.start:#x}-{self.end:#x} {self.perms}{' ' + self.name if self.name else ''})"


def snapshot(v: Vma) -> VMA:
    prot = ((PROT_READ if v.vm_flags & VM_READ else 0) | (PROT_WRITE if v.vm_flags & VM_WRITE else 0)
            | (PROT_EXEC if v.vm_flags & VM_EXEC else 0))
    flags = (MAP_SHARED if v.vm_flags & VM_MAYSHARE else MAP_PRIVATE) | \
        (MAP_GROWSDOWN if v.vm_flags & VM_GROWSDOWN else 0)
    return VMA(v.start, v.end, prot, flags, v.vm_flags, v.pgoff, v.anon or None,
               v.shm.owner if v.shm is not None else None, v.name)


class VmaTree:
    """VMAs sorted by start (the kernel's maple tree, as far as pymm needs it)."""

    def __init__(self):
        self._starts: List[int] = []
        self._vmas: List[Vma] = []

    def __len__(self):
        return len(self._vmas)

    def __iter__(self):
        return iter(self._vmas)

    def index(self, vma: Vma) -> int:
        i = bisect_right(self._starts, vma.start) - 1
        if i < 0 or self._vmas[i] is not vma:
            raise KeyError(vma)
        return i

    def find_vma(self, addr: int) -> Optional[Vma]:
        """find_vma(): the first VMA with end > addr."""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0 and self._vmas[i].end > addr:
            return self._vmas[i]
        i += 1
        return self._vmas[i] if i < len(self._vmas) else None

    def lookup(self, addr: int) -> Optional[Vma]:
        """vma_lookup(): the VMA containing addr."""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0 and self._vmas[i].end > addr:
            return self._vmas[i]
        return None

    def intersecting(self, start: int, end: int) -> List[Vma]:
        """Every VMA overlapping [start, end), in order."""
        i = max(bisect_right(self._starts, start) - 1, 0)
        out = []
        while i < len(self._vmas) and self._vmas[i].start < end:
            if self._vmas[i].end > start:
                out.append(self._vmas[i])
            i += 1
        return out

    def span(self, start: int, end: int):
        """Indices (i, j): self[i:j] are the VMAs overlapping [start, end)."""
        starts = self._starts
        i = bisect_right(starts, start) - 1
        if i < 0 or self._vmas[i].end <= start:
            i += 1
        j = bisect_right(starts, end - 1) if end else len(starts)
        return i, (j if j > i else i)

    def __getitem__(self, i):
        return self._vmas[i]

    def remove_span(self, i: int, j: int) -> None:
        del self._starts[i:j]
        del self._vmas[i:j]

    def first_intersecting(self, start: int, end: int) -> Optional[Vma]:
        v = self.find_vma(start)
        return v if v is not None and v.start < end else None

    def prev(self, vma: Vma) -> Optional[Vma]:
        i = self.index(vma)
        return self._vmas[i - 1] if i > 0 else None

    def next(self, vma: Vma) -> Optional[Vma]:
        i = self.index(vma)
        return self._vmas[i + 1] if i + 1 < len(self._vmas) else None

    def prev_of_addr(self, addr: int) -> Optional[Vma]:
        """The last VMA ending at or below addr."""
        i = bisect_right(self._starts, addr) - 1
        while i >= 0 and self._vmas[i].end > addr:
            i -= 1
        return self._vmas[i] if i >= 0 else None

    def touching(self, start: int, end: int):
        """(prev, next): the VMAs ending exactly at start and starting
        exactly at end (None where there is none), for a range
        [start, end) that no VMA overlaps."""
        vl = self._vmas
        i = bisect_right(self._starts, start)
        prev = vl[i - 1] if i and vl[i - 1].end == start else None
        nxt = vl[i] if i < len(vl) and vl[i].start == end else None
        return prev, nxt

    def insert(self, vma: Vma) -> None:
        i = bisect_right(self._starts, vma.start)
        self._starts.insert(i, vma.start)
        self._vmas.insert(i, vma)

    def remove(self, vma: Vma) -> None:
        i = self.index(vma)
        del self._starts[i]
        del self._vmas[i]

    def set_start(self, vma: Vma, start: int) -> None:
        """Move a VMA's start; the order of VMAs never changes by this."""
        i = self.index(vma)
        vma.start = start
        self._starts[i] = start

    def all(self) -> List[Vma]:
        return list(self._vmas)


# ---------------------------------------------------------------- include/linux/mm.h helpers
def page_align(mm, x: int) -> int:
    """PAGE_ALIGN(): rounds up, wrapping at 2**64 like the C macro."""
    return (x + mm._pmask) & ~mm._pmask & U64


def vm_start_gap(mm, vma: Vma) -> int:
    """vm_start_gap(): where a VMA starts for the gap search (a stack keeps its guard gap free)."""
    if vma.vm_flags & VM_GROWSDOWN:
        return max(vma.start - mm.stack_guard_gap, 0)
    return vma.start


# ---------------------------------------------------------------- references: anon_vma and shmem file
def vma_get_refs(mm, vma: Vma) -> None:
    """anon_vma_clone() + get_file(): a VMA entering the tree takes its references."""
    if vma.anon:
        mm._anon_refs[vma.anon] = mm._anon_refs.get(vma.anon, 0) + 1
    if vma.shm is not None:
        vma.shm.refs += 1


def vma_put_refs(mm, vma: Vma) -> None:
    """unlink_anon_vmas() + fput(): a VMA leaving the tree drops them; the last frees the owner."""
    if vma.anon:
        n = mm._anon_refs[vma.anon] - 1
        if n:
            mm._anon_refs[vma.anon] = n
        else:
            del mm._anon_refs[vma.anon]
            mm.engine.owner_free(vma.anon)
    if vma.shm is not None:
        vma.shm.refs -= 1
        if vma.shm.refs == 0:
            mm.engine.owner_free(vma.shm.owner)


def vma_set_anon(mm, vma: Vma, anon: int) -> None:
    """vma->anon_vma = anon as the merge paths set it, moving the reference."""
    if vma.anon == anon:
        return
    if vma.anon:
        unlink_anon_vma(mm, vma)
    vma.anon = anon
    if anon:
        mm._anon_refs[anon] = mm._anon_refs.get(anon, 0) + 1


def unlink_anon_vma(mm, vma: Vma) -> None:
    """unlink_anon_vmas(): drop vma's anon_vma reference only (its shmem file stays)."""
    shm, vma.shm = vma.shm, None
    vma_put_refs(mm, vma)
    vma.shm = shm
    vma.anon = 0


def vma_link(mm, vma: Vma) -> Vma:
    """vma_link(): insert a new VMA into the tree, taking its references."""
    mm._tree.insert(vma)
    if vma.anon or vma.shm is not None:
        vma_get_refs(mm, vma)
    return vma


def remove_vma(mm, vma: Vma) -> None:
    """vma_iter_clear() + remove_vma(): take a VMA out of the tree, dropping its references."""
    mm._tree.remove(vma)
    vma_put_refs(mm, vma)


# ---------------------------------------------------------------- may two VMAs merge?
def is_mergeable_anon_vma(a1: int, a2: int) -> bool:
    """is_mergeable_anon_vma(): either has none yet, or they are the same."""
    return not a1 or not a2 or a1 == a2


def is_mergeable_vm_flags(f1: int, f2: int) -> bool:
    """is_mergeable_vma() on vm_flags: equal but for VM_SOFTDIRTY."""
    return not ((f1 ^ f2) & ~VM_IGNORE_MERGE)


def can_vma_merge_after(mm, prev: Optional[Vma], start: int, vm_flags: int, anon: int, shm,
                        pgoff: int) -> bool:
    """can_vma_merge_after(): may prev absorb a range starting at start?"""
    return (prev is not None and prev.end == start and is_mergeable_vm_flags(prev.vm_flags, vm_flags)
            and prev.shm is shm and is_mergeable_anon_vma(prev.anon, anon)
            and prev.pgoff + prev.pages(mm.page_shift) == pgoff)


def can_vma_merge_before(mm, nxt: Optional[Vma], end: int, vm_flags: int, anon: int, shm,
                         pgoff: int, pages: int) -> bool:
    """can_vma_merge_before(): may next absorb a range ending at end?"""
    return (nxt is not None and nxt.start == end and is_mergeable_vm_flags(nxt.vm_flags, vm_flags)
            and nxt.shm is shm and is_mergeable_anon_vma(anon, nxt.anon) and pgoff + pages == nxt.pgoff)


# ---------------------------------------------------------------- split and merge
def vma_adjust_trans_huge(mm, addr: int) -> None:
    """vma_adjust_trans_huge(): a VMA boundary inside a huge PMD splits it."""
    if addr & (mm.pmd_size - 1) and addr < mm.task_size:
        mmcore.split_huge_pmd_address(mm.engine, addr)


def _split_vma(mm, vma: Vma, addr: int) -> Vma:
    """__split_vma(): cut vma at addr; returns the upper part."""
    upper = Vma(addr, vma.end, vma.vm_flags, vma.pgoff + ((addr - vma.start) >> mm.page_shift),
                vma.anon, vma.shm, vma.name)
    vma_adjust_trans_huge(mm, addr)
    vma.end = addr
    vma_link(mm, upper)
    return upper


def split_vma(mm, vma: Vma, addr: int) -> Vma:
    """split_vma(): __split_vma() that refuses at max_map_count; a failure
    after an earlier split leaves that split in place, as in the kernel."""
    if mm.map_count >= mm.max_map_count:
        raise _Errno(ENOMEM)
    mm._partial_ok = True
    return _split_vma(mm, vma, addr)


def vma_merge_new_range(mm, start: int, end: int, vm_flags: int, anon: int, shm, pgoff: int,
                        name: str = "") -> Optional[Vma]:
    """vma_merge_new_range(): let a new range [start, end) join its
    neighbours if compatible; returns the VMA now covering it, or None."""
    tree = mm._tree
    prev, nxt = tree.touching(start, end)
    if prev is None and nxt is None:                 # no neighbour touches it: the common case
        return None
    pages = (end - start) >> mm.page_shift
    left = can_vma_merge_after(mm, prev, start, vm_flags, anon, shm, pgoff) and prev.name == name
    right = can_vma_merge_before(mm, nxt, end, vm_flags, anon, shm, pgoff, pages) and nxt.name == name
    if left and right and not is_mergeable_anon_vma(prev.anon, nxt.anon):
        right = False
    if left and right:
        prev.end = nxt.end
        vma_set_anon(mm, prev, prev.anon or nxt.anon or anon)  # take the reference first
        remove_vma(mm, nxt)
        return prev
    if left:
        prev.end = end
        vma_set_anon(mm, prev, prev.anon or anon)
        return prev
    if right:
        tree.set_start(nxt, start)
        nxt.pgoff = pgoff
        vma_set_anon(mm, nxt, nxt.anon or anon)
        return nxt
    return None


def vma_modify(mm, vma: Vma, start: int, end: int, vm_flags: int) -> Vma:
    """vma_modify_flags() -> vma_merge_existing_range() or split: give
    [start, end) of vma new flags, merging with a neighbour where the
    result is compatible, splitting otherwise.  Returns the VMA holding
    [start, end)."""
    tree = mm._tree
    left_side, right_side = start == vma.start, end == vma.end
    pgoff = vma.pgoff + ((start - vma.start) >> mm.page_shift)
    pages = (end - start) >> mm.page_shift
    prev = tree.prev(vma) if left_side else None
    nxt = tree.next(vma) if right_side else None
    merge_left = can_vma_merge_after(mm, prev, start, vm_flags, vma.anon, vma.shm, pgoff) and \
        prev.name == vma.name
    merge_right = can_vma_merge_before(mm, nxt, end, vm_flags, vma.anon, vma.shm, pgoff, pages) and \
        nxt.name == vma.name
    if merge_left and merge_right and not is_mergeable_anon_vma(prev.anon, nxt.anon):
        merge_right = False
    if merge_left and merge_right:                  # prev + vma + next
        vma_set_anon(mm, prev, prev.anon or vma.anon or nxt.anon)
        prev.end = nxt.end
        remove_vma(mm, vma)
        remove_vma(mm, nxt)
        return prev
    if merge_left:
        vma_set_anon(mm, prev, prev.anon or vma.anon)
        if right_side:                               # prev absorbs all of vma
            prev.end = vma.end
            remove_vma(mm, vma)
        else:                                        # prev takes [start, end)
            vma_adjust_trans_huge(mm, end)
            prev.end = end
            vma.pgoff += (end - vma.start) >> mm.page_shift
            tree.set_start(vma, end)
        return prev
    if merge_right:
        vma_set_anon(mm, nxt, nxt.anon or vma.anon)
        if left_side:                                # next absorbs all of vma
            start_, pgoff_ = vma.start, vma.pgoff
            remove_vma(mm, vma)                      # first: starts stay unique
            tree.set_start(nxt, start_)
            nxt.pgoff = pgoff_
        else:                                        # next takes [start, end)
            vma_adjust_trans_huge(mm, start)
            vma.end = start
            tree.set_start(nxt, start)
            nxt.pgoff = pgoff
        return nxt
    if start > vma.start:
        vma = split_vma(mm, vma, start)
    if end < vma.end:
        split_vma(mm, vma, end)
    vma.vm_flags = vm_flags
    return vma


def vma_merge_extend(mm, vma: Vma, delta: int) -> None:
    """vma_merge_extend(): grow vma by delta, joining the next VMA if it
    then touches a compatible one."""
    end = vma.end + delta
    nxt = mm._tree.find_vma(end)
    pages = (end - vma.end) >> mm.page_shift
    pgoff = vma.pgoff + ((vma.end - vma.start) >> mm.page_shift)
    if can_vma_merge_before(mm, nxt, end, vma.vm_flags, vma.anon, vma.shm, pgoff, pages) \
            and nxt.name == vma.name and is_mergeable_anon_vma(vma.anon, nxt.anon):
        vma_set_anon(mm, vma, vma.anon or nxt.anon)
        vma.end = nxt.end
        remove_vma(mm, nxt)
    else:
        vma.end = end


def copy_vma(mm, vma: Vma, addr: int, length: int, pgoff: int):
    """copy_vma(): the destination VMA, merged with a neighbour if it can
    be.  Returns (new_vma, source_vma) since the source may have merged
    into the destination (an unfaulted VMA moved next to itself)."""
    vma_start = vma.start
    if vma.shm is None and not vma.anon:
        pgoff = addr >> mm.page_shift  # unfaulted: take the new place's pgoff
    new = vma_merge_new_range(mm, addr, addr + length, vma.vm_flags, vma.anon, vma.shm, pgoff, vma.name)
    if new is not None:
        src = new if new.start <= vma_start < new.end else vma
        return new, src
    new = vma_link(mm, Vma(addr, addr + length, vma.vm_flags, pgoff, vma.anon, vma.shm, vma.name))
    return new, vma


# ---------------------------------------------------------------- anon_vma (mm/rmap.c, mm/vma.c)
def anon_vma_prepare(mm, vma: Vma) -> None:
    """anon_vma_prepare(): the first anonymous page needs an anon_vma;
    reuse a neighbour's when it could merge later (find_mergeable_anon_vma)."""
    if vma.anon or vma.shm is not None:
        return
    anon = 0
    nxt = mm._tree.next(vma)
    if nxt is not None and anon_vma_compatible(mm, vma, nxt) and nxt.anon:
        anon = nxt.anon
    else:
        prev = mm._tree.prev(vma)
        if prev is not None and anon_vma_compatible(mm, prev, vma) and prev.anon:
            anon = prev.anon
    if not anon:
        anon = mm.engine.owner_new("anon")
    vma_set_anon(mm, vma, anon)


def anon_vma_compatible(mm, a: Vma, b: Vma) -> bool:
    """anon_vma_compatible(): adjacent, same file, flags equal but for
    access bits, contiguous vm_pgoff."""
    return (a.end == b.start and a.shm is b.shm
            and not ((a.vm_flags ^ b.vm_flags) & ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY))
            and b.pgoff == a.pgoff + ((b.start - a.start) >> mm.page_shift))


# ---------------------------------------------------------------- munmap
def free_pgtables(mm, vmas: List[Vma], floor: int, ceiling: int) -> None:
    """free_pgtables() (mm/memory.c): free the page tables under the removed
    VMAs, gathering neighbours closer than a PMD into one free_pgd_range()."""
    n = len(vmas)
    if n == 1:                                       # one VMA: the common case
        mmcore.free_pgd_range(mm.engine, vmas[0].start, vmas[0].end, floor, ceiling)
        return
    i = 0
    while i < n:
        addr, j = vmas[i].start, i
        while j + 1 < n and vmas[j + 1].start <= vmas[j].end + mm.pmd_size:
            j += 1
        nxt_start = vmas[j + 1].start if j + 1 < n else ceiling
        mmcore.free_pgd_range(mm.engine, addr, vmas[j].end, floor, nxt_start)
        i = j + 1


def do_vmi_munmap(mm, start: int, length: int) -> None:
    """do_vmi_munmap() -> do_vmi_align_munmap(): split at the edges, zap,
    free page tables between the neighbours, drop the VMAs."""
    if (mm._pmask & start) or start > mm.task_size or length > mm.task_size - start:
        raise _Errno(EINVAL)
    end = start + ((length + mm._pmask) & ~mm._pmask & U64)   # PAGE_ALIGN()
    if end == start:
        raise _Errno(EINVAL)
    tree = mm._tree
    i, j = tree.span(start, end)                     # the VMAs overlapping [start, end)
    if i == j:
        return
    vl = tree._vmas                                  # the hot path reads the list itself
    for k in range(i, j):                            # vms_gather_munmap_vmas(): can_modify_vma()
        if vl[k].vm_flags & VM_SEALED:
            raise _Errno(EPERM)
    first = vl[i]
    if first.start < start:
        if end < first.end and len(vl) >= mm.max_map_count:
            raise _Errno(ENOMEM)
        _split_vma(mm, first, start)
        i, j = i + 1, j + 1
    if vl[j - 1].end > end:
        _split_vma(mm, vl[j - 1], end)
    vmas = vl[i:j]
    floor = vl[i - 1].end if i > 0 else 0
    ceiling = vl[j].start if j < len(vl) else 0
    eng = mm.engine
    for v in vmas:                                   # unmap_vmas()
        mmcore.zap_page_range(eng, v.start, v.end)
    free_pgtables(mm, vmas, floor, ceiling)
    tree.remove_span(i, j)
    for v in vmas:
        if v.anon or v.shm is not None:
            vma_put_refs(mm, v)
        if v.vm_flags & VM_LOCKED:                   # vms_complete_munmap_vmas()
            mm.locked_vm -= (v.end - v.start) >> mm.page_shift
