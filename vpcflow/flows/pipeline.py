"""The pipeline, declared once as data.

Every switch has two bridges: the integration bridge (instances, the tunnel port and, on edges,
the uplink) and the underlay bridge (the substrate link). Each table says what it is for, which
fields its flows may match, and which tables it may go to next. `verify()` checks a flow
against its table; the unit tests run it over every compiled flow.

Registers (zero at the start of every packet):
  reg0[0..23]  network id (VNI) of the packet, set on entry (port security or substrate check)
  reg5[0..15]  conntrack zone of the sending interface (set by port security)
  reg6[0..15]  conntrack zone of the receiving interface (set by dest_lookup)
  reg3[0..23]  the sender's network, when an authorization let it reach another (set by dest_lookup,
               which then puts the receiver's network in reg0)
  reg1         the sending interface's class (set by port security): for an ARP request, which
               destinations it may resolve (flows/arp.py); for IP, its security groups (flows/authz.py)
  reg2         the receiving interface's class: its security groups (set by dest_lookup)
Classes make the rules of every interface alike one set of flows, the same on every switch
(index.stable_ids gives them ids that depend only on what they are).

Conntrack zones: 1..65535 are interfaces' zones (index.Index.zones); zone 0 is the NAT zone
(flows/nat.py), whose connections carry their network id in ct_mark. In an interface's zone,
ct_mark is the authorization rule that allowed the connection (flows/authz.py) and ct_label bit
0 says that the interface has ended its side of it, with a FIN or RST (flows/follow.py).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, FrozenSet, Tuple

from vpcflow.flows.core import Ct, Flow, Goto

INTEGRATION = "integration"
UNDERLAY = "underlay"

REG_NETWORK = "reg0"
REG_SRC_ZONE = "reg5"
REG_DST_ZONE = "reg6"
REG_SRC_NETWORK = "reg3"
REG_BINDING = "reg4"  # which instance held the destination when the connection was recorded
REG_OPENING = "reg7"  # 1: the record is a SYN's, made before the handshake completed
REG_SRC_CLASS = "reg1"
REG_DST_CLASS = "reg2"


@dataclasses.dataclass(frozen=True)
class Table:
    id: int
    name: str
    bridge: str
    purpose: str
    matches: FrozenSet[str]
    next_tables: Tuple[str, ...] = ()
    miss: str = "drop"  # the reason a packet that matches nothing here is dropped and counted
    # its flows decide where a packet goes, or record a connection under the binding of where
    # it goes: a runtime change commits a new one with the changes of installed flows, not
    # before them (controller/sync.Diff.made_first)
    steers: bool = False


_L3 = {"eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst",
       "icmpv4_type", "icmpv4_code", "tcp_flags"}
_ARP = {"eth_type", "arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha"}
_TUN = {"tunnel_id", "tun_ipv6_src", "tun_ipv6_dst"}
_REGS = {f"reg{n}" for n in range(8)}
_CT = {"ct_state", "ct_zone", "ct_mark", "conj_id"}

TABLES = (
    Table(0, "classify", INTEGRATION, "sort packets by the port they came in on",
          frozenset({"in_port", "eth_type"}), ("port_security", "substrate_in", "uplink_in"),
          miss="unknown_port"),
    Table(10, "port_security", INTEGRATION,
          "an instance may send only from its own MAC and addresses; sets network and source zone",
          frozenset({"in_port", "eth_src"} | _L3 | _ARP), ("arp_responder", "egress_acl"),
          miss="spoofed_source"),
    Table(20, "arp_responder", INTEGRATION,
          "answer an instance's ARP request with the dummy MAC of a destination it may reach",
          frozenset({REG_NETWORK, REG_SRC_CLASS, "in_port"} | _ARP), (), miss="arp_unanswered"),
    Table(30, "egress_acl", INTEGRATION, "send what the instance sends through conntrack, in its zone",
          frozenset({REG_NETWORK, REG_SRC_ZONE} | _L3), ("egress_rules",), miss="not_ip"),
    Table(31, "egress_rules", INTEGRATION,
          "what the sender may send: its security groups' egress rules; established connections pass",
          frozenset({REG_NETWORK, REG_SRC_CLASS} | _L3 | _CT), ("network_acl",), miss="egress_denied"),
    Table(35, "network_acl", INTEGRATION, "traffic between two networks needs an authorization",
          frozenset({REG_NETWORK} | _L3 | _CT), ("follow", "route"), miss="network_denied"),
    Table(37, "follow", INTEGRATION, "look the connection up among the recorded ones (followed)",
          frozenset({REG_NETWORK}), ("follow_new",), miss="follow_miss"),
    Table(38, "followed", INTEGRATION,
          "recorded connections (learned): each loads the binding it was opened under into reg4",
          frozenset({REG_NETWORK, "eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst",
                     "udp_src", "udp_dst"}), (), miss=""),
    Table(39, "follow_new", INTEGRATION,
          "record a connection that opens, under the current binding; mark the sender's FIN or RST",
          frozenset({REG_NETWORK, REG_BINDING, REG_OPENING, "ct_label"} | _L3 | _CT), ("route",),
          miss="follow_miss", steers=True),
    Table(40, "route", INTEGRATION,
          "where the destination lives: this switch, another host (tunnel) or the edge; a "
          "followed connection of a draining remap: where its binding lived",
          frozenset({REG_NETWORK, REG_BINDING} | _L3), ("dest_lookup", "nat_out"), miss="no_destination",
          steers=True),
    Table(45, "nat_out", INTEGRATION,
          "toward the external network: through the NAT zone (an existing translation is applied)",
          frozenset({REG_NETWORK} | _L3 | _CT), ("nat_snat",), miss="nat_refused"),
    Table(46, "nat_snat", INTEGRATION,
          "a new connection takes a port of the host's block; a known one must be of this network",
          frozenset({REG_NETWORK} | _L3 | _CT), ("to_edge",), miss="nat_collision"),
    Table(47, "to_edge", INTEGRATION,
          "a translated packet goes to the edge (VNI 0); an untranslated one found its block full",
          frozenset({REG_NETWORK} | _L3 | _CT), (), miss="nat_block_full"),
    Table(50, "substrate_in", INTEGRATION,
          "a tunnelled packet is accepted only from the switch where its inner source lives",
          frozenset({"in_port"} | _TUN | _L3), ("dest_lookup", "edge_out", "nat_in"),
          miss="substrate_spoofed"),
    Table(52, "nat_in", INTEGRATION,
          "from the edge for a public address: a reply is translated back; a forward or elastic IP "
          "starts a connection",
          frozenset(_L3 | _CT), ("nat_accept",), miss="nat_no_connection"),
    Table(53, "nat_accept", INTEGRATION, "translated back: the connection's network (ct_mark) into reg0",
          frozenset(_L3 | _CT), ("dest_lookup",), miss="no_destination"),
    Table(55, "dest_lookup", INTEGRATION,
          "which local interface the packet is for: its zone (and its network, if another one)",
          frozenset({REG_NETWORK} | _L3), ("ingress_acl",), miss="no_destination"),
    Table(60, "ingress_acl", INTEGRATION,
          "send what arrives through conntrack, in the receiver's zone (a RST first ends the record "
          "of its connection's other direction)",
          frozenset({REG_NETWORK, REG_DST_ZONE} | _L3), ("ingress_rules",), miss="not_ip"),
    Table(61, "ingress_rules", INTEGRATION,
          "what the receiver may receive: its security groups' ingress rules; established pass",
          frozenset({REG_NETWORK, REG_DST_CLASS} | _L3 | _CT), ("network_acl_in",), miss="ingress_denied"),
    Table(62, "network_acl_in", INTEGRATION, "from another network: the authorization, checked again",
          frozenset({REG_NETWORK, REG_SRC_NETWORK} | _L3 | _CT), ("deliver",), miss="network_denied"),
    Table(70, "deliver", INTEGRATION,
          "hand the packet to the destination's port with the sender's dummy MAC",
          frozenset({REG_NETWORK} | _L3), (), miss="no_destination"),
    Table(80, "uplink_in", INTEGRATION,
          "edge: what arrives from the external network; a public port goes to its block's host",
          frozenset({"in_port"} | _L3 | _ARP), ("eip_new", "nat_icmp", "edge_out"), miss="uplink_unknown"),
    Table(81, "eip_followed", INTEGRATION,
          "edge: recorded connections to elastic IPs (learned): each loads the interface that held "
          "the address into reg4",
          frozenset({"eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst"}),
          (), miss=""),
    Table(82, "eip_new", INTEGRATION, "edge: record a connection to an elastic IP under its holder",
          frozenset({REG_BINDING, REG_OPENING} | _L3), ("eip_route",), miss="follow_miss", steers=True),
    Table(83, "eip_route", INTEGRATION,
          "edge: an elastic IP's packet goes to its holder's host, a recorded connection of a "
          "draining remap to its old holder's",
          frozenset({REG_BINDING} | _L3), (), miss="no_destination", steers=True),
    Table(85, "nat_icmp", INTEGRATION,
          "edge: ICMP for a public address goes to the host that last sent to its source (learned)",
          frozenset(_L3), (), miss="nat_icmp_unknown"),
    Table(90, "edge_out", INTEGRATION,
          "edge: send toward the external gateway (its MAC is learned from ARP)",
          frozenset(_L3), (), miss="gateway_unresolved"),
    Table(0, "underlay", UNDERLAY,
          "the substrate link: hand tunnel packets for this switch's prefix to the tunnel endpoint",
          frozenset({"in_port", "eth_type", "ip_proto", "ipv6_dst", "udp_dst"}), (), miss=""),
)

BY_NAME: Dict[Tuple[str, str], Table] = {(t.bridge, t.name): t for t in TABLES}
_NAMES = {t.name: t for t in TABLES}
STEERING = frozenset(t.name for t in TABLES if t.steers)


def table(name: str) -> Table:
    return _NAMES[name]


def table_id(name: str) -> int:
    return _NAMES[name].id


_GOING = frozenset((Goto, Ct))  # the actions that name a next table
# the tables each table may go on to: named among its next tables, and after it
_ONWARD = {t.name: frozenset(n for n in t.next_tables if _NAMES[n].id > t.id) for t in TABLES}
# what verify reads of a table, in one look-up: the fields it may match, the tables it may go to
_CHECKS = {t.name: (t.matches, _ONWARD[t.name]) for t in TABLES}


class PipelineError(ValueError):
    pass


def verify(f: Flow, _checks=_CHECKS, _going=_GOING) -> None:
    """Raise PipelineError if a flow does not fit its table's declaration."""
    # This runs for every compiled flow (3.3 million at 100k interfaces): one look-up for the
    # table, a set test per match field and one per action, names bound once (measured: plain
    # loops beat issuperset over a map of a few items by a third); _refuse says what is wrong.
    check = _checks.get(f.table)
    if check is None:
        raise PipelineError(f"flow for unknown table {f.table!r}")
    fields, onward = check
    for name, _ in f.match:
        if name not in fields:
            _refuse(_NAMES[f.table], f)
    for a in f.actions:
        if type(a) in _going and a.table not in onward and a.table is not None:
            _refuse(_NAMES[f.table], f)


def _refuse(t: Table, f: Flow) -> None:
    extra = {name for name, _ in f.match} - t.matches
    if extra:
        raise PipelineError(f"table {t.name} may not match {sorted(extra)}: {f}")
    for a in f.actions:
        if a.__class__ not in _GOING or a.table is None:
            continue
        target = a.table
        if target not in t.next_tables:
            raise PipelineError(f"table {t.name} may not go to {target}: {f}")
        if _NAMES[target].id <= t.id:
            raise PipelineError(f"goto must go forward: {t.name} -> {target}")
