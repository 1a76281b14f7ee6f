"""Port ranges as OpenFlow value/mask matches: the fewest pairs whose union is exactly the range.

A pair (value, mask) matches a port when `port & mask == value`. The usual prefix split (1024-65535
as 1024/0xfc00, 2048/0xf800, ...) gives disjoint pairs but not always the fewest: 1-14 on 4 bits is
six prefixes, yet four overlapping pairs cover it (xx01, x01x, 01xx, 1xx0 read as ternary strings).
Overlap is harmless here because every pair of a range carries the same actions.

How the minimum is found:

* A pair is a cube of ports with a smallest member p (the value) and a largest q (value | ~mask),
  p's bits a subset of q's. It lies inside lo..hi exactly when p >= lo and q <= hi.
* Widening a pair never hurts a cover, so a minimum cover can use widest ("prime") pairs only. A
  pair is widest when no bit can leave p and no bit can join q: p is a bitwise-minimal port >= lo,
  q a bitwise-maximal port <= hi. There are at most bits+1 of each, so at most (bits+1)^2 primes.
* A port y is covered by the primes with p ⊆ y ⊆ q. Ports with the same set of covering primes are
  interchangeable; a walk over the bits from the top finds every distinct set (a few hundred).
* The answer is a minimum hitting set of those sets, found exactly by a small search.

The search is exponential in theory; on 16-bit ranges it takes milliseconds (tests measure it).
"""
from __future__ import annotations

import functools
import operator
from typing import Iterable

PORT_BITS = 16


def range_to_masks(lo: int, hi: int, bits: int = PORT_BITS) -> list[tuple[int, int]]:
    """The fewest (value, mask) pairs whose union is exactly lo..hi, in ascending value order.

    The full range is [(0, 0)]; an aligned power-of-two block is one pair. On 16 bits no range needs
    more than 28 pairs (2 * bits - 4).
    """
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits must be a positive integer, not {bits!r}")
    if not 0 <= lo <= hi <= (1 << bits) - 1:
        raise ValueError(f"{lo}..{hi} is not a range within 0..{(1 << bits) - 1} with the low end first")
    return list(_range_to_masks(lo, hi, bits))


def covers(pairs: Iterable[tuple[int, int]], port: int) -> bool:
    """Whether some (value, mask) pair matches the port."""
    return any(port & mask == value for value, mask in pairs)


@functools.lru_cache(maxsize=4096)  # the same rule ranges recur across switches and recompiles
def _range_to_masks(lo: int, hi: int, bits: int) -> tuple[tuple[int, int], ...]:
    full = (1 << bits) - 1
    aligned = _aligned_mask(lo, hi, full)
    if aligned is not None:
        return ((lo, aligned),)
    lows = _minimal_ports_from(lo, bits)
    highs = _maximal_ports_upto(hi, bits)
    primes = [(p, q) for p in lows for q in highs if p & ~q == 0]
    chosen = _min_hitting_set(_covering_sets(lo, hi, bits, lows, highs, primes))
    return tuple(sorted((p, full & ~(p ^ q)) for index, (p, q) in enumerate(primes)
                        if chosen >> index & 1))


def _aligned_mask(lo: int, hi: int, full: int):
    """The mask when lo..hi is one aligned power-of-two block (the common case), else None."""
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo & (size - 1) == 0:
        return full & ~(size - 1)
    return None


# --- Prime pairs -----------------------------------------------------------------------------------

def _minimal_ports_from(lo: int, bits: int) -> list[int]:
    """The ports >= lo from which no bit can be removed without dropping below lo.

    They are lo itself and, for each 0 bit of lo above its lowest 1, lo's higher bits plus that bit.
    """
    if lo == 0:
        return [0]
    lowest_one = (lo & -lo).bit_length() - 1
    higher_zeros = [i for i in range(lowest_one + 1, bits) if not lo >> i & 1]
    return [lo] + [(lo >> (i + 1) << (i + 1)) | (1 << i) for i in higher_zeros]


def _maximal_ports_upto(hi: int, bits: int) -> list[int]:
    """The ports <= hi to which no bit can be added: the mirror image of _minimal_ports_from."""
    full = (1 << bits) - 1
    return [full ^ p for p in _minimal_ports_from(full ^ hi, bits)]


def _covering_sets(lo, hi, bits, lows, highs, primes) -> set[int]:
    """For each class of ports in lo..hi, the set (a bitmask over primes) of primes covering it.

    A port y is covered by prime (p, q) when p ⊆ y ⊆ q, so it is enough to know which of the lows
    are subsets of y and which highs supersets. A walk from the top bit tracks those two bitmasks
    and whether y still equals lo / hi on the bits so far; equal states merge.
    """
    states = {(True, True, (1 << len(lows)) - 1, (1 << len(highs)) - 1)}
    for bit in reversed(range(bits)):
        lows_with_bit = _index_mask(p >> bit & 1 for p in lows)  # lost when y has a 0 here
        highs_without_bit = _index_mask(not q >> bit & 1 for q in highs)  # lost when y has a 1
        lo_bit, hi_bit = lo >> bit & 1, hi >> bit & 1
        states = {(at_lo and y_bit == lo_bit, at_hi and y_bit == hi_bit,
                   low_set & ~lows_with_bit if y_bit == 0 else low_set,
                   high_set & ~highs_without_bit if y_bit == 1 else high_set)
                  for at_lo, at_hi, low_set, high_set in states
                  for y_bit in (0, 1)
                  if not (at_lo and y_bit < lo_bit) and not (at_hi and y_bit > hi_bit)}
    by_low = [_index_mask(p == low for p, _ in primes) for low in lows]
    by_high = [_index_mask(q == high for _, q in primes) for high in highs]
    return {_union(by_low, low_set) & _union(by_high, high_set) for _, _, low_set, high_set in states}


