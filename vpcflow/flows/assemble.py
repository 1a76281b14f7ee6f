"""Putting a switch's flows together: checked against the pipeline, one flow per match.

Most of a big host's flows are the same on every switch that serves a network (its routes, its
connection-following records, its senders' checks). Those are made once per Index as a `Shared`
run, finished once, and a switch's compile adds the run as it is: the cost of a compile then
grows with what the switch serves itself, not with the flows it shares.
"""
from __future__ import annotations

import array
import collections
import collections.abc
import itertools
import weakref
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from vpcflow.flows import pipeline
from vpcflow.flows.core import Conjunction, Flow


class Shared:
    """A run of flows that several switches' compiles share: finished (checked, unique) when
    made, with what finish() needs to check that runs do not overlap."""

    __slots__ = ("flows", "keys", "remade", "own", "__weakref__")

    def __init__(self, flows: Iterable[Flow], like: Optional["Shared"] = None, own: bool = False):
        """like: the run this one is made again in place of (after a change), whose flow objects
        it mostly takes over (follow records, routes): their key hashes are taken too.
        own: one switch's own flows (compiler._own), in no other switch's compile."""
        self.own = own
        # hashes, not the keys (a frozenset each: most of a big compile's memory), in an array
        # (a set of them was an eighth of it); two keys of one hash only send finish() the slow way
        flows, hashes, verify = tuple(flows), [], pipeline.verify
        known = dict(zip(map(id, like.flows), like.keys)) if like is not None else None  # (like holds them)
        # two loops: a look-up per flow where there is no `like` cost a full compile measurably
        if known is None:
            for f in flows:  # every flow of a big compile passes here: Flow.key written out
                verify(f)
                hashes.append(hash((f.table, f.priority, frozenset(f.match))))
        else:
            for f in flows:
                h = known.get(id(f))
                if h is None:
                    verify(f)
                    h = hash((f.table, f.priority, frozenset(f.match)))
                hashes.append(h)
        if len(set(hashes)) == len(hashes):  # all distinct (most runs): no dict of their keys
            self.flows = flows
        else:  # a flow made twice, a match in several conjunctions, a conflict: _finish_keyed says
            self.flows, keys = _finish_keyed(flows)
            hashes = map(hash, keys)
        self.keys = array.array("q", hashes)
        # (the run it replaces, weakly; its own new flows; the old ones it dropped; the hashes of
        # its keys the run it replaces did not have, or None if its own are not all distinct): reuse
        self.remade = None

    def __len__(self):
        return len(self.flows)

    def reuse(self, previous: "Shared"):
        """Take the flow objects of `previous` (the run this one, made again after a change,
        replaces) where they equal this run's: switches then hold the same objects, which a sync
        recognizes by identity (controller/sync.diff_since) with their wire forms already made,
        and a change does not double the memory of the runs it remakes. The flow of the same
        table, priority and match (as the same code makes it; a moved destination's flows may
        come in another place of the run) is the one compared."""
        # (most are the same objects where the run was made from them: Shared's like)
        had, mine = set(map(id, previous.flows)), set(map(id, self.flows))
        same_match = {(g.table, g.priority, g.match): g for g in previous.flows if id(g) not in mine}
        out, fresh = [], []
        for f in self.flows:
            if id(f) in had:
                out.append(f)
                continue
            key = (f.table, f.priority, f.match)
            g = same_match.get(key)
            if g is not None and (g is f or g == f):
                out.append(g)
                del same_match[key]
            else:
                out.append(f)
                fresh.append(f)
        self.flows = tuple(out)
        # what a sync of a switch that held `previous` needs to look at (controller/sync.py), and
        # what a compile of such a switch checks against its other runs (_clear_beside)
        own_keys = set(self.keys)
        added = tuple(own_keys.difference(previous.keys)) if len(own_keys) == len(self.keys) else None
        self.remade = (weakref.ref(previous), tuple(fresh), tuple(same_match.values()), added)


