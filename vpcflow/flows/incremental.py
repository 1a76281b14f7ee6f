"""Compile only the switches whose inputs changed: a runtime change touches a few of them.

What a host switch's flows are made of (flows/*.py) is, besides the switch itself:
- its networks: the networks of its interfaces and those authorized to talk with them, with
  every endpoint of each (interface, address, switch, port, binding);
- the security groups of those endpoints' interfaces, and the groups their rules name, with
  the addresses of each group's members (rules, conjunctions, the ARP responder's reach);
- what every switch reads: the switches (prefixes), authorizations, NAT and which addresses the
  elastic IPs are; an elastic IP remapped (or its drain ending) concerns the switches of its old
  and new holders and the edge only.
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

import dataclasses
import itertools
import weakref
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

from vpcflow.flows import arp, authz, nat
from vpcflow.flows.compiler import Options, SwitchFlows, compile_switch
from vpcflow.flows.index import Index
from vpcflow.layered import Layered
from vpcflow.topology.model import Deployment, same_elastic_addresses


class Compiled:
    """The compiled switches of one model (Index), compiled when first asked."""

    def __init__(self, ix: Optional[Index], kept: Optional[Dict[Tuple[str, Options], SwitchFlows]] = None,
                 previous: Optional[Dict[Tuple[str, Options], SwitchFlows]] = None):
        """previous: the flows, before the change, of the switches it may have changed: their
        compile checks only what is new against them (compiler.compile_switch)."""
        self.ix = ix
        # (a switch to compile again is None, not taken out: a dict keys were deleted from is
        # copied key by key, 10x slower than one without; thousands of switches at each change)
        self._flows: Dict[Tuple[str, Options], Optional[SwitchFlows]] = dict(kept or {})
        self._previous = previous or {}
        self._options = {options for _, options in self._flows}  # (what switches were compiled with)

    def switch(self, name: str, options: Options = Options()) -> SwitchFlows:
        key = (name, options)
        flows = self._flows.get(key)
        if flows is None:
            self._options.add(options)
            flows = self._flows[key] = compile_switch(self.ix, name, options, self._previous.pop(key, None))
        return flows

    def update(self, new: Index) -> Tuple["Compiled", Optional[Set[str]]]:
        """The compiled switches of the new model, keeping those whose inputs did not change, and
        the names of the switches whose flows may differ (None: every switch)."""
        if self.ix is None:
            return Compiled(new), None
        changed = changed_switches(self.ix, new)
        if changed is None:
            return Compiled(new), None
        out = Compiled(new)
        out._flows, out._options = dict(self._flows), set(self._options)  # (then the changed ones out)
        for name in changed:
            for options in self._options:
                flows = self._flows.get((name, options))
                if flows is not None:
                    out._previous[(name, options)] = flows
                    out._flows[(name, options)] = None
        return out, changed


@dataclasses.dataclass(frozen=True)
class Change:
    """The keys of each mapping of the model that a change replaced, added or removed."""

    interfaces: FrozenSet[str]
    instances: FrozenSet[str]
    networks: FrozenSet[str]
    groups: FrozenSet[str]


def change_between(o: Deployment, n: Deployment) -> Change:
    """Compared by identity first: a runtime change replaces a few objects and keeps the others,
    so this costs a pass over the model's mappings, not a comparison of every value; the
    interfaces a runtime change replaced it says itself (Deployment.with_interfaces)."""
    replaced = n.replaced_from(o)
    interfaces = replaced if replaced is not None else frozenset(_changed_keys(o.interfaces, n.interfaces))
    return Change(interfaces, *(frozenset(_changed_keys(getattr(o, name), getattr(n, name)))
                                for name in ("instances", "networks", "security_groups")))


def next_index(old: Optional[Index], dep: Deployment, follows=()) -> Index:
    """The Index of the model after a change. Where only interfaces and security groups changed
    (what a runtime change does), it is derived from the old one (Index.derived) and the shared
    runs and look-ups the change did not touch are carried over (carry_over): a change then costs
    what it touched. Otherwise it is built anew."""
    if old is None:
        return Index(dep, follows)
    o = old.dep
    # a remap (an elastic IP's holder) is read by the NAT plan alone, which is never carried over
    remaps = [f for f in follows if f.kind == "elastic_ip"]
    if (o.switches != dep.switches or o.authorizations != dep.authorizations or o.nat != dep.nat
            or eip_holders_changed(o, old.elastic_follows, dep, remaps) is None):
        return Index(dep, follows)
    change = change_between(o, dep)
    if change.instances or change.networks:
        return Index(dep, follows)
    old.seal()  # (what it makes from now on must not show through the new one's kinds)
    new = Index.derived(old, dep, follows, change.interfaces)
    new.change = (weakref.ref(old), change)  # (weakly: each Index would keep the one before alive)
    carry_over(old, new, change)
    return new


def changed_switches(old: Index, new: Index) -> Optional[Set[str]]:
    """Switches of the new model whose flows may differ from the old one's (None: all).

    Found from what changed, not by comparing every switch's inputs."""
    if _shared_inputs(old) != _shared_inputs(new):
        return None
    o, n = old.dep, new.dep
    holders = eip_holders_changed(o, old.elastic_follows, n, new.elastic_follows)
    if holders is None:
        return None
    known = getattr(new, "change", None)
    change = known[1] if known is not None and known[0]() is old else change_between(o, n)
    interfaces, instances = set(change.interfaces), set(change.instances)
    networks, groups = set(change.networks), set(change.groups)
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
    if networks or holders:
        changed |= {sw.name for sw in new.edges}  # an edge reads every endpoint and elastic IP
    # an elastic IP's holder is read by its own switch's NAT flows alone (flows/nat.py)
    changed |= _switches_of(holders, old, new)
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


