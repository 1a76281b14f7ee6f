"""Flow values: what the compiler produces and the renderers consume.

A `Flow` is plain data. Ports are named, not numbered (`in_port=web1`): the ovs-ofctl renderer
prints the names and the OpenFlow renderer resolves them against the switch's port list.
Field names are the canonical names of `FIELDS` below; each knows its spelling in ovs-ofctl,
in os-ken's OFPMatch/OFPActionSetField and in NXM (for move/load/learn).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Optional, Tuple, Union

from vpcflow.flows import cookies


@dataclasses.dataclass(frozen=True)
class Field:
    ofctl: str
    osken: str
    nxm: str
    bits: int


FIELDS = {
    "in_port": Field("in_port", "in_port", "NXM_OF_IN_PORT", 16),
    "eth_src": Field("eth_src", "eth_src", "NXM_OF_ETH_SRC", 48),
    "eth_dst": Field("eth_dst", "eth_dst", "NXM_OF_ETH_DST", 48),
    "eth_type": Field("eth_type", "eth_type", "NXM_OF_ETH_TYPE", 16),
    "ip_proto": Field("ip_proto", "ip_proto", "NXM_OF_IP_PROTO", 8),
    "ipv4_src": Field("ip_src", "ipv4_src", "NXM_OF_IP_SRC", 32),
    "ipv4_dst": Field("ip_dst", "ipv4_dst", "NXM_OF_IP_DST", 32),
    "ipv6_src": Field("ipv6_src", "ipv6_src", "NXM_NX_IPV6_SRC", 128),
    "ipv6_dst": Field("ipv6_dst", "ipv6_dst", "NXM_NX_IPV6_DST", 128),
    "tcp_src": Field("tcp_src", "tcp_src", "NXM_OF_TCP_SRC", 16),
    "tcp_dst": Field("tcp_dst", "tcp_dst", "NXM_OF_TCP_DST", 16),
    "tcp_flags": Field("tcp_flags", "tcp_flags", "NXM_NX_TCP_FLAGS", 12),
    "udp_src": Field("udp_src", "udp_src", "NXM_OF_UDP_SRC", 16),
    "udp_dst": Field("udp_dst", "udp_dst", "NXM_OF_UDP_DST", 16),
    "icmpv4_type": Field("icmp_type", "icmpv4_type", "NXM_OF_ICMP_TYPE", 8),
    "icmpv4_code": Field("icmp_code", "icmpv4_code", "NXM_OF_ICMP_CODE", 8),
    "arp_op": Field("arp_op", "arp_op", "NXM_OF_ARP_OP", 16),
    "arp_spa": Field("arp_spa", "arp_spa", "NXM_OF_ARP_SPA", 32),
    "arp_tpa": Field("arp_tpa", "arp_tpa", "NXM_OF_ARP_TPA", 32),
    "arp_sha": Field("arp_sha", "arp_sha", "NXM_NX_ARP_SHA", 48),
    "arp_tha": Field("arp_tha", "arp_tha", "NXM_NX_ARP_THA", 48),
    "tunnel_id": Field("tun_id", "tunnel_id", "NXM_NX_TUN_ID", 64),
    "tun_ipv6_src": Field("tun_ipv6_src", "tun_ipv6_src", "NXM_NX_TUN_IPV6_SRC", 128),
    "tun_ipv6_dst": Field("tun_ipv6_dst", "tun_ipv6_dst", "NXM_NX_TUN_IPV6_DST", 128),
    "ct_state": Field("ct_state", "ct_state", "NXM_NX_CT_STATE", 32),
    "ct_zone": Field("ct_zone", "ct_zone", "NXM_NX_CT_ZONE", 16),
    "ct_mark": Field("ct_mark", "ct_mark", "NXM_NX_CT_MARK", 32),
    "ct_label": Field("ct_label", "ct_label", "NXM_NX_CT_LABEL", 128),
    "conj_id": Field("conj_id", "conj_id", "NXM_NX_CONJ_ID", 32),
}
for _n in range(8):
    FIELDS[f"reg{_n}"] = Field(f"reg{_n}", f"reg{_n}", f"NXM_NX_REG{_n}", 32)

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
IPPROTO = {"icmp": 1, "tcp": 6, "udp": 17}


Value = Union[int, str]
# A match entry: (field, value) or (field, (value, mask)).
MatchItem = Tuple[str, Union[Value, Tuple[Value, Value]]]


def _check_field(name: str) -> None:
    if name not in FIELDS:
        raise ValueError(f"unknown field {name!r}")


# --- actions -------------------------------------------------------------------------------
# Actions are values: compared, hashed, never changed once built. Not frozen=True: a frozen
# dataclass sets each field through object.__setattr__, which makes building one three times
# slower, and a big switch's flows hold millions of actions.
_action = dataclasses.dataclass(unsafe_hash=True, slots=True)


@_action
class Output:
    port: str  # a port name, or IN_PORT / LOCAL / CONTROLLER / NORMAL


@_action
class Goto:
    table: str  # a table name of the pipeline


@_action
class SetField:
    field: str
    value: Value

    def __post_init__(self):
        _check_field(self.field)


@_action
class Move:
    """Copy n_bits from src[src_ofs..] to dst[dst_ofs..] (NXAST_REG_MOVE)."""

    src: str
    dst: str
    n_bits: Optional[int] = None  # None: the whole field
    src_ofs: int = 0
    dst_ofs: int = 0

    def __post_init__(self):
        _check_field(self.src)
        _check_field(self.dst)

    @property
    def width(self) -> int:
        return self.n_bits if self.n_bits is not None else FIELDS[self.src].bits


@_action
class Load:
    """Write an immediate value into dst[ofs..ofs+n_bits-1] (NXAST_REG_LOAD)."""

    value: int
    dst: str
    ofs: int = 0
    n_bits: Optional[int] = None

    def __post_init__(self):
        _check_field(self.dst)

    @property
    def width(self) -> int:
        return self.n_bits if self.n_bits is not None else FIELDS[self.dst].bits


@_action
class LearnSpec:
    """One argument of a learn action.

    kind "match": the learned flow matches dst = src (src a field of this packet, or a value);
    kind "load": the learned flow loads src (field or value) into dst;
    kind "output": the learned flow outputs to the port in src.
    """

    kind: str
    src: Union[str, int]
    dst: Optional[str] = None
    n_bits: Optional[int] = None
    src_ofs: int = 0
    dst_ofs: int = 0

    def __post_init__(self):
        if self.kind not in ("match", "load", "output"):
            raise ValueError(f"learn spec kind {self.kind!r}")
        if isinstance(self.src, str):
            _check_field(self.src)
        if self.dst is not None:
            _check_field(self.dst)

    @property
    def width(self) -> int:
        if self.n_bits is not None:
            return self.n_bits
        return FIELDS[self.dst if self.dst else self.src].bits


@_action
class Learn:
    """Add or refresh a flow from inside the switch (NXAST_LEARN)."""

    table: str
    priority: int
    feature: str  # one of the learned_* cookie features: sync never touches these flows
    obj: str
    specs: Tuple[LearnSpec, ...]
    idle_timeout: int = 0
    hard_timeout: int = 0
    fin_idle_timeout: int = 0
    fin_hard_timeout: int = 0
    send_flow_rem: bool = False

    @property
    def cookie(self) -> int:
        return cookies.make(self.feature, self.obj)


@_action
class CtNat:
    """The nat(...) argument of a ct action (NXAST_NAT).

    kind None: apply the translation the connection already has (and reverse it for replies and
    related ICMP errors); "src" / "dst": translate a new connection's source / destination to
    `ip`, and its port into port_lo..port_hi when given (the port is kept when not).
    """

    kind: Optional[str] = None
    ip: Optional[str] = None
    port_lo: Optional[int] = None
    port_hi: Optional[int] = None

    def __post_init__(self):
        if self.kind not in (None, "src", "dst"):
            raise ValueError(f"nat kind {self.kind!r}")
        if (self.kind is None) != (self.ip is None):
            raise ValueError("nat(src=...) and nat(dst=...) need an address; a plain nat has none")
        if self.port_hi is not None and (self.port_lo is None or not 0 < self.port_lo <= self.port_hi <= 0xFFFF):
            raise ValueError(f"nat port range {self.port_lo}-{self.port_hi}")


@_action
class Ct:
    """Send the packet through conntrack (NXAST_CT).

    zone: a constant zone, or a register name whose low 16 bits hold it.
    table: continue the pipeline in this table with ct_state filled in (recirculation).
    commit: record the connection; `mark` is then written into its ct_mark, and `label_bit`
    (a bit number) is set in its ct_label, the label's other bits kept.
    nat: translate addresses (CtNat); a translation with an address needs commit.
    """

    zone: Union[int, str]
    table: Optional[str] = None
    commit: bool = False
    mark: Optional[int] = None
    nat: Optional[CtNat] = None
    label_bit: Optional[int] = None

    def __post_init__(self):
        if isinstance(self.zone, str):
            _check_field(self.zone)
        if (self.mark is not None or self.label_bit is not None) and not self.commit:
            raise ValueError("ct mark and label need commit")
        if self.label_bit is not None and not 0 <= self.label_bit < 64:
            raise ValueError(f"ct label bit {self.label_bit}: 0..63 (one load carries 64 bits)")
        if self.nat is not None and self.nat.kind is not None and not self.commit:
            raise ValueError("a nat with an address needs commit")


@_action
class Conjunction:
    """One clause (1-based, of n) of conjunctive match `id` (NXAST_CONJUNCTION)."""

    id: int
    clause: int
    n_clauses: int


Action = Union[Output, Goto, SetField, Move, Load, Learn, Ct, Conjunction]

# ct_state bits, for matches like {"ct_state": ct_flags("+trk+est")}
CT_FLAGS = {"new": 0x01, "est": 0x02, "rel": 0x04, "rpl": 0x08, "inv": 0x10, "trk": 0x20}


@functools.lru_cache(maxsize=None)  # (a few texts, asked for by every host's flows: parsed once)
def ct_flags(text: str):
    """'+trk+est-rpl' -> (value, mask) for a ct_state match."""
    value = mask = 0
    for token in text.replace("+", " +").replace("-", " -").split():
        bit = CT_FLAGS[token[1:]]
        mask |= bit
        if token[0] == "+":
            value |= bit
    return (value, mask)

SPECIAL_PORTS = ("IN_PORT", "LOCAL", "CONTROLLER", "NORMAL")


_ITEMS: dict = {}  # the one copy of each match item (interned)


def interned(items) -> tuple:
    """The match items as a tuple of the one copy of each (field, value) pair: most repeat across
    flows (eth_type, a network's id, an address), and they were a third of a big compile's
    memory. Flow takes its match as it is given: flow() interns its dict's items; a builder
    that calls Flow itself interns the parts it puts together once (a network's, an address's),
    not every flow's match (a dict look-up per item and flow was a seventh of a big compile)."""
    return tuple(map(_ITEMS.setdefault, items, items))


_ONE: dict = {}  # field -> {value: interned(((field, value),))}


def one_item(field: str, value) -> tuple:
    """interned(((field, value),)), looked up by its value: a string keeps its hash, a tuple
    makes its own again at every look-up (an address's item, asked for by every class and
    group that may reach it, cost 590 ns through interned() and 130 ns here)."""
    by_value = _ONE.get(field)
    if by_value is None:
        by_value = _ONE[field] = {}
    found = by_value.get(value)
    if found is None:
        found = by_value[value] = interned(((field, value),))
    return found


class _Loads(dict):
    """value -> Load(value, dst, ofs, n_bits), made when first asked for (loads())."""

    __slots__ = ("dst", "ofs", "n_bits")

    def __missing__(self, value):
        load = self[value] = Load(value, self.dst, self.ofs, self.n_bits)
        return load


_LOADS: dict = {}  # (dst, ofs, n_bits) -> its _Loads


def loads(dst: str, ofs: int = 0, n_bits: Optional[int] = None) -> _Loads:
    """The Loads into dst[ofs..] by value (loads(REG_DST_ZONE, 0, 16)[zone]), one object for
    every flow that loads a value: an interface's zone and its groups' class are loaded by
    several flows of each interface (port security, its destination look-ups), a few hundred
    new objects per host otherwise."""
    found = _LOADS.get((dst, ofs, n_bits))
    if found is None:
        found = _LOADS[(dst, ofs, n_bits)] = _Loads()
        found.dst, found.ofs, found.n_bits = dst, ofs, n_bits
    return found


def forget_items():
    """Let go of the match items and loads kept for sharing (when a new model comes in force:
    the flows in use keep theirs; new flows share among themselves again)."""
    _ITEMS.clear()
    _ONE.clear()
    _LOADS.clear()


_FLOW_FIELDS = ("table", "priority", "match", "actions", "feature", "obj", "idle_timeout", "hard_timeout")


class Flow:
    """One flow: plain data, to be treated as immutable (its hash and caches assume it).

    A slotted class rather than a frozen dataclass: a big switch has hundreds of thousands of
    flows and a frozen dataclass costs four times as much to build. Equality, hash and repr are
    those of the dataclass it replaces. What is costly to derive from a flow (its cookie, its
    OpenFlow wire form) is done once and kept with it: compiled flows are shared between
    switches and synced again and again. Not its key: cheap to make, costly to keep for
    millions of flows.

    Few slots: memory first touched is costly (a 100k-interface compile spent a sixth of its
    time in the kernel, faulting pages in), and sizes go by 16 bytes: with the collector's
    header, 8 slots take 96 bytes, the 11 it had 128. So no timeouts here (no compiled flow
    has one: learned flows take theirs from their Learn): a flow with one is a TimedFlow,
    which make_flow() chooses. And no flag of its check against the pipeline: a flow is
    checked when the run it is made in is (a full compile checked 3% of them twice).
    """

    __slots__ = _FLOW_FIELDS[:6] + ("_cookie", "wire")
    idle_timeout = hard_timeout = 0

    def __init__(self, table: str, priority: int, match: Tuple[MatchItem, ...], actions: Tuple[Action, ...],
                 feature: str, obj: str):
        # the fields are checked by pipeline.verify (every compiled flow, against its table)
        self.table = table
        self.priority = priority
        self.match = match  # a tuple of items, shared with other flows where they repeat (interned)
        self.actions = actions  # empty: drop
        self.feature = feature
        self.obj = obj  # the object that made the flow: "eni-web1", "drop:spoofed", ...
        self._cookie = self.wire = None

    def _fields(self):
        return (self.table, self.priority, self.match, self.actions, self.feature, self.obj, self.idle_timeout,
                self.hard_timeout)

    def __eq__(self, other):
        if not isinstance(other, Flow):
            return NotImplemented
        return self is other or self._fields() == other._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return "Flow(" + ", ".join(f"{n}={v!r}" for n, v in zip(_FLOW_FIELDS, self._fields())) + ")"

    def __reduce__(self):
        return (make_flow, self._fields())

    def replace(self, **changes) -> "Flow":
        return make_flow(**{**dict(zip(_FLOW_FIELDS, self._fields())), **changes})

    @property
    def key(self):
        """What identifies a flow in a switch: table, priority and match (order-free)."""
        # Not kept: a frozenset per flow would be a third of a big compile's memory.
        return (self.table, self.priority, frozenset(self.match))

    @property
    def cookie(self) -> int:
        if self._cookie is None:
            self._cookie = cookies.make(self.feature, self.obj, self.content_digest())
        return self._cookie

    def content_digest(self) -> int:
        # The low cookie bits carry a digest of what the switch cannot be compared on reliably
        # (actions re-encoded by OVS, timeouts): sync then compares (key, cookie) only.
        text = repr((self.actions, self.idle_timeout, self.hard_timeout)).encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")

    def ports(self):
        """Port names the flow refers to: it can be installed only once they exist."""
        names = [v for f, v in self.match if f == "in_port"]
        names += [a.port for a in self.actions if isinstance(a, Output) and a.port not in SPECIAL_PORTS]
        return names


class TimedFlow(Flow):
    """A flow that expires (idle_timeout, hard_timeout in seconds; 0: never)."""

    __slots__ = ("idle_timeout", "hard_timeout")

    def __init__(self, table: str, priority: int, match: Tuple[MatchItem, ...], actions: Tuple[Action, ...],
                 feature: str, obj: str, idle_timeout: int = 0, hard_timeout: int = 0):
        super().__init__(table, priority, match, actions, feature, obj)
        self.idle_timeout = idle_timeout
        self.hard_timeout = hard_timeout


def make_flow(table: str, priority: int, match: Tuple[MatchItem, ...], actions: Tuple[Action, ...],
              feature: str, obj: str, idle_timeout: int = 0, hard_timeout: int = 0) -> Flow:
    """A Flow, or a TimedFlow where it has a timeout."""
    if idle_timeout or hard_timeout:
        return TimedFlow(table, priority, match, actions, feature, obj, idle_timeout, hard_timeout)
    return Flow(table, priority, match, actions, feature, obj)


def flow(table, priority, match, actions=(), *, feature, obj, idle_timeout=0, hard_timeout=0) -> Flow:
    """Build a Flow from a dict match (insertion order kept for readable output)."""
    items = interned(match.items() if isinstance(match, dict) else match)
    return make_flow(table, priority, items, tuple(actions), feature, obj, idle_timeout, hard_timeout)


@_action
class Push:
    """Push a whole field onto the action stack (NXAST_STACK_PUSH)."""

    field: str

    def __post_init__(self):
        _check_field(self.field)


@_action
class Pop:
    """Pop the top of the action stack into a whole field (NXAST_STACK_POP)."""

    field: str

    def __post_init__(self):
        _check_field(self.field)


def swapped(a: str, b: str) -> tuple:
    """The actions that swap two fields of the same width, through the stack: a packet is
    looked up as its reverse direction, then swapped back."""
    return Push(a), Push(b), Pop(a), Pop(b)


@_action
class Resubmit:
    """Look the packet up in another table and come back (NXAST_RESUBMIT_TABLE): a way to use
    flows that `learn` wrote, which can carry no goto of their own."""

    table: str