class Runs:
    """Shared runs that a switch's compile takes as one item: looked up, counted (Overlaps) and
    put together as one. An edge has a run per network and per elastic IP (~10,000 at 100k
    interfaces): gathered one by one, they were most of its recompile after a change; as a few
    hundred of these, a change makes again only the one holding its run."""

    __slots__ = ("runs", "flow_count", "key_count")

    def __init__(self, runs: Iterable[Shared]):
        self.runs = tuple(runs)
        self.flow_count = sum(len(r.flows) for r in self.runs)
        self.key_count = sum(len(r.keys) for r in self.runs)

    @property
    def keys(self):
        """The key hashes of its runs, one after the other."""
        return itertools.chain.from_iterable(r.keys for r in self.runs)


def sort_key(f: Flow):
    """The order of a switch's flows: table, priority (highest first), feature, object, match."""
    return _order(f) + (repr(f.match),)


def _order(f: Flow):
    # All of sort_key but the match's repr, which is costly and needed only to order flows of
    # one object (in_order).
    return (pipeline.table_id(f.table), -f.priority, f.feature, f.obj)


def in_order(flows) -> Tuple[Flow, ...]:
    """sorted(flows, key=sort_key), with the repr of a match computed only to break a tie."""
    flows = list(flows)
    keys = list(map(_order, flows))
    ties = collections.Counter(keys)
    # A key without its repr is never compared with one with it: their first four items differ.
    keys = [k + (repr(f.match),) if ties[k] > 1 else k for k, f in zip(keys, flows)]
    return tuple(f for _, _, f in sorted(zip(keys, range(len(flows)), flows)))  # the index: no Flow compared


def _conjunctive(f: Flow) -> bool:
    return bool(f.actions) and all(isinstance(a, Conjunction) for a in f.actions)


def _finish_keyed(flows) -> Tuple[Tuple[Flow, ...], List[tuple]]:
    """The flows checked, one per match (identical ones once; the conjunction actions of one
    match in one flow); and their keys."""
    unique = {}
    conjunctions = {}  # key -> every conjunction action its match takes part in
    verify, add = pipeline.verify, unique.setdefault
    for f in flows:  # every compiled flow passes here: Flow.key written out, names bound once
        verify(f)
        key = (f.table, f.priority, frozenset(f.match))
        previous = add(key, f)
        if previous is f or previous == f:
            continue
        if _conjunctive(previous) and _conjunctive(f):
            # One match may take part in several conjunctions: one flow carries all of them.
            conjunctions.setdefault(key, set(previous.actions)).update(f.actions)
        else:
            raise pipeline.PipelineError(f"two different flows with one match:\n  {previous}\n  {f}")
    for key, actions in conjunctions.items():
        unique[key] = unique[key].replace(actions=tuple(sorted(actions, key=lambda a: (a.id, a.clause))))
    # In the order they came: compiles are deterministic without sorting (costly on every
    # compile); what people read is put in order by the renderer (in_order).
    return tuple(unique.values()), list(unique)


class Overlaps:
    """The key hashes of one switch's runs, counted: a compile of the switch with mostly the same
    runs (a runtime change) checks that its runs do not overlap by counting in the runs that came
    and out those that went, instead of hashing all of them again (142k at a 100k-interface edge:
    half of its recompile). It says which runs it counts (it holds them), so it stays right
    whichever compile updated it last: Indexes derived one from another share it
    (flows/incremental.py carries it over)."""

    __slots__ = ("_runs", "_counts", "_surplus")

    def __init__(self):
        self._runs = {}  # id -> run, of the runs counted
        self._counts = {}  # key hash -> how many runs have it
        self._surplus = 0  # hashes counted more than once, beyond the first

    def clear_of(self, runs: Dict[int, Shared], own: List[int]) -> bool:
        """Whether these runs (by id) and the own flows' key hashes are all distinct."""
        try:
            self._count(runs)
        except BaseException:  # half counted: count anew next time
            self.__init__()
            raise
        if self._surplus:
            return False
        counts = self._counts
        return len(set(own)) == len(own) and not any(map(counts.__contains__, own))

    def _count(self, current):
        if not self._runs:
            runs = current.values()
            # (a dict: a Counter's __delitem__ is written in Python)
            self._counts = dict(collections.Counter(itertools.chain.from_iterable(r.keys for r in runs)))
            self._surplus = sum(_key_count(r) for r in runs) - len(self._counts)
            self._runs = current
            return
        old = self._runs
        # (set operations on the ids: thousands of runs); a Runs that came in place of one that
        # went mostly holds the same runs: only the runs that differ are counted out and in
        times, runs = collections.Counter(), {}  # run id -> how many more times it is counted now
        for units, ids, step in ((old, old.keys() - current.keys(), -1), (current, current.keys() - old.keys(), 1)):
            for i in ids:
                unit = units[i]
                for r in (unit.runs if unit.__class__ is Runs else (unit,)):
                    times[id(r)] += step
                    runs[id(r)] = r
        counts, surplus = self._counts, self._surplus
        for i, n in times.items():
            for _ in range(n):  # counted in (range of a negative n: none)
                for h in runs[i].keys:
                    c = counts.get(h, 0)
                    counts[h] = c + 1
                    surplus += c > 0
            for _ in range(-n):  # counted out
                for h in runs[i].keys:
                    c = counts[h]
                    if c == 1:
                        del counts[h]
                    else:
                        counts[h] = c - 1
                        surplus -= 1
        self._runs, self._surplus = current, surplus