def _switches_of(interfaces, *indexes: Index) -> Set[str]:
    """The switches where these interfaces are attached in any of the indexes."""
    return {ep.switch.name for name in interfaces for ix in indexes for ep in ix.by_interface.get(name, ())}


def _shared_inputs(ix: Index):
    dep = ix.dep
    return (dep.switches, dep.authorizations, dep.nat)


def eip_holders_changed(o: Deployment, o_follows, n: Deployment, n_follows) -> Optional[Set[str]]:
    """The interfaces whose holding of an elastic IP changed between two models (a remap moved
    one, or a remap's drain began or ended: its old holder), or None where the elastic IPs
    themselves differ (every switch reads which addresses they are)."""
    a_eips, b_eips = o.elastic_ips, n.elastic_ips
    if not same_elastic_addresses(a_eips, b_eips):
        return None
    names = {e.interface for a, b in zip(a_eips, b_eips) if a is not b and a != b for e in (a, b)}
    names |= {f.old_interface for f in set(o_follows) ^ set(n_follows)}
    return names


_MISSING = object()


def _changed_keys(old, new) -> Set[str]:
    if old is new:  # a runtime change replaces one mapping and keeps the others
        return set()
    changed = {k for k, v in new.items() if old.get(k, _MISSING) is not v}
    if len(old) != len(new) - len(changed) + sum(1 for k in changed if k in old):
        changed.update(k for k in old if k not in new)
    return {k for k in changed if k not in old or k not in new or old[k] != new[k]}


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
    """What the follow flows of a network read of the draining remaps and pending cuts."""
    cuts = {(f.network, (f.kind, f.ip, f.order)) for f in ix.follows if f.kind == "cut"}
    return cuts | {(ep.network.name, (ep.interface, ep.ip, ep.switch.name, ep.port, ep.binding))
                   for ep in ix.old_bindings}


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


# --- carrying the old Index's work over ------------------------------------------------------------

