"""Port ranges as OpenFlow value/mask matches: the fewest pairs whose union is exactly the range.

A pair (value, mask) matches a port when `port & mask == value`. The usual prefix split (1024-65535
as 1024/0xfc00, 2048/0xf800, ...) gives disjoint pairs but not always the fewest: 1-14 on 4 bits is
six prefixes, yet four overlapping pairs cover it (01xx, 1xx0, x01x, xx01 read as ternary strings).
Overlap is harmless here because every pair of a range carries the same actions.

How the minimum is found:

* A pair is a cube of ports with a smallest member p (the value) and a largest q (value | ~mask),
  p's bits a subset of q's. It lies inside lo..hi exactly when p >= lo and q <= hi.
* Widening a pair never hurts a cover, so a minimum cover can use widest ("prime") pairs only. A
  pair is widest when no bit can leave p and no bit can join q: p is a bitwise-minimal port >= lo,
  q a bitwise-maximal port <= hi. There are at most bits+1 of each, so at most (bits+1)^2 primes.
* A port y is covered by the primes with p ⊆ y ⊆ q: its "covering set". A minimum cover is a
  minimum hitting set of the covering sets.
* There can be thousands of distinct covering sets, so the hitting set is solved on a few of them
  (sets that need distinct primes, hence a lower bound), the answer checked against all ports,
  the sets it misses added, and so on: each answer is a minimum for the sets so far, so the first
  one that covers every port is a minimum overall. A walk over the bits lists the distinct sets;
  when there are too many, uncovered ports are found by a pruned descent instead.

The search is exact but exponential in theory, and a few 16-bit ranges are hard for it (often a
high end just below 65535 with a 0 bit or two, e.g. 1413-65022). It stops after MAX_SEARCH_NODES
nodes (about a second) and then returns the smaller of a greedy cover and the prefix split: still
exactly the range, but not proven the fewest. Nothing depends on timing, so the same range always
gives the same pairs. In measurements no random range out of 2,000 hit the limit; ranges of up to
8 bits were checked against brute force (the tests do all 6-bit ranges).
"""
from __future__ import annotations

import functools
import operator
from typing import Callable, Iterable, Optional

PORT_BITS = 16
CLASS_LIMIT = 30000  # covering sets listed up front; past that, uncovered ports are searched for
BATCH = 32  # missed covering sets added per round
MAX_SEARCH_NODES = 2000  # hitting-set search nodes before settling for a greedy cover


def range_to_masks(lo: int, hi: int, bits: int = PORT_BITS) -> list[tuple[int, int]]:
    """The fewest (value, mask) pairs whose union is exactly lo..hi, in ascending value order.

    The full range is [(0, 0)]; an aligned power-of-two block is one pair. A minimum never has more
    than 2 * bits - 4 pairs (bits >= 4). Past the search limit the answer is the smaller of a greedy
    cover and the prefix split (at most 2 * bits - 2 pairs), still exactly the range.
    """
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits must be a positive integer, not {bits!r}")
    if not 0 <= lo <= hi <= (1 << bits) - 1:
        raise ValueError(f"{lo}..{hi} is not a range within 0..{(1 << bits) - 1} with the low end first")
    return list(_range_to_masks(lo, hi, bits))


def covers(pairs: Iterable[tuple[int, int]], port: int) -> bool:
    """Whether some (value, mask) pair matches the port."""
    return any(port & mask == value for value, mask in pairs)


def prefix_split(lo: int, hi: int, bits: int = PORT_BITS) -> list[tuple[int, int]]:
    """The disjoint aligned blocks of lo..hi, largest first from the left: the classic cover."""
    full = (1 << bits) - 1
    pairs = []
    while lo <= hi:
        size = lo & -lo or 1 << bits  # the largest block aligned at lo ...
        while lo + size - 1 > hi:
            size >>= 1  # ... that still ends inside the range
        pairs.append((lo, full & ~(size - 1)))
        lo += size
    return pairs


