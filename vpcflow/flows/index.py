"""Look-ups the feature compilers share, computed once per deployment."""
from __future__ import annotations

import collections
import dataclasses
import socket
import zlib
from typing import Dict, List, Optional, Tuple

from netaddr import IPAddress

from vpcflow.flows.assemble import Shared
from vpcflow.flows.core import SetField, one_item
from vpcflow.flows.matches import network_ipv4
from vpcflow.layered import Layered
from vpcflow.topology.model import EDGE, HOST, Deployment, Interface, Network, Switch, embed_text


ZONE_SLOTS = 65535


def _zone_hash(name: str) -> int:
    return zlib.crc32(name.encode()) % ZONE_SLOTS + 1


def stable_ids(keys) -> Dict[object, int]:
    """A 32-bit id (never 0) for each key, from the key itself (its repr): an id stays while
    other keys come and go. The rare collision goes, in the keys' order, to the next free id."""
    named = sorted((repr(k), k) for k in set(keys))
    taken, ids = set(), {}
    for text, key in named:
        i = zlib.crc32(text.encode()) or 1
        while i in taken:
            i = i % 0xFFFFFFFF + 1
        taken.add(i)
        ids[key] = i
    return ids


def _kind(key) -> str:
    """The kind of a cache key (Index.cached): the key itself, or a tuple's first item."""
    return key[0] if key.__class__ is tuple else key


