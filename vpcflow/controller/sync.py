"""The difference between the flows a bridge should have and the flows it has. Pure.

Only flows whose cookie names one of our features are ours: a flow of another cookie, or one
the switch learned itself, is never deleted. A desired flow whose key (table, priority, match)
is installed with the same cookie and the same instructions (compared in their wire form, which
Open vSwitch reports back exactly as it was sent) and timeouts is left alone.

A runtime change can be applied make-before-break (Diff.new first, then Diff.changes()): the adds
whose key nothing installed has only add a match, and in a change that moves traffic (an elastic
IP's remap) they are what lets the new path's packets through.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

from vpcflow.flows import cookies
from vpcflow.flows.core import Flow


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

    def changes(self) -> List[Flow]:
        """The adds that replace an installed flow of the same key (other actions or cookie)."""
        new = {id(f) for f in self.new}
        return [f for f in self.add if id(f) not in new]


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