def _index_mask(flags: Iterable) -> int:
    return sum(1 << index for index, flag in enumerate(flags) if flag)


def _union(masks: list[int], selector: int) -> int:
    result = 0
    for index, mask in enumerate(masks):
        if selector >> index & 1:
            result |= mask
    return result


# --- Minimum hitting set ------------------------------------------------------------------------------
# Sets and answers are bitmasks over elements (here: primes). Every set must contain a chosen element.

def _min_hitting_set(sets: Iterable[int]) -> int:
    sets = list(sets)
    return _hitting_set_under(sets, _or_all(sets).bit_length() + 1)  # any bound above all elements


def _popcount(mask: int) -> int:
    return bin(mask).count("1")


def _keep_minimal(sets: list[int]) -> list[int]:
    """Drop every set that contains another: hitting the smaller one hits it too."""
    kept: list[int] = []
    for s in sorted(set(sets), key=lambda s: (_popcount(s), s)):
        if not any(k & s == k for k in kept):
            kept.append(s)
    return kept


def _reduce(sets: list[int]) -> tuple[int, list[int]]:
    """Elements that must be chosen, and the sets still to hit, after the textbook reductions."""
    forced = 0
    while True:
        sets = _keep_minimal(sets)
        singles = _or_all(s for s in sets if s & (s - 1) == 0)
        if singles:  # a one-element set forces its element
            forced |= singles
            sets = [s for s in sets if not s & singles]
            continue
        dominated = _dominated_elements(sets)
        if not dominated:
            return forced, sets
        sets = [s & ~dominated for s in sets]


def _dominated_elements(sets: list[int]) -> int:
    """Elements that some other element can replace: it lies in every set they lie in."""
    elements = _bits(_or_all(sets))
    where = {e: _index_mask(s & e for s in sets) for e in elements}
    dropped = 0
    for e in elements:
        for other in elements:
            if other == e or dropped & other:
                continue
            # `other` is in every set `e` is in; of two equivalent elements keep the lower one
            if where[e] & ~where[other] == 0 and (where[e] != where[other] or other < e):
                dropped |= e
                break
    return dropped


def _or_all(masks: Iterable[int]) -> int:
    return functools.reduce(operator.or_, masks, 0)


def _bits(mask: int) -> list[int]:
    result = []
    while mask:
        low = mask & -mask
        result.append(low)
        mask ^= low
    return result


def _components(sets: list[int]) -> list[list[int]]:
    """Groups of sets that share no element with other groups: each is solved on its own."""
    groups: list[tuple[int, list[int]]] = []
    for s in sets:
        joined = [g for g in groups if g[0] & s]
        elements, members = s, [s]
        for group_elements, group_members in joined:
            elements |= group_elements
            members += group_members
        groups = [g for g in groups if not g[0] & s] + [(elements, members)]
    return [members for _, members in groups]


def _hitting_set_under(sets: list[int], limit: int):
    """A minimum hitting set with fewer than `limit` elements, or None: branch and bound.

    Each node first applies the reductions, then solves independent groups separately, then
    branches on the elements of a smallest set; the disjoint-set bound prunes.
    """
    forced, sets = _reduce(sets)
    limit -= _popcount(forced)
    if limit <= 0:
        return None
    if not sets:
        return forced
    groups = _components(sets)
    if len(groups) > 1:
        rest = _groups_under(groups, limit)
        return None if rest is None else rest | forced
    best = None
    smallest = min(sets, key=lambda s: (_popcount(s), s))
    tried = 0  # elements of `smallest` already branched on: later branches exclude them
    for element in sorted(_bits(smallest), key=lambda e: (-sum(1 for s in sets if s & e), e)):
        if _disjoint_count(sets) >= limit:
            break
        rest_sets = [s & ~tried for s in sets if not s & element]
        tried |= element
        if not all(rest_sets):
            continue  # a set only an excluded element could hit
        rest = _hitting_set_under(rest_sets, limit - 1)
        if rest is not None:
            best = rest | element
            limit = _popcount(best)  # from now on only a smaller one is worth finding
    return None if best is None else best | forced


def _groups_under(groups: list[list[int]], limit: int):
    """Independent groups: each gets the budget the others' lower bounds leave it."""
    bounds = [_disjoint_count(group) for group in groups]
    spent = sum(bounds)  # lower bounds of unsolved groups plus sizes of solved ones
    chosen = 0
    for group, bound in zip(groups, bounds):
        found = _hitting_set_under(group, limit - (spent - bound))
        if found is None:
            return None
        spent += _popcount(found) - bound
        chosen |= found
    return chosen


def _disjoint_count(sets: list[int]) -> int:
    """A lower bound: how many pairwise disjoint sets a greedy pass finds."""
    used, count = 0, 0
    for s in sorted(sets, key=lambda s: (_popcount(s), s)):
        if not s & used:
            used |= s
            count += 1
    return count
