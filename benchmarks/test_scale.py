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
