"""Issue #15 item 1: threads on one MM are serialised; separate MMs run side by side."""
import threading
import time

import pytest

import pymm

RW = pymm.PROT_READ | pymm.PROT_WRITE
FIXED_ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED
SIZE = 64 << 20


def _hammer(mm, i, seconds, errors, counts):
    """The issue's loop: mmap, memset, read back, munmap, in this thread's own 512 GiB slot."""
    base = (i + 1) << 39
    deadline = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < deadline or n < 3:
            a = mm.mmap(base, SIZE, RW, FIXED_ANON)
            mm.memset(a, 7 + i, SIZE)
            got = mm.read(a + 12345, 1) + mm.read(a + SIZE - 1, 1)
            if got != bytes([7 + i]) * 2:
                errors.append(f"thread {i}: read {got!r} after memset {7 + i}")
            mm.munmap(a, SIZE)
            n += 1
    except BaseException as e:          # noqa: BLE001  (reported by the test)
        errors.append(f"thread {i}: {e!r}")
    counts[i] = n


def _run_threads(mms, seconds=2.0):
    errors, counts = [], {}
    threads = [threading.Thread(target=_hammer, args=(mm, i, seconds, errors, counts))
               for i, mm in enumerate(mms)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors, counts


@pytest.mark.parametrize("nthreads", [2, 4])
def test_threads_on_one_mm_do_not_corrupt_it(nthreads):
    mm = pymm.MM(thp="never")
    errors, counts = _run_threads([mm] * nthreads)
    assert errors == []
    assert all(counts[i] >= 3 for i in range(nthreads))
    assert pymm.check(mm) == []
    assert mm.map_count == 0 and mm.rss == 0


def test_threads_with_check_true_keep_every_invariant():
    mm = pymm.MM(thp="never", check=True)
    errors, _ = _run_threads([mm, mm], seconds=1.0)
    assert errors == []                 # check=True raised no InvariantError in any thread


def test_separate_mms_in_threads_each_stay_right():
    mms = [pymm.MM(thp="never") for _ in range(2)]
    errors, counts = _run_threads(mms, seconds=1.0)
    assert errors == []
    for mm in mms:
        assert pymm.check(mm) == [] and mm.map_count == 0


def test_readers_wait_for_a_running_call():
    """maps()/describe() from another thread never see a half-done call."""
    mm = pymm.MM(thp="never")
    stop = threading.Event()
    seen = []

    def reader():
        while not stop.is_set():
            n = len(mm.maps())
            seen.append(n)
            mm.describe(check=False)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(200):
            a = mm.mmap(1 << 40, 4 << 20, RW, FIXED_ANON)
            mm.memset(a, 1, 4 << 20)
            mm.munmap(a, 4 << 20)
    finally:
        stop.set()
        t.join()
    assert set(seen) <= {0, 1}
    assert pymm.check(mm) == []


def test_threads_on_two_processes_of_one_machine():
    """Processes of one Machine share its engine: their calls are serialised
    (one lock), never interleaved inside the core."""
    m = pymm.Machine(thp="never")
    procs = [m.spawn(), m.spawn()]
    assert procs[0].engine is procs[1].engine
    errors = []

    def work(p, i):
        try:
            b = (i + 1) << 39
            for _ in range(20):
                a = p.mmap(b, 8 << 20, 3, 0x32)
                p.memset(a, 7 + i, 8 << 20)
                assert p.read(a + (8 << 20) - 1, 1) == bytes([7 + i])
                p.munmap(a, 8 << 20)
        except Exception as e:            # noqa: BLE001 - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work, args=(p, i)) for i, p in enumerate(procs)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert [pymm.check(p) for p in procs] == [[], []]
    assert [p.status()["RssAnon"] for p in procs] == [0, 0]
