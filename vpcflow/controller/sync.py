"""The difference between the flows a bridge should have and the flows it has. Pure.

Only flows whose cookie names one of our features are ours: a flow of another cookie, or one
the switch learned itself, is never deleted. A desired flow whose key (table, priority, match)
is installed with the same cookie and the same instructions (compared in their wire form, which
Open vSwitch reports back exactly as it was sent) and timeouts is left alone.

A runtime change can be applied make-before-break (Diff.phases: Diff.made_first() first): the
adds whose key nothing installed has only add a match, and in a change that moves traffic (an
elastic IP's remap) they are what lets the new path's packets through. Not the new flows of the
tables that steer (pipeline.STEERING): those go with the changes.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import operator
from typing import Dict, List, Optional, Sequence, Tuple

from vpcflow.flows import cookies
from vpcflow.flows.core import Flow
from vpcflow.flows.pipeline import STEERING, table_id


STEERING_IDS = frozenset(map(table_id, STEERING))


@dataclasses.dataclass(frozen=True)
class Installed:
    key: tuple  # (table id, priority, match key)
    cookie: int
    match: object  # the switch's own match object, for a strict delete
    content: object = None  # instructions and timeouts as the switch reports them


@dataclasses.dataclass
class Diff:
    add: List[Flow]
    delete: List[Installed]
    unchanged: int
    new: List[Flow] = dataclasses.field(default_factory=list)  # the adds whose key nothing installed has

    def __bool__(self):
        return bool(self.add or self.delete)

    def made_first(self) -> List[Flow]:
        """A make-before-break change's first commit: the new matches, except in the tables
        that steer (pipeline.STEERING): where a packet goes, and the records of where it went.
        A new match there can move traffic: a local route sits above the tunnel's, and a new
        record flow records under the binding of where the address lives once the change is
        made, while the routes that send there are still the old ones. Committed first, the
        latter recorded a connection whose SYN the old routes sent to the old holder under the
        new one, and its later packets followed that record to where it never was (traced: an
        interface moved back from a spare to vm2 on another host, the spare answered the SYN,
        the handshake's ACK went to vm2, and the stranded connection held the drain)."""
        return [f for f in self.new if f.table not in STEERING]

    def deletes_split(self) -> Tuple[List[Installed], List[Installed]]:
        """The deletes (in the tables that steer, the others): a make-before-break change that
        deletes last makes the former with its changes. A route that goes moves traffic as a
        new one does: the local route of an interface moved away sat above the tunnel's to its
        new home until the deletes, and in between, the new record flows recorded under the new
        binding connections that it still sent to the old holder."""
        steering, rest = [], []
        for i in self.delete:
            (steering if i.key[0] in STEERING_IDS else rest).append(i)
        return steering, rest

    def phases(self, deletes_last: bool) -> Tuple[List[Flow], List[Installed], List[Flow], List[Installed]]:
        """A make-before-break change's commits, in order: (the first's adds, the second's
        deletes and adds, the last's deletes). The second's adds: those that replace an
        installed flow of the same key (other actions or cookie), and the new flows of the
        tables that steer (made_first). deletes_last: a third commit takes the deletes but for
        those of the tables that steer (deletes_split); else the second takes them all."""
        first = self.made_first()
        made = set(map(id, first))
        now, last = self.deletes_split() if deletes_last else (self.delete, [])
        return first, now, [f for f in self.add if id(f) not in made], last


def diff(desired: Dict[tuple, Flow], installed: List[Installed], content=lambda f: None) -> Diff:
    """`content(flow)` gives the comparable form of a desired flow (as Installed.content)."""
    have: Dict[tuple, Installed] = {}
    stale: List[Installed] = []
    for inst in installed:
        if not cookies.is_managed(inst.cookie):
            continue
        if inst.key in desired and inst.key not in have:
            have[inst.key] = inst
        else:
            stale.append(inst)
    add = [f for k, f in desired.items()
           if k not in have or have[k].cookie != f.cookie or have[k].content != content(f)]
    unchanged = len(desired) - len(add)
    return Diff(add=add, delete=stale, unchanged=unchanged, new=[f for k, f in desired.items() if k not in have])


def split_by_resolvable(flows, key_of) -> Tuple[Dict[tuple, Flow], List[Flow]]:
    """Key the flows that can be installed now; return the others (they name absent ports)."""
    keyed, waiting = {}, []
    for f in flows:
        k = key_of(f)
        if k is None:
            waiting.append(f)
        else:
            keyed[k] = f
    return keyed, waiting


@dataclasses.dataclass
class Held:
    """What a bridge holds after a complete sync: the desired flows by key (all installed), how
    many of each feature, and the parts the flows came in (assemble.Flows.parts, or None)."""

    desired: Dict[tuple, Flow]
    features: collections.Counter
    parts: Optional[tuple] = None


def held(desired: Dict[tuple, Flow], flows=None) -> Held:
    """What a bridge holds once these desired flows (keyed out of `flows`) are installed."""
    return Held(desired, collections.Counter(f.feature for f in desired.values()), getattr(flows, "parts", None))


def diff_since(before: Held, flows: Sequence[Flow], key_of, content=lambda f: None) -> Tuple[Diff, Held, List[Flow]]:
    """diff(...) of `flows` against a bridge that holds exactly `before`, what it holds once the
    diff is applied, and the flows waiting for ports (as split_by_resolvable). `before` is taken
    over and changed (the cache of a bridge's last sync: a failed sync reads the bridge again).

    A recompiled switch keeps most of its flows as the very same objects (the runs a change did
    not touch, and the equal flows of the runs it made again), and those are installed as they
    are: only the others, and the held ones that are gone, are keyed and compared (the full diff
    keyed and compared every flow: 1.2 s of a runtime change at an edge of 142,000 flows). Where
    both compiles say their parts (assemble.Flows), those are the flows of the parts one has and
    the other not; else the flows that are not the objects held, found by their ids, and the
    held ones gone looked for only when some are not replaced by a flow of the same match."""
    desired, parts = before.desired, getattr(flows, "parts", None)
    by_parts = _by_parts(before.parts, parts)
    if by_parts is not None:
        fresh, gone = by_parts
        gone_count = None
    else:
        ids = set(map(id, desired.values()))
        fresh = list(itertools.compress(flows, map(operator.not_, map(ids.__contains__, map(id, flows)))))
        gone, gone_count = None, len(ids) - (len(flows) - len(fresh))
    features = before.features.copy()
    add, new, waiting, delete = [], [], [], []
    for f in fresh:
        k = key_of(f)
        if k is None:
            waiting.append(f)
            continue
        old = desired.get(k)
        if old is f:
            continue  # held already (a run made again took it over)
        if old is None:
            new.append(f)
            add.append(f)
        else:  # replaced: the same match
            if gone_count is not None:
                gone_count -= 1
            features[old.feature] -= 1
            if old.cookie != f.cookie or content(old) != content(f):
                add.append(f)
        desired[k] = f
        features[f.feature] += 1
    if gone is None and gone_count:  # matches no flow has any more, found among all held
        kept = set(map(id, flows))
        values = list(desired.values())
        gone = list(itertools.compress(values, map(operator.not_, map(kept.__contains__, map(id, values)))))
    for g in gone or ():
        k = key_of(g)
        if desired.get(k) is g:  # not replaced
            delete.append(Installed(k, g.cookie, g, content(g)))
            del desired[k]
            features[g.feature] -= 1
    return (Diff(add=add, delete=delete, unchanged=len(desired) - len(add), new=new),
            Held(desired, +features, parts), waiting)


def _by_parts(before: Optional[tuple], after: Optional[tuple]):
    """(the flows `after` has beyond `before`, the flows `before` had beyond `after`), from the
    parts of two compiles of a switch (own flows, then Shared runs): the runs only one has, and
    the own flows only one has. A run made again in place of one `before` has says which of its
    flows are new and which of the old run's it dropped (Shared.remade): only those are looked
    at. None where either compile has no parts."""
    if before is None or after is None:
        return None
    old_runs, new_runs = {id(r): r for r in before[1:]}, {id(r): r for r in after[1:]}
    old_own, new_own = set(map(id, before[0])), set(map(id, after[0]))
    fresh = [f for f in after[0] if id(f) not in old_own]
    gone = [g for g in before[0] if id(g) not in new_own]
    replaced = set()
    for key, run in new_runs.items():
        if key in old_runs:
            continue
        previous = run.remade[0]() if run.remade is not None else None
        if previous is not None and id(previous) in old_runs and id(previous) not in new_runs:
            fresh.extend(run.remade[1])
            gone.extend(run.remade[2])
            replaced.add(id(previous))
        else:
            fresh.extend(run.flows)
    for key, run in old_runs.items():
        if key not in new_runs and key not in replaced:
            gone.extend(run.flows)
    present = set(map(id, fresh))  # a run made again may hold flows of the one it replaced
    return fresh, [g for g in gone if id(g) not in present]
