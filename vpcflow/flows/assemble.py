"""Putting a switch's flows together: checked against the pipeline, one flow per match.

Most of a big host's flows are the same on every switch that serves a network (its routes, its
connection-following records, its senders' checks). Those are made once per Index as a `Shared`
run, finished once, and a switch's compile adds the run as it is: the cost of a compile then
grows with what the switch serves itself, not with the flows it shares.
"""
from __future__ import annotations

import array
import collections
import itertools
from typing import Iterable, List, Tuple

from vpcflow.flows import pipeline
from vpcflow.flows.core import Conjunction, Flow


class Shared:
    """A run of flows that several switches' compiles share: finished (checked, unique) when
    made, with what finish() needs to check that runs do not overlap."""

    __slots__ = ("flows", "keys")

    def __init__(self, flows: Iterable[Flow]):
        self.flows, keys = _finish_keyed(flows)
        # hashes, not the keys (a frozenset each: most of a big compile's memory), in an array
        # (a set of them was an eighth of it); two keys of one hash only send finish() the slow way
        self.keys = array.array("q", map(hash, keys))

    def __len__(self):
        return len(self.flows)


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
        if not f.checked:  # a flow shared between switches is checked once
            verify(f)
            f.checked = True
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


def finish(items) -> Tuple[Flow, ...]:
    """A switch's flows from its own flows and the Shared runs among them: the own ones
    finished, the runs added as they are. Runs that overlap (a match in two runs, or in a run
    and among the own flows) are all finished together instead, which also names a conflict."""
    own, runs, seen = [], [], set()
    for item in items:
        if item.__class__ is not Shared:
            own.append(item)
        elif id(item) not in seen:  # a run two features ask for (a network both local and a partner)
            seen.add(id(item))
            runs.append(item)
    flows, keys = _finish_keyed(own)
    if not runs:
        return flows
    total = len(keys) + sum(len(r.keys) for r in runs)
    if len(frozenset(map(hash, keys)).union(*(r.keys for r in runs))) != total:
        return _finish_keyed(itertools.chain(own, *(r.flows for r in runs)))[0]
    return flows + tuple(itertools.chain.from_iterable(r.flows for r in runs))
