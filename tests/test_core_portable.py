"""The core uses no microarchitecture-specific tricks (issue 11 item 1).

Streaming stores (``_mm_stream_*``) made every populate read its own lines
back from DRAM on one x86-64 vendor and not the other; software prefetch
distances and fences are tuned per part.  The core relies on plain C only,
so the numbers hold on any x86-64.  This scans the compiled sources.
"""
import pathlib
import re

import pytest

import mmcore

CORE = pathlib.Path(mmcore.__file__).parent
SOURCES = sorted(p for ext in ("*.pyx", "*.pxd", "*.h") for p in CORE.glob(ext))
TRICKS = re.compile(r"_mm_stream|_mm_sfence|_mm_prefetch|__builtin_prefetch|immintrin|emmintrin"
                    r"|xmmintrin|__builtin_ia32|MAP_HUGETLB")


def test_sources_found():
    assert {p.name for p in SOURCES} >= {"_core.pyx", "_core.pxd", "memory.pyx", "_region.pxd"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_vendor_tricks(path):
    hits = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)
            if TRICKS.search(line)]
    assert hits == [], f"{path.name}: microarchitecture-specific code: {hits}"


def test_arrays_staggered_not_power_of_two_apart():
    # the region stagger is a page plus three cache lines: never a power of two
    text = (CORE / "_region.pxd").read_text()
    m = re.search(r"#define PYMM_REGION_STAGGER \(\(size_t\)(\d+) \+ (\d+)\)", text)
    assert m, "PYMM_REGION_STAGGER missing"
    stagger = int(m.group(1)) + int(m.group(2))
    assert stagger % 64 == 0 and stagger & (stagger - 1) != 0 and stagger % 4096 != 0


def test_pool_clears_below_any_non_temporal_threshold():
    """glibc's memset() streams above a cache-size-derived threshold (CPU
    dependent): the pool's clear goes through pymm_clear() in small pieces."""
    text = (CORE / "_region.pxd").read_text()
    m = re.search(r"#define PYMM_CLEAR_PIECE \(\(size_t\)(\d+) << 10\)", text)
    assert m and int(m.group(1)) <= 256
    release = text[text.index("static inline void pymm_region_release"):]
    assert "pymm_clear(r->base" in release and "memset(" not in release