def carry_over(old: Index, new: Index, change: Change):
    """Put into new's cache what old computed and the change cannot have changed: the Shared runs
    of untouched networks and classes, and the look-ups behind them. What each cached value
    depends on is said by its key (see the modules that make them); a kind not named here is
    never carried, only made again (the NAT plan is made from the old one: nat.Plan)."""
    o, n = old.dep, new.dep
    names = change.interfaces | {ep.interface.name for ep in old.old_bindings + new.old_bindings}
    moved = [ep for name in names for ix in (old, new) for ep in ix.by_interface.get(name, ())]
    moved += old.old_bindings + new.old_bindings
    networks = {ep.network.name for ep in moved}
    # (and those whose follow flows read a draining remap or a pending cut that came or went)
    networks |= {network for network, _ in _bindings(old) ^ _bindings(new)}
    switches = {ep.switch.name for ep in moved}
    local_changed = {(ep.switch.name, ep.network.name) for ep in moved} | _zones_changed(old, new, switches)
    rules_same = not change.groups
    membership = set()
    for name in change.interfaces:
        membership |= _membership_changes(o.interfaces.get(name), n.interfaces.get(name))
    groups_same = all(o.interfaces.get(name) is not None and n.interfaces.get(name) is not None
                      and o.interfaces[name].security_groups == n.interfaces[name].security_groups
                      for name in change.interfaces)
    holders = eip_holders_changed(o, old.elastic_follows, n, new.elastic_follows) or set()
    # the networks whose senders toward a touched partner came to have something to reach there,
    # or nothing any more (what a switch's own checks toward that partner read)
    partners = _partners(old)
    reach_changed = {a for b in networks for a in partners.get(b, ())
                     if _reaches(old, a, b) != _reaches(new, a, b)}
    # the networks whose ARP answers may change: the ARP responder reads addresses and groups,
    # not where an interface is (a move keeps them; an old binding repeats an address)
    arp_networks = set()
    for name in names:
        a, b = o.interfaces.get(name), n.interfaces.get(name)
        if (a is None or b is None or a.attach_to is None or b.attach_to is None or a.network != b.network
                or a.ips != b.ips or a.security_groups != b.security_groups):
            arp_networks |= {i.network for i in (a, b) if i is not None}
    # which groups each changed group's rules name, and where: the places number the conjunction
    # ids (authz._conj_ids), the names decide a class's clause 2
    named = {g: (_named_groups(o, g), _named_groups(n, g)) for g in change.groups}
    conj_same = groups_same and all(_places(a) == _places(b) for a, b in named.values())
    verdicts = _verdicts_again(old, new, authz.verdicts_reading(old, change.groups) if change.groups else ())
    reach_same = verdicts is not None and all(old.of_kind(key[0])[key] == value for key, value in verdicts)
    touched = _Touched(names, networks, switches, rules_same, membership, old,
                       groups_same, _switches_of(holders, old, new), conj_same, reach_changed,
                       change.groups, arp_networks, reach_same, [key for key, _ in verdicts or ()],
                       {g for g, (a, b) in named.items() if a != b}, local_changed)
    # kind by kind, layered over the old one with the keys its rule drops taken out, not copied
    # (every kind copied was 5 ms of a change at 100k interfaces; the small ones copied, and then
    # copied key by key once keys were deleted from them, still ~1.5 ms)
    # (old's own `replaced`, the change before, goes with old: a controller frees old after the
    # change's syncs; freed here, it was ~1.3 ms of a 100k move)
    for kind, values in list(old._by_kind.items()):  # (a rule may ask old for a look-up it caches)
        rule = _CARRY.get(kind)
        dropped = ALL if rule is None else rule(values, touched)
        new.replaced[kind] = values  # (Index.cached: what is made again reuses equal flows)
        if dropped is ALL:
            continue
        kept = Layered(values)
        for key in dropped:
            kept.pop(key)
        new.keep_kind(kind, kept)
    for key, value in verdicts if reach_same else ():  # (after the kinds are carried)
        new.keep(key, value)
    # an ARP class is decided by those verdicts (a port or protocol edit mostly keeps them)
    reclassed = arp.carry_classes(old, new, names, () if reach_same else change.groups)
    if reclassed is None or not arp.same_class_ids(old, new):  # port security loads an ARP asker's class id
        new.forget("own:port_security", list(new.of_kind("own:port_security")))
    else:
        new.forget("own:port_security", [("own:port_security", sw, embed, net) for sw, net in reclassed
                                          for embed in _EMBEDS])
    plan = old.of_kind("nat:plan").get("nat:plan")
    if plan is not None:  # where the moved interfaces place no block or forward, it keeps those
        new.keep("nat:plan", nat.Plan(new, plan, change.interfaces))


