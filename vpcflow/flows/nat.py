"""Distributed NAT (seeds 000, 001): hosts translate, the edge only demultiplexes.

Every host owns a block of ports on a public IP (topology/nat_alloc.py); an interface may own one
of its own, and an elastic IP belongs to one interface. The host translates with conntrack; the
edge never translates: it sends a packet for (public IP, port) to the host that owns the port's
block, matching the block's value/mask pairs (one pair for an aligned block).

Host, outbound (route -> nat_out 45 -> nat_snat 46 -> to_edge 47)
  nat_out:  a packet from a NAT'd address goes through the NAT zone: ct(zone=0, nat) applies the
            translation its connection already has, and recirculates.
  nat_snat: a new connection (+new, ct_mark 0): ct(commit, zone=0, nat(src=PUBLIC:LO-HI of the
            block), ct_mark=network id) (an elastic IP: nat(src=EIP), ports kept); a known one
            (ct_mark set) passes only if its ct_mark is the packet's own network; +inv: dropped
            (nat_invalid).
  to_edge:  a packet whose source is now one of the host's public addresses is encapsulated to
            the edge with VNI 0 (the external network; network ids start at 1). A packet that is
            still untranslated reached here because conntrack found no free port in the block
            (Open vSwitch 3.1's userspace conntrack then leaves it +new, untranslated, uncommitted:
            measured): it is the table's miss, a counted drop, nat_block_full. Existing
            connections keep their ports and carry on; no port outside the block is ever used
            (3.x searches exactly LO-HI, without the older ephemeral-range fallback).
Host, inbound (substrate_in 50 -> nat_in 52 -> nat_accept 53 -> dest_lookup and on)
  substrate_in: VNI 0 from the edge's prefix, to a public address this host serves:
            ct(zone=0, nat) reverses the translation (also the inner header of ICMP errors: +rel).
  nat_in:   a known connection (ct_mark set: replies, related errors, later packets of a
            forward's connection) goes on; a new one (ct_mark 0) for a forward's port or an
            elastic IP is committed with nat(dst=private address[:port]) and ct_mark = network
            id; anything else is dropped (nat_no_connection).
  nat_accept: ct_mark (the network id) into reg0; the packet then goes on like any arriving
            packet: dest_lookup, the receiver's zone (a reply meets the verdict its egress
            committed), deliver.
Edge
  uplink_in: ARP for every public and elastic address is answered with the uplink's MAC.
            (public IP, tcp/udp dst value/mask of a block) -> tunnel to the block's host, VNI 0,
            outer destination embed(host prefix, 0, public IP), unchanged; a forward's port ->
            the host of its interface; an elastic IP (any protocol) -> the host of its
            interface (through the edge's connection records, flows/follow.py: a connection
            recorded before a remap still reaches the old holder's host); ICMP to a public
            IP -> nat_icmp; anything else to a public address is
            dropped (nat_no_block): nothing outside a block reaches a host.
  substrate_in: VNI 0 from a host is accepted only from the prefix of the host that serves its
            source: (public IP, tcp/udp src in that host's block or a forward's port), ICMP from a
            public IP the host serves, anything from an elastic IP of one of its interfaces; the
            rest is dropped (nat_outside_block). Accepted packets leave by the uplink.
  nat_icmp: ICMP to a public IP. The edge sees neither an echo's id nor the ports inside an
            error's inner header, so
            - an echo request from a host leaves a learned record (external address -> public
              address, echo reply) -> that host, idle timeout RETURN_IDLE_TIMEOUT; echo replies
              follow it, and are dropped without one (nat_icmp_unknown);
            - an error (unreachable, time exceeded, parameter problem) is copied to every host
              that serves the public IP; only the host whose conntrack relates it to one of its
              connections delivers it, translated back, the others drop it
              (nat_icmp_error_elsewhere). This is exact whoever sent the error (the peer or a
              router on the way) and however many hosts talk to that peer at once.

Design decisions, and where this differs from the design brief
- The NAT zone is 0, one per host (interface zones are 1..65535). One zone is required: the
  public side of every connection of a host must be unique, and inbound packets carry only the
  public address, so the zone must be known before the network is. The brief committed every
  outbound packet with ct(commit, nat(src=...), exec(ct_mark=network)). Changed: networks may
  share a CIDR, so two tenants' instances on one host can send the very same 5-tuple; in one
  zone they would be one connection, and a commit on every packet would rewrite its ct_mark to
  the last sender's network, handing one tenant's replies to the other. Here the packet is
  first looked up (ct(zone=0, nat)); only a packet of no known connection (+new and ct_mark 0:
  a retransmitted SYN of a known one is +new too, with its mark) commits, and a known connection
  passes only when its ct_mark is the packet's own network: an exact clash between tenants fails
  the later connection (dropped, nat_collision) instead of leaking. It needs both instances to
  use the same address, source port and destination at the same time. The lookup and the commit
  are two steps, so to_edge is table 47 (not 46 as the brief suggested).
- ICMP errors are copied to every host of the public IP instead of following the learned record
  the brief suggested: a learned flow is rewritten by whichever host's flow the switch last
  refreshed (when it pushes that flow's statistics, not at once), so with several hosts talking
  to one external address the record flips between them (measured: echo replies went to the
  wrong host). Echo replies still follow the record, learned from echo requests only.
- An elastic IP translates its interface's primary address 1:1 both ways (ports kept); the
  interface's other addresses use its block or its host's. A host (or interface) with several
  fixed blocks translates into the first; the others still reach it.
- Where no public IP is configured for an endpoint (no `nat.public_ips`, no elastic IP), its
  traffic to the outside keeps the overlay's untranslated path (overlay._route, VNI = network).

Limits
- ICMP echo: Open vSwitch 3.1's userspace conntrack keeps the echo id (it maps only TCP/UDP
  ports into the range; measured), so two instances behind one public IP that ping one
  destination with the same id cannot both be translated: the second is dropped like a full
  block. Echo replies follow the learned record of the host whose request went to that external
  address last; the switch refreshes a learned flow when it pushes the statistics of the flow
  that made it (not at once), so while two hosts ping one external address through one public
  IP, replies may reach the other host, whose conntrack drops them (nat_invalid).
- ICMP errors cost one copy per host serving the public IP (at most the blocks on it: 252 with
  8-bit blocks above port 1023): an outside sender of errors is amplified that much inside the
  substrate (an OpenFlow meter on those flows would bound it; not done).
- Only the first edge (by name) carries NAT.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
from typing import Dict, List, Optional, Tuple

from netaddr import IPAddress

from vpcflow.flows.assemble import Runs, Shared
from vpcflow.flows.base import drop_flow
from vpcflow.flows.core import (ETH_IPV4, IPPROTO, Ct, CtNat, Flow, Goto, Learn, LearnSpec, Output, SetField,
                                ct_flags, flow, interned)
from vpcflow.flows.edge import learn_gateway
from vpcflow.flows.index import Endpoint, Index
from vpcflow.flows.matches import arp, arp_reply, cidr, embedded_address_actions, ipv4, load_network, network_ipv4
from vpcflow.flows.pipeline import REG_NETWORK
from vpcflow.topology.model import TUNNEL_PORT, ElasticIp, Forward, NatBlock, Network, Switch, embed_text, same_elastic_addresses
from vpcflow.topology.nat_alloc import value_masks

NAT_ZONE = 0
EXTERNAL_VNI = 0
PRIORITY = 100
ESTABLISHED = 200
INVALID = 300
EDGE_CHUNK = 64  # elastic IPs per Runs at the edge (Plan.edge_chunks)
RETURN_IDLE_TIMEOUT = 60  # seconds a learned echo return path outlives the last request that made it
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP_ERRORS = (3, 11, 12)  # destination unreachable, time exceeded, parameter problem
PORTED = ("tcp", "udp")


# The cookie objects of the NAT's parts: asked for each part at every compile of the edge, and
# netaddr's str() is slow; kept per part (a deployment has a few thousand).
@functools.lru_cache(maxsize=1 << 15)
def block_name(b: NatBlock) -> str:
    return f"block:{b.ip}:{b.ports}"


@functools.lru_cache(maxsize=1 << 15)
def forward_name(f: Forward) -> str:
    return f"forward:{f.public_ip}:{f.public_port}/{f.proto}"


@functools.lru_cache(maxsize=1 << 15)
def eip_name(e: ElasticIp) -> str:
    return f"eip:{e.ip}"


@dataclasses.dataclass(frozen=True)
class Source:
    """How an address's new connections to the outside are translated."""

    ip: IPAddress
    lo: Optional[int]  # None: the port is kept (elastic IP)
    hi: Optional[int]
    obj: str  # the cookie object: the block or the elastic IP