@functools.lru_cache(maxsize=4096)  # the same rule ranges recur across switches and recompiles
def _range_to_masks(lo: int, hi: int, bits: int) -> tuple[tuple[int, int], ...]:
    full = (1 << bits) - 1
    if lo == hi or _is_aligned_block(lo, hi):
        return tuple(prefix_split(lo, hi, bits))
    primes = _prime_pairs(lo, hi, bits)
    try:
        chosen = _picked(primes, _minimum_cover(lo, hi, bits, primes))
    except _SearchTooLong:  # rare, hard ranges: a good cover instead of the best one
        chosen = _greedy_cover(lo, hi, primes)
        if len(chosen) >= len(prefix_split(lo, hi, bits)):
            return tuple(prefix_split(lo, hi, bits))
    return tuple(sorted(_value_mask(pair, full) for pair in chosen))


def _greedy_cover(lo: int, hi: int, primes: list) -> list[tuple[int, int]]:
    """Primes picked by how many uncovered ports they add, then any made redundant dropped.
    Port sets are bitsets: bit y stands for port y."""
    wanted = (1 << (hi + 1)) - (1 << lo)
    cubes = {pair: _cube_ports(*pair) for pair in primes}
    chosen, left = [], wanted
    while left:
        best = max(primes, key=lambda pair: (cubes[pair] & left).bit_count())  # first of the best
        chosen.append(best)
        left &= ~cubes[best]
    for pair in list(chosen):
        others = _or_all(cubes[other] for other in chosen if other != pair)
        if wanted & ~others == 0:
            chosen.remove(pair)
    return chosen


def _cube_ports(p: int, q: int) -> int:
    """The bitset of the ports from p to q that keep p's bits and stay within q's."""
    ports = 1 << p
    for bit in _bits(q & ~p):
        ports |= ports << bit
    return ports


def _is_aligned_block(lo: int, hi: int) -> bool:
    size = hi - lo + 1
    return size & (size - 1) == 0 and lo & (size - 1) == 0


def _value_mask(pair: tuple[int, int], full: int) -> tuple[int, int]:
    """The match for the cube whose smallest port is p and largest q: the bits where they agree."""
    p, q = pair
    return p, full & ~(p ^ q)


def _picked(primes: list, chosen: int) -> list:
    return [prime for index, prime in enumerate(primes) if chosen >> index & 1]


# --- Prime pairs and the ports they cover ------------------------------------------------------------

def _prime_pairs(lo: int, hi: int, bits: int) -> list[tuple[int, int]]:
    """(p, q) for every widest cube inside lo..hi, as its smallest and largest port."""
    return [(p, q) for p in _minimal_ports_from(lo, bits) for q in _maximal_ports_upto(hi, bits)
            if p & ~q == 0]


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


def _covering_set(port: int, primes: list[tuple[int, int]]) -> int:
    """The primes (a bitmask over their indexes) whose cube holds the port: p ⊆ port ⊆ q."""
    return _index_mask(p & ~port == 0 and port & ~q == 0 for p, q in primes)


def _port_classes(lo: int, hi: int, bits: int, primes: list, limit: int = CLASS_LIMIT):
    """The distinct covering sets of the ports in lo..hi, or None if there are more than `limit`.

    A walk from the top bit keeps, for each prefix of a port, the primes still able to cover it
    (a 0 bit rules out primes whose p has that bit, a 1 those whose q lacks it) and whether the
    prefix still equals lo's or hi's; prefixes in the same state merge.
    """
    states = {(True, True, (1 << len(primes)) - 1)}
    for bit in reversed(range(bits)):
        lost_on_0 = _index_mask(p >> bit & 1 for p, _ in primes)
        lost_on_1 = _index_mask(not q >> bit & 1 for _, q in primes)
        lo_bit, hi_bit = lo >> bit & 1, hi >> bit & 1
        states = {(at_lo and y_bit == lo_bit, at_hi and y_bit == hi_bit,
                   live & ~(lost_on_1 if y_bit else lost_on_0))
                  for at_lo, at_hi, live in states
                  for y_bit in (0, 1)
                  if not (at_lo and y_bit < lo_bit) and not (at_hi and y_bit > hi_bit)}
        if len(states) > limit:
            return None
    return {live for _, _, live in states}


