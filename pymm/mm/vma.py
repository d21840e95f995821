"""VMAs: the kernel's vm_area_struct, and the sorted tree that holds them.

The tree is a list sorted by start with a parallel list of starts for
``bisect``: lookups are O(log n), and every operation touches only the VMAs
it changes (inserting shifts the list in C, never in Python).
"""
from __future__ import annotations

from bisect import bisect_right
from collections import namedtuple
from dataclasses import dataclass
from typing import List, Optional

from pymm.constants import (MAP_GROWSDOWN, MAP_PRIVATE, MAP_SHARED, PROT_EXEC, PROT_READ,
                            PROT_WRITE, VM_EXEC, VM_GROWSDOWN, VM_MAYSHARE, VM_READ, VM_WRITE)


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
        ('rw-p', 4)
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


VmaView = namedtuple("VmaView", "start end vm_flags pgoff anon_vma shmem name")
VmaView.__doc__ = """A cheap read-only view of a VMA, for kernel hooks (see PageTableMove)."""


def view(v: Vma) -> VmaView:
    return VmaView(v.start, v.end, v.vm_flags, v.pgoff, v.anon or None,
                   v.shm.owner if v.shm is not None else None, v.name)


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
        i = bisect_right(self._starts, start) - 1
        if i < 0 or self._vmas[i].end <= start:
            i += 1
        j = bisect_right(self._starts, end - 1) if end else len(self._vmas)
        return i, max(i, j)

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