class Distinct:
    """Whether a switch's runs and own keys are all distinct, for the hosts of a full compile,
    one after the other. A set of a host's ~9,000 key hashes took ~0.7 ms, a seventh of the
    compile of a host whose networks' runs were made; a rack's hosts share most of their runs
    (their networks'). So the set of the last host's run hashes is kept and made the next
    host's: the hashes of the runs that went are taken out, those of the runs that came put in
    (checked against it), at C speed. Kept only while its runs were distinct (then no hash in it
    is two runs'); it holds those runs (their ids stay theirs). A host's own runs are no other
    host's: they are checked with its own flows, against the set, and not put in it (put in,
    they were taken out again at the next host: two of the four passes over their keys)."""

    __slots__ = ("_runs", "_hashes")

    def __init__(self):
        self._runs: Dict[int, Shared] = {}  # id -> run, of the host before, if distinct
        self._hashes = set()  # their key hashes

    def clear(self, own: List[int], runs: List[Shared]) -> bool:
        mine, count, kept = set(own), len(own), []
        for r in runs:
            if r.own:
                mine.update(r.keys)
                count += len(r.keys)
            else:
                kept.append(r)
        here = dict(zip(map(id, kept), kept))
        went = [r for i, r in self._runs.items() if i not in here]
        came = [r for i, r in here.items() if i not in self._runs]
        # taken out, and kept again below if all is distinct (so also if this raises)
        self._runs, self._hashes, hashes = {}, set(), self._hashes
        if sum(map(len, (r.keys for r in itertools.chain(went, came)))) > len(hashes):
            hashes, went, came = set(), (), list(here.values())  # (another rack's host) anew
        for r in went:
            hashes.difference_update(r.keys)
        new = set().union(*(r.keys for r in came))
        if (len(new) != sum(len(r.keys) for r in came) or not hashes.isdisjoint(new)
                or len(mine) != count or not mine.isdisjoint(new) or not mine.isdisjoint(hashes)):
            return False
        if hashes:
            hashes |= new
        else:
            hashes = new  # (anew: no copy)
        self._runs, self._hashes = here, hashes
        return True


def _key_count(unit) -> int:
    return unit.key_count if unit.__class__ is Runs else len(unit.keys)


def finish(items, overlaps: Optional[Overlaps] = None, previous=None, distinct: Optional[Distinct] = None) -> Sequence[Flow]:
    """A switch's flows from its own flows and the Shared runs among them: the own ones
    finished, the runs added as they are. Runs that overlap (a match in two runs, or in a run
    and among the own flows) are all finished together instead, which also names a conflict.
    overlaps: the switch's counted runs, from its last compile (checked by what changed).
    previous: the switch's flows from the compile before a change (runs it had are known not
    to overlap: only the others are checked against them).
    distinct: what the compile of the switch before found distinct (a full compile's hosts)."""
    own, by_id = [], {}
    for item in items:
        cls = item.__class__
        if cls is Shared or cls is Runs:
            by_id[id(item)] = item  # once: a run two features ask for (a network both local and a partner)
        else:
            own.append(item)
    flows, keys = _finish_keyed(own)
    if not by_id:
        return flows
    units = by_id.values()
    runs = list(itertools.chain.from_iterable(u.runs if u.__class__ is Runs else (u,) for u in units))
    if overlaps is not None:
        clear = overlaps.clear_of(by_id, list(map(hash, keys)))
    elif getattr(previous, "parts", None) is not None:
        clear = _clear_beside(previous.parts, runs, keys)
    else:  # (none kept from the switch compiled before: a Distinct of its own checks every key)
        clear = (Distinct() if distinct is None else distinct).clear(list(map(hash, keys)), runs)
    if not clear:
        return _finish_keyed(itertools.chain(own, *(r.flows for r in runs)))[0]
    length = len(flows) + sum(len(u.flows) if u.__class__ is Shared else u.flow_count for u in units)
    return Flows((flows,) + tuple(runs), length)