def _uncovered_ports(lo: int, hi: int, bits: int, cubes: list, limit: int) -> list[int]:
    """Up to `limit` ports in lo..hi that no (value, mask) cube matches, by a pruned descent."""
    found: list[int] = []

    def descend(prefix: int, free_bits: int, at_lo: bool, at_hi: bool, live: list) -> None:
        below = (1 << free_bits) - 1
        if len(found) >= limit or any(mask & below == 0 for _, mask in live):
            return  # enough found, or one cube holds this whole subtree
        if not live:
            found.append(prefix | (lo & below if at_lo else 0))  # its lowest port in range
            return
        bit = free_bits - 1
        lo_bit, hi_bit = lo >> bit & 1, hi >> bit & 1
        for y_bit in (0, 1):
            if (at_lo and y_bit < lo_bit) or (at_hi and y_bit > hi_bit):
                continue
            descend(prefix | y_bit << bit, bit, at_lo and y_bit == lo_bit, at_hi and y_bit == hi_bit,
                    [(v, m) for v, m in live if not m >> bit & 1 or (v >> bit & 1) == y_bit])

    descend(0, bits, True, True, cubes)
    return found


def _index_mask(flags: Iterable) -> int:
    return sum(1 << index for index, flag in enumerate(flags) if flag)


# --- The minimum cover: hitting sets grown round by round -------------------------------------------

def _minimum_cover(lo: int, hi: int, bits: int, primes: list) -> int:
    """The primes (a bitmask) of a minimum cover of lo..hi."""
    search = _HittingSets(MAX_SEARCH_NODES)
    classes = _port_classes(lo, hi, bits, primes)
    if classes is None:  # too many to list: the primes' own ends to start, uncovered ports after
        full = (1 << bits) - 1
        start = {_covering_set(port, primes) for pair in primes for port in pair}

        def missed(chosen: int) -> list[int]:
            cubes = [_value_mask(pair, full) for pair in _picked(primes, chosen)]
            return [_covering_set(port, primes) for port in _uncovered_ports(lo, hi, bits, cubes, BATCH)]

        return _grow(search, start, missed)
    forced, family = _reduce(list(classes))

    def missed_sets(chosen: int) -> list[int]:
        return [s for s in family if not s & chosen][:BATCH]  # family is sorted: smallest first

    return forced | _grow(search, _disjoint_sets(family), missed_sets)


def _grow(search: "_HittingSets", sets: set[int], missed: Callable[[int], list[int]]) -> int:
    """Hit `sets` minimally, add the sets the answer misses, repeat until it misses none."""
    chosen = 0
    while True:
        chosen = search.minimum(sets, at_least=_popcount(chosen))  # more sets: never fewer primes
        more = missed(chosen)
        if not more:
            return chosen
        sets.update(more)


def _disjoint_sets(sets: list[int]) -> set[int]:
    """Pairwise disjoint sets, smallest first: each needs its own prime, a lower bound to start."""
    chosen, used = set(), 0
    for s in sets:
        if not s & used:
            chosen.add(s)
            used |= s
    return chosen


class _SearchTooLong(Exception):
    pass


class _HittingSets:
    """Exact minimum hitting sets. Sets and answers are bitmasks over elements (here: primes)."""

    def __init__(self, max_nodes: int):
        self.nodes_left = max_nodes
        self.memo: dict[tuple[int, ...], int] = {}  # a group can recur in several branches

    def minimum(self, sets: Iterable[int], at_least: int = 0) -> int:
        """A minimum hitting set; `at_least` is a size known not to be beatable."""
        forced, sets = _reduce(list(sets))
        groups = _components(sets)
        if at_least <= _popcount(forced) or len(groups) <= 1:
            return forced | _or_all(self._min_connected(tuple(group)) for group in groups)
        return forced | self._deepen(sets, max(_disjoint_count(sets), at_least - _popcount(forced)))

    def _min_connected(self, sets: tuple[int, ...]) -> int:
        if sets not in self.memo:
            self.memo[sets] = self._deepen(list(sets), _disjoint_count(sets))
        return self.memo[sets]

    def _deepen(self, sets: list[int], budget: int) -> int:
        """Iterative deepening from a lower bound, so the first hitting set found is a minimum."""
        while True:
            found = self._within(sets, budget)
            if found is not None:
                return found
            budget += 1

    def _within(self, sets: list[int], budget: int) -> Optional[int]:
        """A hitting set of at most `budget` elements, or None."""
        self.nodes_left -= 1
        if self.nodes_left < 0:
            raise _SearchTooLong
        forced, sets = _reduce(sets)
        budget -= _popcount(forced)
        if budget < 0 or _disjoint_count(sets) > budget:
            return None
        groups = _components(sets)
        if len(groups) > 1:  # independent groups: the sum of their minima must fit
            chosen = _or_all(self._min_connected(tuple(group)) for group in groups)
            return chosen | forced if _popcount(chosen) <= budget else None
        if not sets:
            return forced
        # Branch on the elements of a smallest set, most useful first. Each branch excludes the
        # elements tried before it: a solution with one of those was already looked for.
        smallest = sets[0]  # _reduce sorts them
        tried = 0
        for element in sorted(_bits(smallest), key=lambda e: (-sum(1 for s in sets if s & e), e)):
            rest = [s & ~tried for s in sets if not s & element]
            tried |= element
            if all(rest):  # else some set could only be hit by an excluded element
                found = self._within(rest, budget - 1)
                if found is not None:
                    return found | element | forced
        return None


