"""Issue 12 item 14: MAP_DROPPABLE (6.11+, do_mmap()'s MAP_DROPPABLE case).

Private anonymous memory marked VM_DROPPABLE | VM_NORESERVE | VM_WIPEONFORK
| VM_DONTDUMP; EINVAL with MAP_LOCKED or MAP_GROWSDOWN; an unknown map type
(EINVAL) before 6.11.
"""
import errno

import pytest

import pymm
from pymm.constants import VM_DROPPABLE

RW = pymm.PROT_READ | pymm.PROT_WRITE
DROP = pymm.MAP_DROPPABLE | pymm.MAP_ANONYMOUS
K64 = 64 << 10


def outcome(mm, flags):
    try:
        a = mm.mmap(0, K64, RW, flags)
    except OSError as e:
        return errno.errorcode[e.errno]
    mm.write(a + 100, b"kept")
    return mm.read(a + 100, 4)


def test_droppable_is_private_anonymous_memory_on_6_18():
    mm = pymm.MM("6.18", check=True)
    a = mm.mmap(0, K64, RW, DROP)
    assert mm._tree.lookup(a).vm_flags & VM_DROPPABLE
    assert outcome(mm, DROP) == b"kept"
    assert mm.maps()[0].perms == "rw-p"


@pytest.mark.parametrize("kernel", ["5.8", "6.7"])
def test_droppable_is_an_unknown_map_type_before_6_11(kernel):
    assert outcome(pymm.MM(kernel), DROP) == "EINVAL"


# This machine's 6.18 kernel gave the same three answers (rw-p mapping, EINVAL,
# EINVAL) when HostMM still passed MAP_DROPPABLE through; HostMM now refuses
# the flag, so the expectations are pinned here.
@pytest.mark.parametrize("extra,expected", [(pymm.MAP_LOCKED, "EINVAL"),
                                            (pymm.MAP_GROWSDOWN, "EINVAL")])
def test_droppable_refusals_on_6_18(extra, expected):
    assert outcome(pymm.MM("6.18", check=True), DROP | extra) == expected
