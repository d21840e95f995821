"""Issue #15 items 5-6: the simulated machine's RAM (MM(ram=)) bounds what pymm takes from the host."""
import pytest

import mmcore
import pymm
from pymm.mm.mm_struct import default_ram

RW = pymm.PROT_READ | pymm.PROT_WRITE
FIXED_ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED
NORESERVE = 0x4000    # MAP_NORESERVE: the heuristic overcommit refuses a charge larger than RAM
A = 1 << 40
MiB = 1 << 20

needs_limit = pytest.mark.skipif(not hasattr(mmcore.Engine, "max_pages"),
                                 reason="this mmcore has no Engine.max_pages page limit")


def test_default_ram_is_a_safe_share_of_this_host():
    ram = default_ram()
    assert 256 * MiB <= ram <= 64 << 30 and ram % 4096 == 0
    assert pymm.MM().ram == ram


@pytest.mark.parametrize("ram,exc", [(-1, ValueError), (4096, ValueError), ("1G", TypeError),
                                     (1.0, TypeError)])
def test_ram_is_checked_at_construction(ram, exc):
    with pytest.raises(exc, match="ram"):
        pymm.MM(ram=ram)


@needs_limit
@pytest.mark.parametrize("check", [False, True])
def test_touching_more_than_ram_is_the_oom_killer(check):
    mm = pymm.MM(ram=64 * MiB, thp="never", check=check)
    a = mm.mmap(A, 256 * MiB, RW, FIXED_ANON | NORESERVE)   # more than RAM: not charged
    mm.memset(a, 1, 16 * MiB)
    with pytest.raises(pymm.OutOfMemory, match="OOM killer") as e:
        mm.memset(a, 2, 256 * MiB)
    assert isinstance(e.value, MemoryError)
    assert "OOM killer" in mm.dead
    with pytest.raises(pymm.KernelOops, match="dead MM"):
        mm.munmap(a, 4096)
    assert mm.read(a, 1) in (b"\x01", b"\x02")      # what was written stays readable
    assert mm.rss <= 64 * MiB
    assert pymm.check(mm) == []


@needs_limit
def test_map_populate_beyond_ram_is_ignored_as_linux_does():
    mm = pymm.MM(ram=64 * MiB, thp="never", check=True)
    a = mm.mmap(A, 1 << 30, RW, FIXED_ANON | NORESERVE | pymm.MAP_POPULATE)
    assert a == A and 0 < mm.rss <= 64 * MiB
    assert mm.dead is None


@needs_limit
def test_runaway_table_move_is_bounded_by_ram():
    """Issue item 6: an overlapping move up by one page allocates a table per 2 MiB."""
    mm = pymm.MM(ram=16 * MiB)
    a = mm.mmap(1 << 30, 4096, RW, FIXED_ANON)
    mm.write(a, b"x")
    done = mm.move_page_tables(a, a + 4096, 1 << 36)
    assert done < 1 << 36
    assert mm.engine.pages_used <= (16 * MiB) // 4096
