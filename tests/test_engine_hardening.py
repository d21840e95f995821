"""Issue 15, engine side: no uninitialised memory handed out, geometry
validated by the engine itself, concurrent use refused, bounded tables."""
import gc
import os
import signal
import threading
import time

import numpy as np

import pytest

import mmcore
from mmcore import X86_64, Engine

GiB, MiB = 1 << 30, 1 << 20
SECRET = b"SECRET-PASSWORD!"


def anon(eng, start, length, **kw):
    o = eng.owner_new("anon")
    mmcore.handle_mm_fault(eng, start, start + length, vma_start=start, vma_end=start + length,
                           owner=o, pgoff=start >> 12, write=True, **kw)
    return o


# -- item 2: read_bytes never returns memory it did not write --------------------
def spray_and_free_secrets(n=256):
    """Fill page buffers with the secret and free them (the heap keeps the bytes)."""
    eng = Engine(X86_64)
    anon(eng, 2 * GiB, n * 4096)
    for i in range(n):
        assert mmcore.write_bytes(eng, 2 * GiB + i * 4096 + 1, SECRET * 255) == len(SECRET) * 255
    mmcore.zap_page_range(eng, 2 * GiB, 2 * GiB + n * 4096)
    return eng


def test_read_of_unmapped_range_returns_nothing():
    eng = spray_and_free_secrets()
    data, done = mmcore.read_bytes(eng, GiB, 65536)
    assert (data, done) == (b"", 0)


def test_read_stopping_at_a_fault_returns_only_what_it_read():
    eng = spray_and_free_secrets()
    anon(eng, GiB, 4096, fill=0x41)
    for _ in range(20):           # fresh allocations each time: none may leak
        data, done = mmcore.read_bytes(eng, GiB + 4000, 65536)
        assert done == 96 and data == b"A" * 96
        assert SECRET[:6] not in data
    del eng
    gc.collect()


def test_full_read_unchanged():
    eng = Engine(X86_64)
    anon(eng, GiB, 8192, fill=7)
    assert mmcore.read_bytes(eng, GiB + 100, 8000) == (b"\x07" * 8000, 8000)
    assert mmcore.read_bytes(eng, GiB, 0) == (b"", 0)


# -- item 3: the engine validates the geometry's numbers itself -------------------
class TwelveLevels(mmcore.Geometry):
    levels = property(lambda self: 12)


def hacked(**fields):
    g = mmcore.Geometry("hacked", 12, (9, 9, 9, 9), ("pgd", "pud", "pmd", "pte"), 47)
    for k, v in fields.items():
        object.__setattr__(g, k, v)
    return g


@pytest.mark.parametrize("geometry,error", [
    (TwelveLevels("x", 12, (9, 9, 9, 9), ("pgd", "pud", "pmd", "pte"), 47), ValueError),
    (hacked(level_bits=(9,) * 8), ValueError),          # 8 levels > MAXLEV
    (hacked(level_bits=(9,)), ValueError),
    (hacked(level_bits=(9, 9, 40, 9)), ValueError),     # 2**40 entries per table
    (hacked(level_bits=(9, 9, 0, 9)), ValueError),
    (hacked(level_bits=(16, 16, 16, 9)), ValueError),   # 69 bits translated
    (hacked(page_shift=64), ValueError),
    (hacked(page_shift=-3), ValueError),
    (hacked(page_shift=12.5), TypeError),
    (hacked(level_bits=[9, 9, 9, 9]), TypeError),
    (hacked(level_bits=(9, 9, 9, "9")), TypeError),
    (hacked(level_bits=(9, 9, 9, True)), TypeError),
], ids=["property-12-levels", "8-levels", "1-level", "40-bits", "0-bits", "69-bit-va",
        "page-shift-64", "page-shift-negative", "float", "list", "str", "bool"])
def test_engine_refuses_hostile_geometry(geometry, error):
    with pytest.raises(error, match="geometry"):
        Engine(geometry)