class FirstEndpoints:
    """interface name -> its first endpoint, read from the Index's by_interface as it is: a view,
    not a copy (a copy of 100k entries was most of what a runtime change cost the Plan)."""

    __slots__ = ("_by_interface",)

    def __init__(self, by_interface: Dict[str, Tuple[Endpoint, ...]]):
        self._by_interface = by_interface

    def __contains__(self, name) -> bool:
        return name in self._by_interface

    def __getitem__(self, name) -> Endpoint:
        return self._by_interface[name][0]


class Plan:
    """Which switch serves which block, forward and elastic IP, for one deployment."""

    def __init__(self, ix: Index, old: Optional["Plan"] = None, moved=frozenset()):
        """old: the Plan of the model before a runtime change that moved these interfaces
        (flows/incremental.py): where they place no block and no forward, its placement of
        those is taken as it is (thousands of parts, and the hosts' served addresses); where
        the elastic IPs are the same and none of their holders moved, theirs too."""
        dep = ix.dep
        # not the Index itself: the Index caches its Plan, and a cycle would outlive the model
        # (compiled objects are kept out of the cyclic collector's sight, compiler.without_gc)
        self.elastic_ips = dep.elastic_ips
        self.nat = dep.nat
        # an interface's primary address (its first), where it is attached now (not the old
        # binding a moved record's drain keeps: that one only finishes the connections it had)
        self.primary = FirstEndpoints(ix.by_interface)
        self._by_switch: Dict[int, Dict[str, list]] = {}
        # (a tuple of elastic IPs, interface -> the positions of those it holds): _holder_positions
        self._by_holder = old._by_holder if old is not None else None
        if old is not None and old.nat == self.nat and not (old._owners & moved):
            self.blocks, self.forwards, self._owners = old.blocks, old.forwards, old._owners
            self._block_of, self._icmp_senders, self._served = old._block_of, old._icmp_senders, old._served
            self._block_source = old._block_source
            if id(old.forwards) in old._by_switch:
                self._by_switch[id(self.forwards)] = old._by_switch[id(old.forwards)]
        else:
            self._place(dep)
        same_ips = old is not None and same_elastic_addresses(old.elastic_ips, dep.elastic_ips)
        if same_ips and old.elastic_ips is dep.elastic_ips and not (old._eip_holders & moved):
            self.eips, self._eip_of, self._eip_holders = old.eips, old._eip_of, old._eip_holders
            self._pair_at, self._edge_keys, self._chunks = old._pair_at, old._edge_keys, old._chunks
            if id(old.eips) in old._by_switch:
                self._by_switch[id(self.eips)] = old._by_switch[id(old.eips)]
        else:
            self._hold(ix, old if same_ips else None, moved)
        # the position of each elastic IP by its address (an int: str() of a thousand is slow)
        self._position = old._position if same_ips else {int(e.ip): n for n, e in enumerate(self.elastic_ips)}
        # elastic IPs still draining from their old holders (flows/follow.py): the old host keeps
        # the translation of the connections its conntrack knows
        self.old_eips = []
        for f in ix.elastic_follows:
            e = self.elastic_ip(f.ip)
            if e is not None and f.old_interface in self.primary:
                self.old_eips.append((e, self.primary[f.old_interface]))

    def _hold(self, ix: Index, old: Optional["Plan"], moved):
        """Each attached elastic IP with its holder's endpoint; where old's elastic IPs are the
        same addresses, the pairs of those that are the same objects and whose holder did not
        move are old's (a remap replaces one of a thousand)."""
        held = ix.by_interface  # (self.primary: a call per look-up, for thousands of elastic IPs)
        if old is None:
            self._pair_at = [(e, held[e.interface][0]) if e.interface in held else None for e in ix.dep.elastic_ips]
            self.eips = [pair for pair in self._pair_at if pair is not None]
            self._eip_of = {ep.interface.name: e for e, ep in self.eips}
            self._eip_holders = frozenset(e.interface for e in ix.dep.elastic_ips)
            self._edge_keys = {}  # id of an elastic IP of self.elastic_ips -> (edge_key, edge)
            self._chunks = {}  # (edge, chunk) -> its members (edge_chunks)
            return
        # (the position of each is old's: the same addresses, in order; an interface holds one)
        self._pair_at, self._eip_of, holders = list(old._pair_at), dict(old._eip_of), set(old._eip_holders)
        self._edge_keys = dict(old._edge_keys)
        # the positions of the pairs that came or went: the elastic IPs replaced (a remap's) and
        # those the moved interfaces hold, found without a pass over a thousand of them in Python
        a_eips, b_eips = old.elastic_ips, ix.dep.elastic_ips
        positions = set()
        if a_eips is not b_eips:
            positions.update(itertools.compress(itertools.count(), map(operator.is_not, a_eips, b_eips)))
        if moved:
            by_holder = self._holder_positions(old, b_eips)
            for name in moved:
                positions.update(by_holder.get(name, ()))
        changed = sorted(positions)
        for n in changed:
            a, e = a_eips[n], b_eips[n]
            self._edge_keys.pop(id(a), None)  # (ids of objects this Plan holds only)
            gone = self._pair_at[n]
            if gone is not None and self._eip_of.get(gone[0].interface) is gone[0]:
                # (None, not deleted: a dict keys were deleted from is copied key by key, 10x slower)
                self._eip_of[gone[0].interface] = None
            holders.discard(a.interface)
            self._pair_at[n] = (e, held[e.interface][0]) if e.interface in held else None
        for n in changed:
            e = b_eips[n]
            holders.add(e.interface)
            if e.interface in held:
                self._eip_of[e.interface] = e
        self.eips = list(filter(None, self._pair_at))  # (the pairs, at C speed: an empty one is None)
        self._eip_holders = frozenset(holders)
        remade = {n // EDGE_CHUNK for n in changed}
        self._chunks = {key: members for key, members in old._chunks.items() if key[1] not in remade}
        by_switch = old._by_switch.get(id(old.eips))
        if by_switch is not None:  # on_switch's lists, made again where a pair came or went (not
            # a pass over thousands of pairs at the first host's compile); in position order
            now = {n: self._pair_at[n] for n in changed}
            was = {n: old._pair_at[n] for n in changed}
            switches = {pair[1].switch.name for pair in (*now.values(), *was.values()) if pair is not None}
            by_switch = dict(by_switch)
            for name in switches:
                kept = [(old._position[int(pair[0].ip)], pair) for pair in by_switch.get(name, ())]
                kept = [(n, pair) for n, pair in kept if n not in now]
                kept += [(n, pair) for n, pair in now.items() if pair is not None and pair[1].switch.name == name]
                by_switch[name] = [pair for _, pair in sorted(kept, key=lambda x: x[0])]
            self._by_switch[id(self.eips)] = by_switch

    def _holder_positions(self, old: "Plan", eips) -> Dict[str, List[int]]:
        """interface -> the positions of the elastic IPs it holds in eips (made once per tuple of
        elastic IPs: a move keeps it)."""
        known = old._by_holder
        if known is None or known[0] is not eips:
            positions: Dict[str, List[int]] = {}
            for n, e in enumerate(eips):
                positions.setdefault(e.interface, []).append(n)
            known = (eips, positions)
        self._by_holder = known
        return known[1]

    def edge_key(self, e: ElasticIp, edge: str) -> tuple:
        """The cache key of an elastic IP's run at the edge while no remap of it drains
        (edge_flows): made once per elastic IP, not at each compile of the edge (a thousand)."""
        known = self._edge_keys.get(id(e))
        if known is None or known[1] != edge:
            known = self._edge_keys[id(e)] = (eip_run_key(edge, e), edge)
        return known[0]

    def edge_chunks(self, edge: str, draining: Dict[int, tuple]):
        """The elastic IPs' runs at the edge, by chunk of EDGE_CHUNK positions: (chunk, members, whether
        a remap of one drains), a member (its run's cache key, the elastic IP, its holder's
        endpoint) per attached one.
        draining: (elastic IP, its run's key) of those whose remaps drain, by id. The members of a
        chunk with none are made once per Plan, and kept by a derived one where no position of
        the chunk changed: an edge's compile then asks for a few hundred chunks, not a run per
        elastic IP (thousands)."""
        with_draining = {self._position[int(e.ip)] // EDGE_CHUNK for e, _ in draining.values()}
        pairs = self._pair_at
        for c in range(0, (len(pairs) + EDGE_CHUNK - 1) // EDGE_CHUNK):
            members = None if c in with_draining else self._chunks.get((edge, c))
            if members is None:
                members = tuple((draining[id(e)][1] if id(e) in draining else self.edge_key(e, edge), e, ep)
                                for e, ep in filter(None, pairs[c * EDGE_CHUNK:(c + 1) * EDGE_CHUNK]))
                if c not in with_draining:
                    self._chunks[edge, c] = members
            yield c, members, c in with_draining

    def elastic_ip(self, ip) -> Optional[ElasticIp]:
        """The elastic IP of this address (text or IPAddress), or None."""
        n = self._position.get(int(IPAddress(ip)))
        return None if n is None else self.elastic_ips[n]

    def _place(self, dep):
        """Where the blocks and forwards are (interfaces place some: self._owners)."""
        self.blocks: List[Tuple[NatBlock, Switch]] = []
        for b in self.nat.blocks:
            if b.owner in dep.switches:
                self.blocks.append((b, dep.switches[b.owner]))
            elif b.owner in self.primary:
                self.blocks.append((b, self.primary[b.owner].switch))
        self.forwards = [(f, self.primary[f.interface]) for f in self.nat.forwards if f.interface in self.primary]
        self._owners = frozenset({b.owner for b in self.nat.blocks if b.owner not in dep.switches}
                                 | {f.interface for f in self.nat.forwards})
        # looked up per address and per switch by every host's compile: indexed once
        self._block_of: Dict[str, NatBlock] = {}
        for b in self.nat.blocks:
            self._block_of.setdefault(b.owner, b)
        # owner -> the Source of its block, made when first asked: one for all its addresses
        # (the block's name is netaddr's str, and a frozen Source costs to build)
        self._block_source: Dict[str, Source] = {}
        self._served: Optional[Dict[str, set]] = None  # made when a host first asks (the edge does not)
        self._icmp_senders = None

    def on_switch(self, pairs, sw: Switch):
        """The (forward or elastic IP, endpoint) pairs of self.forwards or self.eips on one switch."""
        by_switch = self._by_switch.get(id(pairs))
        if by_switch is None:
            by_switch = self._by_switch[id(pairs)] = {}
            for pair in pairs:
                by_switch.setdefault(pair[1].switch.name, []).append(pair)
        return by_switch.get(sw.name, ())

    def eip_hosts(self, e: ElasticIp) -> List[Switch]:
        """The hosts an elastic IP's traffic may come from: its holder's, and its old holders'
        while their remaps drain."""
        hosts = {}
        if e.interface in self.primary:
            ep = self.primary[e.interface]
            hosts[ep.switch.name] = ep.switch
        for x, ep in self.old_eips:
            if x.ip == e.ip:
                hosts[ep.switch.name] = ep.switch
        return [hosts[k] for k in sorted(hosts)]

    def source(self, ep: Endpoint) -> Optional[Source]:
        """The elastic IP of the primary address, else the interface's block, else its host's."""
        eip = self._eip_of.get(ep.interface.name)
        if eip is not None and ep.ip == ep.interface.primary_ip:
            return Source(eip.ip, None, None, eip_name(eip))
        for owner in (ep.interface.name, ep.switch.name):
            src = self._block_source.get(owner)
            if src is not None:
                return src
            b = self._block_of.get(owner)
            if b is not None:
                src = self._block_source[owner] = Source(b.ip, b.ports.lo, b.ports.hi, block_name(b))
                return src
        return None

    def served(self, sw: Switch) -> List[IPAddress]:
        """Public addresses whose traffic this switch sends and receives."""
        if self._served is None:  # the blocks' and forwards' (a Plan after a change may keep them)
            self._served = {}
            for ip, host in ([(b.ip, host) for b, host in self.blocks] + [(f.public_ip, ep.switch) for f, ep in self.forwards]):
                self._served.setdefault(host.name, set()).add(ip)
        served = set(self._served.get(sw.name, ()))
        served.update(e.ip for e, _ in self.on_switch(self.eips, sw))
        served.update(e.ip for e, ep in self.old_eips if ep.switch.name == sw.name)
        return sorted(served)

    def icmp_senders(self) -> List[Tuple[Switch, IPAddress]]:
        """(host, public IP) pairs: the host may send ICMP from that pool address."""
        if self._icmp_senders is None:
            pairs = {(host.name, b.ip): host for b, host in self.blocks}
            pairs.update({(ep.switch.name, f.public_ip): ep.switch for f, ep in self.forwards})
            self._icmp_senders = [(pairs[k], k[1]) for k in sorted(pairs)]
        return self._icmp_senders

    def addresses(self) -> List[IPAddress]:
        """Every public address the edge answers for: the pool and the elastic IPs."""
        return sorted(set(self.nat.public_ips) | {e.ip for e in self.elastic_ips})


def nat_plan(ix: Index) -> Plan:
    """The deployment's Plan, made once (every switch's compile asks for it)."""
    return ix.cached("nat:plan", lambda: Plan(ix))


def _port_match(proto: str, direction: str, value: int, mask: int):
    return {"ip_proto": IPPROTO[proto], f"{proto}_{direction}": value if mask == 0xFFFF else (value, mask)}


# --- hosts --------------------------------------------------------------------------------------

def host_network_flows(ix: Index, sw: Switch, net: Network):
    """The host's NAT flows of one of its networks: its addresses' translations, and what
    takes the network's connections back."""
    if ix.edge is None:
        return
    plan = nat_plan(ix)
    lookup = (Ct(NAT_ZONE, "nat_snat", nat=CtNat()),)  # the same for every address: made once
    head = network_ipv4(net.id)
    unconnected = interned((("ct_state", ct_flags("+trk+new")), ("ct_mark", 0)))
    commits = {}  # source's cookie object -> nat_snat's actions
    translated = False
    for ep in ix.local_endpoints(sw.name, net.name):
        src = plan.source(ep)
        if src is None:
            continue
        translated = True
        match = head + ep.src_match  # {reg0: net.id, eth_type: IPv4, ipv4_src: ep's address}
        yield Flow("nat_out", PRIORITY, match, lookup, "nat", src.obj)
        # the addresses of a block (its cookie object names its address and ports) share one
        # translation: made once, not per address (netaddr's str of the block's address)
        commit = commits.get(src.obj)
        if commit is None:
            translate = CtNat("src", str(src.ip), src.lo, src.hi)
            commit = commits[src.obj] = (Ct(NAT_ZONE, "to_edge", commit=True, mark=net.id, nat=translate),)
        # ct_mark 0: no connection has this tuple yet (every commit here sets a network id)
        yield Flow("nat_snat", PRIORITY, match + unconnected, commit, "nat", src.obj)
    if not translated and not any(ep.switch.name == sw.name and ep.network.name == net.name for _, ep in plan.old_eips):
        return
    obj = f"network:{net.name}"
    # A known connection (already translated by nat_out's lookup) is this network's own, or
    # another tenant's (the table's miss). Not only +est: until the first reply, later
    # packets of a connection are still +new (measured).
    yield flow("nat_snat", ESTABLISHED, {REG_NETWORK: net.id, "ct_state": ct_flags("+trk"), "ct_mark": net.id},
               (Goto("to_edge"),), feature="nat", obj=obj)
    yield flow("nat_accept", PRIORITY, {"ct_mark": net.id}, (load_network(net.id), Goto("dest_lookup")),
               feature="nat", obj=obj)
    # A known connection, translated back by the ct of substrate_in: a reply, a related
    # error, or a later packet of a forward's connection (still +new before the first reply).
    yield flow("nat_in", ESTABLISHED, {"ct_state": ct_flags("+trk"), "ct_mark": net.id}, (Goto("nat_accept"),),
               feature="nat", obj=obj)


def host_switch_flows(ix: Index, sw: Switch, embed_source: bool = False):
    """The host's NAT flows it has once: its public addresses, forwards and elastic IPs."""
    edge = ix.edge
    if edge is None:
        return
    plan = nat_plan(ix)
    translating = False
    for e, ep in plan.old_eips:
        if ep.switch.name != sw.name:
            continue
        # the old holder's answers on its followed connections: conntrack still translates them
        translating = True
        if plan.source(ep) is None:
            yield flow("nat_out", PRIORITY, {REG_NETWORK: ep.network.id, **ipv4(ipv4_src=str(ep.ip))},
                       (Ct(NAT_ZONE, "nat_snat", nat=CtNat()),), feature="nat", obj=f"{eip_name(e)}:draining")
    if not (translating or any(plan.source(ep) is not None for ep in ix.by_switch.get(sw.name, ()))):
        return
    yield drop_flow("nat_snat", INVALID, {"ct_state": ct_flags("+trk+inv")}, "nat_invalid")
    to_edge = [SetField("tunnel_id", EXTERNAL_VNI)]
    to_edge += embedded_address_actions("tun_ipv6_dst", edge.prefix, EXTERNAL_VNI, "ipv4_dst")
    if embed_source:
        to_edge += embedded_address_actions("tun_ipv6_src", sw.prefix, EXTERNAL_VNI, "ipv4_src")
    to_edge.append(Output(TUNNEL_PORT))
    for ip in plan.served(sw):
        obj = f"public:{ip}"
        yield flow("to_edge", PRIORITY, ipv4(ipv4_src=str(ip)), tuple(to_edge), feature="nat", obj=obj)
        yield flow("substrate_in", PRIORITY,
                   {"tunnel_id": EXTERNAL_VNI, "tun_ipv6_src": cidr(edge.prefix), **ipv4(ipv4_dst=str(ip))},
                   (Ct(NAT_ZONE, "nat_in", nat=CtNat()),), feature="nat", obj=obj)
    yield drop_flow("nat_in", INVALID, {"ct_state": ct_flags("+trk+inv")}, "nat_invalid")
    for icmp_type in ICMP_ERRORS:
        # the edge's copy of an error about another host's connection
        yield drop_flow("nat_in", INVALID + 10, {"ct_state": ct_flags("+trk+inv"),
                                                 **ipv4(ip_proto=IPPROTO["icmp"], icmpv4_type=icmp_type)},
                        "nat_icmp_error_elsewhere")
    new = {"ct_state": ct_flags("+trk+new"), "ct_mark": 0}
    for f, ep in plan.on_switch(plan.forwards, sw):
        dnat = CtNat("dst", str(ep.ip), f.port, f.port)
        yield flow("nat_in", PRIORITY,
                   {**new, **ipv4(ipv4_dst=str(f.public_ip), **_port_match(f.proto, "dst", f.public_port, 0xFFFF))},
                   (Ct(NAT_ZONE, "nat_accept", commit=True, mark=ep.network.id, nat=dnat),),
                   feature="nat", obj=forward_name(f))
    for e, ep in plan.on_switch(plan.eips, sw):
        yield flow("nat_in", PRIORITY, {**new, **ipv4(ipv4_dst=str(e.ip))},
                   (Ct(NAT_ZONE, "nat_accept", commit=True, mark=ep.network.id, nat=CtNat("dst", str(ep.ip))),),
                   feature="nat", obj=eip_name(e))
    yield from _old_holder_keeps_stragglers(plan, sw)


def _old_holder_keeps_stragglers(plan: Plan, sw: Switch):
    """While an elastic IP drains from this host to another, a new connection that still comes
    here is taken by the old holder, as before the remap. The edge switches over in one bundle,
    but for a moment after it Open vSwitch can still send a packet by a datapath flow made before
    (its revalidation is asynchronous), and that flow also recorded the connection under the old
    holder: so the old holder is where it belongs. Without this its first packet was lost."""
    if not plan.old_eips:
        return
    for e, old in plan.old_eips:
        now = plan.primary[e.interface] if e.interface in plan.primary else None  # its holder (e is the model's)
        if old.switch.name != sw.name or now is None or now.switch.name == sw.name:
            continue  # on one host, the new holder takes new connections: conntrack keeps the old ones
        yield flow("nat_in", PRIORITY, {"ct_state": ct_flags("+trk+new"), "ct_mark": 0, **ipv4(ipv4_dst=str(e.ip))},
                   (Ct(NAT_ZONE, "nat_accept", commit=True, mark=old.network.id, nat=CtNat("dst", str(old.ip))),),
                   feature="nat", obj=f"{eip_name(e)}:draining")


# --- the edge -----------------------------------------------------------------------------------

def learn_echo_return(sw: Switch) -> Learn:
    """The record that sends echo replies from an external address back to the host whose echo
    request went to it last."""
    return Learn("nat_icmp", PRIORITY, "learned_nat", f"{sw.name}:echo-return",
                 (LearnSpec("match", ETH_IPV4, "eth_type"),
                  LearnSpec("match", IPPROTO["icmp"], "ip_proto"),
                  LearnSpec("match", ICMP_ECHO_REPLY, "icmpv4_type"),
                  LearnSpec("match", "ipv4_dst", "ipv4_src"),
                  LearnSpec("match", "ipv4_src", "ipv4_dst"),
                  LearnSpec("load", EXTERNAL_VNI, "tunnel_id"),
                  LearnSpec("load", "tun_ipv6_src", "tun_ipv6_dst"),
                  LearnSpec("output", "in_port", n_bits=16)),
                 idle_timeout=RETURN_IDLE_TIMEOUT)


def to_host(host: Switch, public_ip: IPAddress):
    return (SetField("tunnel_id", EXTERNAL_VNI), SetField("tun_ipv6_dst", embed_text(host.prefix, EXTERNAL_VNI, public_ip)),
            Output(TUNNEL_PORT))


def edge_flows(ix: Index, sw: Switch):
    """The edge's NAT flows, as runs keyed by what they depend on: the last item of each key
    names the interfaces whose place decides the run (flows/incremental.py carries a run over
    a change that moves none of them)."""
    if ix.edge is None or ix.edge.name != sw.name:
        return
    plan = nat_plan(ix)
    yield ix.cached(("nat:edge", sw.name, "static", frozenset()), lambda: Shared(_edge_static(plan, sw)))
    switches = ix.dep.switches
    # thousands of parts: looked up as a few entries, not one by one at each compile of the edge.
    # The blocks of switches no change of interfaces moves; the parts interfaces place are also
    # each an entry of its own, so that a move of one makes only its part again.
    yield ix.cached(("nat:edge", sw.name, "switch blocks", frozenset()), lambda: Runs(
        Shared(_edge_block(sw, b, host)) for b, host in plan.blocks if b.owner in switches))
    placed = plan._owners  # every interface that places a block or forward (attached or not: made once per Plan)
    yield ix.cached(("nat:edge", sw.name, "placed", placed), lambda: Runs(_edge_placed(ix, plan, sw)))
    yield ix.cached(("nat:edge", sw.name, "icmp", placed), lambda: Shared(_edge_icmp(plan, sw)))
    follows = {}  # the draining remaps by elastic IP (its id: it is the plan's)
    for f in ix.elastic_follows:
        x = plan.elastic_ip(f.ip)
        if x is not None:
            follows.setdefault(id(x), (x, []))[1].append(f)
    draining = {i: (x, eip_run_key(sw.name, x, tuple(sorted((f.remap_id, f.old_interface) for f in fs))))
                for i, (x, fs) in follows.items()}
    # Each Runs is kept with the members it was made of: asked again with the same ones (the
    # same objects, where the Plan kept its chunk), it is taken as it is. Where a remap drains,
    # the old holders' places decide too: gathered again from the runs (carried by their keys).
    made = ix.cached(("nat:edge:eip_runs", sw.name), dict)  # chunk -> (its members, their Runs)
    for c, members, drains in plan.edge_chunks(sw.name, draining):
        known = None if drains else made.get(c)
        if known is None or not (known[0] is members or known[0] == members):
            known = (members, Runs(ix.cached(key, lambda: Shared(_edge_eip(ix, plan, sw, e, ep)))
                                   for key, e, ep in members))
            if not drains:
                made[c] = known
        yield known[1]


def eip_run_key(edge: str, e: ElasticIp, remaps: tuple = ()) -> tuple:
    """The cache key of an elastic IP's run at the edge (inbound: flows/follow.py records every
    connection to it there). Its holder and the remaps still draining from old holders
    ((remap id, old interface), sorted) decide it: the key says which is which (a remap back to
    an old holder is another run), and its last item names the interfaces whose place decides
    it (flows/incremental.py)."""
    return ("nat:edge", edge, (eip_name(e), e.interface, remaps), frozenset({e.interface} | {old for _, old in remaps}))


def _edge_placed(ix: Index, plan: Plan, sw: Switch):
    """The runs of the blocks and forwards an interface places, keyed by it."""
    switches = ix.dep.switches
    for b, host in plan.blocks:
        if b.owner not in switches:
            yield ix.cached(("nat:edge", sw.name, block_name(b), frozenset({b.owner})),
                            lambda: Shared(_edge_block(sw, b, host)))
    for f, ep in plan.forwards:
        yield ix.cached(("nat:edge", sw.name, forward_name(f), frozenset({f.interface})),
                        lambda: Shared(_edge_forward(sw, f, ep)))


def _edge_static(plan: Plan, sw: Switch):
    up = sw.uplink
    uplink = {"in_port": up.port}
    for ip in plan.addresses():
        reply = arp_reply(ip, up.mac)
        obj = f"arp:{ip}"
        # the gateway's own request also teaches the edge its MAC (as for the uplink address)
        yield flow("uplink_in", PRIORITY + 20, {**uplink, **arp(arp_op=1, arp_spa=str(up.gateway_ip), arp_tpa=str(ip))},
                   (learn_gateway(sw),) + reply, feature="nat", obj=obj)
        yield flow("uplink_in", PRIORITY, {**uplink, **arp(arp_op=1, arp_tpa=str(ip))}, reply, feature="nat", obj=obj)
        yield drop_flow("uplink_in", PRIORITY - 20, {**uplink, **ipv4(ipv4_dst=str(ip))}, "nat_no_block")
    for ip in plan.nat.public_ips:
        yield flow("uplink_in", PRIORITY - 10, {**uplink, **ipv4(ipv4_dst=str(ip), ip_proto=IPPROTO["icmp"])},
                   (Goto("nat_icmp"),), feature="nat", obj=f"public:{ip}")
    yield drop_flow("substrate_in", PRIORITY - 90, {"tunnel_id": EXTERNAL_VNI}, "nat_outside_block")


def _leave(sw: Switch):
    return (SetField("eth_src", sw.uplink.mac), Goto("edge_out"))


def _edge_block(sw: Switch, b: NatBlock, host: Switch):
    uplink = {"in_port": sw.uplink.port}
    for proto in PORTED:
        for value, mask in value_masks(b):
            yield flow("uplink_in", PRIORITY, {**uplink, **ipv4(ipv4_dst=str(b.ip), **_port_match(proto, "dst", value, mask))},
                       to_host(host, b.ip), feature="nat", obj=block_name(b))
            yield flow("substrate_in", PRIORITY,
                       {**_from_host(host), **ipv4(ipv4_src=str(b.ip), **_port_match(proto, "src", value, mask))},
                       _leave(sw), feature="nat", obj=block_name(b))


def _edge_forward(sw: Switch, f: Forward, ep: Endpoint):
    yield flow("uplink_in", PRIORITY,
               {"in_port": sw.uplink.port,
                **ipv4(ipv4_dst=str(f.public_ip), **_port_match(f.proto, "dst", f.public_port, 0xFFFF))},
               to_host(ep.switch, f.public_ip), feature="nat", obj=forward_name(f))
    yield flow("substrate_in", PRIORITY,
               {**_from_host(ep.switch), **ipv4(ipv4_src=str(f.public_ip), **_port_match(f.proto, "src", f.public_port, 0xFFFF))},
               _leave(sw), feature="nat", obj=forward_name(f))


def _edge_icmp(plan: Plan, sw: Switch):
    for host, ip in plan.icmp_senders():
        icmp = {**_from_host(host), **ipv4(ipv4_src=str(ip), ip_proto=IPPROTO["icmp"])}
        yield flow("substrate_in", PRIORITY + 10, {**icmp, "icmpv4_type": ICMP_ECHO_REQUEST},
                   (learn_echo_return(sw),) + _leave(sw), feature="nat", obj=f"public:{ip}")
        yield flow("substrate_in", PRIORITY, icmp, _leave(sw), feature="nat", obj=f"public:{ip}")
    for ip in plan.nat.public_ips:
        # An error's inner header (the port) is out of the edge's reach: every host serving the
        # address gets a copy, and only the one whose conntrack relates it delivers it.
        hosts = sorted({h.name: h for h, served in plan.icmp_senders() if served == ip}.values(), key=lambda h: h.name)
        if not hosts:
            continue
        copies = [SetField("tunnel_id", EXTERNAL_VNI)]
        for host in hosts:
            copies += [SetField("tun_ipv6_dst", embed_text(host.prefix, EXTERNAL_VNI, ip)), Output(TUNNEL_PORT)]
        for icmp_type in ICMP_ERRORS:
            yield flow("nat_icmp", PRIORITY + 10, ipv4(ipv4_dst=str(ip), ip_proto=IPPROTO["icmp"], icmpv4_type=icmp_type),
                       tuple(copies), feature="nat", obj=f"public:{ip}")


def _edge_eip(ix: Index, plan: Plan, sw: Switch, e: ElasticIp, ep: Endpoint):
    from vpcflow.flows.follow import RESET, eip_flows, reset_ends  # (follow imports this module)

    for host in plan.eip_hosts(e):
        holder = {**_from_host(host), **ipv4(ipv4_src=str(e.ip))}
        yield flow("substrate_in", PRIORITY, holder, _leave(sw), feature="nat", obj=eip_name(e))
        # a RST the holder sends ends the client's record here (connection following)
        yield flow("substrate_in", PRIORITY + 5, {**holder, **RESET}, reset_ends("eip_followed") + _leave(sw),
                   feature="follow", obj=f"eip:{e.ip}")
    yield from eip_flows(ix, sw, e)


def _from_host(host: Switch):
    return {"tunnel_id": EXTERNAL_VNI, "tun_ipv6_src": cidr(host.prefix)}
