"""/proc/pid/{maps,status,pagemap}: fs/proc/task_mmu.c of Linux 6.18.

What a process can read about its own address space: the maps text
(``show_map_vma()``), the memory lines of status (``task_mem()``) and the
pagemap entries (``pagemap_read()``; the PTE walk itself is mmcore's).

Example (``mm.format_maps()`` is a thin wrapper around :func:`show_maps`)::

    >>> a = mm.mmap(0x10000, 4096, pymm.PROT_READ, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    >>> show_maps(mm)
    '00010000-00011000 r--p 00000000 00:00 0 \\n'
"""
from __future__ import annotations

from typing import Dict

import numpy as np

import mmcore
from pymm import constants as C
from pymm.mm.rlimit import locked_vm
from pymm.mm.vma import perms

PM_SOFT_DIRTY = np.uint64(1 << 55)


def show_maps(mm) -> str:
    """show_map_vma() for every VMA: the /proc/pid/maps text."""
    lines = []
    for v in mm._tree:
        if v.shm is not None:
            off, dev, ino, name = v.pgoff << mm.page_shift, "00:01", v.shm.inode, "/dev/zero (deleted)"
        else:
            off, dev, ino, name = 0, "00:00", 0, v.name
        line = f"{v.start:08x}-{v.end:08x} {perms(v.vm_flags)} {off:08x} {dev} {ino} "
        if name:
            line = line.ljust(73) + name
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def task_mem(mm) -> Dict[str, int]:
    """task_mem(): the memory lines of /proc/pid/status that pymm models, in
    kB, plus map_count.

    * ``VmSize``: total_vm, every VMA;
    * ``VmLck``: mm->locked_vm (a counter, as in the kernel);
    * ``VmRSS`` = ``RssAnon`` + ``RssShmem`` (MM_ANONPAGES, MM_SHMEMPAGES;
      pymm maps no files, so RssFile is 0);
    * ``VmPTE``: mm_pgtables_bytes(), the PUD, PMD and PTE tables
      (mm_inc_nr_puds()/pmds()/ptes(); the pgd and, with 5 levels, the P4D
      tables are not counted), the PTE tables deposited with huge PMDs
      included.  i386-pae's kernel preallocates its PMDs with the pgd
      (pgd_prepopulate_pmd()); pymm allocates them on use.

    Example::

        >>> m = pymm.MM()
        >>> a = m.mmap(0, 8192, pymm.PROT_READ | pymm.PROT_WRITE,
        ...            pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_LOCKED)
        >>> s = task_mem(m)
        >>> s["VmLck"], s["RssAnon"], s["VmPTE"]      # populated: a PUD, a PMD and a PTE table
        (8, 8, 12)
    """
    anon, shmem = mm.engine.rss()
    kb = mm.page_size // 1024
    size = sum(v.end - v.start for v in mm._tree)
    tables = mm.engine.n_tables
    if mm.engine.levels == 5:                      # p4d_alloc() counts nothing
        tables -= int(np.count_nonzero(mm.engine.table_levels() == 1))
    return {"VmSize": size // 1024, "VmLck": locked_vm(mm) * kb, "VmRSS": (anon + shmem) * kb,
            "RssAnon": anon * kb, "RssShmem": shmem * kb, "VmPTE": tables * kb,
            "map_count": mm.map_count}


def pagemap_read(mm, start: int, end: int) -> np.ndarray:
    """pagemap_read(): the entries of the pages [start, end), VM_SOFTDIRTY
    VMAs marking all of theirs soft-dirty."""
    n = (end - start) >> mm.page_shift
    out = mmcore.pagemap(mm.engine, start, n)
    for v in mm._tree.intersecting(start, end):   # VM_SOFTDIRTY marks every entry
        if v.vm_flags & C.VM_SOFTDIRTY:
            lo = (max(v.start, start) - start) >> mm.page_shift
            hi = (min(v.end, end) - start) >> mm.page_shift
            out[lo:hi] |= PM_SOFT_DIRTY
    return out