def test_engine_geometry_snapshot_ignores_later_changes():
    g = hacked()
    eng = Engine(g)
    object.__setattr__(g, "level_bits", (9,) * 8)     # after construction: not read again
    anon(eng, GiB, 2 * MiB)
    assert eng.levels == 4 and eng.rss() == (512, 0)
    assert len(mmcore.walk(eng, GiB)) == 4


def test_engine_accepts_every_shipped_geometry():
    for g in mmcore.GEOMETRIES.values():
        eng = Engine(g)
        assert eng.levels == g.levels and eng.page_size == g.page_size


# -- item 1 (engine side): concurrent calls on one engine are refused, never a crash --
def retry(counts, fn, *args, **kw):
    """Call fn until the engine takes it; count the refusals."""
    while True:
        try:
            return fn(*args, **kw)
        except mmcore.EngineBusy as e:
            assert "in use by another thread" in str(e)
            counts["busy"] += 1
            time.sleep(0)            # let the thread holding the engine have the GIL back


def hammer(eng, base, rounds, counts, errors):
    try:
        o = retry(counts, eng.owner_new, "anon")
        for i in range(rounds):
            n = (1 + i % 4) * 2 * MiB
            retry(counts, mmcore.handle_mm_fault, eng, base, base + n, vma_start=base,
                  vma_end=base + n, owner=o, pgoff=base >> 12, write=True, fill=i & 0xFF)
            data, done = retry(counts, mmcore.read_bytes, eng, base + n - 3, 3)
            assert (data, done) == (bytes([i & 0xFF]) * 3, 3)
            retry(counts, mmcore.zap_page_range, eng, base, base + n)
            retry(counts, mmcore.free_pgd_range, eng, base, base + n, 0, 0)
        retry(counts, eng.owner_free, o)
    except BaseException as e:       # noqa: BLE001 - reported by the main thread
        errors.append(e)


