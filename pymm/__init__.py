"""pymm: what the Linux kernel does with page tables when memory moves.

Simulates ``mremap()`` and exec's stack shift at real scale on a compiled
page-table engine (:mod:`mmcore`), under a catalogue of kernels from 4.19 to
6.18, including the patch variants of the July 2020 ``move_normal_pmd()``
thread.

Example::

    >>> import pymm
    >>> mm = pymm.MM(kernel="6.18")
    >>> lo, hi = pymm.HOST_WINDOW         # addresses HostMM also accepts
    >>> a = mm.mmap(lo, 1 << 30, pymm.PROT_READ | pymm.PROT_WRITE,
    ...             pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED)
    >>> mm.memset(a, 1, 1 << 30)
    >>> b = mm.mremap(a, 1 << 30, 1 << 30, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, a + (4 << 30))
    >>> mm.stats["pud_moves"]
    1
"""
from pymm.check import Problem, check
from pymm.constants import *  # noqa: F401,F403  (PROT_*, MAP_*, MREMAP_*, MADV_*)
from pymm.constants import (MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MAP_ANONYMOUS,
                            MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_POPULATE,
                            MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED,
                            MREMAP_MAYMOVE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE)
from pymm.errors import (BusError, InvariantError, KernelBUG, KernelWarning, MemoryFault,
                         KernelOops, OutOfMemory, ReentrantCallError,
                         SegmentationFault)
from pymm.kernels import KERNELS, Kernel, PageTableMove
from pymm.mm import MM
from pymm.mm.vma import VMA

# pymm.host (a compiled helper, subprocess) and pymm.scenarios are loaded on
# first use, so that ``import pymm`` pays only for the simulator itself.
_LAZY = {"host": ("pymm.host", None), "scenarios": ("pymm.scenarios", None),
         "HOST_WINDOW": ("pymm.host", "DEFAULT_WINDOW")}


def __getattr__(name):
    """Load ``pymm.host``, ``pymm.scenarios`` and ``HOST_WINDOW`` on first use (PEP 562)."""
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pymm' has no attribute {name!r}") from None
    import importlib
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = [
    "MM", "VMA", "HOST_WINDOW", "Kernel", "KERNELS", "PageTableMove", "check", "Problem",
    "SegmentationFault", "BusError", "MemoryFault", "KernelWarning", "InvariantError",
    "KernelBUG", "ReentrantCallError", "KernelOops", "OutOfMemory",
    "PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC", "MAP_SHARED", "MAP_PRIVATE",
    "MAP_FIXED", "MAP_ANONYMOUS", "MAP_POPULATE", "MAP_FIXED_NOREPLACE", "MAP_GROWSDOWN",
    "MREMAP_MAYMOVE", "MREMAP_FIXED", "MREMAP_DONTUNMAP", "MADV_DONTNEED", "MADV_HUGEPAGE",
    "MADV_NOHUGEPAGE", "host", "scenarios",
]
