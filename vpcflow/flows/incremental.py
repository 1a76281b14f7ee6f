"""Compile only the switches whose inputs changed: a runtime change touches a few of them.

What a host switch's flows are made of (flows/*.py) is, besides the switch itself:
- its networks: the networks of its interfaces and those authorized to talk with them, with
  every endpoint of each (interface, address, switch, port, binding);
- the security groups of those endpoints' interfaces, and the groups their rules name, with
  the addresses of each group's members (rules, conjunctions, the ARP responder's reach);
- what every switch reads: the switches (prefixes), authorizations, NAT, elastic IPs and the
  draining elastic-IP remaps.
An edge reads every endpoint. A switch is recompiled when one of its inputs differs between
the two models (compared by value: objects a change did not touch are the same objects, which
compare at once); the others keep their compiled flows.

The controller would use it so (controller/state.py):

    # in __init__:   self._switches = incremental.Compiled(None)
    # in _install:   self._switches, changed = self._switches.update(self.index)
    # in desired():  return self.generation, self._switches.switch(name, options).bridge(bridge)

`changed` names the switches whose flows may differ (None: all of them, as after a reload
that changed what every switch reads); the others need no sync.
"""
from __future__ import annotations

from typing import Dict, Optional, Set, Tuple

from vpcflow.flows.compiler import Options, SwitchFlows, compile_switch
from vpcflow.flows.index import Index


class Compiled:
    """The compiled switches of one model (Index), compiled when first asked."""

    def __init__(self, ix: Optional[Index], kept: Optional[Dict[Tuple[str, Options], SwitchFlows]] = None):
        self.ix = ix
        self._flows: Dict[Tuple[str, Options], SwitchFlows] = dict(kept or {})

    def switch(self, name: str, options: Options = Options()) -> SwitchFlows:
        key = (name, options)
        if key not in self._flows:
            self._flows[key] = compile_switch(self.ix, name, options)
        return self._flows[key]

    def update(self, new: Index) -> Tuple["Compiled", Optional[Set[str]]]:
        """The compiled switches of the new model, keeping those whose inputs did not change, and
        the names of the switches whose flows may differ (None: every switch)."""
        if self.ix is None:
            return Compiled(new), None
        changed = changed_switches(self.ix, new)
        if changed is None:
            return Compiled(new), None
        kept = {key: flows for key, flows in self._flows.items() if key[0] not in changed}
        return Compiled(new, kept), changed


def changed_switches(old: Index, new: Index) -> Optional[Set[str]]:
    """Switches of the new model whose flows may differ from the old one's (None: all).

    Found from what changed, not by comparing every switch's inputs: the objects of two models
    are compared by identity first (a runtime change replaces a few and keeps the others), so
    this costs a pass over the model's mappings, not a compile."""
    if _shared_inputs(old) != _shared_inputs(new):
        return None
    o, n = old.dep, new.dep
    interfaces = _changed_keys(o.interfaces, n.interfaces)
    instances = _changed_keys(o.instances, n.instances)
    networks = _changed_keys(o.networks, n.networks)
    groups = _changed_keys(o.security_groups, n.security_groups)
    if instances:  # the interfaces attached to them moved with them
        interfaces |= {i.name for dep in (o, n) for i in dep.interfaces.values() if i.attach_to in instances}
    for name in interfaces:
        for dep in (o, n):
            iface = dep.interfaces.get(name)
            if iface is not None:
                networks.add(iface.network)
        groups |= _membership_changes(o.interfaces.get(name), n.interfaces.get(name))
    bindings = _bindings(old) ^ _bindings(new)  # endpoints of draining remaps
    networks |= {network for network, _ in bindings}
    changed = set()
    if networks:
        changed |= {sw.name for sw in new.edges}  # an edge reads every endpoint
    for ix in (old, new):
        # a group's rules are read by the switches of every network with an interface in it or
        # in a group whose rules name it (the ARP responder, the conjunctions)
        named = _naming_groups(ix)
        reading = groups | {g for changed_group in groups for g in named.get(changed_group, ())}
        touched = networks | {ep.network.name for g in reading for ep in ix.members(g)}
        partners = _partners(ix)
        touched |= {p for t in touched for p in partners.get(t, ())}
        changed |= {ep.switch.name for t in touched for ep in ix.by_network.get(t, ())}
    return changed & set(n.switches)


def _shared_inputs(ix: Index):
    dep = ix.dep
    return (dep.switches, dep.authorizations, dep.nat, dep.elastic_ips, tuple(ix.elastic_follows))


def _changed_keys(old, new) -> Set[str]:
    changed = {k for k in old.keys() ^ new.keys()}
    changed.update(k for k, v in new.items() if k in old and old[k] is not v and old[k] != v)
    return changed


def _membership_changes(before, after) -> Set[str]:
    """The groups whose members' addresses differ (what group rules match): a move to another
    instance keeps them."""
    def addresses(iface):
        if iface is None or iface.attach_to is None:
            return {}
        return {g: frozenset(iface.ips) for g in iface.security_groups}
    a, b = addresses(before), addresses(after)
    return {g for g in a.keys() | b.keys() if a.get(g) != b.get(g)}


def _bindings(ix: Index) -> Set[tuple]:
    return {(ep.network.name, (ep.interface, ep.ip, ep.switch.name, ep.port, ep.binding))
            for ep in ix.endpoints if ep.binding is not None}


def _naming_groups(ix: Index) -> Dict[str, Set[str]]:
    """group -> the groups whose rules name it."""
    def make():
        out: Dict[str, Set[str]] = {}
        for name, sg in ix.dep.security_groups.items():
            for rule in sg.ingress + sg.egress:
                if rule.group:
                    out.setdefault(rule.group, set()).add(name)
        return out
    return ix.cached("incremental:naming_groups", make)


def _partners(ix: Index) -> Dict[str, Set[str]]:
    """network -> the networks authorized to talk with it (either way)."""
    def make():
        out: Dict[str, Set[str]] = {}
        for a in ix.dep.authorizations:
            out.setdefault(a.src, set()).add(a.dst)
            out.setdefault(a.dst, set()).add(a.src)
        return out
    return ix.cached("incremental:partners", make)
