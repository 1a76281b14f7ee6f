"""Authorization (seed 004; security groups of seed 002), enforced at both ends, stateful.

Every packet from an instance goes through conntrack in the sending interface's zone
(egress_acl) and, at the receiving switch, in the receiving interface's zone (ingress_acl): each
end keeps its own record, so each end decides for itself and a forged packet from the substrate
meets the receiver's rules like any other.

Why conntrack and not learned reverse flows: conntrack follows TCP state (a stray ACK or a reply
with nothing behind it is +inv and dropped), relates ICMP errors to their connection, and lets
the verdict carry the rule that allowed it: the connection is committed with ct_mark = the rule's
id. Later packets of the connection match one flow, `ct_state=+est, ct_mark=RULE`, instead of the
rule tables: the cached verdict (requests by the marks of this direction's rules, replies by the
other's). Remove the rule and that flow goes with it: the connection's next request is judged
again, and dropped unless another rule allows it; its replies are dropped (never re-judged, or a
reply could re-commit the connection under a rule of the other direction).

Rules on an address range match the peer address directly. Rules on a group use a conjunctive
match (the local interface and port in one clause, the group's member addresses in the other), so
a group-to-group rule costs interfaces + members flows, not interfaces x members.
"""
from __future__ import annotations

import functools
import zlib
from typing import Dict, Iterable, List, Optional, Tuple

from netaddr import IPNetwork

from vpcflow.flows.base import drop_flow
from vpcflow.flows.core import ETH_IPV4, IPPROTO, Conjunction, Ct, Flow, Goto, ct_flags, flow, interned, one_item
from vpcflow.flows.assemble import Shared
from vpcflow.flows.index import Index, stable_ids
from vpcflow.flows.matches import cidr, ipv4
from vpcflow.flows.pipeline import REG_DST_CLASS, REG_DST_ZONE, REG_SRC_CLASS, REG_SRC_NETWORK, REG_SRC_ZONE
from vpcflow.flows.portmask import range_to_masks
from vpcflow.topology.model import Interface, PortRange, Rule, Switch

TCP_ACK = 0x010
ESTABLISHED = 200
STALE = 150
DIRECT = 100  # rules on an address range
CONJUNCTIVE = 90  # rules on a group
INVALID = 300

# per direction: (rules table, its next table, zone register, class register, the peer's address field)
DIRECTIONS = {
    "egress": ("egress_rules", "network_acl", REG_SRC_ZONE, REG_SRC_CLASS, "ipv4_dst"),
    "ingress": ("ingress_rules", "network_acl_in", REG_DST_ZONE, REG_DST_CLASS, "ipv4_src"),
}


def rule_name(group: str, direction: str, index: int) -> str:
    """How cookies and `vpcflow trace` name a rule: web/ingress[1]."""
    return f"{group}/{direction}[{index}]"


@functools.lru_cache(maxsize=1 << 14)  # asked for every interface the rule's group has on a switch
def rule_id(group: str, direction: str, rule: Rule) -> int:
    """The ct_mark of connections a rule allowed: from what the rule says, not where it stands,
    so that editing other rules leaves its connections alone. Never 0 (0 = no verdict)."""
    text = f"{group}/{direction}/{rule.proto}/{rule.ports}/{rule.cidr}/{rule.group}"
    return zlib.crc32(text.encode()) or 1


def rules_of(ix: Index, iface: Interface, direction: str) -> Iterable[Tuple[str, int, Rule]]:
    return _group_rules(ix, iface.security_groups, direction)


@functools.lru_cache(maxsize=1 << 14)  # a rule is asked for every interface of its groups: the search once
def l4_matches(rule: Rule) -> Tuple[Dict, ...]:
    """The protocol and port part of a rule, as one match per port value/mask pair (shared:
    do not change them)."""
    if rule.proto == "any":
        return ({},)
    base = {"ip_proto": IPPROTO[rule.proto]}
    if rule.proto == "icmp" or rule.ports is None:
        return (base,)
    field = f"{rule.proto}_dst"
    return tuple({**base, field: (value if mask == 0xFFFF else (value, mask))}
                 for value, mask in range_to_masks(rule.ports.lo, rule.ports.hi))


