"""mmcore: the compiled page-table engine behind pymm.

Page tables live on flat ``uint64`` arrays with the real x86-64 entry layout;
walks, faults, zap, ``free_pgd_range`` and the ``move_page_tables`` loop are
typed Cython that runs without the GIL.  The engine knows nothing of VMAs;
:mod:`pymm` supplies them.

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> anon = eng.owner_new("anon")
    >>> GiB = 1 << 30
    >>> mmcore.handle_mm_fault(eng, GiB, 2 * GiB, vma_start=GiB, vma_end=2 * GiB, owner=anon,
    ...                        pgoff=GiB >> 12, write=True)
    >>> pmc = mmcore.MoveControl(GiB, 4 * GiB, GiB)
    >>> mmcore.move_page_tables(eng, pmc), eng.stats()["pud_moves"]
    (True, 1)
"""
from mmcore._core import COUNTER_NAMES, WARN_SITES, Engine
from mmcore.check import PROBLEM_CODES, check_scan, digest
from mmcore.huge_memory import split_huge_pmd_address
from mmcore.memory import (
    do_fault_around,
    free_pgd_range,
    handle_mm_fault,
    memset_pages,
    read_bytes,
    stamp_pages,
    write_bytes,
    zap_page_range,
)
from mmcore.mprotect import change_protection
from mmcore.pagewalk import leaf_runs, page_tags, pagemap, table_tree, translate, walk
from mmcore.mremap import (
    PUD_STEP_ALWAYS,
    PUD_STEP_IF_PUD_SIZED,
    PUD_STEP_NONE,
    WARN_ON,
    WARN_ON_ONCE,
    WARN_SILENT,
    KernelBUG,
    MoveControl,
    move_page_tables,
    move_range,
)
from mmcore.geometry import ARM64_64K, GEOMETRIES, X86_64, X86_64_LA57, Geometry

__all__ = [
    "Engine", "MoveControl", "KernelBUG", "move_page_tables", "move_range", "Geometry", "GEOMETRIES",
    "X86_64", "X86_64_LA57", "ARM64_64K", "COUNTER_NAMES", "PROBLEM_CODES",
    "WARN_SITES", "PUD_STEP_NONE", "PUD_STEP_IF_PUD_SIZED", "PUD_STEP_ALWAYS",
    "WARN_SILENT", "WARN_ON", "WARN_ON_ONCE", "check_scan", "digest",
    "change_protection", "handle_mm_fault", "do_fault_around", "zap_page_range", "free_pgd_range",
    "read_bytes", "write_bytes", "memset_pages", "stamp_pages", "split_huge_pmd_address",
    "walk", "translate", "pagemap", "page_tags", "leaf_runs", "table_tree",
]
