"""The ARP responder (seed 004): the switch answers an instance's ARP request itself.

The answer carries the destination's dummy MAC, and exists only for destinations the instance
may reach: addresses of its network that its security groups and theirs let it talk to (either
way: a server must resolve its clients to answer them), and the network's gateway when its rules
concern addresses outside the network. Any other request is dropped and counted
(arp_unanswered); no ARP ever leaves the host.

One flow per (asker, destination) pair would make the responder most of a host's flows. Askers
that may reach the same destinations for the same reason (their network, their security groups,
whether they talk outside; their address too where a rule depends on it) form a class: port
security loads the asker's class into reg1, and the class's flows (one per destination) are the
same on every switch, built once; a destination every class of the network may reach is
answered by one flow of the network's instead. The reply itself is the same for every destination, since the
dummy MAC is computed from the requested address.
"""
from __future__ import annotations

from typing import Dict, Tuple

from vpcflow.flows.authz import groups_may_send, may_send, talks_outside
from vpcflow.flows.base import drop_object
from vpcflow.flows.assemble import Shared
from vpcflow.flows.core import ETH_ARP, Flow, Load, Move, Output, interned, one_item
from vpcflow.flows.index import Index, stable_ids
from vpcflow.flows.pipeline import REG_NETWORK, REG_SRC_CLASS
from vpcflow.layered import Layered
from vpcflow.topology.model import DUMMY_MAC_HIGH16, Switch

PRIORITY = 100
OWN_ADDRESS = drop_object("arp_own_address")


def computed_reply():
    """Turn an ARP request into its reply from the requested address at that address's dummy
    MAC (model.dummy_mac), sent back where it came from. The requested address is kept in the
    low bits of eth_src while arp_tpa is overwritten."""
    return _COMPUTED_REPLY


_COMPUTED_REPLY = (
    Move("eth_src", "eth_dst"),
    Move("arp_tpa", "eth_src", 32, 0, 0),
    Load(DUMMY_MAC_HIGH16, "eth_src", 32, 16),
    Load(2, "arp_op"),
    Move("arp_sha", "arp_tha"),
    Move("eth_src", "arp_sha"),
    Move("arp_spa", "arp_tpa"),
    Move("eth_src", "arp_spa", 32, 0, 0),
    Output("IN_PORT"),
)


def integration_flows(ix: Index, sw: Switch):
    classes = _classes(ix)
    for key in dict.fromkeys(classes.of_endpoint[(ep.interface.name, ep.ip_text)]
                             for ep in ix.by_switch.get(sw.name, ())):
        yield ix.cached(("arp_class", key), lambda: Shared(_class_flows(ix, classes, key)))
    for net in ix.local_networks(sw.name):
        yield ix.cached(("arp_net", net.name), lambda: Shared(_network_flows(ix, classes, net)))


def asker_class(ix: Index, iface_name: str, ip_text: str) -> int:
    """The class id port security loads into reg1 for an ARP request from this address."""
    classes = _classes(ix)
    return classes.ids[classes.of_endpoint[(iface_name, ip_text)]]


class _Classes:
    """Every endpoint's class key, the ids of the keys, and one endpoint of each (which decides
    the class's destinations)."""

    def __init__(self, ix: Index):
        self.of_endpoint: Dict[Tuple[str, str], tuple] = {}
        self.example = {}
        self.count: Dict[tuple, int] = {}  # endpoints per class: a change then knows, without a
        # pass over every endpoint, whether the set of classes changed
        key_of = _class_keys(ix)
        for ep in ix.endpoints:
            self._add(ep, key_of(ep))
        self.ids = stable_ids(self.example)
        self._by_network = None

    def _add(self, ep, key):
        self.of_endpoint[(ep.interface.name, ep.ip_text)] = key
        self.example.setdefault(key, ep)
        self.count[key] = self.count.get(key, 0) + 1

    def _drop(self, key):
        """One endpoint less in class key (None: the endpoint had no class)."""
        if key is None:
            return
        if self.count[key] == 1:
            del self.count[key]
        else:
            self.count[key] -= 1

    def of_network(self, network: str):
        """The class keys of a network's askers."""
        if self._by_network is None:
            self._by_network = {}
            for key in self.example:
                self._by_network.setdefault(key[0], []).append(key)
        return self._by_network.get(network, ())


_MISSING = object()


