"""Issue 12 item 14: MAP_DROPPABLE (6.11+, do_mmap()'s MAP_DROPPABLE case).

Private anonymous memory marked VM_DROPPABLE | VM_NORESERVE | VM_WIPEONFORK
| VM_DONTDUMP; EINVAL with MAP_LOCKED or MAP_GROWSDOWN; an unknown map type
(EINVAL) before 6.11.
"""
import errno

import pytest

import pymm
from pymm import host
from pymm.constants import VM_DROPPABLE

from helpers import host_or_skip

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


@pytest.mark.parametrize("extra", [0, pymm.MAP_LOCKED, pymm.MAP_GROWSDOWN])
def test_droppable_matches_the_host(extra):
    host_or_skip()
    m = pymm.MM(window=host.DEFAULT_WINDOW, check=True)
    with host.HostMM() as h:
        assert outcome(m, DROP | extra) == outcome(h, DROP | extra)
        assert [(v.start, v.end, v.perms) for v in m.maps()] == \
            [(v.start, v.end, v.perms) for v in h.maps()]
