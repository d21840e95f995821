"""pymm fuzz's search and shrinker (pymm.fuzz, pymm.ops generation)."""
import random
from collections import Counter

from pymm import constants as C
from pymm.fuzz import fuzz, shrink, simpler
from pymm.ops import KINDS, PMD, Op, random_program


def test_random_programs_follow_the_op_mix_and_are_reproducible():
    a = [random_program(random.Random(7), max_ops=10) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(1)
    kinds = Counter(op.name for _ in range(3000) for op in random_program(rng, max_ops=10))
    mix = Counter(KINDS)
    total = sum(kinds.values())
    for kind, weight in mix.items():   # each kind near its share of the mix
        assert abs(kinds[kind] / total - weight / len(KINDS)) < 0.02, (kind, kinds)


def test_shrink_keeps_the_failure_and_makes_the_program_plain():
    def is_bug(p):   # "any mremap moving at least a page with MREMAP_FIXED"
        return any(op.name == "mremap" and op.args[1] >= 4096 and op.args[3] & C.MREMAP_FIXED for op in p)
    rng = random.Random(3)
    program = next(p for p in (random_program(rng, max_ops=10) for _ in range(10000))
                   if is_bug(p) and len(p) > 3)
    small = shrink(program, is_bug)
    assert is_bug(small) and len(small) == 1
    (op,) = small
    assert op.args[1] == 4096 and op.args[3] == C.MREMAP_MAYMOVE | C.MREMAP_FIXED
    assert op.args[0] % PMD == 0
    assert not any(is_bug([s]) for s in simpler(op))   # nothing simpler still fails


def test_fuzz_counts_every_program_and_stops_at_the_budget():
    tally = {}
    assert fuzz("6.18", max_examples=40, seconds=30, tally=tally) is None
    assert tally["programs"] == 40 and not tally["found"]


def test_fuzz_finds_a_kernel_bug_and_returns_a_small_program():
    hit = fuzz("5.8+linus-v2", seconds=60, seed=0)
    assert hit is not None and any("orphan-pte" in p for p in hit.problems)
    assert 1 <= len(hit.program) <= 4 and all(isinstance(op, Op) for op in hit.program)