def _clear_beside(before: tuple, runs: List[Shared], own_keys) -> bool:
    """Whether runs and own keys are all distinct, where the parts `before` (of the compile of the
    switch that was, see Flows) are known to be: only the keys that are new here are checked,
    against each other and against the others (a runtime change recompiles every host of the
    networks it touched, whose runs are mostly the same, or remade with a few new keys: a moved
    address's). New: the own keys before did not have, every key of a run before did not have,
    and of a run remade from one of before's (Shared.reuse), the keys that one did not have
    (checked against that one's: its other keys were distinct from the rest)."""
    known = {id(r): r for r in before[1:]}
    had = {hash(f.key) for f in before[0]}
    new = [h for h in map(hash, own_keys) if h not in had]
    others = [array.array("q", had)]  # the known keys, by run
    replaced = {id(r) for r in runs if id(r) in known}  # (a run kept beside its own remake: all new)
    for r in runs:
        if id(r) in known:
            others.append(r.keys)
            continue
        remade = r.remade
        previous = remade[0]() if remade is not None else None
        if previous is not None and id(previous) in known and remade[3] is not None and id(previous) not in replaced:
            replaced.add(id(previous))
            new.extend(remade[3])
            others.append(previous.keys)
        else:
            new.extend(r.keys)
    if not new:
        return True
    if len(set(new)) != len(new):
        return False
    return not _any_among(new, others)


def _any_among(hashes: List[int], arrays: List[array.array]) -> bool:
    """Whether any of a few hashes is in these arrays. A set of the few and a pass over the
    arrays' items made an int object of each (7,000 at a big host: 0.4 ms); a search of their
    bytes for each hash is a tenth of that (a match between two items is not one)."""
    if len(hashes) > 16:
        few = set(hashes)
        return not all(map(few.isdisjoint, arrays))
    data = b"".join(arrays)
    width = array.array("q").itemsize
    for h in hashes:
        needle = array.array("q", (h,)).tobytes()
        i = data.find(needle)
        while i != -1:
            if i % width == 0:
                return True
            i = data.find(needle, i + 1)
    return False


class Flows(collections.abc.Sequence):
    """A switch's flows, kept as the parts they were put together from where its runs were added
    as they are (finish): its own flows (a tuple), then each Shared run. Not one tuple of them
    all: gathering one was a third of a runtime change's recompile of a 100k-interface edge
    (142k flows from ~5,000 runs), and a copy of every flow reference of every switch (~150 MB
    at 100k interfaces). Iterating goes through the parts; a tuple is made only where indexed.
    Two compiles of a switch are compared part by part (controller/sync.diff_since): a run both
    have holds the same flows, and is not looked into."""

    __slots__ = ("parts", "_len", "_flat")

    def __init__(self, parts: tuple, length: Optional[int] = None):
        self.parts = parts
        self._len = len(parts[0]) + sum(len(r.flows) for r in parts[1:]) if length is None else length
        self._flat = None

    def __iter__(self):
        if self._flat is not None:
            return iter(self._flat)
        parts = self.parts
        return itertools.chain(parts[0], *(r.flows for r in parts[1:]))

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        if self._flat is None:
            self._flat = tuple(self)
        return self._flat[i]

    def __add__(self, other):
        return tuple(self) + tuple(other)

    def __radd__(self, other):
        return tuple(other) + tuple(self)

    def __eq__(self, other):
        if isinstance(other, (tuple, Flows)):
            return len(self) == len(other) and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self):
        return hash(tuple(self))

    def __repr__(self):
        return f"Flows({tuple(self)!r})"
