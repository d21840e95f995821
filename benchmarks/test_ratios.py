"""Issue 11's whole-call ratios, measured in one run: each round times this
machine's kernel (in the child, CLOCK_MONOTONIC around the syscall) and then
pymm's whole ``mm.mremap()`` call on the same 1 GiB case, both after an
untimed one-page mremap, as ``pymm bench`` does.  pytest-benchmark times the
pymm round (its runner's frames around the call included); extra_info has
the call's own median (perf_counter_ns around it, as pymm bench), the
kernel's, and their ratio (targets: PUD-aligned <= 0.5x, PMD-aligned <= 0.25x,
per-PTE <= 0.25x)."""
import statistics
import time

import pytest

from pymm import bench

SIZE = 1 << 30
TARGET = {"PUD-aligned": 0.5, "PMD-aligned": 0.25, "per-PTE": 0.25}


@pytest.mark.parametrize("case", list(TARGET))
def test_whole_call_vs_kernel(benchmark, hostmm, case):
    benchmark.group = "mremap 1 GiB whole call vs this kernel (same run)"
    src, dst = bench.addresses(case, SIZE)
    kernel_ns = []
    box = []

    def setup():
        box.clear()        # the last round's MM goes now, not as the timing starts (see conftest)
        kernel_ns.append(bench.run_host_once(hostmm, case, SIZE))     # the kernel's turn this round
        mm = bench.MM(kernel="6.18", window=(bench.WINDOW_LO, bench.WINDOW_LO + (16 << 40)))
        box.append(mm)
        mm.mmap(src, SIZE, bench.RW, bench.PRIV)
        mm.mmap(bench.PRIME, bench.PAGE, bench.RW, bench.PRIV)
        mm.memset(src, 0x5A, SIZE)
        mm.memset(bench.PRIME, 0x5A, bench.PAGE)
        mm.mremap(bench.PRIME, bench.PAGE, bench.PAGE, bench.MOVE, bench.PRIME + bench.PUD)   # warm-up
        return (box,), {}

    call_ns = []

    def run(box):
        mm = box[0]
        t0 = time.perf_counter_ns()
        r = mm.mremap(src, SIZE, SIZE, bench.MOVE, dst)
        call_ns.append(time.perf_counter_ns() - t0)
        assert r == dst

    benchmark.pedantic(run, setup=setup, rounds=15, warmup_rounds=1)
    kernel = statistics.median(kernel_ns[1:])                           # the warm-up round's left out
    call = statistics.median(call_ns[1:])
    # the ratio of the calls themselves, as pymm bench times them (pytest-benchmark's own
    # figure adds its runner's frames around the call)
    benchmark.extra_info.update(kernel_median_us=round(kernel / 1e3, 2),
                                pymm_call_median_us=round(call / 1e3, 2), ratio=round(call / kernel, 3),
                                target=TARGET[case])
