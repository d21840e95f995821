"""Scale: 64 GiB populated and moved per-PTE: < 2 s, peak RSS < 1.5 GiB,
and host memory beyond page-table pages <= 16 bytes per simulated page
(measured as the process's RSS growth while populating, minus the tables)."""
import resource

import pytest

import pymm

SIZE = 64 << 30
SRC = 1 << 40
DST = (1 << 40) + (128 << 30) + 4096   # not PMD-aligned with SRC: per-PTE


@pytest.mark.benchmark(group="scale: 64 GiB populate + per-PTE move")
def test_64g_populate_and_move(benchmark):
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def run():
        mm = pymm.MM()
        mm.mmap(SRC, SIZE, pymm.PROT_READ | pymm.PROT_WRITE,
                pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED)
        before = rss()
        mm.memset(SRC, 0x5A, SIZE)
        grown = rss() - before
        tables = mm.engine.memory()["host_bytes_tables"]
        mm.mremap(SRC, SIZE, SIZE, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, DST)
        assert mm.stats["pte_moves"] == SIZE >> 12
        return grown / (SIZE >> 12), (grown - tables) / (SIZE >> 12)
    all_per_page, per_page = benchmark.pedantic(run, rounds=3, iterations=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    benchmark.extra_info["peak_rss_mib"] = peak >> 20
    benchmark.extra_info["rss_bytes_per_page"] = round(all_per_page, 3)
    benchmark.extra_info["bytes_per_page_beyond_tables"] = round(per_page, 3)
    assert per_page <= 16
    assert peak < 1.5 * (1 << 30)


# 256 GiB in a fresh process, so that its peak RSS is this case's own:
# 16 bytes of frame metadata a page (1 GiB) plus one set of PTE tables
# (512 MiB), since a whole-VMA per-PTE move recycles the source's tables.
_CHILD_256G = r"""
import json, resource, time, pymm
SIZE = 256 << 30
SRC, DST = 1 << 40, (1 << 40) + (2 * SIZE) + 4096
mm = pymm.MM(ram=SIZE + (SIZE >> 6))
mm.mmap(SRC, SIZE, pymm.PROT_READ | pymm.PROT_WRITE, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED)
t0 = time.perf_counter()
mm.memset(SRC, 0x5A, SIZE)
t1 = time.perf_counter()
mm.mremap(SRC, SIZE, SIZE, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, DST)
t2 = time.perf_counter()
assert mm.stats["pte_moves"] == SIZE >> 12 and mm.read(DST + SIZE - 1, 1) == b"Z"
print(json.dumps({"populate_s": t1 - t0, "move_s": t2 - t1,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


@pytest.mark.benchmark(group="scale: 256 GiB populate + per-PTE move (fresh process)")
def test_256g_populate_and_move(benchmark):
    """Issue 11's target: < 4 s, peak RSS <= 1.6 GiB.  The benchmark's time
    includes starting Python; extra_info has the child's populate + move."""
    import json
    import os
    import subprocess
    import sys
    if os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") < (4 << 30):
        pytest.skip("needs 4 GiB of host memory")
    runs = []

    def run():
        out = subprocess.run([sys.executable, "-c", _CHILD_256G], check=True, capture_output=True,
                             text=True).stdout
        runs.append(json.loads(out))
    benchmark.pedantic(run, rounds=3, iterations=1)
    work = sorted(r["populate_s"] + r["move_s"] for r in runs)
    peak = max(r["peak_rss"] for r in runs)
    benchmark.extra_info["populate_plus_move_s_median"] = round(work[len(work) // 2], 3)
    benchmark.extra_info["move_s"] = [round(r["move_s"], 3) for r in runs]
    benchmark.extra_info["peak_rss_mib"] = peak >> 20
    assert peak <= 1.6 * (1 << 30)
