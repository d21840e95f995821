"""mm.fork(): dup_mmap(), copy-on-write, shared mappings, MADV_DONTFORK /
MADV_WIPEONFORK, THP (copy_huge_pmd, do_huge_pmd_wp_page), anon_vma_fork,
the checker across processes and a dead process's teardown."""
import gc
import threading

import pytest

import mmcore
import pymm
from pymm import constants as C

RW = C.PROT_READ | C.PROT_WRITE
PRIV = C.MAP_PRIVATE | C.MAP_ANONYMOUS
GiB = 1 << 30
HUGE = 2 << 20


def _mm(**kw):
    return pymm.MM(check=True, **kw)


def _exclusive(mm, addr):
    return bool(int(mm.pagemap(addr, 4096)[0]) >> 56 & 1)


def test_private_pages_are_copied_on_write_in_either_process():
    mm = _mm()
    a = mm.mmap(0, 3 * 4096, RW, PRIV)
    mm.write(a, b"parent")
    mm.write(a + 4096, b"second")
    child = mm.fork()
    assert child.read(a, 6) == b"parent" and child.machine is mm.machine and child.pid == 2
    assert not _exclusive(mm, a) and not _exclusive(child, a)
    assert mmcore.translate(mm.engine, a, write=True) == -1          # write-protected in both
    child.write(a, b"child!")
    assert (mm.read(a, 6), child.read(a, 6)) == (b"parent", b"child!")
    assert child.stats["cow_faults"] == 1 and mm.stats["cow_faults"] == 0
    # the parent's page is mapped once now: its write reuses it (wp_can_reuse_anon_folio)
    assert _exclusive(mm, a)
    mm.write(a, b"P")
    assert mm.stats["cow_faults"] == 0 and mm.read(a, 6) == b"Parent"
    mm.write(a + 4096, b"S")                                         # the parent copies this one
    assert mm.stats["cow_faults"] == 1 and child.read(a + 4096, 6) == b"second"
    assert mm.rss == child.rss == 2 * 4096
    assert pymm.check(mm) == [] and pymm.check(child) == []


def test_fork_copies_the_vmas_and_gives_each_anon_vma_a_child():
    mm = _mm()
    a = mm.mmap(0, 4 * 4096, RW, PRIV)
    mm.memset(a, 7, 4 * 4096)
    child = mm.fork()
    assert child.format_maps() == mm.format_maps()
    pv, cv = mm._tree.lookup(a), child._tree.lookup(a)
    assert cv.anon != pv.anon and mmcore.anon_vma_parent(mm.engine, cv.anon) == pv.anon   # anon_vma_fork()
    # the parent's VMA goes; its anon_vma stays while the child's chains to it
    mm.munmap(a, 4 * 4096)
    assert child.read(a + 3 * 4096, 1) == b"\x07"
    child.write(a, b"x")                                             # reuse: mapped once now
    assert child.stats["cow_faults"] == 0 and pymm.check(child) == []


def test_split_vmas_of_one_anon_vma_get_two_in_the_child_and_no_longer_merge():
    # dup_mmap() calls anon_vma_fork() per VMA: halves that share an anon_vma in the
    # parent get one each in the child, so mprotect() back merges only in the parent.
    mm = _mm()
    a = mm.mmap(0, 2 * 4096, RW, PRIV)
    mm.memset(a, 1, 2 * 4096)
    mm.mprotect(a, 4096, C.PROT_READ)
    child = mm.fork()
    for p in (mm, child):
        p.mprotect(a, 4096, RW)
    assert (mm.map_count, child.map_count) == (1, 2)


def test_shared_mappings_stay_shared():
    mm = _mm()
    s = mm.mmap(0, 2 * 4096, RW, C.MAP_SHARED | C.MAP_ANONYMOUS)
    mm.write(s, b"before")
    child = mm.fork()
    assert child.rss == 0                       # not copied: the child faults from the object
    child.write(s, b"child")
    assert mm.read(s, 6) == b"childe"
    mm.write(s + 4096, b"parent")
    assert child.read(s + 4096, 6) == b"parent"
    assert pymm.check(mm) == []


