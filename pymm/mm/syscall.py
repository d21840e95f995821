"""The syscall boundary: arguments as the kernel reads them, errors as it returns them.

Models the edge every syscall crosses in Linux 6.18: ``SYSCALL_DEFINEx()``
(include/linux/syscalls.h) takes each argument as an ``unsigned long``, and a
failure is a ``-errno`` return.  Inside pymm a kernel function that fails
raises :class:`_Errno`; :func:`_syscall` turns it into the ``OSError`` the
caller sees and, with ``check=True``, verifies the address space after the
call.

Example::

    >>> mm = pymm.MM()
    >>> mm.munmap(4095, 4096)         # do_vmi_munmap() raises _Errno(EINVAL)
    Traceback (most recent call last):
    OSError: [Errno 22] Invalid argument [munmap]
"""
from __future__ import annotations

import functools
import warnings as _warnings

import numpy as np

import mmcore
from pymm.check import check
from pymm.errors import InvariantError, KernelOops, ReentrantCallError, oserror, out_of_memory

U64 = (1 << 64) - 1


class _Errno(Exception):
    """Internal: a syscall's error return (-errno), turned into OSError at the edge."""

    def __init__(self, code):
        self.code = code


def _byte_value(value) -> int:
    """memset()'s fill byte: an int in [0, 255] (C would truncate 300 to
    0x2c silently; a simulator says so instead)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"value must be an int, not {type(value).__name__}")
    if not 0 <= int(value) <= 0xFF:
        raise ValueError(f"value={int(value)} is not a byte: give 0 to 255")
    return int(value)


def _u64(value, name: str) -> int:
    """A syscall argument as the kernel sees it: an unsigned long.

    Negative ints wrap as they would through C (``-4096`` is ``2**64 - 4096``);
    anything else that is not an int is a TypeError."""
    if type(value) is int and 0 <= value <= U64:   # the common case, fast
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    value = int(value)
    if not -(1 << 63) <= value <= U64:
        raise OverflowError(f"{name}={value:#x} does not fit an unsigned long")
    return value & U64


def state_digest(mm):
    """What a failed call must leave unchanged: the VMAs and the page tables."""
    vmas = tuple((v.start, v.end, v.vm_flags, v.pgoff, v.anon, id(v.shm)) for v in mm._tree)
    return (vmas, mmcore.digest(mm.engine))


def check_now(mm, after: str) -> None:
    """Run pymm.check(mm); raise InvariantError naming the call ``after`` which it failed."""
    problems = check(mm)
    if problems:
        raise InvariantError(problems, after)


def _syscall(fn):
    """Wrap a syscall: errno -> OSError, and with check=True verify that a
    failed call changed nothing and that every invariant holds after it
    (for every failure: an errno, a signal, a hook's exception)."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        if not self.check_enabled:
            try:
                return fn(self, *args, **kwargs)
            except _Errno as e:
                raise oserror(e.code, fn.__name__) from None
            except MemoryError as e:
                raise out_of_memory(self, fn.__name__, e) from e
        before = state_digest(self)
        self._partial_ok = False
        try:
            result = fn(self, *args, **kwargs)
        except _Errno as e:
            if self.dead:                # the process was killed (exec): nothing left to check
                raise oserror(e.code, fn.__name__) from None
            # Linux leaves the address space as it was for every error it
            # checks up front; only calls that had already changed something
            # (mprotect/madvise over a hole, mremap after unmapping the
            # destination) may fail with a changed state.
            if state_digest(self) != before and not self._partial_ok:
                raise InvariantError([f"failed {fn.__name__} (errno {e.code}) changed the address space"],
                                     fn.__name__) from None
            check_now(self, fn.__name__)
            raise oserror(e.code, fn.__name__) from None
        except InvariantError:
            raise
        except MemoryError as e:
            raise out_of_memory(self, fn.__name__, e) from e
        except Exception as e:
            # not an errno: the state must still be as before, or the MM
            # marked dead (an oops) by whoever raised
            if not getattr(self, "dead", None) and not self._partial_ok \
                    and state_digest(self) != before:
                raise InvariantError([f"{fn.__name__} raised {type(e).__name__} and left the "
                                      "address space changed"], fn.__name__) from e
            raise
        check_now(self, fn.__name__)
        return result

    wrapper._unchecked = fn           # for _serialised(): one frame when check=False
    return wrapper


def _serialised(fn, allow_dead: bool = False):
    """mmap_write_lock(mm): one call at a time per address space.

    Threads wait for the MM's lock (separate MMs run in parallel: the engine
    loops release the GIL); a nested call from the thread that holds it
    (a hook calling ``move.mm.munmap()``) is refused with ReentrantCallError;
    after a KernelOops only ``allow_dead`` calls (reads) still run."""

    name = fn.__name__
    # A _syscall()-wrapped fn: with check=False its wrapper only turns _Errno
    # into OSError, done here in the same frame (one Python call less per syscall).
    raw = getattr(fn, "_unchecked", None)

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        lock = self._lock
        lock.acquire()
        try:
            if self._busy or (self.dead and not allow_dead):
                _refuse(self, name, allow_dead)
            if self._family is not None:        # a forked process: switch_mm() to it
                self._family.switch(self)
            self._busy = name
            try:
                if raw is not None and not self.check_enabled:
                    try:
                        result = raw(self, *args, **kwargs)
                    except _Errno as e:
                        raise oserror(e.code, name) from None
                else:
                    result = fn(self, *args, **kwargs)
            except MemoryError as e:            # the OOM killer (or the host said no)
                self._busy = None
                _flush_quietly(self)
                raise out_of_memory(self, name, e) from e
            except BaseException:
                self._busy = None
                _flush_quietly(self)
                raise
            self._busy = None
            if self._warn_queue:
                issue_warnings(self)
            return result
        finally:
            lock.release()

    return wrapper


def _refuse(mm, name: str, allow_dead: bool) -> None:
    """Why a call may not run now: nested in another, or on a dead MM."""
    if mm._busy:
        raise ReentrantCallError(f"{name}() called while {mm._busy}() is running on the same MM "
                                 "(from a kernel hook?): re-entrant calls are refused")
    raise KernelOops(f"{name}() on a dead MM ({mm.dead})")


def _flush_quietly(mm) -> None:
    """Issue a failed call's warnings; the call's own error wins over theirs."""
    if mm._warn_queue:
        try:
            issue_warnings(mm)
        except Exception:         # noqa: BLE001
            pass


def issue_warnings(mm) -> None:
    """The WARN_ON()s a call recorded, sent through warnings.warn() once the
    call is complete (a warnings filter that raises finds a whole state)."""
    queue, mm._warn_queue = mm._warn_queue, []
    for w in queue:
        _warnings.warn(w, stacklevel=3)


def _int_arg(value, name: str, lo: int, hi: int) -> int:
    """A constructor's integer argument, checked at once: an int in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value:#x} is out of range [{lo:#x}, {hi:#x}]")
    return value


def _read_locked(fn):
    """mmap_read_lock(mm): a read-only look, serialised with the calls."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            if self._family is not None and not self._busy:
                self._family.switch(self)
            return fn(self, *args, **kwargs)

    return wrapper
