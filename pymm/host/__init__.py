"""pymm.host: the same calls, run by the Linux kernel this machine runs.

:class:`HostMM` offers the syscall, access and introspection subset of
:class:`pymm.MM`, executed by the real kernel in a child process (a small C
helper, compiled on first use).  A segfault in the child becomes
:class:`pymm.SegmentationFault`, a failed syscall an ``OSError`` with the
kernel's errno; ``maps()`` and ``pagemap()`` come from ``/proc``.

Everything happens inside a reserved window of addresses (by default 16 TiB
at 16 TiB): the helper fences off the rest of its address space, so the
kernel's own placement of ``mmap(NULL, ...)`` lands in the window, and calls
that name addresses outside it are refused before reaching the kernel.  A
:class:`pymm.MM` created with ``window=host.window`` places mappings the
same way, so scripts produce the same addresses on both.

Example::

    >>> from pymm import host
    >>> if host.available():
    ...     with host.HostMM() as h:
    ...         a = h.mmap(0, 4096, pymm.PROT_READ | pymm.PROT_WRITE,
    ...                    pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    ...         h.write(a, b"hi")
    ...         print(h.read(a, 2), h.format_maps())
"""
from __future__ import annotations

import errno as _errno
import functools
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import select
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from pymm import constants as C
from pymm.errors import BusError, SegmentationFault, oserror
from pymm.mm.syscall import _byte_value
from pymm.mm.vma import VMA

DEFAULT_WINDOW: Tuple[int, int] = (0x100000000000, 0x200000000000)
CHUNK = 8 << 20
_READY = 0x706D796D686F7374
_SEGV_CODES = {1: "SEGV_MAPERR", 2: "SEGV_ACCERR", 3: "SEGV_BNDERR", 4: "SEGV_PKUERR"}
_BUS_CODES = {1: "BUS_ADRALN", 2: "BUS_ADRERR", 3: "BUS_OBJERR"}
_SOURCE = Path(__file__).with_name("helper.c")
MAX_PAGEMAP_PAGES = 1 << 27     # as MM.pagemap (mmcore's MAX_ARRAY_PAGES): 512 GiB per call
DEFAULT_TIMEOUT = 120.0         # seconds a call may take before the helper is presumed stuck
# mmap flags whose placement HostMM cannot confine, refused before the kernel
# sees them: MAP_DROPPABLE (a map type, 6.11+), MAP_32BIT (below 2 GiB),
# MAP_HUGETLB.  Other unknown bits go through (Linux ignores them unless
# MAP_SHARED_VALIDATE), and every address a call returns is checked.
_MAP_DROPPABLE = 0x08
_MAP_REFUSED = C.MAP_32BIT | C.MAP_HUGETLB


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pymm"


def _compiler() -> Optional[str]:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


