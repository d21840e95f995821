"""Independent tasks on any ``concurrent.futures.Executor``: what fuzz
campaigns and sweeps run on.

There is no scheduler here: a local :class:`~concurrent.futures.ProcessPoolExecutor`
by default, or a Dask cluster's executor (``Client(address).get_executor()``),
runs the tasks; this module only keeps a few of them in flight, stops
submitting at a deadline, and handles a worker that dies: its tasks are
submitted again (``retries`` times), then reported as lost.

A process pool whose worker dies breaks as a whole (every task in flight
fails with ``BrokenProcessPool``): a pool of pymm's own is then replaced and
those tasks re-run; a pool passed in cannot be replaced, so its tasks are
reported lost.  Dask re-runs a dead worker's tasks elsewhere by itself; a
task that killed workers too often comes back as ``KilledWorker`` and counts
as one failed attempt here.

Example::

    >>> from pymm.pool import run_tasks
    >>> done = {}
    >>> lost = run_tasks(pow, [(k, (k, 2)) for k in range(4)], workers=2,
    ...                  on_result=lambda key, r: done.update({key: r}))
    >>> sorted(done.items()), lost
    ([(0, 0), (1, 1), (2, 4), (3, 9)], [])
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

DASK_HINT = 'needs Dask: pip install "pymm[dask]"'


def _worker_init() -> None:
    """A pool worker leaves Ctrl-C to the client (which then cancels)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def local_pool(workers: Optional[int] = None) -> cf.ProcessPoolExecutor:
    """A process pool of ``workers`` processes (default: one per CPU).

    Forked while this process runs no other thread (quick, and a script
    needs no ``if __name__ == "__main__"`` guard); started by a fork server
    otherwise (a Dask client's threads make fork unsafe)."""
    n = workers or os.cpu_count() or 1
    if n < 1:
        raise ValueError(f"workers must be at least 1, not {n}")
    method = "fork" if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods() \
        else "forkserver"
    return cf.ProcessPoolExecutor(n, mp_context=multiprocessing.get_context(method), initializer=_worker_init)


def dask_client(address: str, timeout: float = 10.0):
    """A ``distributed.Client`` connected to the scheduler at ``address``.

    Raises ImportError with :data:`DASK_HINT` when Dask is not installed, and
    OSError (one line) for an address that is wrong or where no scheduler
    answers within ``timeout`` seconds (a refused port is told at once).
    """
    try:
        from distributed import Client
        from distributed.comm import get_address_host_port
    except ImportError:
        raise ImportError(DASK_HINT) from None
    try:
        host, port = get_address_host_port(address)
    except (ValueError, TypeError, NotImplementedError) as e:
        raise OSError(f"not a Dask scheduler address: {address!r} ({e}; try tcp://HOST:8786)") from None
    try:                                 # a plain TCP connect first: quick, and no half-made Client
        probe = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise OSError(f"no Dask scheduler at {address!r}: {e.strerror or e}") from None
    try:
        if not _speaks_dask(probe, min(timeout, 5.0)):
            raise OSError(f"{address!r} answers, but not as a Dask scheduler (its dashboard port, "
                          "or another service?); the scheduler listens on tcp://HOST:8786 by default")
    finally:
        probe.close()
    try:
        return Client(address, timeout=timeout)
    except Exception as e:               # whatever the far end sent: one line, never a traceback
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OSError(f"no Dask scheduler at {address!r}: {why}") from None