def carry_classes(old: Index, new: Index, interfaces, changed_groups):
    """new's classes from old's (flows/incremental.py): only the endpoints of the changed
    interfaces are classed again, and, where rules changed, those of the networks where a
    changed group has members. Where the set of classes changes, the ids are made again and a
    carried run whose class id changed is dropped. Returns the switches where an endpoint's
    class changed (its ARP requests load another id: port security), as (switch, network) pairs,
    None where not known."""
    prev = old.of_kind("arp_classes").get("arp_classes")
    if prev is None:
        return None
    c = _Classes.__new__(_Classes)
    # layered, not copied (a class per address where rules read addresses: tens of thousands)
    c.of_endpoint, c.example, c.count = Layered(prev.of_endpoint), Layered(prev.example), Layered(prev.count)
    touched = set()  # the classes that may have come or gone
    again = [ep for name in interfaces for ep in new.by_interface.get(name, ())] + new.old_bindings
    for ep in [ep for name in interfaces for ep in old.by_interface.get(name, ())] + old.old_bindings:
        key = c.of_endpoint.pop((ep.interface.name, ep.ip_text), None)
        c._drop(key)
        touched.add(key)
    if changed_groups:
        networks = {ep.network.name for g in changed_groups for ix in (old, new) for ep in ix.members(g)}
        again += [ep for net in networks for ep in new.by_network.get(net, ())]
    reclassed, key_of = set(), _class_keys(new)
    for ep in again:
        before = c.of_endpoint.get((ep.interface.name, ep.ip_text))
        key = key_of(ep)
        if key == before:
            continue  # (most endpoints of a network whose group's rule changed)
        c._drop(before)
        c._add(ep, key)
        touched.update((before, key))
        # (a key names its network and groups: where the keys stay, none changes today; this
        # does not lean on it)
        reclassed.add((ep.switch.name, ep.network.name))
    touched.discard(None)
    if all((k in c.count) == (k in prev.ids) for k in touched):  # the same classes
        c.ids, c.example, c._by_network = prev.ids, prev.example, prev._by_network
    else:
        c.count = c.count.flat()
        c.example = {k: ep for k, ep in c.example.flat().items() if k in c.count}
        c._by_network = None
        c.ids = stable_ids(c.count)
        new.forget("arp_class", [k for k in new.of_kind("arp_class") if c.ids.get(k[1]) != prev.ids.get(k[1])])
    new.keep("arp_classes", c)
    return reclassed


def same_class_ids(old: Index, new: Index) -> bool:
    """Whether new's ARP classes have old's ids (both made)."""
    a, b = old.of_kind("arp_classes").get("arp_classes"), new.of_kind("arp_classes").get("arp_classes")
    return a is not None and b is not None and a.ids is b.ids


def _classes(ix: Index) -> _Classes:
    return ix.cached("arp_classes", lambda: _Classes(ix))


def _class_keys(ix: Index):
    """_class_key, asked once per (network, groups) where the groups decide: every endpoint of a
    network where a rule changed is classed again (a thousand of them at 100k interfaces)."""
    reasons = {}  # (network, groups) -> its class key, or None where the address decides

    def key_of(ep) -> tuple:
        reason = (ep.network.name, ep.interface.security_groups)
        key = reasons.get(reason, _MISSING)
        if key is _MISSING:
            key = _class_key(ix, ep)
            reasons[reason] = key if len(key) == 3 else None
            return key
        return key or _class_key(ix, ep)
    return key_of


def _class_key(ix: Index, ep) -> tuple:
    """Why the asker may reach what it may: its network and groups (and whether it talks
    outside), and its address where a rule depends on it."""
    net, groups = ep.network, ep.interface.security_groups
    outside = talks_outside(ix, ep.interface, net.cidr)
    if _decided(ix, net, groups):
        return (net.name, groups, outside)
    return (net.name, groups, outside, ep.ip_text)


def _class_flows(ix: Index, classes: _Classes, key):
    """What the class's askers may resolve that not every asker of their network may."""
    cid = classes.ids[key]
    example = classes.example[key]
    common = _common(ix, classes, example.network)
    request = interned(((REG_SRC_CLASS, cid), ("eth_type", ETH_ARP), ("arp_op", 1)))
    obj = f"net{example.network.id}:class{cid}"
    for text in _targets(ix, example):
        if text not in common:
            yield Flow("arp_responder", PRIORITY, request + one_item("arp_tpa", text), computed_reply(), "arp", obj)


