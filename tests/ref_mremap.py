"""A small pure-Python reference of move_page_tables(), for testing mmcore.

Written from mm/mremap.c on a different data structure: a page-table tree of
nested dicts (index -> child dict, or index -> raw leaf entry).  It shares no
code with the Cython loop, so agreement between the two means the C indexing,
the table allocation and the aliasing of overlapping source/destination tables
all behave as the kernel's loop says they should.
"""
from __future__ import annotations

PSE = 1 << 7
PRESENT = 1 << 0
PROTNONE = 1 << 8
SOFT_DIRTY = 1 << 11
PFN_SHIFT = 12
PFN_MASK = ((1 << 52) - 1) & ~0xFFF


def is_leaf_entry(e: int) -> bool:
    return bool(e & PSE)


def pfn(e: int) -> int:
    return (e & PFN_MASK) >> PFN_SHIFT


def export_tree(eng):
    """The engine's page tables as nested dicts (table ids dropped)."""
    g = eng.geometry
    lpte = g.levels - 1

    def table(tid, level):
        row = eng.table_row(tid)
        out = {}
        for i in row.nonzero()[0]:
            e = int(row[i])
            if level == lpte or is_leaf_entry(e):
                out[int(i)] = e
            else:
                out[int(i)] = table(pfn(e), level + 1)
        return out

    return table(0, 0)


def count_tables(tree) -> int:
    """Tables below the root (the root itself not counted)."""
    n = 0
    for v in tree.values():
        if isinstance(v, dict):
            n += 1 + count_tables(v)
    return n


class RefMM:
    """Page tables as nested dicts, with the kernel's move loop on top."""

    def __init__(self, geometry, tree, huge_zero_pfn):
        self.g = geometry
        self.root = tree
        self.lpte = geometry.levels - 1
        self.lpmd = geometry.levels - 2
        self.lpud = geometry.levels - 3
        self.huge_zero = huge_zero_pfn
        self.stats = dict(pte_moves=0, pmd_moves=0, pud_moves=0, huge_pmd_moves=0,
                          pgtables_allocated=0, pte_slots_visited=0, huge_pmd_splits=0)
        self.warnings = []
        self.warned_once = set()

    # -- walking -------------------------------------------------------------
    def idx(self, addr, level):
        return self.g.index(addr, level)

    def table_at(self, addr, level):
        """get_old_pmd()-style walk: the dict at ``level`` or None."""
        t = self.root
        for lv in range(level):
            e = t.get(self.idx(addr, lv))
            if e is None or not isinstance(e, dict):
                return None
            t = e
        return t

    def alloc_at(self, addr, level):
        t = self.root
        for lv in range(level):
            i = self.idx(addr, lv)
            e = t.get(i)
            if e is None:
                e = t[i] = {}
                self.stats["pgtables_allocated"] += 1
            elif not isinstance(e, dict):
                raise AssertionError("huge leaf in the way of an allocation")
            t = e
        return t

    # -- pieces of mm/mremap.c -------------------------------------------------
    @staticmethod
    def get_extent(old_addr, old_end, new_addr, size):
        nxt = (old_addr + size) & ~(size - 1)
        extent = min(nxt - old_addr, old_end - old_addr)
        nxt = (new_addr + size) & ~(size - 1)
        return min(extent, nxt - new_addr)

    def warn(self, policy, site, old, new):
        if policy == 0:
            return
        if policy == 2 and site in self.warned_once:
            return
        self.warned_once.add(site)
        self.warnings.append((site, old, new))

    def split_huge_pmd(self, tbl, i):
        e = tbl[i]
        flags = (e & ~PFN_MASK) & ~PSE
        base = pfn(e)
        n = self.g.entries(self.lpte)
        if base == self.huge_zero:
            tbl[i] = {k: (0 << PFN_SHIFT) | flags for k in range(n)}
        else:
            tbl[i] = {k: ((base + k) << PFN_SHIFT) | flags for k in range(n)}
        # the table is the one deposited with the huge PMD (withdrawn, not allocated)
        self.stats["huge_pmd_splits"] += 1

    def move_ptes(self, extent, old_tbl, oi, new_tbl, ni):
        nr = extent >> self.g.page_shift
        for k in range(nr):
            self.stats["pte_slots_visited"] += 1
            pte = old_tbl.get(oi + k, 0)
            if pte == 0:
                continue
            if pte & (PRESENT | PROTNONE):
                pte |= SOFT_DIRTY
            del old_tbl[oi + k]
            new_tbl[ni + k] = pte
            self.stats["pte_moves"] += 1

    def move_page_tables(self, old_addr, new_addr, length, *, move_pmd=True, move_pud=True,
                         pud_step=2, pmd_warn=2, pud_warn=2, huge_pmd_warn=0):
        g = self.g
        pud_size, pmd_size = g.pud_size, g.pmd_size
        old_end = old_addr + length
        if not length:
            return old_addr
        while old_addr < old_end:
            extent = self.get_extent(old_addr, old_end, new_addr, pud_size)
            if g.levels >= 3 and (pud_step == 2 or (pud_step == 1 and move_pud and extent == pud_size)):
                old_t = self.table_at(old_addr, self.lpud)
                oi = self.idx(old_addr, self.lpud)
                if old_t is None or oi not in old_t:
                    old_addr += extent
                    new_addr += extent
                    continue
                new_t = self.alloc_at(new_addr, self.lpud)
                ni = self.idx(new_addr, self.lpud)
                if move_pud and extent == pud_size and isinstance(old_t[oi], dict):
                    if ni in new_t:
                        self.warn(pud_warn, "pud", old_addr, new_addr)
                    else:
                        new_t[ni] = old_t.pop(oi)
                        self.stats["pud_moves"] += 1
                        old_addr += extent
                        new_addr += extent
                        continue
            extent = self.get_extent(old_addr, old_end, new_addr, pmd_size)
            old_t = self.table_at(old_addr, self.lpmd)
            oi = self.idx(old_addr, self.lpmd)
            if old_t is None or oi not in old_t:
                old_addr += extent
                new_addr += extent
                continue
            new_t = self.alloc_at(new_addr, self.lpmd)
            ni = self.idx(new_addr, self.lpmd)
            e = old_t[oi]
            if not isinstance(e, dict):  # huge leaf
                if extent == pmd_size:
                    if ni in new_t:
                        self.warn(huge_pmd_warn, "huge", old_addr, new_addr)
                    else:
                        new_t[ni] = old_t.pop(oi) | SOFT_DIRTY
                        self.stats["huge_pmd_moves"] += 1
                        old_addr += extent
                        new_addr += extent
                        continue
                self.split_huge_pmd(old_t, oi)
            elif move_pmd and extent == pmd_size:
                if ni in new_t:
                    self.warn(pmd_warn, "pmd", old_addr, new_addr)
                else:
                    new_t[ni] = old_t.pop(oi)
                    self.stats["pmd_moves"] += 1
                    old_addr += extent
                    new_addr += extent
                    continue
            if oi not in old_t:
                old_addr += extent
                new_addr += extent
                continue
            if ni not in new_t:
                new_t[ni] = {}
                self.stats["pgtables_allocated"] += 1
            self.move_ptes(extent, old_t[oi], self.idx(old_addr, self.lpte), new_t[ni],
                           self.idx(new_addr, self.lpte))
            old_addr += extent
            new_addr += extent
        return old_addr
