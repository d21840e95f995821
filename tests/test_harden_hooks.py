"""Issue #15 item 7: a kernel hook that fails cannot leave a half-done call behind."""
import warnings

import pytest

import pymm

RW = pymm.PROT_READ | pymm.PROT_WRITE
FIXED_ANON = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED
MOVE = pymm.MREMAP_MAYMOVE | pymm.MREMAP_FIXED
A, B = 1 << 40, 1 << 41


def _mm_with(**hooks):
    mm = pymm.MM(kernel=pymm.KERNELS["6.18"].replace(name="hostile", **hooks), thp="never")
    mm.mmap(A, 4 << 20, RW, FIXED_ANON)
    mm.memset(A, 0x5A, 4 << 20)
    return mm


def _assert_dead(mm, err):
    assert mm.dead and "dead" in str(err.value)
    with pytest.raises(pymm.KernelOops, match="dead MM"):
        mm.mmap(0, 4096, RW, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    assert mm.maps()                                 # the views still work


def test_align_hook_that_raises_is_an_oops():
    def align(move):
        raise ZeroDivisionError("hostile")

    mm = _mm_with(align=align)
    with pytest.raises(pymm.KernelOops, match="align hook raised ZeroDivisionError") as e:
        mm.mremap(A, 4 << 20, 4 << 20, MOVE, B)
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    _assert_dead(mm, e)


@pytest.mark.parametrize("result", ["x", (1, 2, 3), None])
def test_overlap_guard_returning_garbage_is_an_oops(result):
    mm = _mm_with(overlap_guard=lambda move: result)
    with pytest.raises(pymm.KernelOops, match="overlap_guard") as e:
        mm.mremap(A, 4 << 20, 4 << 20, MOVE, B)
    _assert_dead(mm, e)


@pytest.mark.parametrize("result", ["x", -1, 1.5])
def test_progress_returning_garbage_is_an_oops(result):
    mm = _mm_with(progress=lambda move, after: result)
    with pytest.raises(pymm.KernelOops, match="progress") as e:
        mm.mremap(A, 4 << 20, 4 << 20, MOVE, B)
    _assert_dead(mm, e)


@pytest.mark.parametrize("field,delta", [("old_end", 64 << 30), ("len_in", 4096),
                                         ("old_addr", -(1 << 30)), ("len", 64 << 30)])
def test_align_hook_cannot_widen_the_move(field, delta):
    """The issue: a hook setting old_end moved 64 GiB of other VMAs' tables."""
    def align(move):
        setattr(move, field, getattr(move, field) + delta)

    mm = _mm_with(align=align)
    other = mm.mmap(A + (8 << 30), 4 << 20, RW, FIXED_ANON)
    mm.memset(other, 0x77, 4 << 20)
    with pytest.raises(pymm.KernelOops, match="align hook") as e:
        mm.mremap(A, 4 << 20, 4 << 20, MOVE, B)
    _assert_dead(mm, e)
    assert mm.read(other + 12345, 1) == b"\x77"     # its tables never moved


def test_hook_calling_back_into_the_mm_is_refused():
    def align(move):
        move.mm.munmap(A, 4096)

    mm = _mm_with(align=align)
    with pytest.raises(pymm.KernelOops) as e:
        mm.mremap(A, 4 << 20, 4 << 20, MOVE, B)
    assert isinstance(e.value.__cause__, pymm.ReentrantCallError)
    assert mm.read(A, 1) == b"\x5a"                  # the nested munmap never ran


def test_warnings_as_errors_do_not_leave_a_half_shifted_stack():
    """5.8's stack shift warns; with the warning an error the shift still completes."""
    def run(as_error):
        mm = pymm.MM(kernel="5.8", thp="never")
        start = mm.setup_exec_stack(arg_bytes=4 << 20)
        with warnings.catch_warnings():
            warnings.simplefilter("error" if as_error else "ignore")
            try:
                mm.shift_arg_pages(start, 2 << 20)
            except pymm.KernelWarning:
                assert as_error
            else:
                assert not as_error
        return mm

    ref, mm = run(False), run(True)
    assert [(v.start, v.end) for v in mm.maps()] == [(v.start, v.end) for v in ref.maps()]
    assert mm.maps()[0].size == 4 << 20
    assert len(mm.warnings) == 1
    assert mm.mmap(0, 4096, RW, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)   # still usable


def test_kernel_warning_points_at_the_callers_line():
    mm = pymm.MM(kernel="5.8", thp="never")
    start = mm.setup_exec_stack(arg_bytes=4 << 20)
    with pytest.warns(pymm.KernelWarning) as rec:
        mm.shift_arg_pages(start, 2 << 20)
    assert rec[0].filename == __file__