def test_madv_dontfork_and_dofork():
    mm = _mm()
    a = mm.mmap(0, 4 * 4096, RW, PRIV)
    mm.memset(a, 3, 4 * 4096)
    mm.madvise(a, 4096, C.MADV_DONTFORK)
    child = mm.fork()
    assert [(v.start, v.end) for v in child.maps()] == [(a + 4096, a + 4 * 4096)]
    with pytest.raises(pymm.errors.SegmentationFault):
        child.read(a, 1)                        # no VMA there
    mm.madvise(a, 4096, C.MADV_DOFORK)
    assert mm.map_count == 1                    # the flag gone, the halves merge again
    assert [(v.start, v.end) for v in mm.fork().maps()] == [(a, a + 4 * 4096)]


def test_madv_wipeonfork_gives_the_child_zero_memory():
    mm = _mm()
    a = mm.mmap(0, 2 * 4096, RW, PRIV)
    mm.memset(a, 0x55, 2 * 4096)
    mm.madvise(a, 2 * 4096, C.MADV_WIPEONFORK)
    child = mm.fork()
    assert child.format_maps() == mm.format_maps() and child.rss == 0
    assert child.read(a, 2) == b"\0\0" and mm.read(a, 2) == b"UU"
    child.write(a, b"c")
    assert mm.read(a, 1) == b"U"
    mm.madvise(a, 2 * 4096, C.MADV_KEEPONFORK)
    assert mm.fork().read(a, 1) == b"U"
    s = mm.mmap(0, 4096, RW, C.MAP_SHARED | C.MAP_ANONYMOUS)
    with pytest.raises(OSError) as e:
        mm.madvise(s, 4096, C.MADV_WIPEONFORK)
    assert e.value.errno == C.EINVAL if hasattr(C, "EINVAL") else 22


def test_a_huge_pmd_is_shared_and_split_on_a_write():
    mm = _mm()
    a = mm.mmap(4 * GiB, HUGE, RW, PRIV | C.MAP_FIXED)
    mm.madvise(a, HUGE, C.MADV_HUGEPAGE)
    mm.memset(a, 0x11, HUGE)
    assert len(mm.walk(a).steps) == 3          # a huge PMD leaf
    child = mm.fork()
    assert len(child.walk(a).steps) == 3 and child.rss == HUGE   # copy_huge_pmd()
    child.write(a + 5 * 4096, b"\x22")
    # do_huge_pmd_wp_page(): mapped twice: the child's PMD splits, one 4K page is copied
    assert len(child.walk(a).steps) == 4 and len(mm.walk(a).steps) == 3
    assert child.stats["huge_pmd_splits"] == 1 and child.stats["cow_faults"] == 1
    assert mm.read(a + 5 * 4096, 1) == b"\x11" and child.read(a + 5 * 4096, 1) == b"\x22"
    assert pymm.check(mm) == []
    mm.write(a, b"\x33")                        # the folio is still shared: the parent splits too
    assert len(mm.walk(a).steps) == 4 and child.read(a, 1) == b"\x11"
    mm.munmap(a, HUGE)
    assert child.read(a + HUGE - 1, 1) == b"\x11" and pymm.check(child) == []


def test_the_huge_pmd_is_reused_when_the_other_process_let_go():
    mm = _mm()
    a = mm.mmap(4 * GiB, HUGE, RW, PRIV | C.MAP_FIXED)
    mm.madvise(a, HUGE, C.MADV_HUGEPAGE)
    mm.memset(a, 1, HUGE)
    child = mm.fork()
    child.munmap(a, HUGE)
    mm.write(a, b"x")
    assert len(mm.walk(a).steps) == 3 and mm.stats["cow_faults"] == 0


