# cython: language_level=3
"""x86-64 page-table entry layout and the kernel's helpers on it.

Models arch/x86/include/asm/pgtable_types.h (bits) and asm/pgtable.h
(pte_present, pmd_trans_huge, ...).  Header-only: every helper is inline.

    63  62..52  51 ............... 12  11  10  9   8   7   6  5  4  3  2  1  0
    NX  (avail) [ frame / table id  ]  SD  --  SP  PN  PS  D  A  -  -  US RW P

SD = soft-dirty (_PAGE_SOFT_DIRTY, SOFTW3), SP = special (_PAGE_SPECIAL,
SOFTW1, the zero page), PN = _PAGE_PROTNONE (the GLOBAL bit, meaningful only
when P is clear), PS = _PAGE_PSE (a huge leaf at PMD or PUD level).
"""
from libc.stdint cimport uint64_t, int64_t

cdef enum:
    _PAGE_PRESENT = 1 << 0
    _PAGE_RW = 1 << 1
    _PAGE_USER = 1 << 2
    _PAGE_ACCESSED = 1 << 5
    _PAGE_DIRTY = 1 << 6
    _PAGE_PSE = 1 << 7
    _PAGE_PROTNONE = 1 << 8
    _PAGE_SPECIAL = 1 << 9
    _PAGE_SOFT_DIRTY = 1 << 11
    _PAGE_PFN_SHIFT = 12

# _PAGE_NX and the PFN mask do not fit a C enum (int): C macros instead.
cdef extern from *:
    """
    #define PYMM_PAGE_NX (((unsigned long long)1) << 63)
    #define PYMM_PTE_PFN_MASK ((((unsigned long long)1 << 52) - 1) & ~0xfffULL)
    #define PYMM_PAGE_TABLE (0x1ULL | 0x2ULL | 0x4ULL | 0x20ULL | 0x40ULL)
    """
    const uint64_t _PAGE_NX "PYMM_PAGE_NX"
    const uint64_t PTE_PFN_MASK "PYMM_PTE_PFN_MASK"
    # _PAGE_TABLE: what pmd_populate()/pud_populate() write for a user table.
    const uint64_t _PAGE_TABLE "PYMM_PAGE_TABLE"


cdef inline uint64_t pfn_entry(int64_t pfn, uint64_t flags) noexcept nogil:
    """pfn_pte(): an entry pointing at frame (or table) ``pfn``."""
    return ((<uint64_t>pfn) << _PAGE_PFN_SHIFT) | flags

cdef inline int64_t entry_pfn(uint64_t e) noexcept nogil:
    """pte_pfn() / pmd_pfn(): the frame or table id an entry points to."""
    return <int64_t>((e & PTE_PFN_MASK) >> _PAGE_PFN_SHIFT)

cdef inline uint64_t entry_flags(uint64_t e) noexcept nogil:
    return e & ~PTE_PFN_MASK

cdef inline bint pte_none(uint64_t e) noexcept nogil:
    return e == 0

cdef inline bint pte_present(uint64_t e) noexcept nogil:
    # Linux counts PROT_NONE entries as present: the page is there, the MMU
    # just refuses access (x86 pte_present()).
    return (e & (_PAGE_PRESENT | _PAGE_PROTNONE)) != 0

cdef inline bint pte_hw_present(uint64_t e) noexcept nogil:
    """What the MMU checks: the P bit alone."""
    return (e & _PAGE_PRESENT) != 0

cdef inline bint pte_write(uint64_t e) noexcept nogil:
    return (e & _PAGE_RW) != 0

cdef inline bint pte_dirty(uint64_t e) noexcept nogil:
    return (e & _PAGE_DIRTY) != 0

cdef inline bint pte_special(uint64_t e) noexcept nogil:
    return (e & _PAGE_SPECIAL) != 0

cdef inline bint pte_soft_dirty(uint64_t e) noexcept nogil:
    return (e & _PAGE_SOFT_DIRTY) != 0

cdef inline uint64_t pte_mksoft_dirty(uint64_t e) noexcept nogil:
    return e | _PAGE_SOFT_DIRTY

cdef inline bint pmd_none(uint64_t e) noexcept nogil:
    return e == 0

cdef inline bint pmd_present(uint64_t e) noexcept nogil:
    return (e & (_PAGE_PRESENT | _PAGE_PROTNONE | _PAGE_PSE)) != 0

cdef inline bint pmd_leaf(uint64_t e) noexcept nogil:
    """pmd_leaf()/pud_leaf(): a huge mapping rather than a pointer to a table."""
    return (e & _PAGE_PSE) != 0

cdef inline bint pmd_trans_huge(uint64_t e) noexcept nogil:
    return (e & _PAGE_PSE) != 0

cdef inline bint pud_none(uint64_t e) noexcept nogil:
    return e == 0

cdef inline bint pud_leaf(uint64_t e) noexcept nogil:
    return (e & _PAGE_PSE) != 0