@dataclasses.dataclass(frozen=True)
class _Touched:
    """What a change touched, as the carry rules ask it."""

    names: Set[str]  # interfaces whose endpoints were made again
    networks: Set[str]
    switches: Set[str]
    rules_same: bool  # no security group changed
    membership: Set[str]  # groups whose members' addresses changed
    old: Index
    groups_same: bool  # no interface changed its groups (the ids of group classes stay)
    holder_switches: Set[str]  # switches of interfaces whose holding of an elastic IP changed
    conj_same: bool  # the conjunction ids stay: no interface changed its groups, no rule that names
    # a group came or went (what authz._conj_ids numbers)
    reach_changed: Set[str]  # networks whose reach toward a partner became empty or not
    rule_groups: FrozenSet[str]  # security groups whose rules changed
    arp_networks: Set[str]  # networks where an interface came, went, or changed addresses or groups
    reach_same: bool  # every verdict the ARP responder reads is the same (_verdicts_again)
    verdicts: list  # the keys of old's verdicts that read the changed groups' rules
    naming_changed: Set[str]  # changed groups whose rules on groups name others, or elsewhere
    local_changed: Set[Tuple[str, str]]  # (switch, network): where an endpoint of the network came,
    # went or changed on the switch, or one of its interfaces there changed its conntrack zone


def _zones_changed(old: Index, new: Index, switches) -> Set[Tuple[str, str]]:
    """(switch, network) of the interfaces that kept their switch but not their conntrack zone
    (Index.zones: another interface that came took it, a rare collision)."""
    out = set()
    for sw in switches:
        before, after = old.zones(sw), new.zones(sw)
        for name, zone in after.items():
            if before.get(name, zone) != zone:
                out.add((sw, new.dep.interfaces[name].network))
    return out


def _verdicts_again(old: Index, new: Index, keys) -> Optional[List[tuple]]:
    """(key, new value) of old's cached verdicts among these keys (those that read the rules of
    the changed groups: authz.verdicts_reading): which groups may send to which
    (authz.groups_may_send), whether an interface talks outside (authz.talks_outside). They are
    what the ARP responder reads of rules: where every one is the same, its classes and runs
    stay, and the new Index keeps each of them, so that it has every verdict the runs it carries
    were made from (to compare at the next change). None where a group they read is gone."""
    out, sgs = [], new.dep.security_groups
    for key in keys:
        if key not in old.of_kind(key[0]):
            continue  # (noted by an Index before old, and not asked since)
        if key[0] == "may_send":  # ("may_send", out_groups, in_groups)
            if not all(g in sgs for g in key[1] + key[2]):
                return None
            out.append((key, authz._groups_verdict(new, key[1], key[2])))
        else:  # ("talks_outside", network, groups, network cidr)
            if not all(g in sgs for g in key[2]):
                return None
            out.append((key, authz._talks_outside(new, key[1], key[2], key[3])))
    return out


def _reaches(ix: Index, a: str, b: str) -> bool:
    """Whether network a's senders have an endpoint of b to address (networks._reachable)."""
    net = ix.dep.networks[a]
    return any(ep.ip not in net.cidr for ep in ix.by_network.get(b, ()))


def _named_groups(dep: Deployment, group: str):
    """Which groups a group's rules name, and where (what a class's clause 2 reads of its rules), or
    None without it."""
    sg = dep.security_groups.get(group)
    if sg is None:
        return None
    return [(d, i, rule.group) for d in ("ingress", "egress") for i, rule in enumerate(getattr(sg, d))
            if rule.group is not None]


def _places(named):
    """Where a group's rules name a group (_named_groups without the names), or None without it."""
    return None if named is None else [(d, i) for d, i, _ in named]


# A rule: (the cached values of one kind, what the change touched) -> the keys that go, or ALL.
ALL = object()


# Where every switch was compiled (a running controller), a kind holds thousands of keys: a
# rule makes the keys that go from what the change touched, where their shape is known, rather
# than reading every key (tests/unit/test_incremental.py checks each against reading them all).

def _present(values, keys) -> Set[tuple]:
    return {key for key in keys if key in values}


def _of_networks(kind: str):
    # (kind, network)
    return lambda values, t: _present(values, ((kind, n) for n in t.networks))


def _of_switches(kind: str):
    # (kind, switch)
    return lambda values, t: _present(values, ((kind, sw) for sw in t.switches))


def _edge_accepts(values, t: _Touched):
    # (kind, network, edge)
    return _present(values, (("edge_accepts", n, e.name) for n in t.networks for e in t.old.edges))


