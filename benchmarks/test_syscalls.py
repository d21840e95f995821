"""Syscall overhead: a few microseconds each."""
import pytest

import pymm

RW = pymm.PROT_READ | pymm.PROT_WRITE
PRIV = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS


@pytest.fixture
def mm():
    m = pymm.MM()
    m.mmap(0x100000000, 1 << 20, RW, PRIV | pymm.MAP_FIXED)
    m.memset(0x100000000, 1, 1 << 20)
    return m


@pytest.mark.benchmark(group="syscall overhead")
def test_mmap_munmap_one_page(benchmark, mm):
    def run():
        a = mm.mmap(0, 4096, RW, PRIV)
        mm.munmap(a, 4096)
    benchmark(run)


@pytest.mark.benchmark(group="syscall overhead")
def test_mremap_one_page(benchmark, mm):
    a, b = 0x100000000, 0x200000000
    state = [a, b]

    def run():
        src, dst = state
        mm.mremap(src, 4096, 4096, pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED, dst)
        state.reverse()
    benchmark(run)


@pytest.mark.benchmark(group="syscall overhead")
def test_read_one_byte(benchmark, mm):
    benchmark(mm.read, 0x100000000 + 12345, 1)
