"""pymm.check(mm): the invariants of DESIGN.md, tested on an address space.

* no present leaf maps an address outside every VMA (no orphan PTEs);
* rmap: a leaf at ``a`` in VMA ``v`` maps a frame owned by ``v``'s anon_vma
  (or shmem object) whose index is ``v.vm_pgoff + (a - v.vm_start) / PAGE_SIZE``;
* no frame lost or mapped twice: map counts match the mappings;
* no page-table page leaked: every table is reachable and covers some VMA;
* the VMA tree itself is sorted, non-overlapping and page-aligned.

The scans over entries run in the Cython core (mmcore.check_scan, after mm/page_table_check.c); this
module adds the VMA-level checks and words each problem.

Example::

    >>> mm = pymm.MM(kernel="5.8+linus-v2")      # Kirill's test case:
    >>> src = mm.mmap(4 << 30, 2 << 20, pymm.PROT_READ | pymm.PROT_WRITE,
    ...               pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED)
    >>> mm.madvise(src, 2 << 20, pymm.MADV_NOHUGEPAGE)
    >>> mm.memset(src, 0x33, 2 << 20)
    >>> _ = mm.mremap(src + 4096, 4096, 4096, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED,
    ...               (5 << 30) + 4096)
    >>> for p in pymm.check(mm): print(p)
    0x140000000: orphan-pte: a present entry maps frame 1 outside every VMA
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

import mmcore
from pymm.constants import VM_ACCESS_FLAGS  # noqa: F401


@dataclass(frozen=True)
class Problem:
    """One broken invariant: where, which, and what was found."""

    address: int
    invariant: str
    detail: str

    def __str__(self):
        return f"{self.address:#x}: {self.invariant}: {self.detail}"


_DETAIL = {
    "orphan-pte": lambda f, e: f"a present entry maps frame {f} outside every VMA",
    "rmap-owner": lambda f, e: f"the frame belongs to owner {f}, the VMA's is {e}",
    "rmap-index": lambda f, e: f"page->index is {f:#x}, the VMA says {e:#x}",
    "maps-free-frame": lambda f, e: f"the entry maps frame {f}, which is free",
    "double-mapped": lambda f, e: f"anonymous frame mapped {f} times",
    "lost-frame": lambda f, e: "allocated anonymous frame mapped by no entry (lost page)",
    "shmem-mapcount": lambda f, e: f"shmem page mapped {f} times, its map count says {e}",
    "table-unreachable": lambda f, e: f"page-table page at level {f} is not in the tree (leaked)",
    "table-level": lambda f, e: f"table {f} linked where a level-{e} table belongs",
    "stale-table": lambda f, e: f"page-table page {f} covers no VMA (should have been freed)",
    "frame-count": lambda f, e: f"{f} frames found live, the allocator counts {e}",
    "deposit": lambda f, e: f"{f} PTE tables deposited with this PMD table for {e} huge PMDs",
}

_ADDRESS_IS_FRAME = {"double-mapped", "lost-frame", "shmem-mapcount"}


def check(mm, max_problems: int = 100) -> List[Problem]:
    """The broken invariants of ``mm`` (empty: all hold)."""
    if not hasattr(mm, "_tree") or not hasattr(mm, "engine"):
        raise TypeError(f"pymm.check() needs a pymm.MM, not a {type(mm).__name__}: it reads pymm's own "
                        "VMA tree and page tables.  HostMM runs the real kernel and answers only what "
                        "the kernel shows a process (syscalls, read/write, maps(), pagemap())")
    problems: List[Problem] = []
    vmas = mm._tree.all()
    prev_end = 0
    ps = mm.page_size
    for v in vmas:
        if v.start >= v.end:
            problems.append(Problem(v.start, "vma-tree", f"empty or inverted VMA {v}"))
        if (v.start | v.end) & (ps - 1):
            problems.append(Problem(v.start, "vma-tree", f"unaligned VMA {v}"))
        if v.start < prev_end:
            problems.append(Problem(v.start, "vma-tree", f"VMA {v} overlaps its predecessor"))
        if v.end > mm.task_size:
            problems.append(Problem(v.start, "vma-tree", f"VMA {v} beyond task_size"))
        prev_end = v.end
    refs = {}
    for v in vmas:
        if v.anon:
            refs[v.anon] = refs.get(v.anon, 0) + 1
    if refs != mm._anon_refs:
        problems.append(Problem(0, "vma-tree", "anon_vma reference counts disagree with the VMAs"))
    if problems:
        return problems[:max_problems]
    starts = np.array([v.start for v in vmas], dtype=np.uint64)
    ends = np.array([v.end for v in vmas], dtype=np.uint64)
    owners = np.array([v.owner for v in vmas], dtype=np.int64)
    pgoffs = np.array([v.pgoff for v in vmas], dtype=np.uint64)
    for code, addr, found, expected in mmcore.check_scan(mm.engine, starts, ends, owners, pgoffs,
                                                         max_problems):
        words = _DETAIL[code](found, expected)
        if code in _ADDRESS_IS_FRAME:
            words = f"frame {addr}: {words}"
            addr = 0
        problems.append(Problem(int(addr), code, words))
    return problems[:max_problems]