def _of_pairs(kind: str, features=None):
    # (kind, network, other network[, feature]): either of them touched (its own, or a partner)
    def rule(values, t: _Touched):
        partners = _partners(t.old)
        pairs = {(n, n) for n in t.networks} | {pair for n in t.networks for p in partners.get(n, ())
                                                for pair in ((n, p), (p, n))}
        if features is None:
            return _present(values, ((kind,) + pair for pair in pairs))
        return _present(values, ((kind,) + pair + (f,) for pair in pairs for f in features))
    return rule


def _by_network_names(values, t: _Touched):
    # (key[2]: the names of the networks whose runs it holds; a few dozen keys)
    return [key for key in values if not t.networks.isdisjoint(key[2])]


def _arp_class(values, t: _Touched):
    if not t.reach_same:
        return ALL
    return [key for key in values if key[1][0] in t.arp_networks] if t.arp_networks else ()


def _arp_network(values, t: _Touched):
    # (thousands of keys at 100k interfaces, and most changes (a move, a remap) touch no network's)
    if not t.reach_same:
        return ALL
    return [key for key in values if key[1] in t.arp_networks] if t.arp_networks else ()


def _arp_peers(values, t: _Touched):
    # (its endpoints by groups: what the ARP responder reads of them, where the change keeps it)
    return [key for key in values if key[1] in t.arp_networks] if t.arp_networks else ()


def _rules_same(values, t: _Touched):
    return () if t.rules_same else ALL


def _groups_untouched(values, t: _Touched):
    # a verdict reads the rules of the groups in its key alone (authz.verdicts_reading finds
    # those of the changed groups; carry_over makes them again, _verdicts_again)
    if t.rules_same:
        return ()
    return [key for key in t.verdicts if key in values]


def _groups_same(values, t: _Touched):
    return () if t.groups_same else ALL


def _conj_same(values, t: _Touched):
    return () if t.conj_same else ALL


def _members_same(values, t: _Touched):
    # (kind, group)
    return _present(values, (("member_ips", g) for g in t.membership))


def _classes_with(t: _Touched, groups):
    """The classes (an interface's security groups, as a tuple) with any of these groups."""
    by_group = t.old.cached("group_classes:by_group", lambda: _classes_by_group(t.old))
    return {c for g in groups for c in by_group.get(g, ())}


def _classes_by_group(ix: Index) -> Dict[str, List[tuple]]:
    out: Dict[str, List[tuple]] = {}
    for c in ix.group_classes():
        for g in set(c):
            out.setdefault(g, []).append(c)
    return out


def _authz_class(values, t: _Touched):
    # its rules and the ids of its class and conjunctions
    if not t.conj_same:  # (which implies that no interface changed its groups: the class ids)
        return ALL
    if not t.rule_groups:
        return ()
    return _present(values, (("authz:class", c) for c in _classes_with(t, t.rule_groups)))


def _authz_members(values, t: _Touched):
    # the ids of its class and conjunctions, which groups its rules name (and where), and the
    # addresses of those groups
    if not t.conj_same:
        return ALL
    if not t.naming_changed and not t.membership:
        return ()
    naming = _naming_groups(t.old)
    groups = set(t.naming_changed) | {g for m in t.membership for g in naming.get(m, ())}
    return _present(values, (("authz:members", c) for c in _classes_with(t, groups)))


def _verdicts(values, t: _Touched):
    # the rules of its group: (kind, group)
    return _present(values, (("authz:verdicts", g) for g in t.rule_groups))


def _nat_edge(values, t: _Touched):
    # (edge, object, the interfaces whose place decides it): a remap changes its elastic IP's
    # key itself (who holds it is in the object)
    names = t.names
    return [key for key in values if not names.isdisjoint(key[3])]


def _always(values, t: _Touched):
    return ()


# A host's own flows, by feature and network (compiler._own; key: kind, switch, outer source
# embedded, network or None for what the switch has once). Each reads the switch's own endpoints
# of its network (their zones and group classes) and what is said here. There are thousands of
# them where every switch was compiled (5 per feature and host): the keys that go are made from
# what changed, not found by reading every key.

_EMBEDS = (False, True)


def _own_changed(kind: str, t: _Touched):
    """The keys of the (switch, network) pairs where the switch's own endpoints changed, and of
    what the switches they touched have once."""
    for sw, net in t.local_changed:
        for embed in _EMBEDS:
            yield (kind, sw, embed, net)
    for sw in t.switches:
        for embed in _EMBEDS:
            yield (kind, sw, embed, None)


