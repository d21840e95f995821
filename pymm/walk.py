"""mm.walk(addr): a page-table walk, level by level, as the MMU does it.

Works for any geometry (4-level x86-64, 5-level LA57, ...).  Iterate the
walk for its steps; ``str()`` explains it, ``_repr_html_`` draws it in a
notebook.

Example (the stack after exec's shift, ``pymm show --walk 0x7fffffa01234``)::

    >>> import warnings; warnings.simplefilter("ignore")    # the shift's WARNING
    >>> mm = pymm.MM(kernel="5.8")
    >>> start = mm.setup_exec_stack(arg_bytes=4 << 20)
    >>> mm.shift_arg_pages(start, 2 << 20)
    >>> print(mm.walk(0x7fffffa01234))
    walk of 0x7fffffa01234 (x86_64, 4 levels)
      0x7fffffa01234 = pgd 255 | pud 511 | pmd 509 | pte 1 | offset 0x234
      pgd[255]  (bits 47-39) in table 0: 0x0000000000001067 -> table 1  P RW US A D
      pud[511]  (bits 38-30) in table 1: 0x0000000000002067 -> table 2  P RW US A D
      pmd[509]  (bits 29-21) in table 2: 0x0000000000003067 -> table 3  P RW US A D
      pte[1]    (bits 20-12) in table 3: 0x8000000000003867 -> frame 3  P RW US A D SD NX
      = frame 3 + offset 0x234
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import mmcore
from pymm.arches import leaf_level_name

FLAG_BITS = [(0, "P"), (1, "RW"), (2, "US"), (5, "A"), (6, "D"), (7, "PS"), (8, "G"),
             (9, "SPECIAL"), (11, "SD"), (63, "NX")]
PFN_MASK = ((1 << 52) - 1) & ~0xFFF


def decode_flags(entry: int) -> List[str]:
    """Names of the bits set in an x86-64 page-table entry.  Bit 8 is
    GLOBAL in a present entry and _PAGE_PROTNONE in a non-present one."""
    names = [name for bit, name in FLAG_BITS if entry >> bit & 1]
    if not entry & 1:
        names = ["PROTNONE" if n == "G" else n for n in names]
    return names


# arm64 descriptors (arch/arm64/include/asm/pgtable-hwdef.h, pgtable-prot.h)
ARM64_VALID, ARM64_TABLE = 1 << 0, 1 << 1          # bit 1: table (or page at the last level)
ARM64_AP_USER, ARM64_AP_RDONLY = 1 << 6, 1 << 7    # AP[1] EL0 access, AP[2] read-only
ARM64_SH_INNER = 3 << 8
ARM64_AF, ARM64_NG = 1 << 10, 1 << 11
ARM64_DBM, ARM64_PXN, ARM64_UXN = 1 << 51, 1 << 53, 1 << 54
ARM64_SW_DIRTY, ARM64_SW_PROT_NONE = 1 << 55, 1 << 58
ARM64_TABLE_PXN = 1 << 59                          # PXNTable in a table descriptor
ARM64_BITS = [(0, "valid"), (1, "table"), (6, "AP[1]=EL0"), (7, "AP[2]=RO"), (10, "AF"), (11, "nG"),
              (51, "DBM"), (53, "PXN"), (54, "UXN"), (55, "DIRTY"), (58, "PROT_NONE"), (59, "PXNTable")]


def arm64_descriptor(entry: int, last: bool, page_shift: int) -> int:
    """The arm64 descriptor Linux would write for an engine entry (kept in
    x86 layout): valid/table bits, AF, AP[2:1], nG, inner shareable, DBM
    (PTE_WRITE), UXN/PXN, and the output address in bits [47:page_shift]."""
    if not entry & 0x101:
        return 0
    frame = (entry & PFN_MASK) >> 12
    d = (frame << page_shift) & ((1 << 48) - 1)
    leaf = last or bool(entry & 0x80)
    if not leaf:                                   # __pmd_populate(): PMD_TYPE_TABLE | PXNTable
        return d | ARM64_VALID | ARM64_TABLE | ARM64_TABLE_PXN
    d |= ARM64_VALID if entry & 1 else ARM64_SW_PROT_NONE
    if last:
        d |= ARM64_TABLE                           # a page descriptor (a block has bit 1 clear)
    d |= ARM64_SH_INNER | ARM64_NG | ARM64_PXN | ARM64_AP_USER * bool(entry & 4)
    d |= ARM64_AF * bool(entry & 0x20) | ARM64_UXN * bool(entry >> 63 & 1)
    writable, dirty = bool(entry & 2), bool(entry & 0x40)
    if writable:
        d |= ARM64_DBM                             # PTE_WRITE; hardware dirty = AP[2] clear
        d |= 0 if dirty else ARM64_AP_RDONLY
    else:
        d |= ARM64_AP_RDONLY | ARM64_SW_DIRTY * dirty
    return d


def decode_arm64(desc: int) -> List[str]:
    """Names of the bits set in an arm64 descriptor (``block`` for a valid
    upper-level entry with bit 1 clear)."""
    names = [name for bit, name in ARM64_BITS if desc >> bit & 1]
    return names


def _entry_view(fmt: str, entry: int, level: int, last: bool, page_shift: int):
    """(value, flags, hex width) of an entry as the arch prints it."""
    if fmt == "arm64":
        d = arm64_descriptor(entry, last, page_shift)
        flags = decode_arm64(d)
        if last:
            flags = ["page" if f == "table" else f for f in flags]
        elif d & ARM64_VALID and not d & ARM64_TABLE:
            flags.insert(1, "block")
        return d, tuple(flags), 18
    if fmt == "x86-32":                            # 32-bit entries: no NX, no soft-dirty bit
        return entry & 0xFFFFF7FF, tuple(f for f in decode_flags(entry) if f not in ("NX", "SD")), 10
    if fmt == "x86-pae" and level == 0 and entry & 1:
        # a PDPTE: pud_populate() writes __pa(pmd) | _PAGE_PRESENT only
        return entry & (PFN_MASK | 1), ("P",), 18
    return entry, tuple(decode_flags(entry)), 18


@dataclass(frozen=True)
class WalkStep:
    """One level of a walk: the entry read and what it leads to."""

    level: int
    level_name: str
    table: int
    index: int
    entry: int
    shift: int
    bits: int
    flags: tuple
    leads_to: str  # "table", "frame", "huge", "miss"
    target: Optional[int]

    @property
    def index_bits(self) -> str:
        return f"bits {self.shift + self.bits - 1}-{self.shift}"


class Walk:
    """The translation of one address: iterate it for the steps.

    ``frame`` is the data frame reached (None on a miss), ``offset`` the
    offset inside it, ``leaf_level`` the kernel's name for the leaf ("pte",
    "pmd" for a 2 MiB leaf, or a 4 MiB one in 2-level i386's pgd, where the
    pmd is folded: :func:`pymm.arches.leaf_level_name`).
    """

    def __init__(self, mm, addr: int):
        g = mm.geometry
        self.addr = addr
        self.geometry = g
        self.arch = mm.arch
        self.entry_format = fmt = mm.machine.arch_info.entry_format
        self._width = 18
        self.steps: List[WalkStep] = []
        self.frame: Optional[int] = None
        self.offset = 0
        self.leaf_level: Optional[str] = None
        if addr >= 1 << g.va_bits:
            raise ValueError(f"{addr:#x} is beyond the {g.va_bits}-bit address space")
        for level, table, index, entry in mmcore.walk(mm.engine, addr):
            name = g.level_names[level]
            shift = g.shift(level)
            present = bool(entry & 0x101)
            last = level == g.levels - 1
            huge = bool(entry & 0x80) and not last
            if not present:
                kind, target = "miss", None
            elif last or huge:
                kind = "frame" if last else "huge"
                sub = (addr >> g.page_shift) & ((1 << (shift - g.page_shift)) - 1) if huge else 0
                target = ((entry & PFN_MASK) >> 12) + sub
                self.frame = target
                self.offset = addr & (g.page_size - 1)
                self.leaf_level = leaf_level_name(g, level)
            else:
                kind, target = "table", (entry & PFN_MASK) >> 12
            value, flags, self._width = _entry_view(fmt, entry, level, last, g.page_shift)
            self.steps.append(WalkStep(level, name, table, index, value, shift, g.level_bits[level],
                                       flags, kind, target))

    def __iter__(self):
        return iter(self.steps)

    def __len__(self):
        return len(self.steps)

    @property
    def hit(self) -> bool:
        return self.frame is not None

    def __str__(self):
        g = self.geometry
        lines = [f"walk of {self.addr:#x} ({self.arch}, {g.levels} levels)", "  " + self.split()]
        width = max(len(n) for n in g.level_names)
        for s in self.steps:
            where = f"{s.level_name}[{s.index}]".ljust(width + 6)
            leaf = leaf_level_name(g, s.level)
            folded = f" (a {leaf}: the {leaf} is folded into the {s.level_name})" if leaf != s.level_name else ""
            lead = {"table": f"-> table {s.target}", "frame": f"-> frame {s.target}",
                    "huge": f"-> huge leaf{folded}, frame {s.target}", "miss": "-> not present"}[s.leads_to]
            lines.append(f"  {where} ({s.index_bits}) in table {s.table}: {s.entry:#0{self._width}x} {lead}"
                         f"  {' '.join(s.flags)}".rstrip())
        if self.hit:
            lines.append(f"  = frame {self.frame} + offset {self.offset:#x}"
                         + (f" (a {self.leaf_level} leaf)" if self.leaf_level != g.level_names[-1] else ""))
        else:
            lines.append("  = miss: the MMU faults, the kernel's fault handler decides")
        return "\n".join(lines)

    def split(self) -> str:
        """The address cut into its indices, as the MMU cuts it:
        ``0x7fffffa00000 = pgd 255 | pud 511 | pmd 509 | pte 0 | offset 0x0``."""
        g = self.geometry
        parts = [f"{name} {(self.addr >> g.shift(lv)) & ((1 << g.level_bits[lv]) - 1)}"
                 for lv, name in enumerate(g.level_names)]
        return f"{self.addr:#x} = " + " | ".join(parts) + f" | offset {self.addr & (g.page_size - 1):#x}"

    def _repr_html_(self) -> str:
        """Rich display in a notebook: one table row per level."""
        import html
        rows = "".join(
            f"<tr><td>{s.level_name}[{s.index}]</td><td>{s.index_bits}</td><td>{s.table}</td>"
            f"<td><code>{s.entry:#0{self._width}x}</code></td><td>{html.escape(' '.join(s.flags))}</td>"
            f"<td>{s.leads_to}{'' if s.target is None else ' ' + str(s.target)}</td></tr>" for s in self.steps)
        result = (f"frame {self.frame} + offset {self.offset:#x}" if self.hit
                  else "miss: the MMU faults")
        return (f"<div><b>walk of <code>{self.addr:#x}</code></b> ({self.arch}, "
                f"{self.geometry.levels} levels): <code>{html.escape(self.split())}</code><table><tr><th>entry</th><th>index bits</th>"
                f"<th>in table</th><th>raw</th><th>flags</th><th>leads to</th></tr>{rows}</table>"
                f"<p>= {result}</p></div>")

    def __repr__(self):
        return f"<Walk {self.addr:#x}: {'frame ' + str(self.frame) if self.hit else 'miss'}>"