def integration_flows(ix: Index, sw: Switch):
    """The rules of the switch's interfaces: per class (the interface's security groups, in reg1
    or reg2) one run of its rules and one of the addresses its rules on groups name; one run of
    cached verdicts per group; each the same on every switch. (Two runs per class: an edit of a
    rule's ports or addresses remakes the small one, not the flow per member address.)"""
    yield ix.cached("authz:conntrack", lambda: Shared(_conntrack_flows()))
    classes = dict.fromkeys(iface.security_groups for iface, _ in ix.local_interfaces(sw.name))
    for groups in classes:
        yield ix.cached(("authz:class", groups), lambda: Shared(_class_flows(ix, groups)))
        yield ix.cached(("authz:members", groups), lambda: Shared(_class_members(ix, groups)))
    for group in dict.fromkeys(g for groups in classes for g in groups):
        yield ix.cached(("authz:verdicts", group), lambda: Shared(_verdicts(ix, group)))


def _is_conjunctive(f) -> bool:
    return bool(f.actions) and all(isinstance(a, Conjunction) for a in f.actions)


INGRESS_CONNTRACK = (Ct(REG_DST_ZONE, "ingress_rules"),)  # (also after follow's look-up of a received RST)


def _conntrack_flows():
    yield flow("egress_acl", 100, ipv4(), (Ct(REG_SRC_ZONE, "egress_rules"),), feature="authz", obj="conntrack")
    yield flow("ingress_acl", 100, ipv4(), INGRESS_CONNTRACK, feature="authz", obj="conntrack")
    for table, _, _, _, _ in DIRECTIONS.values():
        yield drop_flow(table, INVALID, {"ct_state": ct_flags("+trk+inv")}, "no_connection")
        # Open vSwitch's conntrack would take up a TCP segment with ACK set as a new connection;
        # a connection starts with a bare SYN, so such a segment is a reply with nothing behind it.
        yield drop_flow(table, INVALID, {"ct_state": ct_flags("+trk+new"), **ipv4(ip_proto=IPPROTO["tcp"]),
                                         "tcp_flags": (TCP_ACK, TCP_ACK)}, "no_connection")
        # A reply whose connection's rule is gone is not judged again: rules speak of requests.
        yield drop_flow(table, STALE, {"ct_state": ct_flags("+trk+est+rpl")}, "rule_removed")
    yield flow("network_acl", 1, {}, (Goto("follow"),), feature="authz", obj="same-network")
    yield flow("network_acl_in", 1, {REG_SRC_NETWORK: 0}, (Goto("deliver"),), feature="authz", obj="same-network")


def _group_rules(ix: Index, groups, direction: str):
    for group in groups:
        for index, rule in enumerate(getattr(ix.dep.security_groups[group], direction)):
            yield group, index, rule


def _class_flows(ix: Index, groups):
    """What an interface of these groups may send and receive: each rule committed under its
    id (ct_mark). Two rules may say the same thing (in two groups): the first one decides."""
    seen = set()
    for f in _class_rules(ix, groups):
        key = f.key  # made once: a frozenset of the match, for each of ~300k flows at 100k
        if key in seen and not _is_conjunctive(f):
            continue
        seen.add(key)
        yield f


def _class_rules(ix: Index, groups):
    local = ix.group_class(groups)
    conj_ids = _conj_ids(ix)
    for direction, (table, next_table, zone_reg, class_reg, peer_field) in DIRECTIONS.items():
        mine = {class_reg: local}
        for group, index, rule in _group_rules(ix, groups, direction):
            name = rule_name(group, direction, index)
            # Recirculate after the commit: a ct action without a table leaves the packet
            # untracked for the tables after it, and network_acl needs its ct_state.
            commit = (Ct(zone_reg, next_table, commit=True, mark=rule_id(group, direction, rule)),)
            if rule.group is None:
                yield from _direct(table, mine, peer_field, rule, commit, name)
            else:
                yield from _conjunctive(table, mine, rule, commit, name, conj_ids[(groups, name)])


def _class_members(ix: Index, groups):
    """Clause 2 of the class's rules on groups (their clause 1 and verdict: _class_rules)."""
    local = ix.group_class(groups)
    conj_ids = _conj_ids(ix)
    for direction, (table, _, _, class_reg, peer_field) in DIRECTIONS.items():
        group_rules = {}  # group -> (the first rule on it, the conjunctions of every rule on it)
        for group, index, rule in _group_rules(ix, groups, direction):
            if rule.group is not None:
                name = rule_name(group, direction, index)
                conj_id = conj_ids[(groups, name)]
                group_rules.setdefault(rule.group, (name, []))[1].append(Conjunction(conj_id, 2, 2))
        yield from _members(ix, table, {class_reg: local}, peer_field, group_rules)


