"""What pymm raises and warns.

* ``OSError`` with Linux's errno: a syscall failed, as it would on Linux.
* :class:`SegmentationFault` / :class:`BusError`: an access the CPU would
  fault on and the kernel would turn into SIGSEGV / SIGBUS.
* :class:`KernelWarning`: a ``WARN_ON()`` fired in the modelled kernel.  It is
  recorded in ``mm.warnings`` and issued through :func:`warnings.warn`.
* :class:`InvariantError`: ``MM(check=True)`` found a broken invariant.
* :class:`KernelBUG`: the modelled kernel would hit ``BUG()`` here.
* :class:`ReentrantCallError`: a hook called back into the MM it runs in.
* :class:`KernelOops`: a hook failed half-way through a call; the MM is dead.
* :class:`OutOfMemory`: the simulated RAM is used up (the OOM killer); the MM is dead.
"""
import errno as _errno
import os

from mmcore import EngineOutOfMemory, KernelBUG  # noqa: F401  (KernelBUG re-exported)


def oserror(code: int, call: str) -> OSError:
    """The OSError a failing syscall raises: ``OSError(errno, strerror)``."""
    err = OSError(code, f"{os.strerror(code)} [{call}]")
    return err


class MemoryFault(Exception):
    """A memory access the kernel answers with a signal.

    ``address`` is the faulting address (si_addr), ``code`` the si_code name,
    ``signal`` the signal name.
    """

    signal = "SIGSEGV"

    def __init__(self, address: int, code: str, detail: str = ""):
        self.address = address
        self.code = code
        self.detail = detail
        msg = f"{self.signal} ({code}) at {address:#x}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class SegmentationFault(MemoryFault):
    """SIGSEGV.  ``code`` is ``"SEGV_MAPERR"`` (no mapping) or
    ``"SEGV_ACCERR"`` (the mapping forbids the access).

    Example::

        >>> mm = pymm.MM()
        >>> try:
        ...     mm.read(0x1000, 1)
        ... except pymm.SegmentationFault as f:
        ...     print(f.code, hex(f.address))
        SEGV_MAPERR 0x1000
    """

    signal = "SIGSEGV"


class BusError(MemoryFault):
    """SIGBUS: e.g. touching a shared mapping beyond the end of its object
    (``code`` is ``"BUS_ADRERR"``)."""

    signal = "SIGBUS"


class KernelWarning(UserWarning):
    """A WARN_ON()/WARN_ON_ONCE() that fired in the modelled kernel.

    ``function`` names the function the kernel would print (inlined helpers
    show up as their caller: ``"move_page_tables"``), ``symbol`` the same
    with the offset where the thread's log has one
    (``"move_page_tables+0x6ef/0x720"``), ``location`` the source line
    (``"mm/mremap.c:211"``), ``message`` what happened, ``kernel`` the
    kernel's name.
    """

    def __init__(self, function: str, location: str, message: str, kernel: str = "",
                 site: str = "", old_addr: int = 0, new_addr: int = 0, pid: int = 1):
        self.symbol = function
        self.pid = pid                   # the process that hit it (its machine's pid)
        self.function = function.split("+", 1)[0]
        self.location = location
        self.message = message
        self.kernel = kernel
        self.site = site
        self.old_addr = old_addr
        self.new_addr = new_addr
        super().__init__(str(self))

    def __str__(self):
        return f"WARNING: CPU: 0 PID: {self.pid} at {self.location} {self.symbol}  ({self.message})"

    def __repr__(self):
        return f"KernelWarning({self.location}, {self.function!r}, {self.message!r})"

    def __reduce__(self):
        return (KernelWarning, (self.symbol, self.location, self.message, self.kernel,
                                self.site, self.old_addr, self.new_addr, self.pid))


class InvariantError(AssertionError):
    """``MM(check=True)`` found an invariant broken; ``problems`` lists them all."""

    def __init__(self, problems, after: str = ""):
        self.problems = list(problems)
        first = self.problems[0] if self.problems else "?"
        where = f" after {after}" if after else ""
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"invariant broken{where}: {first}{more}")


class ReentrantCallError(RuntimeError):
    """A call on an MM made while another call on the same MM is still
    running in the same thread (from a kernel hook or a warnings filter).
    Refused: in the kernel it would deadlock on mmap_lock."""


class KernelOops(RuntimeError):
    """A kernel hook (``align``, ``overlap_guard``, ``progress``) raised or
    returned a value the kernel could not use in the middle of a call: as
    after an oops, the address space is dead (``mm.dead`` says why) and
    refuses further calls; ``maps()``, ``describe()`` and the other views
    still show the state it was left in."""


def oops(mm, message: str) -> KernelOops:
    """Mark ``mm`` dead with ``message`` and return the KernelOops to raise."""
    if not mm.dead:
        mm.dead = message
    return KernelOops(f"oops: {message}; this MM is dead, make a new one")


class OutOfMemory(MemoryError):
    """The simulated machine's RAM (``MM(ram=...)``) is used up by frames
    and page tables: Linux's OOM killer ends the process, so the MM is dead
    (``mm.dead`` says why); ``maps()``/``read()``/``describe()`` still work.
    Also raised when the host itself refuses pymm memory mid-call."""


def out_of_memory(mm, call: str, err: BaseException) -> OutOfMemory:
    """Mark ``mm`` dead after a MemoryError in ``call``; the OutOfMemory to raise."""
    if isinstance(err, OutOfMemory):
        return err
    ram = getattr(mm, "ram", None)
    if isinstance(err, EngineOutOfMemory):
        why = (f"Out of memory: the OOM killer killed the process in {call}() "
               f"(ram={ram} bytes of frames and page tables used up)")
    else:
        why = f"the host refused pymm memory in {call}() ({err}); the call may be half done"
    if not mm.dead:
        mm.dead = why
    return OutOfMemory(f"{why}; this MM is dead, make a new one (a larger ram= ?)")


EINVAL = _errno.EINVAL
ENOMEM = _errno.ENOMEM
EFAULT = _errno.EFAULT
EEXIST = _errno.EEXIST
EBADF = _errno.EBADF
EPERM = _errno.EPERM
EACCES = _errno.EACCES
EAGAIN = _errno.EAGAIN
EOPNOTSUPP = _errno.EOPNOTSUPP
