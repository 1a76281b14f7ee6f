"""The deployment model: immutable, validated values.

Everything downstream (compiler, controller, CLI) reads these; nothing mutates them. A runtime
change (an API call, a reload) produces a new `Deployment` with `dataclasses.replace`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import socket
import weakref
from types import MappingProxyType
from typing import Mapping, Optional, Tuple

from netaddr import IPAddress, IPNetwork

from vpcflow.layered import Layered, Overlaid

HOST = "host"
EDGE = "edge"
PROTOCOLS = ("tcp", "udp", "icmp", "any")

# Port names are Linux interface names inside the switch's namespace.
DEFAULT_BRIDGE = "br-int"
DEFAULT_UNDERLAY_BRIDGE = "br-ul"
DEFAULT_UNDERLAY_PORT = "sub0"
TUNNEL_PORT = "vpc-tun"


def frozen_map(items) -> Mapping:
    return MappingProxyType(dict(items))


@dataclasses.dataclass(frozen=True)
class PortRange:
    lo: int
    hi: int

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"

    def __contains__(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def overlaps(self, other: "PortRange") -> bool:
        return self.lo <= other.hi and other.lo <= self.hi


@dataclasses.dataclass(frozen=True)
class Uplink:
    port: str
    gateway_ip: IPAddress
    ip: IPAddress
    mac: str  # the edge's own MAC on the uplink (derived when absent)


@dataclasses.dataclass(frozen=True)
class Switch:
    name: str
    role: str  # HOST or EDGE
    dpid: int
    prefix: IPNetwork  # substrate IPv6 range this switch owns
    uplink: Optional[Uplink] = None  # edges only
    bridge: str = DEFAULT_BRIDGE
    underlay_bridge: str = DEFAULT_UNDERLAY_BRIDGE
    underlay_port: str = DEFAULT_UNDERLAY_PORT

    @property
    def substrate_address(self) -> IPAddress:
        """The switch's own substrate address: network id 0, IPv4 0.0.0.1 (ids start at 1)."""
        return IPAddress(int(self.prefix.network) | 1, 6)

    @property
    def underlay_dpid(self) -> int:
        """The underlay bridge is a second datapath of the same switch: top bit set."""
        return self.dpid | (1 << 63)


@dataclasses.dataclass(frozen=True)
class Network:
    name: str
    id: int  # 24-bit virtual network id (VNI)
    entity: str
    cidr: IPNetwork

    @property
    def gateway_ip(self) -> IPAddress:
        """The address instances use as their default gateway: the first host address."""
        return IPAddress(int(self.cidr.network) + 1)


@dataclasses.dataclass(frozen=True)
class Instance:
    name: str
    switch: str
    port: str


@dataclasses.dataclass(frozen=True)
class Interface:
    name: str
    network: str
    ips: Tuple[IPAddress, ...]
    mac: str
    security_groups: Tuple[str, ...] = ()
    source_dest_check: bool = True
    attach_to: Optional[str] = None
    delete_on_terminate: bool = False
    attachers: Tuple[str, ...] = ()

    @property
    def primary_ip(self) -> IPAddress:
        return self.ips[0]


@dataclasses.dataclass(frozen=True)
class Rule:
    proto: str  # one of PROTOCOLS
    ports: Optional[PortRange] = None  # tcp/udp only; None = every port
    cidr: Optional[IPNetwork] = None  # from/to an address range
    group: Optional[str] = None  # from_group/to_group


@dataclasses.dataclass(frozen=True)
class SecurityGroup:
    name: str
    ingress: Tuple[Rule, ...] = ()
    egress: Tuple[Rule, ...] = ()


@dataclasses.dataclass(frozen=True)
class Authorization:
    src: str  # network name
    dst: str  # network name
    proto: str
    ports: Optional[PortRange] = None


@dataclasses.dataclass(frozen=True)
class NatBlock:
    owner: str  # a host switch or an interface
    ip: IPAddress
    ports: PortRange
    fixed: bool = False


@dataclasses.dataclass(frozen=True)
class Forward:
    public_ip: IPAddress
    public_port: int
    interface: str
    port: int
    proto: str  # tcp or udp


@dataclasses.dataclass(frozen=True)
class Nat:
    public_ips: Tuple[IPAddress, ...] = ()
    reserved_ports: Tuple[PortRange, ...] = ()
    block_bits: int = 8
    blocks: Tuple[NatBlock, ...] = ()  # fixed ones as written, then the allocated ones
    forwards: Tuple[Forward, ...] = ()


@dataclasses.dataclass(frozen=True)
class ElasticIp:
    ip: IPAddress
    interface: str


