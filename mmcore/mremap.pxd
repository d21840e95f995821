# cython: language_level=3
"""Declarations of mremap.pyx (mm/mremap.c): the move_page_tables() loop and
its control structure, for modules above it that run the loop themselves."""
from libc.stdint cimport uint64_t, int64_t

from mmcore._core cimport Engine

cdef enum:
    # Values of MoveControl.pud_step
    C_PUD_STEP_NONE = 0          # up to 5.10: no PUD level in the loop
    C_PUD_STEP_IF_PUD_SIZED = 1  # 5.11 (c49dd3401802): the PUD only for PUD-sized extents
    C_PUD_STEP_ALWAYS = 2        # later: get_old_pud()/alloc_new_pud() every extent
    # Values of the *_warn policies
    C_WARN_SILENT = 0
    C_WARN_ON = 1
    C_WARN_ON_ONCE = 2


cdef class MoveControl:
    cdef public uint64_t old_addr, new_addr, old_end, len_in
    cdef public bint for_stack, need_rmap_locks
    cdef public bint move_pmd, move_pud
    cdef public int pud_step, pmd_warn, pud_warn, huge_pmd_warn


cdef struct Recycle:
    # Source PTE tables emptied by move_ptes() whose span lies inside
    # [lo, hi) (a whole VMA that is unmapped right after the move) give
    # their rows to the destination's allocations at once.  Logically they
    # live on until free_pgtables(): Engine.tlive still counts them and
    # pgtables_freed counts them then (recycle_done()), so counters and the
    # page limit behave as the kernel's.  ``addr``/``flags`` record each
    # one, to put them back if the move stops early (recycle_undo()).
    uint64_t lo
    uint64_t hi
    uint64_t *addr
    uint64_t *flags
    int64_t n
    int64_t cap


cdef int move_page_tables_c(Engine eng, MoveControl pmc, Recycle *rc) noexcept nogil
