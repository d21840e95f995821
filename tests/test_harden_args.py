"""Issue #15 item 10: constructor arguments are checked where they are given."""
import pytest

import pymm


@pytest.mark.parametrize("kwargs,exc", [
    (dict(mmap_base=-1), ValueError),
    (dict(mmap_base=0x1001), ValueError),
    (dict(mmap_base=1 << 60), ValueError),
    (dict(mmap_base="0x1000"), TypeError),
    (dict(commit_limit="x"), TypeError),
    (dict(commit_limit=-1), ValueError),
    (dict(commit_limit=1.5), TypeError),
    (dict(max_map_count=0), ValueError),
    (dict(max_map_count="9"), TypeError),
    (dict(rlimit_stack=-1), ValueError),
    (dict(rlimit_stack=None), TypeError),
    (dict(privileged="no"), TypeError),
    (dict(window=(0,)), TypeError),
    (dict(window=("a", "b")), TypeError),
    (dict(window=(1 << 30, 1 << 20)), ValueError),
])
def test_mm_refuses_bad_arguments_at_construction(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        pymm.MM(**kwargs)


def test_good_arguments_still_work():
    mm = pymm.MM(mmap_base=1 << 40, commit_limit=1 << 30, max_map_count=100, rlimit_stack=8 << 20,
                 privileged=True)
    assert mm.mmap(0, 4096, pymm.PROT_READ, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS) < 1 << 40


@pytest.mark.parametrize("changes,exc", [
    (dict(pud_step=7), ValueError),
    (dict(pmd_warn="x"), ValueError),
    (dict(huge_pmd_warn=9), ValueError),
    (dict(align=3), TypeError),
    (dict(overlap_guard="guard"), TypeError),
    (dict(progress=None), TypeError),
    (dict(pmd_moves=1), TypeError),
    (dict(name=5), TypeError),
    (dict(name=""), ValueError),
    (dict(warn_sites={"pmd_not_none": 1}), TypeError),
    (dict(warn_sites={"nowhere": pymm.kernels.Warning_("a", "b", "c")}), ValueError),
])
def test_kernel_refuses_bad_fields_at_construction(changes, exc):
    field = next(iter(changes))
    with pytest.raises(exc, match=field):
        pymm.KERNELS["6.18"].replace(**changes)


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_an_mm_cannot_be_copied(how):
    """A shallow copy would share the engine and the lock with the original."""
    import copy
    import pickle
    mm = pymm.MM()
    f = {"pickle": pickle.dumps, "deepcopy": copy.deepcopy, "copy": copy.copy}[how]
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        f(mm)


@pytest.mark.parametrize("value,err", [(300, ValueError), (-1, ValueError), (1.5, TypeError),
                                        (True, TypeError)])
def test_memset_takes_a_byte(value, err):
    """memset's value is a byte: 300 no longer writes 0x2c without a word."""
    mm = pymm.MM()
    a = mm.mmap(0, 4096, 3, 0x22)
    with pytest.raises(err):
        mm.memset(a, value, 4096)
    assert mm.status()["RssAnon"] == 0                 # refused before any page was touched
    mm.memset(a, 255, 4096)
    assert mm.read(a, 2) == b"\xff\xff"