def test_moves_after_fork_keep_both_processes_whole():
    mm = _mm()
    a = mm.mmap(4 * GiB, 4 * HUGE, RW, PRIV | C.MAP_FIXED)
    mm.stamp(a, 4 * HUGE)
    child = mm.fork()
    new = child.mremap(a, 4 * HUGE, 4 * HUGE, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, 8 * GiB)
    assert child.stats["pmd_moves"] == 4 and child.read(new + HUGE, 8) == mm.read(a + HUGE, 8)
    mm.munmap(a, 2 * HUGE)
    child.write(new, b"moved")                  # mapped once now: reused, no copy
    assert child.stats["cow_faults"] == 0
    mm.write(a + 3 * HUGE, b"p")                # still shared: copied
    assert mm.stats["cow_faults"] == 1
    assert pymm.check(mm) == [] and pymm.check(child) == []


def test_a_dead_process_is_taken_down_and_its_pages_freed():
    mm = _mm()
    a = mm.mmap(0, 64 * 4096, RW, PRIV)
    mm.memset(a, 9, 64 * 4096)
    frames = mm.engine.n_frames
    child = mm.fork()
    child.memset(a, 8, 64 * 4096)               # 64 copies
    assert mm.engine.n_frames == 2 * frames
    del child
    gc.collect()
    assert mm.read(a, 1) == b"\x09"             # the next call reaps the child
    assert mm.engine.n_frames == frames and mmcore.mm_contexts(mm.engine) == [0]
    assert pymm.check(mm) == []


def test_grandchildren_and_the_parent_exiting_first():
    mm = _mm()
    a = mm.mmap(0, 4096, RW, PRIV)
    mm.write(a, b"0")
    c1 = mm.fork()
    c2 = c1.fork()
    assert mmcore.folio_mapcount(mm.engine, mmcore.translate(mm.engine, a)) == 3
    del mm
    gc.collect()
    c2.write(a, b"2")
    c1.write(a, b"1")                           # mapped once now: reused
    assert (c1.read(a, 1), c2.read(a, 1)) == (b"1", b"2")
    assert c1.stats["cow_faults"] == 0 and pymm.check(c1) == []


def test_fork_preserves_what_a_bare_mm_does():
    mm = pymm.MM()
    assert mm._family is None and mmcore.mm_contexts(mm.engine) == [0]
    a = mm.mmap(0, 4096, RW, PRIV)
    mm.write(a, b"x")
    assert _exclusive(mm, a)


def test_a_call_on_one_process_from_inside_another_is_refused():
    mm = _mm()
    a = mm.mmap(0, 4096, RW, PRIV)
    child = mm.fork()
    mm._busy = "mremap"                          # as if a kernel hook ran inside mm's call
    try:
        with pytest.raises(pymm.ReentrantCallError):
            child.read(a, 1)
    finally:
        mm._busy = None


def test_threads_on_two_processes_of_a_family_serialise():
    mm = pymm.MM()
    a = mm.mmap(0, 256 * 4096, RW, PRIV)
    mm.memset(a, 1, 256 * 4096)
    child = mm.fork()

    def run(p, v):
        for i in range(50):
            p.memset(a + (i % 256) * 4096, v, 4096)
            p.read(a, 1)

    ts = [threading.Thread(target=run, args=(p, v)) for p, v in ((mm, 2), (child, 3))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert mm.read(a + 4096, 1) == b"\x02" and child.read(a + 4096, 1) == b"\x03"
    assert pymm.check(mm) == []


def test_fork_out_of_memory_fails_with_enomem_and_leaves_no_child():
    mm = pymm.MM(ram=64 * 4096 + 200 * 4096)
    a = mm.mmap(0, 128 * 4096, RW, PRIV)
    mm.memset(a, 1, 128 * 4096)
    used = mm.engine.pages_used
    mm.engine.max_pages = used + 1               # room for the child's pgd only
    with pytest.raises(OSError) as e:
        mm.fork()
    assert e.value.errno == 12 and mm.engine.pages_used == used and pymm.check(mm) == []
    assert mm.read(a, 1) == b"\x01"
