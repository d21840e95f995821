"""The batched anonymous fault (memory.pyx fault_anon_run), on fresh or on
freed frames, leaves exactly what one fault_pte() per page leaves: same
entries' flags, tags, rmaps, counters, and a clean check_scan."""
import numpy as np
import pytest

import mmcore
from mmcore import X86_64, Engine

MiB = 1 << 20
BASE = 1 << 30
LEN = 4 * MiB


def fault(eng, o, start, end, **kw):
    mmcore.handle_mm_fault(eng, start, end, vma_start=BASE, vma_end=BASE + LEN, owner=o,
                           pgoff=BASE >> 12, **kw)


def observe(eng, o):
    n = LEN >> 12
    pm = mmcore.pagemap(eng, BASE, n)
    frames = [mmcore.translate(eng, BASE + (i << 12)) for i in range(n)]
    info = [eng.frame_info(f) for f in frames]
    flags = [mmcore.walk(eng, BASE + (i << 12))[-1][3] & 0xFFF for i in range(n)]
    v = lambda x, t=np.uint64: np.array([x], dtype=t)
    problems = mmcore.check_scan(eng, v(BASE), v(BASE + LEN), v(o, np.int64), v(BASE >> 12))
    return (pm >> np.uint64(55)).tolist(), info, flags, eng.rss(), eng.stats()["faults"], problems


def fresh(kind):
    """An engine where the next populate takes the batched path on fresh
    frames ("run"), the batched path on freed frames ("freelist": 4 KiB
    frames wait on the free list), or the per-PTE path ("pte": a free huge
    block waits to be broken up)."""
    eng = Engine(X86_64)
    o = eng.owner_new("anon")
    if kind != "run":
        other = eng.owner_new("anon")
        n = 300 * 4096 if kind == "freelist" else 2 << 20
        mmcore.handle_mm_fault(eng, 1 << 40, (1 << 40) + n, vma_start=1 << 40,
                               vma_end=(1 << 40) + n, owner=other, pgoff=1 << 28, write=True,
                               thp=kind == "pte", fill=0xEE)
        mmcore.zap_page_range(eng, 1 << 40, (1 << 40) + n)
        mmcore.free_pgd_range(eng, 1 << 40, (1 << 40) + n, 0, 0)
        eng.owner_free(other)
    eng.reset_stats()
    return eng, o


@pytest.mark.parametrize("kw", [dict(write=True, fill=0x5A), dict(write=True),
                                dict(write=True, writable=False), dict(write=False, zero_page=False)],
                         ids=["fill", "write", "readonly", "read-no-zero-page"])
def test_batched_fault_matches_per_pte(kw):
    results = []
    for kind in ("run", "freelist", "pte"):
        eng, o = fresh(kind)
        fault(eng, o, BASE, BASE + LEN, **kw)
        pm, info, flags, rss, faults, problems = observe(eng, o)
        assert problems == []
        assert rss == (LEN >> 12, 0) and faults == LEN >> 12
        # free frames are taken before fresh ones: at least the 511 left free
        # below the huge zero page's block (frames 512..1023) from the start
        assert eng.memory()["frame_rows_used"] - 1024 <= (LEN >> 12) - 511
        # tag and page->index per page; frame numbers may differ between paths
        results.append((pm, [(t, i) for t, _o, i in info], flags))
    assert results[0] == results[1] == results[2]
    assert results[0][1][5] == (0x5A if kw.get("fill") else 0, (BASE >> 12) + 5)


def test_partly_populated_table_faults_only_the_holes():
    eng, o = fresh("run")
    fault(eng, o, BASE + 8192, BASE + 12288, write=True, fill=1)
    fault(eng, o, BASE, BASE + 2 * MiB, write=True)
    assert eng.rss() == (512, 0) and eng.stats()["faults"] == 512
    assert mmcore.read_bytes(eng, BASE + 8192, 2) == (b"\x01\x01", 2)
    assert mmcore.read_bytes(eng, BASE + 4096, 2) == (b"\x00\x00", 2)


def test_read_fault_maps_zero_page_not_run():
    eng, o = fresh("run")
    fault(eng, o, BASE, BASE + 2 * MiB, write=False)
    assert eng.rss() == (0, 0) and eng.n_frames == 0
    assert {mmcore.translate(eng, BASE + (i << 12)) for i in range(512)} == {0}
