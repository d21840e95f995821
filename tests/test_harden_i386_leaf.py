"""Issue #13 (leftover): on 2-level (non-PAE) i386 the pmd is folded into the
pgd, so a 4 MiB leaf there is named as the kernel names it: a pmd
(pmd_leaf(), a PSE page-directory entry), not a "pgd leaf"."""
import pymm
from pymm.arches import ARCHES, leaf_level_name

MiB = 1 << 20


def _huge_i386():
    mm = pymm.MM(arch="i386", thp="always")
    a = mm.mmap(0x40000000, 8 * MiB, pymm.PROT_READ | pymm.PROT_WRITE,
                pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED)
    mm.memset(a, 1, 8 * MiB)
    return mm, a


def test_i386_4m_leaf_is_a_pmd_in_walks_and_descriptions():
    mm, a = _huge_i386()
    w = mm.walk(a + 5)
    assert [s.level_name for s in w] == ["pgd"]          # the table indexed is the pgd
    assert w.leaf_level == "pmd"
    text = str(w)
    assert "(a pmd leaf)" in text and "pgd leaf" not in text
    assert "the pmd is folded into the pgd" in text
    ranges = mm.describe().ranges
    assert [(r.page, r.level) for r in ranges] == [("4M", "pmd")]


def test_leaf_names_count_from_the_bottom_on_every_arch():
    for name, arch in ARCHES.items():
        g = arch.geometry
        names = [leaf_level_name(g, lv) for lv in range(g.levels)]
        assert names[-1] == "pte" and names[-2] == "pmd", name
        if g.levels >= 4:
            assert names[-3] == "pud" and names[0] == "pgd", name