def _reduce(sets: list[int]) -> tuple[int, list[int]]:
    """Elements that must be chosen, and the sets still to hit (smallest first), after the
    textbook reductions: drop supersets, take the element of one-element sets, and drop elements
    another element can always replace."""
    forced = 0
    while True:
        sets = _keep_minimal(sets)
        singles = _or_all(s for s in sets if s & (s - 1) == 0)
        if singles:
            forced |= singles
            sets = [s for s in sets if not s & singles]
            continue
        dominated = _dominated_elements(sets)
        if not dominated:
            return forced, sets
        sets = [s & ~dominated for s in sets]


def _keep_minimal(sets: list[int]) -> list[int]:
    """The sets that contain no other set (hitting the smaller one hits it too), smallest first."""
    kept_by_lowest: dict[int, list[int]] = {}  # a subset of s has its lowest element in s
    kept = []
    for s in sorted(set(sets), key=_size_then_value):
        if not any(k & ~s == 0 for e in _bits(s) for k in kept_by_lowest.get(e, ())):
            kept.append(s)
            kept_by_lowest.setdefault(s & -s, []).append(s)
    return kept


def _dominated_elements(sets: list[int]) -> int:
    """Elements another element can replace: one that lies in every set they lie in."""
    holding: dict[int, list[int]] = {}  # element -> the sets holding it
    for s in sets:
        for element in _bits(s):
            holding.setdefault(element, []).append(s)
    dropped = 0
    for e in sorted(holding):
        # the others in every set that holds e; a dropped one has its own replacement in there
        for other in _bits(functools.reduce(operator.and_, holding[e]) & ~e & ~dropped):
            # of two elements in exactly the same sets, keep the lower one
            if len(holding[other]) > len(holding[e]) or other < e:
                dropped |= e
                break
    return dropped


def _components(sets: list[int]) -> list[list[int]]:
    """Groups of sets that share no element with other groups, each smallest first."""
    groups: list[tuple[int, list[int]]] = []
    for s in sets:
        joined = [g for g in groups if g[0] & s]
        elements, members = s, [s]
        for group_elements, group_members in joined:
            elements |= group_elements
            members += group_members
        groups = [g for g in groups if not g[0] & s] + [(elements, members)]
    return [sorted(members, key=_size_then_value) for _, members in groups]


def _disjoint_count(sets) -> int:
    """A lower bound: how many pairwise disjoint sets a greedy pass finds."""
    used, count = 0, 0
    for s in sorted(sets, key=_size_then_value):
        if not s & used:
            used |= s
            count += 1
    return count


def _size_then_value(mask: int) -> tuple[int, int]:
    return _popcount(mask), mask


def _popcount(mask: int) -> int:
    return mask.bit_count()


def _or_all(masks: Iterable[int]) -> int:
    return functools.reduce(operator.or_, masks, 0)


def _bits(mask: int) -> list[int]:
    """The one-bit masks of `mask`, lowest first."""
    result = []
    while mask:
        low = mask & -mask
        result.append(low)
        mask ^= low
    return result