def test_four_threads_on_one_engine_never_crash():
    eng = Engine(X86_64)
    counts, errors = {"busy": 0}, []
    threads = [threading.Thread(target=hammer, args=(eng, (k + 1) << 39, 600, counts, errors))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # every thread's work completed exactly once: nothing left, nothing lost
    assert eng.rss() == (0, 0) and eng.n_tables == 0 and eng.n_frames == 0
    assert eng.memory()["owners"] == 0     # every owner freed
    empty = np.zeros(0, dtype=np.uint64)
    assert mmcore.check_scan(eng, empty, empty, np.zeros(0, dtype=np.int64), empty) == []


def test_separate_engines_run_in_parallel_without_refusal():
    engines = [Engine(X86_64) for _ in range(2)]
    counts, errors = {"busy": 0}, []
    threads = [threading.Thread(target=hammer, args=(e, 1 << 39, 100, counts, errors)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and counts["busy"] == 0


def test_engine_is_free_again_after_an_error():
    eng = Engine(X86_64)
    with pytest.raises(ValueError):
        mmcore.zap_page_range(eng, 2 * GiB, GiB)
    anon(eng, GiB, 4096)          # not left claimed
    assert eng.rss() == (1, 0)


# -- issue 11 item 6: long calls answer a signal between chunks -----------------------
class Interrupted(Exception):
    pass


def interrupt_when(cond):
    """Send this process SIGINT as soon as cond() holds (polled from a thread)."""
    def poll():
        while not cond():
            time.sleep(0)
        os.kill(os.getpid(), signal.SIGINT)
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    return t


@pytest.fixture
def sigint_raises():
    def handler(signum, frame):
        raise Interrupted()
    old = signal.signal(signal.SIGINT, handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_long_populate_stops_at_a_signal_and_keeps_what_it_did(sigint_raises):
    eng = Engine(X86_64)
    o = eng.owner_new("anon")
    size = 64 * GiB
    base = 1 << 40
    poller = interrupt_when(lambda: eng.rss()[0] > 0)
    with pytest.raises(Interrupted):
        mmcore.handle_mm_fault(eng, base, base + size, vma_start=base, vma_end=base + size, owner=o,
                               pgoff=base >> 12, write=True, fill=0x33)
    poller.join()
    done = eng.rss()[0]
    assert 0 < done < size >> 12 and done % (GiB >> 12) == 0      # whole chunks, not all
    assert not eng.busy
    # the pages done are there, with their contents; the rest untouched
    last = base + (done << 12)
    assert mmcore.read_bytes(eng, last - 2, 4) == (b"\x33\x33", 2)
    v = lambda x, t=np.uint64: np.array([x], dtype=t)
    assert mmcore.check_scan(eng, v(base), v(base + size), v(o, np.int64), v(base >> 12)) == []


def test_long_memset_stops_at_a_signal(sigint_raises):
    eng = Engine(X86_64)
    size, base = 32 * GiB, 1 << 40         # ~100 ms of work: time for the poller to be scheduled
    anon(eng, base, size)
    poller = interrupt_when(lambda: eng.busy)
    with pytest.raises(Interrupted):
        mmcore.memset_pages(eng, base, base + size, 0x77)
    poller.join()
    first_page_per_gib = [int(mmcore.page_tags(eng, base + g * GiB, 1)[0]) for g in range(32)]
    n = first_page_per_gib.count(0x77)
    assert 0 < n < 32 and first_page_per_gib == [0x77] * n + [0] * (32 - n)


# -- issue 15 item 6: table allocation bounded by the engine's page limit -----------
def one_page_engine():
    eng = Engine(X86_64)
    o = anon(eng, GiB, 4096, fill=0x78)
    return eng, o


def test_overlapping_move_up_stops_at_the_page_limit():
    # the case: moving up by one page carries the PTE through the range,
    # a new PTE table every 2 MiB (32,835 tables for 64 GiB, unbounded)
    eng, o = one_page_engine()
    eng.max_pages = 200
    pmc = mmcore.MoveControl(GiB, GiB + 4096, 1 << 36)
    assert mmcore.move_page_tables(eng, pmc) is False          # stopped early, as on ENOMEM
    assert eng.pages_used <= 200 and not eng.busy
    assert GiB < pmc.old_addr < GiB + (1 << 36)
    # the page is somewhere in the range, still mapped once, with its contents
    v = lambda x, t=np.uint64: np.array([x], dtype=t)
    problems = mmcore.check_scan(eng, v(GiB), v(GiB + (1 << 36) + 4096), v(o, np.int64),
                                 v(GiB >> 12), max_problems=5)
    assert {p[0] for p in problems} <= {"rmap-index"}         # a bare move leaves the VMA behind
    assert eng.rss() == (1, 0)
    runs = mmcore.leaf_runs(eng, GiB, GiB + (1 << 36) + 4096)
    assert len(runs["start"]) == 1
    assert mmcore.read_bytes(eng, int(runs["start"][0]), 2) == (b"xx", 2)


def test_fault_past_the_limit_raises_engine_out_of_memory_and_keeps_what_it_did():
    eng = Engine(X86_64)
    eng.max_pages = 1000
    o = eng.owner_new("anon")
    with pytest.raises(mmcore.EngineOutOfMemory, match="limit of 1000 pages"):
        mmcore.handle_mm_fault(eng, GiB, 2 * GiB, vma_start=GiB, vma_end=2 * GiB, owner=o,
                               pgoff=GiB >> 12, write=True, fill=5)
    assert eng.pages_used == 1000 and not eng.busy
    assert isinstance(mmcore.EngineOutOfMemory("x"), MemoryError)
    n = eng.rss()[0]
    assert 0 < n < 1000
    assert mmcore.read_bytes(eng, GiB + (n << 12) - 1, 2) == (b"\x05", 1)
    v = lambda x, t=np.uint64: np.array([x], dtype=t)
    assert mmcore.check_scan(eng, v(GiB), v(2 * GiB), v(o, np.int64), v(GiB >> 12)) == []
    # raising the limit lets the same call finish
    eng.max_pages = None
    mmcore.handle_mm_fault(eng, GiB, 2 * GiB, vma_start=GiB, vma_end=2 * GiB, owner=o,
                           pgoff=GiB >> 12, write=True, fill=5)
    assert eng.rss() == (GiB >> 12, 0) and eng.max_pages is None


def test_thp_fault_and_split_respect_the_limit():
    eng = Engine(X86_64)
    o = eng.owner_new("anon")
    fault = dict(vma_start=GiB, vma_end=GiB + 2 * MiB, owner=o, pgoff=GiB >> 12, write=True, thp=True)
    eng.max_pages = 3 + 512                 # pgd, pud, pmd tables + a folio, not its deposit
    with pytest.raises(mmcore.EngineOutOfMemory):   # pte_alloc_one() failed: VM_FAULT_OOM
        mmcore.handle_mm_fault(eng, GiB, GiB + 2 * MiB, **fault)
    assert eng.pages_used == 3 and eng.rss() == (0, 0)     # the folio went back
    eng.max_pages = 3 + 512 + 1             # + the PTE table deposited with it
    mmcore.handle_mm_fault(eng, GiB, GiB + 2 * MiB, **fault)
    eng.max_pages = eng.pages_used          # nothing to spare: a split needs nothing
    mmcore.split_huge_pmd_address(eng, GiB + 4096)
    assert eng.stats()["huge_pmd_splits"] == 1 and eng.deposited_tables == 0


@pytest.mark.parametrize("value,error", [(0, ValueError), (-5, ValueError),
                                         (2.0, TypeError), ("9", TypeError), (True, TypeError)])
def test_max_pages_validated(value, error):
    eng = Engine(X86_64)
    with pytest.raises(error):
        eng.max_pages = value
    assert eng.max_pages is None


def test_max_pages_beyond_int64_means_no_limit():
    eng = Engine(X86_64)
    for v in ((1 << 63) - 1, 1 << 63, 1 << 80):
        eng.max_pages = 10
        eng.max_pages = v
        assert eng.max_pages is None
    eng.max_pages = np.int64(7)
    assert eng.max_pages == 7


ENGINE_METHOD_CALLS = {
    "owner_new": ("anon",), "owner_free": (1,), "owner_kind": (1,), "shmem_resident": (2,),
    "reset_stats": (), "take_warnings": (), "record_warning": ("pmd_not_none",),
    "table_levels": (), "table_row": (0,), "frame_info": (0,), "frame_bytes": (1,),
}


def test_every_entry_point_refuses_while_a_call_runs(sigint_raises):
    # A signal handler runs inside a long populate (between its chunks, while
    # this thread holds the engine): every entry point must refuse, none may
    # run underneath the populate.
    from test_mmcore_surface import VALID_CALLS
    eng = Engine(X86_64)
    o = eng.owner_new("anon")
    assert eng.owner_new("shmem", npages=16) == 2
    refused, ran = [], []

    def handler(signum, frame):
        for name, (args, kwargs) in VALID_CALLS.items():
            try:
                getattr(mmcore, name)(eng, *args, **kwargs)
                ran.append(name)
            except mmcore.EngineBusy:
                refused.append(name)
        for name, args in ENGINE_METHOD_CALLS.items():
            try:
                getattr(eng, name)(*args)
                ran.append(name)
            except mmcore.EngineBusy:
                refused.append(name)
        raise Interrupted()

    signal.signal(signal.SIGINT, handler)
    base, size = 1 << 40, 64 * GiB
    poller = interrupt_when(lambda: eng.busy)
    with pytest.raises(Interrupted):
        mmcore.handle_mm_fault(eng, base, base + size, vma_start=base, vma_end=base + size, owner=o,
                               pgoff=base >> 12, write=True)
    poller.join()
    assert ran == []
    assert sorted(refused) == sorted(list(VALID_CALLS) + list(ENGINE_METHOD_CALLS))
    # and afterwards they all work again
    assert eng.owner_kind(o) == "anon" and not eng.busy
