"""The selftest performance matrix at 1 GiB, whole mremap() call, and the
same cases on this machine's kernel (timed inside the child)."""
import pytest

from pymm import bench

KERNELS = ["4.19", "5.8", "5.11", "6.18"]
CASES = list(bench.CASES)
SIZE = 1 << 30


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", CASES)
def test_pymm_mremap_1g(benchmark, case, kernel):
    benchmark.group = f"mremap 1 GiB: {case}"
    src, dst = bench.addresses(case, SIZE)
    box = []

    def setup():
        box.clear()        # the last round's MM goes now, not as the timing starts (see conftest)
        mm = bench.MM(kernel=kernel, window=(bench.WINDOW_LO, bench.WINDOW_LO + (16 << 40)))
        box.append(mm)
        mm.mmap(src, SIZE, bench.RW, bench.PRIV)
        if bench.CASES[case][2]:
            mm.madvise(src, SIZE, bench.C.MADV_HUGEPAGE)
        mm.memset(src, 0x5A, SIZE)
        return (box,), {}

    def run(box):
        assert box[0].mremap(src, SIZE, SIZE, bench.MOVE, dst) == dst
    benchmark.pedantic(run, setup=setup, rounds=31)


@pytest.mark.parametrize("case", CASES)
def test_host_mremap_1g(benchmark, hostmm, case):
    """The kernel's own time (CLOCK_MONOTONIC in the child); reported via
    extra_info, with the pipe round trip included in the benchmark timing."""
    benchmark.group = f"mremap 1 GiB: {case}"
    src, dst = bench.addresses(case, SIZE)
    kernel_ns = []

    def setup():
        hostmm.munmap(dst, SIZE)          # the previous round's result, outside the timing
        hostmm.mmap(src, SIZE, bench.RW, bench.PRIV)
        if bench.CASES[case][2]:
            hostmm.madvise(src, SIZE, bench.C.MADV_HUGEPAGE)
        hostmm.memset(src, 0x5A, SIZE)
        return (), {}

    def run():
        r, ns = hostmm.timed_mremap(src, SIZE, SIZE, bench.MOVE, dst)
        kernel_ns.append(ns)
    benchmark.pedantic(run, setup=setup, rounds=7)
    hostmm.munmap(dst, SIZE)
    kernel_ns.sort()
    benchmark.extra_info["kernel_median_us"] = kernel_ns[len(kernel_ns) // 2] / 1e3


@pytest.mark.benchmark(group="populate 1 GiB (memset, whole call)")
def test_pymm_populate_1g(benchmark):
    src, _ = bench.addresses("PMD-aligned", SIZE)

    box = []

    def setup():
        box.clear()
        mm = bench.MM(window=(bench.WINDOW_LO, bench.WINDOW_LO + (16 << 40)))
        box.append(mm)
        mm.mmap(src, SIZE, bench.RW, bench.PRIV)
        return (box,), {}

    benchmark.pedantic(lambda box: box[0].memset(src, 0x5A, SIZE), setup=setup, rounds=15)
