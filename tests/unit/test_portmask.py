"""Port ranges as value/mask matches: exactly the range, and the fewest pairs that do it.

Minimality is checked two independent ways: against an exhaustive search over every value/mask
pair on 6 bits (all 2,080 ranges), and on 16 bits by witnesses: ports no two of which fit in one
pair inside the range, so every cover needs at least that many pairs.
"""
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpcflow.flows import portmask
from vpcflow.flows.portmask import covers, prefix_split, range_to_masks

pytestmark = pytest.mark.authz

PORTS = 1 << 16


def covered_ports(pairs, bits=16) -> bytearray:
    """A flag per port: matched by some pair. Enumerates each pair's ports, not every port."""
    flags = bytearray(1 << bits)
    full = (1 << bits) - 1
    for value, mask in pairs:
        ports = [value]
        for bit in range(bits):
            if not (mask & ~full) and not mask >> bit & 1:
                ports += [p | 1 << bit for p in ports]
        for p in ports:
            flags[p] = 1
    return flags


def exactly(lo, hi, bits=16) -> bytearray:
    return bytearray(lo) + bytearray(b"\x01" * (hi - lo + 1)) + bytearray((1 << bits) - 1 - hi)


def well_formed(pairs, bits=16):
    full = (1 << bits) - 1
    assert pairs == sorted(pairs)  # ascending value: deterministic flow order
    for value, mask in pairs:
        assert 0 <= mask <= full and value & ~mask == 0  # no value bit outside the mask


# --- exactly the range ---------------------------------------------------------------------------

ranges = st.tuples(st.integers(0, PORTS - 1), st.integers(0, PORTS - 1)).map(sorted)


@settings(max_examples=40, deadline=None)
@given(ranges)
def test_the_pairs_match_exactly_the_range(bounds):
    lo, hi = bounds
    pairs = range_to_masks(lo, hi)
    well_formed(pairs)
    assert covered_ports(pairs) == exactly(lo, hi)  # every one of the 65,536 ports
    assert len(pairs) <= 30  # a minimum has at most 2 * 16 - 4; past the search limit, <= 2 * 16 - 2
    assert len(pairs) <= len(prefix_split(lo, hi))  # never worse than the classic split


@settings(max_examples=40, deadline=None)
@given(ranges)
def test_the_prefix_split_is_exact_and_disjoint(bounds):
    lo, hi = bounds
    pairs = prefix_split(lo, hi)
    well_formed(pairs)
    assert covered_ports(pairs) == exactly(lo, hi)
    assert sum(PORTS >> bin(mask).count("1") for _, mask in pairs) == hi - lo + 1  # no overlap


def test_aligned_blocks_and_single_ports_are_one_pair():
    assert range_to_masks(0, 65535) == [(0, 0)]
    assert range_to_masks(4096, 4351) == [(0x1000, 0xFF00)]
    assert range_to_masks(0, 1023) == [(0, 0xFC00)]
    assert range_to_masks(80, 80) == [(80, 0xFFFF)]
    assert range_to_masks(61440, 65535) == [(0xF000, 0xF000)]


def test_covers():
    pairs = range_to_masks(8000, 8999)
    assert covers(pairs, 8000) and covers(pairs, 8999) and covers(pairs, 8500)
    assert not covers(pairs, 7999) and not covers(pairs, 9000)
    assert not covers([], 1)


@pytest.mark.parametrize("lo, hi", [(-1, 5), (5, 4), (0, 65536), (70000, 70001)])
def test_bad_ranges_are_value_errors(lo, hi):
    with pytest.raises(ValueError):
        range_to_masks(lo, hi)


def test_bad_widths_are_value_errors():
    with pytest.raises(ValueError):
        range_to_masks(0, 1, bits=0)


# --- the fewest pairs ------------------------------------------------------------------------------

def brute_force_minimum(lo, hi, bits):
    """The fewest pairs covering exactly lo..hi, by iterative deepening over every pair inside it
    (widened as far as the range allows, which never hurts a cover)."""
    full = (1 << bits) - 1
    inside = {(v, m) for m in range(1 << bits) for v in range(1 << bits)
              if v & ~m == 0 and v >= lo and v | (full & ~m) <= hi}
    widest = [(v, m) for v, m in sorted(inside)
              if not any((v & ~b, m & ~b) in inside for b in (1 << i for i in range(bits)) if m & b)]
    port_sets = [sum(1 << p for p in range(lo, hi + 1) if p & m == v) for v, m in widest]
    target = sum(1 << p for p in range(lo, hi + 1))

    def fits(covered, k):
        if covered == target:
            return True
        if k == 0:
            return False
        first = ((target & ~covered) & -(target & ~covered)).bit_length() - 1
        return any(fits(covered | s, k - 1) for s in port_sets if s >> first & 1)

    return next(k for k in itertools.count(1) if fits(0, k))


def test_every_6_bit_range_gets_the_fewest_pairs():
    bits = 6
    for lo in range(1 << bits):
        for hi in range(lo, 1 << bits):
            pairs = range_to_masks(lo, hi, bits)
            assert covered_ports(pairs, bits) == exactly(lo, hi, bits), (lo, hi)
            assert len(pairs) == brute_force_minimum(lo, hi, bits), (lo, hi, pairs)


def test_overlapping_pairs_beat_the_prefix_split():
    assert len(prefix_split(1, 14, 4)) == 6
    pairs = range_to_masks(1, 14, 4)  # e.g. xx01 x01x 01xx 1xx0
    assert len(pairs) == 4 and covered_ports(pairs, 4) == exactly(1, 14, 4)


# Ports no two of which fit in one pair inside the range: as many pairs as ports are needed.
WITNESSES = [
    (1, 65535, [1 << i for i in range(16)]),
    (1, 65534, [1 << i for i in range(16)]),  # the prefix split needs 30
    (1024, 65535, [1 << i for i in range(10, 16)]),
    (8000, 8999, [8000, 8064, 8491, 8746, 8972, 8992]),
    (32768, 60999, [44719, 52836, 59042, 60154, 60496, 60946, 60999]),
    (61441, 61456, [61441, 61442, 61444, 61448, 61456]),
]


@pytest.mark.parametrize("lo, hi, witness", WITNESSES)
def test_known_16_bit_minimums(lo, hi, witness):
    for y1, y2 in itertools.combinations(witness, 2):
        assert lo <= y1 <= hi and not (y1 & y2 >= lo and y1 | y2 <= hi)  # no pair inside holds both
    pairs = range_to_masks(lo, hi)
    assert len(pairs) == len(witness)
    assert covered_ports(pairs) == exactly(lo, hi)


def test_past_the_search_limit_a_greedy_cover_or_the_prefix_split_is_used(monkeypatch):
    portmask._range_to_masks.cache_clear()
    monkeypatch.setattr(portmask, "MAX_SEARCH_NODES", 0)
    try:
        assert range_to_masks(1, 65534) == prefix_split(1, 65534)  # greedy: no better here
        pairs = range_to_masks(8485, 32702)
        assert covered_ports(pairs) == exactly(8485, 32702)
        assert len(pairs) < len(prefix_split(8485, 32702))  # greedy: 18 against 23 (the fewest: 15)
    finally:
        portmask._range_to_masks.cache_clear()


def test_a_hard_range_still_gets_an_exact_cover():
    pairs = range_to_masks(1413, 65022)  # past the search limit: the greedy cover
    well_formed(pairs)
    assert covered_ports(pairs) == exactly(1413, 65022)
    assert len(pairs) < len(prefix_split(1413, 65022))
