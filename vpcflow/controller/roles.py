"""Which controller instance is master of which switch. Pure: every instance computes the same
answer from the same membership, with no message between them.

    assign(["edge1", "host1", "host2"], ["ctl-a", "ctl-b"])  -> {"edge1": "ctl-b", "host1": "ctl-b", "host2": "ctl-a"}

Rendezvous (highest random weight) hashing with bounded loads: every (member, switch) pair has a
weight, a hash of the two, and the pairs, heaviest first, give the switch to the member while the
member has room. Room: every member ends with floor(N/M) or ceil(N/M) switches, balanced to within
one switch even with few switches, where plain rendezvous hashing is not.

When a member goes, the switches it had move to the others; a switch whose master stays keeps it
unless room changed under it (one that had been pushed off its first choice for room may go back
to it: a few percent of the switches, see tests/unit/test_roles.py). Both bridges of a switch go
together: the assignment is by switch name, the app looks each bridge's switch up.
"""
from __future__ import annotations

import hashlib
from typing import Dict, Iterable


def score(member: str, switch: str) -> int:
    """The weight of a member for a switch: 64 bits of SHA-256, the same on every machine."""
    return int.from_bytes(hashlib.sha256(f"{member}\x00{switch}".encode()).digest()[:8], "big")


def assign(switches: Iterable[str], members: Iterable[str]) -> Dict[str, str]:
    """{switch: member}; empty when there is no member."""
    switches, members = sorted(set(switches)), sorted(set(members))
    if not members:
        return {}
    low, extra = divmod(len(switches), len(members))  # `extra` members take low + 1
    load = {m: 0 for m in members}
    out: Dict[str, str] = {}
    # Every (switch, member) pair by weight, heaviest first: a switch goes with the first pair
    # of its whose member still has room.
    for _, s, m in sorted(((score(m, s), s, m) for s in switches for m in members), reverse=True):
        if s in out or load[m] > low or (load[m] == low and extra == 0):
            continue
        if load[m] == low:  # one of the `extra` places above the floor
            extra -= 1
        load[m] += 1
        out[s] = m
    return out
