"""pymm.mm: a process address space, laid out as the kernel lays out mm/.

:class:`MM` (``mm_struct.py``) holds the state and the public methods; the
kernel's logic lives in one module per kernel file.
"""
from pymm.mm.mm_struct import MM
from pymm.mm.vma import VMA

__all__ = ["MM", "VMA"]
