"""Issue 15, engine side: no uninitialised memory handed out, geometry
validated by the engine itself, concurrent use refused, bounded tables."""
import gc

import pytest

import mmcore
from mmcore import X86_64, Engine

GiB, MiB = 1 << 30, 1 << 20
SECRET = b"SECRET-PASSWORD!"


def anon(eng, start, length, **kw):
    o = eng.owner_new("anon")
    mmcore.handle_mm_fault(eng, start, start + length, vma_start=start, vma_end=start + length,
                           owner=o, pgoff=start >> 12, write=True, **kw)
    return o


# -- item 2: read_bytes never returns memory it did not write --------------------
def spray_and_free_secrets(n=256):
    """Fill page buffers with the secret and free them (the heap keeps the bytes)."""
    eng = Engine(X86_64)
    anon(eng, 2 * GiB, n * 4096)
    for i in range(n):
        assert mmcore.write_bytes(eng, 2 * GiB + i * 4096 + 1, SECRET * 255) == len(SECRET) * 255
    mmcore.zap_page_range(eng, 2 * GiB, 2 * GiB + n * 4096)
    return eng


def test_read_of_unmapped_range_returns_nothing():
    eng = spray_and_free_secrets()
    data, done = mmcore.read_bytes(eng, GiB, 65536)
    assert (data, done) == (b"", 0)


def test_read_stopping_at_a_fault_returns_only_what_it_read():
    eng = spray_and_free_secrets()
    anon(eng, GiB, 4096, fill=0x41)
    for _ in range(20):           # fresh allocations each time: none may leak
        data, done = mmcore.read_bytes(eng, GiB + 4000, 65536)
        assert done == 96 and data == b"A" * 96
        assert SECRET[:6] not in data
    del eng
    gc.collect()


def test_full_read_unchanged():
    eng = Engine(X86_64)
    anon(eng, GiB, 8192, fill=7)
    assert mmcore.read_bytes(eng, GiB + 100, 8000) == (b"\x07" * 8000, 8000)
    assert mmcore.read_bytes(eng, GiB, 0) == (b"", 0)
