"""Paging geometry as data.

A geometry says how a virtual address is cut into table indices.  The engine
reads every size from here; nothing in the loops hard-codes 512 entries, 4 KiB
pages or 2 MiB PMDs.  Levels are listed from the root (``pgd``) down to the
leaf (``pte``).  The kernel names the last three levels PUD, PMD and PTE; the
engine finds them by position (``pte`` = last, ``pmd`` = one above, ``pud`` =
two above), so a 3-level geometry simply has its PUD folded into the root, as
Linux folds it.

Example::

    >>> from mmcore.geometry import X86_64
    >>> X86_64.pmd_size, X86_64.pud_size, X86_64.entries(2)
    (2097152, 1073741824, 512)
    >>> X86_64.index(0x7f1234567000, "pmd")
    34
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

MAX_LEVELS = 5


@dataclass(frozen=True)
class Geometry:
    """One paging geometry: page shift, bits per level and the level names.

    ``user_va_bits`` is the size of the user half of the address space; the
    highest user address is ``task_size = 2**user_va_bits - page_size`` on x86-64
    (the last page is left unmapped, as ``TASK_SIZE_MAX`` does).
    """

    name: str
    page_shift: int
    level_bits: Tuple[int, ...]
    level_names: Tuple[str, ...]
    user_va_bits: int
    default_map_window_bits: int = 0  # 0: the whole user space (x86 LA57 uses 47)

    def __post_init__(self):
        if not 2 <= len(self.level_bits) <= MAX_LEVELS:
            raise ValueError(f"{self.name}: 2..{MAX_LEVELS} levels are supported")
        if len(self.level_names) != len(self.level_bits):
            raise ValueError(f"{self.name}: one name per level")
        if not 10 <= self.page_shift <= 20:
            raise ValueError(f"{self.name}: page_shift {self.page_shift} out of range")
        if any(not 1 <= b <= 16 for b in self.level_bits):
            raise ValueError(f"{self.name}: bits per level must be 1..16")
        if self.va_bits > 57 or self.user_va_bits > self.va_bits:
            raise ValueError(f"{self.name}: user_va_bits must fit the tables (<= 57)")

    # -- derived sizes -------------------------------------------------------
    @property
    def levels(self) -> int:
        return len(self.level_bits)

    @property
    def va_bits(self) -> int:
        """Bits translated by the tables (page offset included)."""
        return self.page_shift + sum(self.level_bits)

    def shift(self, level) -> int:
        """Bytes covered by one entry at ``level`` (an index or a name), as a shift."""
        lv = self.level(level)
        return self.page_shift + sum(self.level_bits[lv + 1:])

    def entries(self, level) -> int:
        return 1 << self.level_bits[self.level(level)]

    def level(self, level) -> int:
        """Level index of a name or a kernel alias (``"pte"``, ``"pmd"``, ``"pud"``)."""
        if isinstance(level, int):
            if not 0 <= level < self.levels:
                raise ValueError(f"level {level} out of range for {self.name}")
            return level
        aliases = {"pte": self.levels - 1, "pmd": self.levels - 2, "pud": self.levels - 3}
        if level in self.level_names:
            return self.level_names.index(level)
        if level in aliases and aliases[level] >= 0:
            return aliases[level]
        raise ValueError(f"{self.name} has no level {level!r}")

    def index(self, addr: int, level) -> int:
        lv = self.level(level)
        return (addr >> self.shift(lv)) & ((1 << self.level_bits[lv]) - 1)

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    @property
    def pmd_size(self) -> int:
        return 1 << self.shift(self.levels - 2)

    @property
    def pud_size(self) -> int:
        # With a folded PUD (3 levels) the "PUD" is the root entry, as in Linux.
        return 1 << self.shift(max(self.levels - 3, 0))

    @property
    def task_size(self) -> int:
        return (1 << self.user_va_bits) - self.page_size

    @property
    def map_window(self) -> int:
        """Top of the default mmap window (DEFAULT_MAP_WINDOW on x86 LA57)."""
        if self.default_map_window_bits:
            return (1 << self.default_map_window_bits) - self.page_size
        return self.task_size

    def describe(self) -> str:
        parts = [f"{n}:{b}" for n, b in zip(self.level_names, self.level_bits)]
        return f"{self.name}: {self.levels} levels ({' '.join(parts)}), {self.page_size // 1024} KiB pages"


X86_64 = Geometry(
    name="x86_64",
    page_shift=12,
    level_bits=(9, 9, 9, 9),
    level_names=("pgd", "pud", "pmd", "pte"),
    user_va_bits=47,
)

X86_64_LA57 = Geometry(
    name="x86_64-la57",
    page_shift=12,
    level_bits=(9, 9, 9, 9, 9),
    level_names=("pgd", "p4d", "pud", "pmd", "pte"),
    user_va_bits=56,
    default_map_window_bits=47,
)

# arm64 with the 64 KiB granule and 48-bit VA: 3 levels, PMD = 512 MiB.  Shipped
# to prove the loops are geometry-free; pymm's syscall layer targets x86-64.
ARM64_64K = Geometry(
    name="arm64-64k",
    page_shift=16,
    level_bits=(6, 13, 13),
    level_names=("pgd", "pmd", "pte"),
    user_va_bits=48,
)

GEOMETRIES: Dict[str, Geometry] = {g.name: g for g in (X86_64, X86_64_LA57, ARM64_64K)}
