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
    never); ``entry_format``: ``"x86"`` or ``"arm64"``, how the walk
    prints an entry; ``board``: where such a kernel ran in the July 2020
    thread (LKFT), if it did.
    """

    name: str
    geometry: G.Geometry
    task_size: int
    stack_top: int
    move_pmd_since: Optional[Version]
    move_pud_since: Optional[Version]
    entry_format: str = "x86"
    notes: str = ""

    @property
    def page_size(self) -> int:
        return self.geometry.page_size

    def has_move_pmd(self, version: Optional[Version]) -> bool:
        """CONFIG_HAVE_MOVE_PMD under a kernel of this ``(major, minor)``
        (``None``: a kernel of unknown version: assume the arch selects it)."""
        return _since(self.move_pmd_since, version)

    def has_move_pud(self, version: Optional[Version]) -> bool:
        """CONFIG_HAVE_MOVE_PUD, as :meth:`has_move_pmd`; also needs a PUD
        level of its own (a folded PUD has nothing to move)."""
        return self.geometry.levels >= 4 and _since(self.move_pud_since, version)

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


# arch/x86/Kconfig: "select HAVE_MOVE_PMD" since 5.0 (2c91bd4a4e2e, all of
# x86), "select HAVE_MOVE_PUD" since 5.11 (be37c98d1134, X86_64 only).
X86_64 = Arch("x86_64", G.X86_64, G.X86_64.task_size, G.X86_64.task_size, (5, 0), (5, 11),
              notes="4-level paging (TASK_SIZE_MAX = 2^47 - 4 KiB)")
X86_64_LA57 = Arch("x86_64-la57", G.X86_64_LA57, G.X86_64_LA57.task_size, G.X86_64_LA57.map_window,
                   (5, 0), (5, 11), notes="5-level paging; the stack sits below the 47-bit window")

ARCHES: Dict[str, Arch] = {a.name: a for a in (X86_64, X86_64_LA57)}


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