@dataclasses.dataclass(frozen=True)
class Deployment:
    switches: Mapping[str, Switch]
    networks: Mapping[str, Network]
    instances: Mapping[str, Instance]
    interfaces: Mapping[str, Interface]
    # A factory: dataclasses reject an unhashable default such as a mappingproxy.
    security_groups: Mapping[str, SecurityGroup] = dataclasses.field(default_factory=lambda: frozen_map({}))
    authorizations: Tuple[Authorization, ...] = ()
    nat: Nat = Nat()
    elastic_ips: Tuple[ElasticIp, ...] = ()

    # Derived look-ups. They are cheap to recompute and keep the value itself plain.
    def switch_by_dpid(self, dpid: int) -> Optional[Switch]:
        for sw in self.switches.values():
            if sw.dpid == dpid:
                return sw
        return None

    def attached_interfaces(self):
        """(interface, instance, switch) for every interface attached to an instance."""
        for iface in self.interfaces.values():
            if iface.attach_to is None:
                continue
            inst = self.instances[iface.attach_to]
            yield iface, inst, self.switches[inst.switch]

    def edges(self):
        return [s for s in self.switches.values() if s.role == EDGE]

    def with_interfaces(self, interfaces: Mapping[str, "Interface"]) -> "Deployment":
        """This deployment with these interfaces replaced (or added). The new one remembers which
        (replaced_from), so that what changed need not be found by comparing every interface."""
        merged = Overlaid(self.interfaces, dict(interfaces))  # (not a copy of every interface)
        new = dataclasses.replace(self, interfaces=merged)
        object.__setattr__(new, "_replaced", (weakref.ref(self), frozenset(interfaces)))
        attached = self.__dict__.get("_attached")
        if attached is not None:  # carried over: only the replaced interfaces' instances change
            attached = Layered(attached)  # (a copy of an entry per instance: 2 ms at 100k)
            for name in interfaces:
                for iface in (self.interfaces.get(name), interfaces[name]):
                    if iface is not None and iface.attach_to is not None:
                        attached[iface.attach_to] = tuple(sorted(
                            n for n in {*attached.get(iface.attach_to, ()), name}
                            if merged[n].attach_to == iface.attach_to))
            object.__setattr__(new, "_attached", attached)
        return new

    def interfaces_of(self, instance: str) -> Tuple[str, ...]:
        """The names of the interfaces attached to an instance. Made once per deployment (a scan of
        every interface: 30 ms at 100k) and carried over by with_interfaces."""
        attached = self.__dict__.get("_attached")
        if attached is None:
            lists = {}
            for iface in self.interfaces.values():
                if iface.attach_to is not None:
                    lists.setdefault(iface.attach_to, []).append(iface.name)
            attached = {inst: tuple(sorted(names)) for inst, names in lists.items()}
            object.__setattr__(self, "_attached", attached)
        return attached.get(instance, ())

    def replaced_from(self, other: "Deployment") -> Optional[frozenset]:
        """The interfaces replaced to make this deployment from other (with_interfaces), or None
        if it was not made so."""
        hint = self.__dict__.get("_replaced")
        return hint[1] if hint is not None and hint[0]() is other else None


def derived_mac(seed: str) -> str:
    """A stable, locally administered unicast MAC for something that was given none."""
    digest = hashlib.sha256(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02,) + tuple(digest[:5]))


def embed(prefix: IPNetwork, netid: int, ipv4: IPAddress) -> IPAddress:
    """Seed 004: the substrate address = prefix | netid << 32 | ipv4."""
    return IPAddress(_embedded(prefix, netid, ipv4), 6)


def same_elastic_addresses(a: Tuple["ElasticIp", ...], b: Tuple["ElasticIp", ...]) -> bool:
    """Whether two models' elastic IPs are the same addresses in the same order (what a remap
    keeps). A pair that is one object (what a change did not touch) is not compared: netaddr's
    comparisons are slow, and a deployment has a thousand of them."""
    return a is b or (len(a) == len(b) and all(x is y or x.ip == y.ip for x, y in zip(a, b)))


def embed_text(prefix: IPNetwork, netid: int, ipv4) -> str:
    """str(embed(...)), without netaddr's slow formatting (the compiler asks for one per route):
    inet_ntop writes the same compact form (tests/unit/test_embed.py checks it)."""
    return socket.inet_ntop(socket.AF_INET6, _embedded(prefix, netid, ipv4).to_bytes(16, "big"))


def _embedded(prefix: IPNetwork, netid: int, ipv4) -> int:
    # prefix.first is int(prefix.network) without making an IPAddress; cheaper than a cache
    # look-up by prefix, whose hash netaddr computes from first and last each time
    return prefix.first | (netid << 32) | int(ipv4)


def decode(address: IPAddress, prefixlen: int):
    """The inverse of embed: (prefix, netid, ipv4)."""
    value = int(address)
    prefix = IPNetwork(f"{IPAddress(value >> (128 - prefixlen) << (128 - prefixlen), 6)}/{prefixlen}")
    return prefix, (value >> 32) & 0xFFFFFF, IPAddress(value & 0xFFFFFFFF, 4)


def dummy_mac(ipv4: IPAddress) -> str:
    """Seed 004's dummy hardware address for a destination, as instances see it.

    It depends only on the IPv4 address so that the switch can compute it in a flow
    (move ip_src into the low 32 bits) instead of needing one flow per source.
    """
    v = int(IPAddress(ipv4))
    return "0e:00:" + ":".join(f"{(v >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


DUMMY_MAC_HIGH16 = 0x0E00