@functools.lru_cache(maxsize=1)
def helper_path() -> Path:
    """The compiled helper, built on first use (cached by source hash)."""
    if sys.platform != "linux":
        raise RuntimeError("the host oracle needs Linux")
    src = _SOURCE.read_bytes()
    out = _cache_dir() / f"pymm-host-{hashlib.sha256(src).hexdigest()[:16]}"
    if out.exists():
        return out
    cc = _compiler()
    if cc is None:
        raise RuntimeError("the host oracle needs a C compiler (set CC, or install gcc)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # build next to the result: os.replace() cannot cross filesystems (EXDEV)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmp:
        tmp_out = Path(tmp) / "pymm-host"
        errors = []
        for extra in (["-static"], []):
            cmd = [cc, "-O2", *extra, "-o", str(tmp_out), str(_SOURCE)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode == 0:
                break
            said = (r.stderr + r.stdout).strip() or "(no output)"
            errors.append(f"$ {' '.join(cmd)}\nexit status {r.returncode}: {said}")
        else:
            raise RuntimeError("cannot compile the host helper:\n" + "\n".join(errors))
        os.replace(tmp_out, out)
    return out


@functools.lru_cache(maxsize=1)
def _probe() -> Tuple[bool, str]:
    if sys.platform != "linux":
        return False, "not Linux"
    try:
        with HostMM() as h:
            h.mmap(0, 4096, C.PROT_READ, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
    except Exception as e:  # noqa: BLE001 - any failure means "not here"
        return False, f"{type(e).__name__}: {e}"
    return True, "ok"


def available() -> bool:
    """Whether HostMM can run here (Linux, a C compiler, a free window)."""
    return _probe()[0]


def unavailable_reason() -> str:
    """Why :func:`available` is False (for test skip messages)."""
    return _probe()[1]


class _ForkedProc:
    """What HostMM needs of a subprocess.Popen, for a helper forked by
    another helper (not this process's child: the helper ignores SIGCHLD,
    so the kernel reaps it when it exits)."""

    def __init__(self, pid: int, stdin, stdout):
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.stderr = io.BytesIO()          # it writes to its parent helper's stderr

    def poll(self) -> Optional[int]:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return 0
        except PermissionError:
            pass
        return None

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pymm-host[{self.pid}]", timeout)
            time.sleep(0.005)
        return 0

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _u64(x, name):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(x).__name__}")
    x = int(x)
    if not -(1 << 63) <= x < 1 << 64:
        raise OverflowError(f"{name} does not fit an unsigned long")
    return x & ((1 << 64) - 1)


class HostMM:
    """The real kernel, confined to a window of addresses (see the module doc).

    Attributes mirror :class:`pymm.MM`: ``page_size``, ``pmd_size``,
    ``pud_size``, ``task_size``, ``window``.  Use it as a context manager, or
    call :meth:`close`.
    """

    page_size = 4096
    pmd_size = 2 << 20
    pud_size = 1 << 30
    task_size = 0x7FFFFFFFF000
    kernel = "host"

    def __init__(self, window: Tuple[int, int] = DEFAULT_WINDOW, *, timeout: float = DEFAULT_TIMEOUT):
        lo, hi = (_u64(x, "window") for x in window)
        if lo >= hi or (lo | hi) & 0xFFF or hi > self.task_size:
            raise ValueError("window must be a page-aligned (lo, hi) below task_size")
        if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
            raise ValueError("timeout must be a positive number of seconds")
        self.window = (lo, hi)
        self.timeout = float(timeout)
        self._lock = threading.RLock()        # one request/reply at a time
        self._broken: Optional[str] = None
        self._proc = subprocess.Popen([str(helper_path()), f"{lo:x}", f"{hi:x}"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, bufsize=0)
        try:
            ready = self._i64()
        except RuntimeError as e:
            self.close()
            raise RuntimeError(f"host helper did not start: {e}") from None
        if ready != _READY:
            self.close()
            raise RuntimeError("host helper did not start: it answered nonsense")

    # -- plumbing -------------------------------------------------------------
    def _died(self) -> str:
        """Why the helper is gone: its exit status and what it wrote on stderr."""
        proc = self._proc
        try:
            rc = proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "the host helper stopped answering"
        try:
            err = proc.stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            err = ""
        how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        return f"the host helper died ({how}){': ' + err if err else ''}"

    def _fail(self, why: str) -> RuntimeError:
        """The helper cannot be trusted any more: stop it, remember why."""
        self._broken = why
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        return RuntimeError(f"{why}; this HostMM is unusable, make a new one")

    def _send(self, op: bytes, *args, payload: bytes = b""):
        if self._proc is None:
            raise RuntimeError("HostMM is closed")
        if self._broken:
            raise RuntimeError(f"{self._broken}; this HostMM is unusable, make a new one")
        a = [(x & ((1 << 64) - 1)) for x in args] + [0] * (6 - len(args))
        try:
            self._proc.stdin.write(op + struct.pack("<6Q", *a) + payload)
        except (BrokenPipeError, OSError):
            raise self._fail(self._died()) from None

    def _read(self, n: int) -> bytes:
        """Exactly n bytes of the reply, within the timeout."""
        fd = self._proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            ready, _, _ = select.select([fd], [], [], self.timeout)
            if not ready:
                raise self._fail(f"the host helper did not answer within {self.timeout:g} s "
                                 "(stopped?)")
            b = os.read(fd, min(n - got, 1 << 20))
            if not b:
                raise self._fail(self._died())
            chunks.append(b)
            got += len(b)
        return b"".join(chunks)

    def _i64(self) -> int:
        return struct.unpack("<q", self._read(8))[0]

    def _call(fn):  # noqa: N805  (a decorator used in the class body)
        """One request and its whole reply, under the lock; an interruption
        (Ctrl-C) half-way leaves the reply unread, so the helper is dropped."""

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            with self._lock:
                try:
                    return fn(self, *args, **kwargs)
                except (OSError, ValueError, TypeError, OverflowError, SegmentationFault, BusError):
                    raise
                except RuntimeError:
                    raise
                except BaseException:
                    if self._proc is not None and not self._broken:
                        self._fail(f"{fn.__name__}() was interrupted before its reply was read")
                    raise

        return wrapper

    def _returned(self, what: str, addr: int, length: int) -> int:
        """Check an address the kernel returned: a result outside the window
        means the fence leaked; the helper is dropped, not trusted."""
        lo, hi = self.window
        end = addr + ((length + 4095) & ~4095)
        if not (lo <= addr and end <= hi):
            raise self._fail(f"{what} returned [{addr:#x}, {end:#x}), outside the window "
                             f"[{lo:#x}, {hi:#x})")
        return addr

    def _syscall(self, name, op, *args) -> int:
        self._send(op, *args)
        r = self._i64()
        if -4096 < r < 0:
            raise oserror(-r, name)
        return r & ((1 << 64) - 1)

    def _inside(self, start: int, end: int, what: str) -> None:
        lo, hi = self.window
        if not (lo <= start and end <= hi):
            raise ValueError(f"{what} [{start:#x}, {end:#x}) leaves the HostMM window "
                             f"[{lo:#x}, {hi:#x})")

    def _confine(self, start: int, length: int, what: str, rejected_up_front: bool) -> None:
        """Let a request through only if it stays in the window, or if the
        kernel rejects it before looking at any VMA (so bad calls still get
        the kernel's own errno without touching the helper's memory)."""
        if rejected_up_front:
            return
        end = start + ((length + 4095) & ~4095)
        self._inside(start & ~4095, max(end, (start & ~4095) + 4096), what)

    # -- syscalls --------------------------------------------------------------------
    @_call
    def mmap(self, addr, length, prot, flags, fd=-1, offset=0) -> int:
        addr, length, prot = _u64(addr, "addr"), _u64(length, "length"), _u64(prot, "prot")
        flags, fd, offset = _u64(flags, "flags"), _u64(fd, "fd"), _u64(offset, "offset")
        if not flags & C.MAP_ANONYMOUS:
            fd = (1 << 64) - 1  # never let the helper map its own files
        if flags & _MAP_REFUSED or flags & C.MAP_TYPE == _MAP_DROPPABLE:
            raise ValueError(f"HostMM does not pass mmap flags {flags:#x} to the kernel: "
                             "MAP_DROPPABLE, MAP_32BIT and MAP_HUGETLB could map outside its window")
        fixed = flags & (C.MAP_FIXED | C.MAP_FIXED_NOREPLACE)
        if fixed:
            t = self.task_size
            plen = (length + 4095) & ~4095 & ((1 << 64) - 1)
            up_front = (offset & 4095 or not flags & C.MAP_ANONYMOUS or not length or not plen
                        or addr & 4095 or plen > t or addr > t - plen
                        or (flags & C.MAP_TYPE) not in (C.MAP_SHARED, C.MAP_PRIVATE))
            self._confine(addr, length, "MAP_FIXED range", bool(up_front))
        return self._returned("mmap", self._syscall("mmap", b"M", addr, length, prot, flags, fd,
                                                    offset), length)

    @_call
    def munmap(self, addr, length) -> None:
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        t = self.task_size
        up_front = addr & 4095 or addr > t or length > t - addr or not length
        self._confine(addr, length, "munmap range", bool(up_front))
        self._syscall("munmap", b"U", addr, length)

    @_call
    def mremap(self, old_address, old_size, new_size, flags=0, new_address=0) -> int:
        old, osz, nsz = _u64(old_address, "old_address"), _u64(old_size, "old_size"), _u64(new_size, "new_size")
        flags, new = _u64(flags, "flags"), _u64(new_address, "new_address")
        t, m = self.task_size, (1 << 64) - 1
        pold, pnew = (osz + 4095) & ~4095 & m, (nsz + 4095) & ~4095 & m
        implies_new = flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP)
        up_front = (flags & ~7 or old & 4095 or not pnew or pnew > t
                    or (implies_new and (new > t - pnew or new & 4095 or not flags & C.MREMAP_MAYMOVE
                                         or (flags & C.MREMAP_DONTUNMAP and pold != pnew)
                                         or (old + pold > new and new + pnew > old)))
                    # a shrink whose munmap() part is rejected (beyond task_size)
                    or (pold > pnew and (old + pnew > t or pold - pnew > t - (old + pnew))))
        # In-place growth only ever takes free space (never a fence), so the
        # source range itself is what must stay inside the window.
        self._confine(old, pold or 4096, "mremap source", bool(up_front))
        if flags & C.MREMAP_FIXED and not up_front:
            self._confine(new, pnew, "MREMAP_FIXED destination", False)
        return self._returned("mremap", self._syscall("mremap", b"R", old, osz, nsz, flags, new), nsz)

    @_call
    def mprotect(self, addr, length, prot) -> None:
        addr, length, prot = _u64(addr, "addr"), _u64(length, "length"), _u64(prot, "prot")
        plen = (length + 4095) & ~4095 & ((1 << 64) - 1)
        grows = prot & (C.PROT_GROWSDOWN | C.PROT_GROWSUP)
        bad_prot = (prot & ~(C.PROT_GROWSDOWN | C.PROT_GROWSUP)) & ~(C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC | C.PROT_SEM)
        up_front = (grows == C.PROT_GROWSDOWN | C.PROT_GROWSUP or addr & 4095 or not length
                    or addr + plen <= addr or addr + plen >= 1 << 64 or bad_prot)
        self._confine(addr, length, "mprotect range", bool(up_front))
        self._syscall("mprotect", b"P", addr, length, prot)

    @_call
    def madvise(self, addr, length, advice) -> None:
        addr, length, advice = _u64(addr, "addr"), _u64(length, "length"), _u64(advice, "advice")
        plen = (length + 4095) & ~4095 & ((1 << 64) - 1)
        adv = advice & 0xFFFFFFFF
        adv = adv - (1 << 32) if adv >= 1 << 31 else adv
        up_front = (adv not in C.MADV_VALID or addr & 4095 or not length or (length and not plen)
                    or addr + plen >= 1 << 64)
        self._confine(addr, length, "madvise range", bool(up_front))
        self._syscall("madvise", b"A", addr, length, advice)

    @_call
    def mlock(self, addr, length, flags=0) -> None:
        """mlock2(2) (mlock(2) with flags 0), inside the window.  The helper
        is an unprivileged process: RLIMIT_MEMLOCK 8 MiB, no CAP_IPC_LOCK."""
        addr, length, flags = _u64(addr, "addr"), _u64(length, "length"), _u64(flags, "flags")
        self._confine(addr, length, "mlock range", not length)
        self._syscall("mlock", b"L", addr, length, flags)

    @_call
    def munlock(self, addr, length) -> None:
        """munlock(2), inside the window."""
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        self._confine(addr, length, "munlock range", not length)
        self._syscall("munlock", b"K", addr, length)

    @_call
    def mseal(self, addr, length, flags=0) -> None:
        """mseal(2) (ENOSYS before Linux 6.10), inside the window."""
        addr, length, flags = _u64(addr, "addr"), _u64(length, "length"), _u64(flags, "flags")
        self._confine(addr, length, "mseal range", bool(flags or addr & 4095 or not length))
        self._syscall("mseal", b"Z", addr, length, flags)

    def _prlimit(self, resource, new):
        res = {"AS": C.RLIMIT_AS, "MEMLOCK": C.RLIMIT_MEMLOCK}.get(resource, resource)
        if res not in (C.RLIMIT_AS, C.RLIMIT_MEMLOCK):
            raise ValueError(f"resource {resource!r}: RLIMIT_AS or RLIMIT_MEMLOCK")
        soft, hard = (0, 0) if new is None else (new, new) if not isinstance(new, (tuple, list)) else new
        self._send(b"X", res, new is not None, _u64(soft, "limit"), _u64(hard, "limit"))
        r, old_soft, old_hard = self._i64(), self._i64(), self._i64()
        if -4096 < r < 0:
            raise oserror(-r, "setrlimit")
        m = (1 << 64) - 1
        return old_soft & m, old_hard & m

    @_call
    def setrlimit(self, resource, limit) -> None:
        """setrlimit(2) for RLIMIT_AS / RLIMIT_MEMLOCK: bytes (soft and hard) or (soft, hard)."""
        self._prlimit(resource, limit)

    @_call
    def getrlimit(self, resource) -> Tuple[int, int]:
        """getrlimit(2): (soft, hard)."""
        return self._prlimit(resource, None)

    @_call
    def timed_mremap(self, old_address, old_size, new_size, flags=0, new_address=0) -> Tuple[int, int]:
        """mremap() timed inside the child with CLOCK_MONOTONIC: (result, ns)."""
        self._confine(old_address, old_size, "mremap source", False)
        if flags & C.MREMAP_FIXED:
            self._confine(new_address, new_size, "MREMAP_FIXED destination", False)
        self._send(b"T", old_address, old_size, new_size, flags, new_address)
        r, ns = self._i64(), self._i64()
        if -4096 < r < 0:
            raise oserror(-r, "mremap")
        return self._returned("mremap", r & ((1 << 64) - 1), new_size), ns

    # -- memory access ------------------------------------------------------------------
    def _access(self, op: bytes, addr: int, length: int, value: int = 0, payload: bytes = b""):
        self._inside(addr, addr + length, "access")
        self._send(op, addr, length, value, payload=payload)
        sig, done = self._i64(), self._i64()
        if sig:
            code, where = self._i64(), self._i64() & ((1 << 64) - 1)
            if op == b"r":
                self._read(done)
            if sig == 7:
                raise BusError(where, _BUS_CODES.get(code, str(code)))
            raise SegmentationFault(where, _SEGV_CODES.get(code, str(code)))
        if done != length and sig == 0 and op != b"r":
            raise RuntimeError("host helper: short access")
        return self._read(done) if op == b"r" else b""

    @_call
    def read(self, addr, length) -> bytes:
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        self._inside(addr, addr + length, "read")          # the whole range, before any chunk
        out = []
        for off in range(0, length, CHUNK):
            out.append(self._access(b"r", addr + off, min(CHUNK, length - off)))
        return b"".join(out)

    @_call
    def write(self, addr, data) -> None:
        addr = _u64(addr, "addr")
        data = bytes(data)
        for off in range(0, len(data), CHUNK):
            chunk = data[off:off + CHUNK]
            self._access(b"w", addr + off, len(chunk), payload=chunk)

    @_call
    def memset(self, addr, value, length) -> None:
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        value = _byte_value(value)
        for off in range(0, length, CHUNK):
            self._access(b"s", addr + off, min(CHUNK, length - off), value)

    # -- introspection --------------------------------------------------------------------
    def _maps_lines(self) -> List[str]:
        self._send(b"m")
        parts = []
        while True:                               # pieces until a 0 length: no size cap
            n = self._i64()
            if n <= 0:
                break
            parts.append(self._read(n))
        text = b"".join(parts).decode()
        lo, hi = self.window
        out = []
        for line in text.splitlines():
            span = line.split()[0]
            s, e = (int(x, 16) for x in span.split("-"))
            if lo <= s and e <= hi:
                out.append(line)
        return out

    @_call
    def format_maps(self) -> str:
        """/proc/self/maps of the child, the lines inside the window."""
        lines = self._maps_lines()
        return "\n".join(lines) + ("\n" if lines else "")

    @_call
    def maps(self) -> List[VMA]:
        out = []
        for line in self._maps_lines():
            f = line.split(maxsplit=5)
            s, e = (int(x, 16) for x in f[0].split("-"))
            p = f[1]
            prot = (C.PROT_READ if p[0] == "r" else 0) | (C.PROT_WRITE if p[1] == "w" else 0) | \
                (C.PROT_EXEC if p[2] == "x" else 0)
            shared = p[3] == "s"
            vm_flags = (C.VM_READ if p[0] == "r" else 0) | (C.VM_WRITE if p[1] == "w" else 0) | \
                (C.VM_EXEC if p[2] == "x" else 0) | (C.VM_MAYSHARE | C.VM_SHARED if shared else 0)
            flags = C.MAP_SHARED if shared else C.MAP_PRIVATE
            pgoff = int(f[2], 16) >> 12
            out.append(VMA(s, e, prot, flags, vm_flags, pgoff, None, int(f[4]) if shared else None,
                           f[5] if len(f) > 5 else ""))
        return out

    @_call
    def pagemap(self, addr, length) -> np.ndarray:
        addr, length = _u64(addr, "addr"), _u64(length, "length")
        start = addr & ~4095
        end = (addr + length + 4095) & ~4095
        n = (end - start) >> 12
        if n > MAX_PAGEMAP_PAGES:
            raise ValueError(f"pagemap of {n} pages: at most {MAX_PAGEMAP_PAGES} at a time")
        out = np.zeros(n, dtype=np.uint64)
        done = 0
        while done < n:
            self._send(b"g", start + (done << 12), n - done)
            got = self._i64()
            if got <= 0:
                raise oserror(-got if got < 0 else _errno.EIO, "pagemap")
            out[done:done + got] = np.frombuffer(self._read(got * 8), dtype=np.uint64)
            done += got
        return out

    @_call
    def status(self) -> Dict[str, int]:
        """The memory lines of the helper's ``/proc/PID/status`` (``Vm*``,
        ``Rss*``, in kB), under the kernel's names, as :meth:`pymm.MM.status`
        gives them.

        They are the whole helper process's: its image, static buffers and
        stack are in them too.  The helper touches everything it will use
        before it answers its first request, so that part stays constant
        and the *difference* between two calls is exactly what the calls in
        between did in the window, one to one with the same difference on a
        :class:`pymm.MM` (which starts from nothing).

        Example::

            >>> from pymm import host
            >>> if host.available():
            ...     with host.HostMM() as h:
            ...         before = h.status()
            ...         a = h.mmap(0, 4096, pymm.PROT_READ | pymm.PROT_WRITE,
            ...                    pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
            ...         h.write(a, b"x")
            ...         grew = h.status()["RssAnon"] - before["RssAnon"]     # 4 (kB): one page
        """
        if self._proc is None:
            raise RuntimeError("HostMM is closed")
        if self._broken:
            raise RuntimeError(f"{self._broken}; this HostMM is unusable, make a new one")
        try:
            with open(f"/proc/{self._proc.pid}/status") as f:
                text = f.read()
        except OSError as e:
            raise self._fail(f"cannot read the helper's /proc/{self._proc.pid}/status: {e}") from None
        out = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if key.startswith(("Vm", "Rss")) and len(fields) == 2 and fields[1] == "kB":
                out[key] = int(fields[0])
        return out


    # -- fork --------------------------------------------------------------------------------
    @_call
    def fork(self) -> "HostMM":
        """fork(2) in the helper: a second HostMM on the child process, with
        its own pipes (two FIFOs), the same window and timeout.  Close each
        HostMM on its own.

        Example::

            >>> from pymm import host
            >>> if host.available():
            ...     with host.HostMM() as h:
            ...         a = h.mmap(0, 4096, pymm.PROT_READ | pymm.PROT_WRITE,
            ...                    pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
            ...         h.write(a, b"parent")
            ...         with h.fork() as c:
            ...             c.write(a, b"child!")
            ...             print(h.read(a, 6), c.read(a, 6))
        """
        d = tempfile.mkdtemp(prefix="pymm-fork-")
        try:
            for name in ("in", "out"):
                os.mkfifo(os.path.join(d, name), 0o600)
            path = d.encode()
            self._send(b"F", len(path), payload=path)
            pid = self._i64()
            if pid < 0:
                raise oserror(-pid, "fork")
            # the child opens "in" for reading, then "out" for writing: the same order here
            stdin = open(os.path.join(d, "in"), "wb", buffering=0)
            stdout = open(os.path.join(d, "out"), "rb", buffering=0)
        finally:
            for name in ("in", "out"):
                try:
                    os.unlink(os.path.join(d, name))
                except OSError:
                    pass
            os.rmdir(d)
        child = object.__new__(type(self))
        child.window, child.timeout = self.window, self.timeout
        child._lock = threading.RLock()
        child._broken = None
        child._proc = _ForkedProc(pid, stdin, stdout)
        try:
            ready = child._i64()
        except RuntimeError as e:
            child.close()
            raise RuntimeError(f"the forked host helper did not start: {e}") from None
        if ready != _READY:
            child.close()
            raise RuntimeError("the forked host helper answered nonsense")
        return child

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the helper (also after it died or stopped) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None and not self._broken:
                proc.stdin.write(b"q" + bytes(48))
        except (BrokenPipeError, OSError, ValueError):
            pass
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()                      # stopped (SIGSTOP) or stuck: SIGKILL works on both
            proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    del _call

    def __repr__(self):
        return f"<pymm.host.HostMM window={self.window[0]:#x}-{self.window[1]:#x}>"
