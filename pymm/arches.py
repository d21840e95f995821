"""Arches as data: paging geometry, user address space, and which kernels
move whole PMDs and PUDs there.

An :class:`Arch` is what pymm needs of ``arch/*``: the page-table geometry
(:mod:`mmcore.geometry`: levels, page and PMD/PUD sizes, folded levels), the
user address space (TASK_SIZE, STACK_TOP_MAX), the descriptor format
:meth:`pymm.MM.walk` prints, and since which kernel version the arch selects
``CONFIG_HAVE_MOVE_PMD`` and ``CONFIG_HAVE_MOVE_PUD`` (without them
move_page_tables() moves every PTE one by one).

Example::

    >>> from pymm.arches import get_arch
    >>> a = get_arch("x86_64")
    >>> a.geometry.pmd_size, hex(a.task_size), a.move_pmd_since, a.move_pud_since
    (2097152, '0x7ffffffff000', (5, 0), (5, 11))
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from mmcore import geometry as G

Version = Tuple[int, int]


@dataclass(frozen=True)
class Arch:
    """One arch and its configuration (page size, paging levels).

    ``task_size``: TASK_SIZE, the end of user space (addresses below it are
    the user's); ``stack_top``: STACK_TOP_MAX, where exec puts the stack;
    ``move_pmd_since``/``move_pud_since``: the first kernel version whose
    ``arch/*/Kconfig`` selects HAVE_MOVE_PMD/HAVE_MOVE_PUD here (``None``:
    pymm never moves whole entries at that level); ``entry_format``:
    ``"x86"``, ``"x86-pae"``, ``"x86-32"`` or ``"arm64"``, how the walk
    prints an entry.
    """

    name: str
    geometry: G.Geometry
    task_size: int
    stack_top: int
    move_pmd_since: Optional[Version]
    move_pud_since: Optional[Version]
    entry_format: str = "x86"
    map_window: int = 0            # DEFAULT_MAP_WINDOW where it is below task_size (LA57)
    unmapped_base_div: int = 3     # TASK_UNMAPPED_BASE = TASK_SIZE / 3 (x86), / 4 (arm64)
    pt_reclaim: bool = False       # selects ARCH_SUPPORTS_PT_RECLAIM (x86_64 only, 4817f70c25b6)
    notes: str = ""

    @property
    def mmap_window(self) -> int:
        """Top of the default mmap window (DEFAULT_MAP_WINDOW; task_size on most arches)."""
        return self.map_window or self.task_size

    @property
    def unmapped_base(self) -> int:
        """TASK_UNMAPPED_BASE: where the legacy bottom-up mmap layout starts."""
        return (self.mmap_window // self.unmapped_base_div + self.page_size - 1) & ~(self.page_size - 1)

    @property
    def page_size(self) -> int:
        return self.geometry.page_size

    def has_move_pmd(self, version: Optional[Version]) -> bool:
        """CONFIG_HAVE_MOVE_PMD under a kernel of this ``(major, minor)``
        (``None``: a kernel of unknown version: assume the arch selects it)."""
        return _since(self.move_pmd_since, version)

    def has_move_pud(self, version: Optional[Version]) -> bool:
        """CONFIG_HAVE_MOVE_PUD, as :meth:`has_move_pmd`; mm/mremap.c builds
        move_normal_pud() only ``#if CONFIG_PGTABLE_LEVELS > 2``: with 3
        levels the PUD is folded into the root entry, which then moves whole
        (a 1 GiB PDPTE on i386-pae, 4 TiB on arm64-64k)."""
        return self.geometry.levels > 2 and _since(self.move_pud_since, version)

    def describe(self) -> str:
        g = self.geometry
        return (f"{self.name}: {g.levels} levels ({' '.join(g.level_names)}), "
                f"{g.page_size // 1024} KiB pages, PMD {_size(g.pmd_size)}"
                + (f", PUD {_size(g.pud_size)}" if g.levels >= 4 else "")
                + f", user space {_size(self.task_size)}")


def _since(since: Optional[Version], version: Optional[Version]) -> bool:
    if since is None:
        return False
    return version is None or tuple(version) >= since


def _size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:#x}"


# Geometries of the 32-bit x86 and arm64 configurations (the kernel's level
# names; a folded level is absent, as pgtable-nopmd.h/-nopud.h fold it).
I386_GEOMETRY = G.Geometry("i386", 12, (10, 10), ("pgd", "pte"), 32)            # 4 MiB PMD (= pgd)
I386_PAE_GEOMETRY = G.Geometry("i386-pae", 12, (2, 9, 9), ("pgd", "pmd", "pte"), 32)
ARM64_4K_GEOMETRY = G.Geometry("arm64-4k", 12, (9, 9, 9, 9), ("pgd", "pud", "pmd", "pte"), 48)
ARM64_16K_GEOMETRY = G.Geometry("arm64-16k", 14, (1, 11, 11, 11), ("pgd", "pud", "pmd", "pte"), 48)

I386_TASK_SIZE = 0xC0000000       # PAGE_OFFSET of the default 3G/1G split (CONFIG_VMSPLIT_3G)
ARM64_TASK_SIZE = 1 << 48         # TASK_SIZE_64 with VA_BITS = 48

# arch/x86/Kconfig: "select HAVE_MOVE_PMD" since 5.0 (2c91bd4a4e2e) and
# "select HAVE_MOVE_PUD" since 5.11 (Kalesh Singh's "x86: mremap speedup -
# Enable HAVE_MOVE_PUD"), both for all of x86, i386 included;
# move_normal_pud() needs CONFIG_PGTABLE_LEVELS > 2 (see has_move_pud).
# arch/arm64/Kconfig: HAVE_MOVE_PMD since 5.10 (45544eee9606), HAVE_MOVE_PUD
# since 5.11.
X86_64 = Arch("x86_64", G.X86_64, G.X86_64.task_size, G.X86_64.task_size, (5, 0), (5, 11),
              pt_reclaim=True, notes="4-level paging (TASK_SIZE_MAX = 2^47 - 4 KiB)")
X86_64_LA57 = Arch("x86_64-la57", G.X86_64_LA57, G.X86_64_LA57.task_size, G.X86_64_LA57.task_size,
                   (5, 0), (5, 11), map_window=G.X86_64_LA57.map_window, pt_reclaim=True,
                   notes="5-level paging; mmap stays below the 47-bit window unless asked")
I386_PAE = Arch("i386-pae", I386_PAE_GEOMETRY, I386_TASK_SIZE, I386_TASK_SIZE, (5, 0), (5, 11),
                entry_format="x86-pae",
                notes="PAE: 3 levels, 2 MiB PMDs, the PUD folded into the 4-entry pgd")
I386 = Arch("i386", I386_GEOMETRY, I386_TASK_SIZE, I386_TASK_SIZE, (5, 0), (5, 11), entry_format="x86-32",
            notes="non-PAE: 2 levels, 4 MiB PMDs (the pgd), as LKFT's i386 boards ran")
ARM64_4K = Arch("arm64-4k", ARM64_4K_GEOMETRY, ARM64_TASK_SIZE, ARM64_TASK_SIZE, (5, 10), (5, 11),
                entry_format="arm64", unmapped_base_div=4, notes="4 KiB granule, 48-bit VA, 4 levels")
ARM64_16K = Arch("arm64-16k", ARM64_16K_GEOMETRY, ARM64_TASK_SIZE, ARM64_TASK_SIZE, (5, 10), (5, 11),
                 entry_format="arm64", unmapped_base_div=4,
                 notes="16 KiB granule, 48-bit VA, 4 levels (a 2-entry pgd), 32 MiB PMDs")
ARM64_64K = Arch("arm64-64k", G.ARM64_64K, ARM64_TASK_SIZE, ARM64_TASK_SIZE, (5, 10), (5, 11),
                 entry_format="arm64", unmapped_base_div=4,
                 notes="64 KiB granule, 48-bit VA, 3 levels (PUD folded), 512 MiB PMDs")

ARCHES: Dict[str, Arch] = {a.name: a for a in (X86_64, X86_64_LA57, I386_PAE, I386, ARM64_4K,
                                               ARM64_16K, ARM64_64K)}


def kernel_version(name: str) -> Optional[Version]:
    """The ``(major, minor)`` a kernel's name starts with (``"5.8+kirill"`` ->
    ``(5, 8)``); ``None`` for a name without one (a user's kernel).

        >>> kernel_version("5.8+linus-v4"), kernel_version("mine")
        ((5, 8), None)
    """
    m = re.match(r"(\d+)\.(\d+)", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


KERNEL_LEAF_LEVELS = ("pte", "pmd", "pud")     # bottom up: the levels a leaf can be at


def leaf_level_name(geometry: G.Geometry, level: int) -> str:
    """The kernel's name for a leaf at ``level`` of ``geometry``: counted from
    the bottom (pte, pmd, pud), since the kernel folds the levels an arch
    lacks into the one above (include/asm-generic/pgtable-nopmd.h).  On
    2-level i386 the pmd is folded into the pgd: a 4 MiB leaf there is a
    pmd (pmd_leaf(), a PSE page-directory entry), not a "pgd leaf".

    Example::

        >>> leaf_level_name(I386_GEOMETRY, 0), leaf_level_name(I386_PAE_GEOMETRY, 1)
        ('pmd', 'pmd')
    """
    depth = geometry.levels - 1 - level
    return KERNEL_LEAF_LEVELS[depth] if depth < len(KERNEL_LEAF_LEVELS) else geometry.level_names[level]


def get_arch(arch) -> Arch:
    """An :class:`Arch` from its name (or the Arch itself).

        >>> get_arch("x86_64-la57").geometry.levels
        5
    """
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, str) and arch in ARCHES:
        return ARCHES[arch]
    raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHES)}")