class _once:
    """functools.cached_property without its lock, which Python 3.11 takes at each first access
    (a few properties of each of 100k endpoints: a twentieth of compiling the edge). Compiles
    run one at a time; two that raced would compute the same value."""

    def __init__(self, fn):
        self.fn, self.name, self.__doc__ = fn, fn.__name__, fn.__doc__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        # in the instance's dict, which shadows this (non-data) descriptor from then on
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One address of an attached interface: where it lives and how to reach it."""

    interface: Interface
    network: Network
    ip: IPAddress
    switch: Switch
    port: str  # the instance's port on its switch
    # set on the old binding of an address whose remap still drains (flows/follow.py): the id
    # that followed connections carry in reg4
    binding: Optional[int] = None

    @_once
    def ip_text(self) -> str:
        """str(ip), asked for by many flows: made once, when first asked."""
        return address_text(self.ip)

    @_once
    def dst_match(self) -> tuple:
        """Its (ipv4_dst, address) match item, interned, as a tuple to add to a match's head
        (matches.network_ipv4): made once for the flows toward it."""
        return one_item("ipv4_dst", self.ip_text)

    @_once
    def own_dst_match(self) -> tuple:
        """{reg0: its network's id, eth_type: IPv4, ipv4_dst: its address}, made once: the match
        of its network's route to it, of its local route, of its look-up and its delivery."""
        return network_ipv4(self.network.id) + self.dst_match

    @_once
    def outer_destination(self) -> SetField:
        """The action that sets the outer destination of a packet toward it: its substrate
        address, embed(its switch's prefix, its network, its address), made once for every
        route to it (its network's, and those of networks authorized to reach it)."""
        return SetField("tun_ipv6_dst", embed_text(self.switch.prefix, self.network.id, self.ip))

    @_once
    def src_match(self) -> tuple:
        """Its (ipv4_src, address) match item, as dst_match."""
        return one_item("ipv4_src", self.ip_text)


def address_text(ip: IPAddress) -> str:
    """str(ip) without netaddr's formatting, which is slow (an IPv4 address's text is made for
    every interface address of a big compile)."""
    if ip.version == 4:
        return socket.inet_ntoa(int(ip).to_bytes(4, "big"))
    return str(ip)


def _endpoints_of(dep: Deployment, iface: Optional[Interface]) -> Tuple[Endpoint, ...]:
    """The endpoints of an interface: one per address, where it is attached (none if it is not)."""
    if iface is None or iface.attach_to is None:
        return ()
    inst = dep.instances[iface.attach_to]
    sw, net = dep.switches[inst.switch], dep.networks[iface.network]
    return tuple(Endpoint(iface, net, ip, sw, inst.port) for ip in iface.ips)


class Index:
    def __init__(self, dep: Deployment, follows=()):
        """follows: draining remaps (flows.follow.Follow): their old bindings stay endpoints,
        reached by the connections recorded under them."""
        self.dep = dep
        self._endpoints: Optional[List[Endpoint]] = []
        self.by_interface: Dict[str, Tuple[Endpoint, ...]] = {}
        self.by_switch: Dict[str, List[Endpoint]] = collections.defaultdict(list)
        self.by_network: Dict[str, List[Endpoint]] = collections.defaultdict(list)
        for iface in dep.interfaces.values():
            eps = _endpoints_of(dep, iface)
            if eps:
                self.by_interface[iface.name] = eps
                for ep in eps:
                    self._add(ep)
        self.old_bindings = self._follow(follows)
        for ep in self.old_bindings:
            self._add(ep)
        self.edges = sorted((s for s in dep.switches.values() if s.role == EDGE), key=lambda s: s.name)
        self.hosts = sorted((s for s in dep.switches.values() if s.role == HOST), key=lambda s: s.name)
        self._zones: Dict[str, Dict[str, int]] = {}
        self._members = None
        self._by_kind: Dict[str, Dict[object, object]] = {}  # the cache, by kind
        self.replaced: Dict[str, Dict[object, object]] = {}  # the cache of the Index before a change (cached)
        self._late: Optional[Dict[object, object]] = None  # what it makes once sealed (seal)

    def _follow(self, follows) -> List[Endpoint]:
        """The old bindings of draining interface moves, as endpoints. An elastic IP's old holder
        is an endpoint anyway (its own interface): the edge and the NAT keep reaching it
        (flows/follow.py, flows/nat.py)."""
        self.follows = tuple(follows)
        self.elastic_follows = [f for f in follows if f.kind == "elastic_ip"]
        dep, out = self.dep, []
        for f in follows:
            if f.kind == "interface":
                iface = dataclasses.replace(dep.interfaces[f.old_interface], attach_to=f.old_instance)
                out.append(Endpoint(iface, dep.networks[f.network], IPAddress(f.ip), dep.switches[f.old_switch],
                                    f.old_port, binding=f.binding))
        return out

    def old_bindings_of(self, interface: str) -> List[Endpoint]:
        """The endpoints of an interface's draining remaps (a few at most, looked up rarely)."""
        return [ep for ep in self.old_bindings if ep.interface.name == interface]

    @classmethod
    def derived(cls, old: "Index", dep: Deployment, follows, interfaces) -> "Index":
        """The Index of dep, made from old's where dep differs from old.dep only in the named
        interfaces (and the follows): what a runtime change does. It costs what changed, not
        the size of the deployment; lists it does not change are old's own (never changed in
        place). Its caches start empty (flows/incremental.py carries some over)."""
        ix = cls.__new__(cls)
        ix.dep = dep
        ix._endpoints = None  # made when first asked for
        ix.by_interface = Layered(old.by_interface)  # (not a copy of 100k entries)
        removed = list(old.old_bindings)
        added = []
        for name in interfaces:
            removed += ix.by_interface.pop(name, ())
            eps = _endpoints_of(dep, dep.interfaces.get(name))
            if eps:
                ix.by_interface[name] = eps
                added += eps
        ix.old_bindings = ix._follow(follows)
        added += ix.old_bindings
        gone = {id(ep) for ep in removed}
        for attr, key_of in (("by_switch", lambda ep: ep.switch.name), ("by_network", lambda ep: ep.network.name)):
            table = collections.defaultdict(list, getattr(old, attr))
            fresh = collections.defaultdict(list)
            for ep in added:
                fresh[key_of(ep)].append(ep)
            for key in {key_of(ep) for ep in removed} | fresh.keys():
                table[key] = [ep for ep in table.get(key, ()) if id(ep) not in gone] + fresh.get(key, [])
            setattr(ix, attr, table)
        ix.edges, ix.hosts = old.edges, old.hosts
        touched = {ep.switch.name for ep in removed + added}
        # a copy, the touched switches' made again when asked (None, not taken out: a dict some
        # keys were deleted from is copied key by key, 10x slower; thousands of switches)
        ix._zones = dict(old._zones)
        for name in touched:
            ix._zones[name] = None
        ix._members = None
        if old._members is not None:
            groups = {g for ep in removed + added for g in ep.interface.security_groups}
            ix._members = collections.defaultdict(list, old._members)
            for g in groups:
                ix._members[g] = [ep for ep in old._members.get(g, ()) if id(ep) not in gone] + \
                    [ep for ep in added if g in ep.interface.security_groups]
        ix._by_kind = {}
        ix.replaced = {}
        ix._late = None
        return ix

    @property
    def endpoints(self) -> List[Endpoint]:
        """Every endpoint: each interface's addresses, then the old bindings."""
        if self._endpoints is None:
            self._endpoints = [ep for eps in self.by_interface.values() for ep in eps] + self.old_bindings
        return self._endpoints

    def cached(self, key, make):
        """make(), computed once per deployment: what every switch's compile asks again (a
        network's flows toward its endpoints, a group's addresses, ...). key: a kind (a
        string), or a tuple whose first item is its kind. The cache is kept by kind:
        flows/incremental.py carries a runtime change's untouched values over kind by kind,
        each kind's dict layered under the next Index's (layered.Layered: no copy, and the
        stored hashes of its keys, which tuples and addresses make costly, are not made again)."""
        kind = key[0] if key.__class__ is tuple else key  # (_kind written out: thousands of calls a change)
        values = self._by_kind.get(kind)
        if values is not None:
            try:
                return values[key]
            except KeyError:
                pass
        if self._late is None:
            if values is None:
                values = self._by_kind[kind] = {}
        else:  # sealed: made apart from what a derived Index lies over
            values = self._late
            if key in values:
                return values[key]
        value = values[key] = make()
        # a run made again after a change takes the equal flows of the run it replaces (also
        # a run kept with its look-up, as a tuple)
        previous = self.replaced_value(key) if self.replaced else None
        if previous is not None:
            pairs = zip(value, previous) if value.__class__ is previous.__class__ is tuple else ((value, previous),)
            for run, old in pairs:
                if run.__class__ is old.__class__ is Shared:
                    run.reuse(old)
        return value

    def seal(self):
        """Keep apart what is made from now on: a change derives the next Index from this one,
        whose cached values lie over this one's (layered.Layered, without a copy). A value made
        here later (a rule of the change asks, or a sync still running on this model compiles a
        switch) would show through there as carried over, though the change may have touched it."""
        if self._late is None:
            self._late = {}

    def replaced_value(self, key):
        """The value of this key in the Index a change derived this one from, where the change
        did not carry it over (it is made again), or None."""
        return self.replaced.get(_kind(key), {}).get(key) if self.replaced else None

    def keep(self, key, value):
        """Put a value into the cache (made here, or carried over from another Index)."""
        self._by_kind.setdefault(_kind(key), {})[key] = value

    def keep_kind(self, kind: str, values: Dict[object, object]):
        """Take over every value of one kind (a dict this Index then owns)."""
        self._by_kind[kind] = values

    def of_kind(self, kind: str) -> Dict[object, object]:
        return self._by_kind.get(kind, {})

    def forget(self, kind: str, keys):
        """Take these keys of one kind out of the cache."""
        values = self._by_kind.get(kind, {})
        for key in keys:
            values.pop(key, None)

    def _add(self, ep: Endpoint):
        self._endpoints.append(ep)
        self.by_switch[ep.switch.name].append(ep)
        self.by_network[ep.network.name].append(ep)

    def local_networks(self, switch: str) -> List[Network]:
        """Networks with at least one interface attached on this switch, in id order."""
        return self.cached(("local_networks", switch), lambda: self._local_networks(switch))

    def _local_networks(self, switch: str) -> List[Network]:
        nets = {ep.network.name: ep.network for ep in self.by_switch.get(switch, ())}
        return sorted(nets.values(), key=lambda n: n.id)

    def local_endpoints(self, switch: str, network: str) -> List[Endpoint]:
        """The endpoints of a network on a switch (what a host's own runs of that network read)."""
        return [ep for ep in self.by_switch.get(switch, ()) if ep.network.name == network]

    def local_interfaces(self, switch: str) -> List[Tuple[Interface, str]]:
        """(interface, port) attached on this switch, each once, in name order."""
        return self.cached(("local_interfaces", switch), lambda: self._local_interfaces(switch))

    def _local_interfaces(self, switch: str) -> List[Tuple[Interface, str]]:
        seen = {}
        for ep in self.by_switch.get(switch, ()):
            seen[ep.interface.name] = (ep.interface, ep.port)
        return [seen[k] for k in sorted(seen)]

    def zones(self, switch: str) -> Dict[str, int]:
        """The conntrack zone of each interface attached on a switch (1..65535).

        Derived from the interface's name, so an interface keeps its zone (and its connections)
        when others come and go; a rare collision on one switch is resolved in name order.
        """
        zones = self._zones.get(switch)
        if zones is None:
            taken, zones = set(), {}
            for iface, _ in sorted(self.local_interfaces(switch), key=lambda x: (_zone_hash(x[0].name), x[0].name)):
                z = _zone_hash(iface.name)
                while z in taken:
                    z = z % ZONE_SLOTS + 1
                taken.add(z)
                zones[iface.name] = z
            self._zones[switch] = zones
        return zones

    def group_class(self, groups: Tuple[str, ...]) -> int:
        """The id of an interface's security groups (in their order: the first rule decides) as
        registers carry it (pipeline.REG_SRC_CLASS, REG_DST_CLASS): every interface of the
        deployment's, so that an id depends on the groups alone."""
        return self.group_classes()[groups]

    def group_classes(self) -> Dict[Tuple[str, ...], int]:
        """Every interface's security groups (a class), with its id (group_class)."""
        return self.cached("group_classes", lambda: stable_ids(
            [i.security_groups for i in self.dep.interfaces.values()] + [ep.interface.security_groups
                                                                        for ep in self.old_bindings]))

    def members(self, group: str) -> List[Endpoint]:
        """Attached addresses of interfaces in a security group (indexed once: every group rule
        of every interface asks)."""
        if self._members is None:
            self._members = collections.defaultdict(list)
            for ep in self.endpoints:
                for g in ep.interface.security_groups:
                    self._members[g].append(ep)
        return self._members.get(group, [])

    @property
    def edge(self) -> Optional[Switch]:
        """The edge that carries traffic to the external network (the first by name)."""
        return self.edges[0] if self.edges else None
