"""The physical limit of a per-PTE move of 1 GiB, and pymm's per-PTE move
beside it (issue 11: per-PTE should stay within a few times this limit).

The limit is what `pymm bench` measures in the same run: numpy copies the
262,144 eight-byte PTEs of 1 GiB into a second array and clears the first.
"""
import numpy as np
import pytest

from pymm import bench

SIZE = 1 << 30
N = SIZE // bench.PAGE


@pytest.mark.benchmark(group="per-PTE 1 GiB vs the copy limit")
def test_copy_limit_1g(benchmark):
    src, dst = np.full(N, 0x8000000000000067, np.uint64), np.zeros(N, np.uint64)
    np.copyto(dst, src)

    def setup():
        src.fill(0x8000000000000067)
        return (), {}

    def run():
        np.copyto(dst, src)
        src.fill(0)
    benchmark.pedantic(run, setup=setup, rounds=31)
    assert not src.any() and int(dst[-1]) == 0x8000000000000067


@pytest.mark.benchmark(group="per-PTE 1 GiB vs the copy limit")
def test_pymm_per_pte_1g_warm(benchmark):
    """As `pymm bench` times it: a fresh MM, populated, one untimed
    one-page mremap, then the timed 1 GiB per-PTE move."""
    src, dst = bench.addresses("per-PTE", SIZE)
    box = []

    def setup():
        box.clear()        # the last round's MM goes now, not as the timing starts (see conftest)
        mm = bench.MM(kernel="6.18", window=(bench.WINDOW_LO, bench.WINDOW_LO + (16 << 40)))
        box.append(mm)
        mm.mmap(src, SIZE, bench.RW, bench.PRIV)
        mm.mmap(bench.PRIME, bench.PAGE, bench.RW, bench.PRIV)
        mm.memset(src, 0x5A, SIZE)
        mm.mremap(bench.PRIME, bench.PAGE, bench.PAGE, bench.MOVE, bench.PRIME + bench.PUD)
        return (box,), {}

    def run(box):
        assert box[0].mremap(src, SIZE, SIZE, bench.MOVE, dst) == dst
    benchmark.pedantic(run, setup=setup, rounds=15)