def _own_of_networks(kind: str, t: _Touched, networks, embeds):
    """The keys of these networks at every switch that serves them (a key is made where its
    switch serves its network, and goes when that changes: local_changed)."""
    for net in networks:
        for sw in {ep.switch.name for ep in t.old.by_network.get(net, ())}:
            for embed in embeds:
                yield (kind, sw, embed, net)


def _own_port_security(values, t: _Touched):
    # and the ARP asker classes of its endpoints, which rules decide (carry_over drops the
    # (switch, network) pairs where one changed, or every one where the ids changed)
    if not t.groups_same:
        return ALL
    return _present(values, _own_changed("own:port_security", t))


def _own_overlay(values, t: _Touched):
    # and, where the outer source is embedded (nothing shared), every endpoint of its network
    if not t.groups_same:
        return ALL
    kind = "own:overlay"
    return _present(values, itertools.chain(_own_changed(kind, t), _own_of_networks(kind, t, t.networks, (True,))))


def _own_networks(values, t: _Touched):
    # and the switch's own endpoints of each network authorized to talk with its network, and
    # whether the network's senders have endpoints to reach there; where the outer source is
    # embedded (nothing shared), every endpoint of those networks
    if not t.groups_same:
        return ALL
    kind, partners = "own:networks", _partners(t.old)
    of_partners = ((kind, sw, embed, net) for sw, p in t.local_changed for net in partners.get(p, ())
                   for embed in _EMBEDS)
    embedded = t.networks | {n for net in t.networks for n in partners.get(net, ())}
    return _present(values, itertools.chain(_own_changed(kind, t), of_partners,
                                            _own_of_networks(kind, t, embedded, (True,)),
                                            _own_of_networks(kind, t, t.reach_changed, (False,))))


def _own_nat(values, t: _Touched):
    # and the elastic IPs its interfaces hold (or held, while a remap drains)
    kind = "own:nat"
    holders = ((kind, sw, embed, net) for sw in t.holder_switches
               for net in [None] + [n.name for n in t.old.local_networks(sw)] for embed in _EMBEDS)
    return _present(values, itertools.chain(_own_changed(kind, t), holders))


_CARRY = {
    "follow": _of_networks("follow"), "accepts": _of_networks("accepts"),
    "arp_net": _arp_network,
    "arp_common": _arp_network,
    "peers_by_groups": _arp_peers, "edge_accepts": _edge_accepts,
    "edge_accepts:runs": _by_network_names,
    "edge_accepts:chunks": _always,  # (the networks, in chunks: a change of them builds a new Index)
    "routes": _of_pairs("routes", ("overlay", "authz")), "reachable": _of_pairs("reachable"),
    "local_networks": _of_switches("local_networks"), "local_interfaces": _of_switches("local_interfaces"),
    "group_classes:by_group": _groups_same,
    "arp_class": _arp_class, "arp_targets": _arp_network, "arp_decided": _arp_network,
    "may_send": _groups_untouched, "talks_outside": _groups_untouched, "authz:verdicts": _verdicts,
    "incremental:naming_groups": _rules_same,
    "verdicts:by_group": _always,  # (authz.verdicts_reading: shared, only grows by keys made)
    "group_classes": _groups_same, "authz:conj_ids": _conj_same,
    "authz:class": _authz_class, "authz:members": _authz_members, "member_ips": _members_same,
    "authz:conntrack": _always, "authorization_pairs": _always, "talking_by_network": _always,
    "authorized_networks": _always, "network_checks": _always, "incremental:partners": _always, "nat:edge": _nat_edge,
    "own:port_security": _own_port_security, "own:overlay": _own_overlay, "own:networks": _own_networks,
    "own:nat": _own_nat,
    "nat:edge:eip_runs": _always,  # (each Runs is kept with the members it was made of: nat.edge_flows)
    "base:host": _always,  # (the same on every host: the pipeline's tables)
    "underlay": _always,  # (a switch's own: a change of the switches builds a new Index)
    "finish:overlaps": _always,  # it says itself which runs it counts (assemble.Overlaps)
    "finish:distinct": _always,  # it holds the runs it counts (assemble.Distinct)
}