def _common(ix: Index, classes: _Classes, net) -> frozenset:
    """The destinations every asker of the network may resolve, whatever its class: answered by
    one flow each (the network's), not one per class."""
    def make():
        reach = [set(_targets(ix, classes.example[key])) for key in classes.of_network(net.name)]
        return frozenset(set.intersection(*reach)) if reach else frozenset()
    return ix.cached(("arp_common", net.name), make)


def _network_flows(ix: Index, classes: _Classes, net):
    request = interned(((REG_NETWORK, net.id), ("eth_type", ETH_ARP), ("arp_op", 1)))
    for text in sorted(_common(ix, classes, net)):
        yield Flow("arp_responder", PRIORITY, request + one_item("arp_tpa", text), computed_reply(), "arp",
                   f"net{net.id}:all")
    # A request for one's own address (a gratuitous ARP or a duplicate check) gets no answer.
    # (drop_flow's {reg0, **arp(arp_spa=address, arp_tpa=address)}, from parts interned once)
    head = interned(((REG_NETWORK, net.id), ("eth_type", ETH_ARP)))
    for ep in ix.by_network[net.name]:
        text = ep.ip_text
        yield Flow("arp_responder", PRIORITY + 10, head + one_item("arp_spa", text) + one_item("arp_tpa", text), (),
                   "drop", OWN_ADDRESS)


def _targets(ix: Index, src) -> tuple:
    """The addresses (text, in address order) that src may ask for: those of its network it may
    talk to either way, and the gateway when it talks outside. Its own address is among them
    when its groups let it reach their members: a request for it is dropped before (PRIORITY + 10).

    Askers whose groups decide alone (no rule that depends on addresses) share one answer."""
    net, mine = src.network, src.interface.security_groups
    outside = talks_outside(ix, src.interface, net.cidr)
    if _decided(ix, net, mine):
        return ix.cached(("arp_targets", net.name, mine, outside), lambda: _for_address(ix, src, outside))
    return _for_address(ix, src, outside)


def _decided(ix: Index, net, mine) -> bool:
    """Whether the groups alone decide, for every peer of the network, if an asker of these groups
    may reach it (no rule that depends on the asker's address)."""
    def make():
        for groups in _peers_by_groups(ix, net.name):
            verdicts = (_within(groups_may_send(ix, mine, groups), net.cidr),
                        _within(groups_may_send(ix, groups, mine), net.cidr))
            if True not in verdicts and verdicts != (False, False):
                return False
        return True
    return ix.cached(("arp_decided", net.name, mine), make)


def _within(verdict, network_cidr):
    """A groups verdict (authz.groups_may_send) between two addresses of one network: a pair of
    ranges that holds for the whole network decides it, and so do pairs that none of its
    addresses meet."""
    if verdict is True or verdict is False:
        return verdict
    def covers(r):
        return r is None or network_cidr in r

    def meets(r):
        return r is None or network_cidr in r or r in network_cidr
    if any(covers(out) and covers(into) for out, into in verdict):
        return True
    if not any(meets(out) and meets(into) for out, into in verdict):
        return False
    return verdict


def _for_address(ix: Index, src, outside: bool):
    mine = src.interface.security_groups
    found = {}
    for groups, (peers, addresses) in _peers_by_groups(ix, src.network.name).items():
        there = _within(groups_may_send(ix, mine, groups), src.network.cidr)
        back = _within(groups_may_send(ix, groups, mine), src.network.cidr)
        if there is True or back is True:
            found.update(addresses)
        elif there is not False or back is not False:
            found.update((int(dst.ip), dst.ip_text) for dst in peers if may_send(ix, src, dst) or may_send(ix, dst, src))
    return _with_gateway(found, src.network, outside)


def _with_gateway(found: dict, net, outside: bool) -> tuple:
    if outside:
        found.setdefault(int(net.gateway_ip), str(net.gateway_ip))
    return tuple(found[k] for k in sorted(found))


def _peers_by_groups(ix: Index, network: str):
    """The network's endpoints by their interface's security groups: (the endpoints, their
    addresses as {value: text}, which every class that reaches them all takes as they are)."""
    def make():
        out = {}
        for ep in ix.by_network[network]:
            out.setdefault(ep.interface.security_groups, []).append(ep)
        return {groups: (eps, {int(ep.ip): ep.ip_text for ep in eps}) for groups, eps in out.items()}
    return ix.cached(("peers_by_groups", network), make)