def _verdicts(ix: Index, group: str):
    """Cached verdicts: a connection a present rule of the group allowed passes on one flow.
    Requests carry the mark of a rule of this direction; replies the mark of a rule of the
    other direction."""
    sg = ix.dep.security_groups[group]
    marks = {direction: {rule_id(group, direction, rule): rule_name(group, direction, index)
                         for index, rule in reversed(list(enumerate(getattr(sg, direction))))}
             for direction in DIRECTIONS}  # reversed: of two equal rules, the first names the mark
    for direction, (table, next_table, _, _, _) in DIRECTIONS.items():
        other = "ingress" if direction == "egress" else "egress"
        for state, rules in (("+trk+est-rpl", marks[direction]), ("+trk+est+rpl", marks[other]),
                             ("+trk+rel", {**marks[direction], **marks[other]})):
            for rid, name in sorted(rules.items()):
                yield flow(table, ESTABLISHED, {"ct_state": ct_flags(state), "ct_mark": rid},
                           (Goto(next_table),), feature="authz", obj=name)


def _direct(table, mine, peer_field, rule: Rule, commit, name):
    peer = {} if rule.cidr is None or rule.cidr.prefixlen == 0 else {peer_field: cidr(rule.cidr)}
    for l4 in l4_matches(rule):
        yield flow(table, DIRECT, {**mine, **ipv4(**peer, **l4)}, commit, feature="authz", obj=name)


def _conjunctive(table, mine, rule: Rule, commit, name, conj_id):
    """Clause 1 (the class and the port) and the verdict of a rule on a group; clause 2 comes
    from _members."""
    for l4 in l4_matches(rule):
        yield flow(table, CONJUNCTIVE, {**mine, **ipv4(**l4)}, (Conjunction(conj_id, 1, 2),),
                   feature="authz", obj=name)
    yield flow(table, CONJUNCTIVE, {"conj_id": conj_id, **ipv4()}, commit, feature="authz", obj=name)


def _members(ix: Index, table, mine, peer_field, group_rules):
    """Clause 2 of the class's group rules: one flow per member address, with the conjunction
    of every rule of the class on a group the address is in, named after the first of those
    rules. Built per address once, rather than one flow per (rule, member) merged afterwards."""
    # Every conjunction here is clause 2 of 2: its id tells them apart and orders them.
    actions_of = {group: _by_id({c.id: c for c in conjunctions}) for group, (_, conjunctions) in group_rules.items()}
    by_ip = {}
    for group, (name, _) in group_rules.items():  # in the order the rules came
        for ip in _member_ips(ix, group):
            entry = by_ip.get(ip)
            if entry is None:
                by_ip[ip] = (name, [group])
            else:
                entry[1].append(group)
    base = interned(tuple(mine.items()) + (("eth_type", ETH_IPV4),))
    for ip, (name, groups) in by_ip.items():
        if len(groups) == 1:
            actions = actions_of[groups[0]]  # shared by the group's members
        else:
            actions = _by_id({c.id: c for g in groups for c in actions_of[g]})
        yield Flow(table, CONJUNCTIVE, base + one_item(peer_field, ip), actions, "authz", name)


def _conj_ids(ix: Index) -> Dict[tuple, int]:
    """(groups, rule name) -> the conjunction id of that class's rule on a group: every class of
    the deployment's, so that the ids of the classes on one switch never meet."""
    def make():
        keys = []
        for groups in {i.security_groups for i in ix.dep.interfaces.values()}:
            for direction in DIRECTIONS:
                keys += [(groups, rule_name(g, direction, index))
                         for g, index, rule in _group_rules(ix, groups, direction) if rule.group is not None]
        return stable_ids(keys)
    return ix.cached("authz:conj_ids", make)


def _by_id(conjunctions: Dict[int, Conjunction]) -> Tuple[Conjunction, ...]:
    return tuple(conjunctions[k] for k in sorted(conjunctions))


