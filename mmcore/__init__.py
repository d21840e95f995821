"""mmcore: the compiled page-table engine behind pymm.

Page tables live on flat ``uint64`` arrays with the real x86-64 entry layout;
every loop over entries or pages is typed Cython that runs without the GIL.
The engine knows nothing of VMAs: :mod:`pymm` passes what a VMA would tell the
kernel (bounds, owner, vm_pgoff, protection) with each call.

The modules mirror the kernel's files.  ``Engine`` holds the storage, as
``struct mm_struct`` and its allocators do; what acts on it is a function in
the module named for the kernel file that holds the logic, and takes the
engine first, as the kernel's functions take the mm.  Bottom to top (a module
cimports only modules below it):

``geometry``, ``_entries.pxd``, ``_region.pxd``
    the page-table geometry of an arch (levels, bits per level, page size),
    the x86-64 entry bits (arch/x86/include/asm/pgtable_types.h) and the
    growable arrays behind the engine.  ``Geometry``, ``X86_64``,
    ``X86_64_LA57``, ``ARM64_64K``, ``GEOMETRIES``.
``_core`` -- struct mm_struct, include/asm-generic/pgalloc.h, mm/page_alloc.c
    ``Engine(geometry)``: page-table pages, frames, anon_vma and shmem owners
    (``owner_new``, ``owner_free``, ``owner_kind``, ``shmem_resident``),
    counters (``stats``, ``reset_stats``, ``rss``, ``memory``), warnings
    (``take_warnings``, ``record_warning``, ``pending_warnings``), storage
    introspection (``table_levels``, ``table_row``, ``frame_info``,
    ``frame_bytes``) and sizes (``page_size``, ``pmd_size``, ``pud_size``,
    ``levels``, ``entries_per_table``, ``n_tables``, ``n_frames``,
    ``zero_frames``).  ``COUNTER_NAMES``, ``WARN_SITES``.  One call at a
    time per engine: a call arriving while another thread's call runs on
    the same engine raises ``EngineBusy`` (a RuntimeError; ``busy`` tells
    whether a call runs).  ``max_pages``
    bounds page tables + frames (the simulated RAM; ``pages_used``): past
    it a fault raises ``EngineOutOfMemory`` (a MemoryError) and
    ``move_page_tables()`` stops early.  Populate, memset and stamp work
    in 1 GiB pieces and answer a signal (Ctrl-C) between them.
``huge_memory`` -- mm/huge_memory.c
    ``split_huge_pmd_address(eng, addr)``; the THP fault and
    ``split_huge_pmd()`` for the modules above.
``pagewalk`` -- mm/pagewalk.c, fs/proc/task_mmu.c, mm/ptdump.c
    ``walk(eng, addr)``, ``translate(eng, addr, write=False)``,
    ``pagemap(eng, start, npages)``, ``page_tags(eng, start, npages)``,
    ``leaf_runs(eng, start, end)``, ``table_tree(eng)``.
``memory`` -- mm/memory.c
    ``handle_mm_fault(eng, start, end, *, vma_start, vma_end, owner, pgoff,
    write=False, writable=True, shared=False, thp=False, zero_page=True,
    exec_=False, protnone=False, fill=-1, fault_around=1)``,
    ``do_fault_around(eng, addr, *, vma_start, vma_end, owner, pgoff,
    writable=True, exec_=False, fault_around=16)``,
    ``pmd_alloc(eng, addr)``,
    ``zap_page_range(eng, start, end, *, reclaim_pt=False)``,
    ``free_pgd_range(eng, addr, end, floor, ceiling)``.
``access`` -- mm/memory.c's __access_remote_vm(): the CPU's accesses
    ``read_bytes(eng, addr, n)``, ``write_bytes(eng, addr, data)``,
    ``memset_pages(eng, start, end, value)``, ``stamp_pages(eng, start, end)``.
``mprotect`` -- mm/mprotect.c
    ``change_protection(eng, start, end, read=True, write=False, exec_=False)``.
``mremap`` -- mm/mremap.c
    ``MoveControl`` (struct pagetable_move_control and a kernel's policy),
    ``move_page_tables(eng, pmc)``, ``move_range(eng, old_addr, new_addr,
    old_end, len_in, policy)``, ``move_vma_tables(eng, old_addr, new_addr,
    length, policy, floor, ceiling)``, ``WholeVmaMove`` (a whole-VMA move
    on pymm's VMA tree in one call), ``KernelBUG``, ``PUD_STEP_*``, ``WARN_*``.
``check`` -- mm/page_table_check.c
    ``check_scan(eng, vstart, vend, vowner, vpgoff, max_problems=100)``,
    ``digest(eng)``, ``PROBLEM_CODES``.

Every name above is also importable from ``mmcore`` itself.  Every function
validates its arguments (TypeError, ValueError, OverflowError) before any
work without the GIL.

Example::

    >>> import mmcore
    >>> eng = mmcore.Engine(mmcore.X86_64)
    >>> anon = eng.owner_new("anon")
    >>> GiB = 1 << 30
    >>> mmcore.handle_mm_fault(eng, GiB, 2 * GiB, vma_start=GiB, vma_end=2 * GiB, owner=anon,
    ...                        pgoff=GiB >> 12, write=True, fill=0x41)
    >>> pmc = mmcore.MoveControl(GiB, 4 * GiB, GiB)
    >>> mmcore.move_page_tables(eng, pmc), eng.stats()["pud_moves"]
    (True, 1)
    >>> mmcore.read_bytes(eng, 4 * GiB + 12345, 3), mmcore.translate(eng, GiB)
    ((b'AAA', 3), -1)
"""
from mmcore.geometry import ARM64_64K, GEOMETRIES, X86_64, X86_64_LA57, Geometry
from mmcore._core import COUNTER_NAMES, WARN_SITES, Engine, EngineBusy, EngineOutOfMemory
from mmcore.huge_memory import split_huge_pmd_address
from mmcore.pagewalk import leaf_runs, page_tags, pagemap, table_tree, translate, walk
from mmcore.memory import do_fault_around, free_pgd_range, handle_mm_fault, pmd_alloc, zap_page_range
from mmcore.access import memset_pages, read_bytes, stamp_pages, write_bytes
from mmcore.mprotect import change_protection
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
    move_vma_tables,
    WholeVmaMove,
)
from mmcore.check import PROBLEM_CODES, check_scan, digest

__all__ = [
    # geometry
    "Geometry", "GEOMETRIES", "X86_64", "X86_64_LA57", "ARM64_64K",
    # _core
    "Engine", "EngineBusy", "EngineOutOfMemory", "COUNTER_NAMES", "WARN_SITES",
    # huge_memory
    "split_huge_pmd_address",
    # pagewalk
    "walk", "translate", "pagemap", "page_tags", "leaf_runs", "table_tree",
    # memory
    "handle_mm_fault", "do_fault_around", "pmd_alloc", "zap_page_range", "free_pgd_range",
    # access
    "read_bytes", "write_bytes", "memset_pages", "stamp_pages",
    # mprotect
    "change_protection",
    # mremap
    "MoveControl", "KernelBUG", "move_page_tables", "move_range", "move_vma_tables", "WholeVmaMove",
    "PUD_STEP_NONE", "PUD_STEP_IF_PUD_SIZED", "PUD_STEP_ALWAYS",
    "WARN_SILENT", "WARN_ON", "WARN_ON_ONCE",
    # check
    "PROBLEM_CODES", "check_scan", "digest",
]