def _speaks_dask(sock: socket.socket, timeout: float) -> bool:
    """Does the peer open with distributed's TCP handshake?  A scheduler
    writes it as soon as it accepts: an 8-byte little-endian message length,
    then msgpack frames naming "compression" and "python".  An HTTP server
    says nothing (it waits for a request) or sends text."""
    sock.settimeout(timeout)
    data = b""
    try:
        while len(data) < 64:
            chunk = sock.recv(64 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:                      # socket.timeout included: silence is not Dask
        pass
    if len(data) < 16:
        return False
    length = int.from_bytes(data[:8], "little")
    return 0 < length < (1 << 20) and (b"compression" in data or b"python" in data)


class InProcess(cf.Executor):
    """An Executor that runs each task at once, in this process: the plain
    loop, for comparing results and overheads with the other executors.

    >>> InProcess().submit(pow, 2, 10).result()
    1024
    """

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as e:
            fut.set_exception(e)
        return fut


def capacity(executor) -> int:
    """How many tasks the executor runs at once: a process pool's size, a
    Dask cluster's worker threads, else the CPUs here."""
    if isinstance(executor, InProcess):
        return 1
    if isinstance(executor, cf.ProcessPoolExecutor):
        return executor._max_workers
    client = getattr(executor, "_client", None)
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:
            pass
    return getattr(executor, "_max_workers", None) or os.cpu_count() or 1


def _stop_now(pool: cf.ProcessPoolExecutor) -> None:
    """Ctrl-C: end our pool's workers mid-task (their tasks are abandoned)."""
    if hasattr(pool, "terminate_workers"):                # Python 3.14+
        pool.terminate_workers()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()


def _broke(fut: cf.Future) -> bool:
    return not fut.cancelled() and isinstance(fut.exception(), BrokenProcessPool)


def run_tasks(fn: Callable, items: Iterable[Tuple[Any, tuple]], *, executor=None,
              workers: Optional[int] = None, deadline: Optional[float] = None, retries: int = 1,
              on_result: Optional[Callable[[Any, Any], None]] = None,
              attempt_kw: Optional[str] = None,
              on_retry: Optional[Callable[[Any, str], None]] = None) -> List[Tuple[Any, str]]:
    """Run ``fn(*args)`` for each ``(key, args)`` of ``items`` on ``executor``
    (None: a local process pool of ``workers``); ``on_result(key, result)``
    gets each result, in the client, as it arrives.

    ``deadline`` (a ``time.monotonic()`` value): no task is submitted after
    it; the tasks in flight, and re-runs, finish.  A task that fails (its worker died, or
    it raised) is submitted again up to ``retries`` times; ``attempt_kw``
    names a keyword that gets the attempt number (so a Dask cluster does not
    hand back the failed result of an identical earlier call); ``on_retry(key,
    reason)`` hears of each re-run.  Returns the
    lost tasks: ``[(key, reason)]``.
    """
    own = executor is None
    pool = local_pool(workers) if own else executor
    slots = capacity(pool) + 1          # one waiting per pool, so a worker never idles; few past the deadline
    todo = iter(items)
    again: deque = deque()               # (key, args, attempt) to re-run
    running: Dict[cf.Future, Tuple[Any, tuple, int]] = {}
    lost: List[Tuple[Any, str]] = []
    broken = False

    def submit(key, args, attempt):
        kw = {attempt_kw: attempt} if attempt_kw else {}
        running[pool.submit(fn, *args, **kw)] = (key, args, attempt)

    def failed(key, args, attempt, reason):
        if attempt < retries and not broken:
            again.append((key, args, attempt + 1))
            if on_retry is not None:
                on_retry(key, reason)
        else:
            lost.append((key, reason))

    try:
        while True:
            while len(running) < slots and not broken:
                if again:
                    submit(*again.popleft())
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    break
                nxt = next(todo, None)
                if nxt is None:
                    break
                submit(nxt[0], nxt[1], 0)
            if not running:
                break
            done, _ = cf.wait(list(running), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            if any(_broke(f) for f in done):
                done, _ = cf.wait(list(running))     # a broken pool fails all it held at once
            pool_died = False
            for fut in done:
                key, args, attempt = running.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    pool_died = True
                    failed(key, args, attempt, "its worker process died (the process pool broke)")
                    continue
                except cf.CancelledError:
                    failed(key, args, attempt, "cancelled")
                    continue
                except Exception as e:       # the task raised, or Dask gave up on it (KilledWorker)
                    failed(key, args, attempt, f"{type(e).__name__}: {e}")
                    continue
                if on_result is not None:
                    on_result(key, result)
            if pool_died:
                if own:                  # a pool of our own: start a new one, re-run what was in it
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = local_pool(workers)
                else:                    # not ours to replace: what is left is lost
                    broken = True
                    lost.extend((key, "the process pool broke (a worker died)") for key, _, _ in again)
                    again.clear()
    except BaseException:
        for fut in running:
            fut.cancel()
        if own:
            _stop_now(pool)
        raise
    if own:
        pool.shutdown(wait=True)
    return lost