def _member_ips(ix: Index, group: str) -> List[str]:
    """The group's member addresses, each once, in address order (netaddr's: version, then value),
    as text."""
    def make():
        texts = {(ep.ip.version, int(ep.ip)): ep.ip_text for ep in ix.members(group)}  # netaddr's hash and < are slow
        return [texts[k] for k in sorted(texts)]
    return ix.cached(("member_ips", group), make)


# --- reachability, for the ARP responder ------------------------------------------------------
def _ports_overlap(a: Optional[PortRange], b: Optional[PortRange]) -> bool:
    return a is None or b is None or a.overlaps(b)


def _compatible(out: Rule, into: Rule) -> bool:
    if "any" in (out.proto, into.proto):
        return True
    return out.proto == into.proto and (out.proto == "icmp" or _ports_overlap(out.ports, into.ports))


def may_send(ix: Index, src, dst) -> bool:
    """Some connection from src to dst would pass both src's egress and dst's ingress rules."""
    verdict = groups_may_send(ix, src.interface.security_groups, dst.interface.security_groups)
    if verdict is True or verdict is False:
        return verdict
    return any((out is None or dst.ip in out) and (into is None or src.ip in into) for out, into in verdict)


def groups_may_send(ix: Index, out_groups, in_groups):
    """Whether an interface in out_groups may send to one in in_groups: True, False, or, when it
    depends on their addresses, the (egress, ingress) address ranges of which one pair must hold
    (None: any address). Interfaces share a few combinations of groups: computed once each."""
    key = ("may_send", out_groups, in_groups)
    return ix.cached(key, lambda: _noted(ix, key, out_groups + in_groups, lambda: _groups_verdict(ix, out_groups, in_groups)))


def _noted(ix: Index, key, groups, make):
    """make(), its cache key noted under each group whose rules it reads (verdicts_reading)."""
    notes = ix.cached("verdicts:by_group", dict)
    for g in groups:
        notes.setdefault(g, set()).add(key)
    return make()


def verdicts_reading(ix: Index, groups) -> set:
    """The cache keys of the verdicts made from these groups' rules (groups_may_send,
    talks_outside): a change of rules finds them without a pass over every verdict (tens of
    thousands at 100k interfaces). Some may no longer be in the cache: the notes are shared by
    the Indexes derived one from another (flows/incremental.py), and only grow by keys made."""
    notes = ix.of_kind("verdicts:by_group").get("verdicts:by_group", {})
    return set().union(*(notes.get(g, ()) for g in groups))


def _groups_verdict(ix: Index, out_groups, in_groups):
    sgs = ix.dep.security_groups
    outs = [r for g in out_groups for r in sgs[g].egress if r.group is None or r.group in in_groups]
    ins = [r for g in in_groups for r in sgs[g].ingress if r.group is None or r.group in out_groups]
    ranges = []
    for out in outs:
        for into in ins:
            if _compatible(out, into):
                pair = (_address_range(out), _address_range(into))
                if pair == (None, None):
                    return True
                ranges.append(pair)
    return tuple(ranges) or False


def _address_range(rule: Rule):
    """The addresses a rule's peer must be in, None when the rule does not depend on them."""
    if rule.group is not None or rule.cidr is None or (rule.cidr.prefixlen == 0 and rule.cidr.version == 4):
        return None
    return rule.cidr


def talks_outside(ix: Index, iface: Interface, network_cidr: IPNetwork) -> bool:
    """Some rule of the interface concerns addresses outside its network, or its network may talk
    to another one: it needs its gateway."""
    key = ("talks_outside", iface.network, iface.security_groups, network_cidr)
    return ix.cached(key, lambda: _noted(ix, key, iface.security_groups,
                                         lambda: _talks_outside(ix, iface.network, iface.security_groups, network_cidr)))


def _talks_outside(ix: Index, network: str, groups, network_cidr: IPNetwork) -> bool:
    """talks_outside of an interface of this network and these security groups (all it reads)."""
    if network in ix.cached("authorized_networks", lambda: {n for a in ix.dep.authorizations for n in (a.src, a.dst)}):
        return True
    for direction in ("egress", "ingress"):
        for _, _, rule in _group_rules(ix, groups, direction):
            if rule.cidr is not None and rule.cidr not in network_cidr:
                return True
    return False
