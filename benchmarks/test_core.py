"""Core only (mmcore, no syscall layer): the issue's engine targets.

populate 1 GiB <= 5 ms (see also test_populate.py: a fresh MM); per-PTE move of 1 GiB <= 1 ms; PMD-level move of
1 GiB <= 30 us; PUD-level move of 1 GiB <= 5 us.
"""
import pytest

import mmcore
from mmcore import X86_64, Engine, MoveControl

GiB = 1 << 30
SRC = 1 << 40  # PUD-aligned


def populated(size=GiB, src=SRC):
    eng = Engine(X86_64)
    o = eng.owner_new("anon")
    mmcore.handle_mm_fault(eng, src, src + size, vma_start=src, vma_end=src + size, owner=o,
                           pgoff=src >> 12, write=True, fill=0x5A)
    return eng


@pytest.mark.benchmark(group="core: populate 1 GiB")
def test_core_populate_1g(benchmark):
    box = []

    def setup():
        box.clear()        # the last round's engine goes now, not as the timing starts (see conftest)
        eng = Engine(X86_64)
        box.append(eng)
        return (box, eng.owner_new("anon")), {}

    def run(box, o):
        mmcore.handle_mm_fault(box[0], SRC, SRC + GiB, vma_start=SRC, vma_end=SRC + GiB, owner=o,
                               pgoff=SRC >> 12, write=True, fill=0x5A)
    benchmark.pedantic(run, setup=setup, rounds=15)


@pytest.mark.parametrize("case,src_off,dst_off,path", [
    ("per-PTE", 4096, 8192, "pte_moves"),
    ("PMD", 2 << 20, 2 << 20, "pmd_moves"),
    ("PUD", 0, 0, "pud_moves"),
])
def test_core_move_1g(benchmark, case, src_off, dst_off, path):
    benchmark.group = "core: move_page_tables 1 GiB"
    dst = SRC + 4 * GiB + dst_off

    box = []

    def setup():
        box.clear()        # the last round's engine goes now, not as the timing starts (see conftest)
        box.append(populated(src=SRC + src_off))
        return (box,), {}

    def run(box):
        mmcore.move_page_tables(box[0], MoveControl(SRC + src_off, dst, GiB))
        assert box[0].stats()[path] > 0
    benchmark.pedantic(run, setup=setup, rounds=25)
