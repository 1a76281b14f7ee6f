"""Render Flow values as OpenFlow 1.3 messages (os-ken objects), and read installed flows back.

Sync compares flows by (table id, priority, match, cookie): `match_key` gives the same
canonical form for a match we build and for one the switch reports.

A flow's wire form (its sync key, its instructions' bytes, its flow_mod body) is encoded once
per set of port numbers and kept with the flow (`Flow.wire`): the controller keeps compiled
flows for as long as the model holds, so a reconnecting or restarted switch costs no encoding.
The encoding itself reuses os-ken's bytes for each distinct match field and action list
(`_field`, `_instructions_of`) instead of building an OFPMatch and an OFPFlowMod per flow,
which is where a naive controller spends most of its time. The bundle adds that carry the
flow_mods are packed straight into a few large buffers (`bundle_adds`), not one os-ken message each.
"""
from __future__ import annotations

import struct
from typing import Dict, NamedTuple, Optional

from vpcflow.controller.framework import nicira_ext, ofp, ofproto_common, parser
from vpcflow.flows import pipeline
from vpcflow.flows.core import (FIELDS, Conjunction, Ct, CtNat, Flow, Goto, Learn, Load, Move, Output, Pop, Push,
                                Resubmit, SetField)

_SPECIAL = {"IN_PORT": ofp.OFPP_IN_PORT, "LOCAL": ofp.OFPP_LOCAL, "NORMAL": ofp.OFPP_NORMAL,
            "CONTROLLER": ofp.OFPP_CONTROLLER}
_NXM_NAMES = {t.name for t in nicira_ext.oxm_types}
NX_NAT_F_SRC, NX_NAT_F_DST = 1 << 0, 1 << 1  # nx_action_nat flags (os-ken names only the range bits)


class UnresolvedPort(LookupError):
    """The flow names a port the switch does not have (yet)."""


def nxm_name(field: str) -> str:
    """os-ken's name for a field as NXM subfield (move, load, learn, push, pop)."""
    name = FIELDS[field].osken
    return f"{name}_nxm" if f"{name}_nxm" in _NXM_NAMES else name


def _port(name: str, ports: Dict[str, int]) -> int:
    if name in _SPECIAL:
        return _SPECIAL[name]
    try:
        return ports[name]
    except KeyError:
        raise UnresolvedPort(name) from None


def _match(f: Flow, ports: Dict[str, int]):
    """The flow's match as an os-ken OFPMatch (what the wire encoding below must equal)."""
    kwargs = {}
    for name, value in f.match:
        if name == "in_port":
            value = _port(value, ports)
        kwargs[FIELDS[name].osken] = value
    return parser.OFPMatch(**kwargs)


def _learn(a: Learn, ports):
    specs = []
    for s in a.specs:
        n = s.width
        src = s.src if isinstance(s.src, int) else (nxm_name(s.src), s.src_ofs)
        if s.kind == "output":
            specs.append(parser.NXFlowSpecOutput(src=src, n_bits=n))
        elif s.kind == "load":
            specs.append(parser.NXFlowSpecLoad(src=src, dst=(nxm_name(s.dst), s.dst_ofs), n_bits=n))
        else:
            specs.append(parser.NXFlowSpecMatch(src=src, dst=(nxm_name(s.dst), s.dst_ofs), n_bits=n))
    return parser.NXActionLearn(
        table_id=pipeline.table_id(a.table), specs=specs, priority=a.priority, cookie=a.cookie,
        idle_timeout=a.idle_timeout, hard_timeout=a.hard_timeout,
        fin_idle_timeout=a.fin_idle_timeout, fin_hard_timeout=a.fin_hard_timeout,
        flags=ofp.OFPFF_SEND_FLOW_REM if a.send_flow_rem else 0)


class _NXActionNAT(parser.NXActionNAT):
    """os-ken's NXActionNAT rounds the action's length up to 8 bytes without writing the padding,
    so a nat whose optional fields do not fill 8 bytes (nat(src=IP), nat(dst=IP:PORT)) is refused
    (OFPBAC_BAD_LEN). This one writes the zero padding, as Open vSwitch does."""

    def serialize_body(self):
        data = super().serialize_body()
        header = ofp.OFP_ACTION_EXPERIMENTER_HEADER_SIZE + 2  # experimenter header, subtype
        return data + bytes(-(header + len(data)) % 8)


def _nat(n: CtNat):
    """NXActionNAT encoded as Open vSwitch re-encodes it (a maximum only where it differs from
    the minimum), so that the instructions it reports back are byte for byte the ones sent."""
    if n.kind is None:
        return _NXActionNAT(flags=0)
    kwargs = {"range_ipv4_min": n.ip}
    if n.port_lo is not None:
        kwargs["range_proto_min"] = n.port_lo
        if n.port_hi not in (None, n.port_lo):
            kwargs["range_proto_max"] = n.port_hi
    flags = NX_NAT_F_SRC if n.kind == "src" else NX_NAT_F_DST
    return _NXActionNAT(flags=flags, **kwargs)


def _ct(a: Ct):
    if isinstance(a.zone, str):
        zone_src, zone = nxm_name(a.zone), nicira_ext.ofs_nbits(0, 15)
    else:
        zone_src, zone = "", a.zone
    nested = [_nat(a.nat)] if a.nat is not None else []
    if a.mark is not None:
        nested.append(parser.NXActionRegLoad(ofs_nbits=nicira_ext.ofs_nbits(0, 31), dst="ct_mark", value=a.mark))
    if a.label_bit is not None:
        bit = nicira_ext.ofs_nbits(a.label_bit, a.label_bit)
        nested.append(parser.NXActionRegLoad(ofs_nbits=bit, dst="ct_label", value=1))
    table = pipeline.table_id(a.table) if a.table else nicira_ext.NX_CT_RECIRC_NONE
    return parser.NXActionCT(flags=nicira_ext.NX_CT_F_COMMIT if a.commit else 0, zone_src=zone_src,
                             zone_ofs_nbits=zone, recirc_table=table, alg=0, actions=nested)


def _action(a, ports):
    if isinstance(a, Output):
        return parser.OFPActionOutput(_port(a.port, ports), ofp.OFPCML_NO_BUFFER)
    if isinstance(a, SetField):
        return parser.OFPActionSetField(**{FIELDS[a.field].osken: a.value})
    if isinstance(a, Move):
        return parser.NXActionRegMove(src_field=nxm_name(a.src), dst_field=nxm_name(a.dst), n_bits=a.width,
                                      src_ofs=a.src_ofs, dst_ofs=a.dst_ofs)
    if isinstance(a, Load):
        return parser.NXActionRegLoad(ofs_nbits=nicira_ext.ofs_nbits(a.ofs, a.ofs + a.width - 1), dst=nxm_name(a.dst),
                                      value=a.value)
    if isinstance(a, Learn):
        return _learn(a, ports)
    if isinstance(a, Ct):
        return _ct(a)
    if isinstance(a, Resubmit):
        # NX resubmit takes a 16-bit port: 0xfff8 is OpenFlow 1.0's IN_PORT, "the packet's own"
        return parser.NXActionResubmitTable(in_port=0xFFF8, table_id=pipeline.table_id(a.table))
    if isinstance(a, (Push, Pop)):
        # (on the wire, os-ken's start and end are the offset and the number of bits; the field
        # by its NXM header, as Open vSwitch reports a stack action back)
        make = parser.NXActionStackPush if isinstance(a, Push) else parser.NXActionStackPop
        return make(field=nxm_name(a.field), start=0, end=FIELDS[a.field].bits)
    if isinstance(a, Conjunction):
        # on the wire the clause is 0-based (ovs-ofctl's k/n is 1-based)
        return parser.NXActionConjunction(clause=a.clause - 1, n_clauses=a.n_clauses, id_=a.id)
    raise TypeError(f"no OpenFlow form for {a!r}")


def instructions(f: Flow, ports: Dict[str, int]):
    actions, out = [], []
    for a in f.actions:
        if isinstance(a, Goto):
            out.append(parser.OFPInstructionGotoTable(pipeline.table_id(a.table)))
        else:
            actions.append(_action(a, ports))
    if actions:
        out.insert(0, parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    return out


def osken_flow_mod(dp, f: Flow, ports: Dict[str, int], command=None):
    """The flow_mod built by os-ken's own classes: slow, the reference for the encoding below."""
    return parser.OFPFlowMod(
        dp, cookie=f.cookie, table_id=pipeline.table_id(f.table), priority=f.priority,
        command=ofp.OFPFC_ADD if command is None else command,
        idle_timeout=f.idle_timeout, hard_timeout=f.hard_timeout,
        match=_match(f, ports), instructions=instructions(f, ports))


def delete_strict(dp, table_id: int, priority: int, match, cookie: int):
    """Delete exactly one flow of ours: same table, priority, match and cookie."""
    return parser.OFPFlowMod(
        dp, cookie=cookie, cookie_mask=0xFFFFFFFFFFFFFFFF, table_id=table_id, priority=priority,
        command=ofp.OFPFC_DELETE_STRICT, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=match)


def _norm(v):
    return v.lower() if isinstance(v, str) else v


def match_key(match) -> frozenset:
    """A canonical, order-free form of an OFPMatch (built here or parsed from the switch)."""
    items = []
    for field in match._fields2:
        name, value = field
        mask = None
        if isinstance(value, tuple):
            value, mask = value
        items.append((name, _norm(value), _norm(mask)))
    return frozenset(items)


def _instructions_bytes(insts) -> bytes:
    buf = bytearray()
    for inst in insts:
        inst.serialize(buf, len(buf))
    return bytes(buf)


# --- the wire form, encoded once per flow ----------------------------------------------------------

class Wire(NamedTuple):
    key: tuple  # (table id, priority, match key): what sync compares
    content: tuple  # (instructions' bytes, idle timeout, hard timeout)
    body: bytes  # the OFPT_FLOW_MOD message after its header, command ADD


_MATCH_HEADER = struct.Struct("!HH")
_FLOW_MOD = struct.Struct(ofp.OFP_FLOW_MOD_PACK_STR0)
# Distinct (field, value) and action lists are few next to the flows that share them; the caches
# are emptied when they grow past this (a long-running controller sees many models).
_CACHE_LIMIT = 1 << 20
_fields: Dict[tuple, tuple] = {}
_instruction_bytes: Dict[tuple, bytes] = {}


def _field(name: str, value):
    """(OXM type, the field as the switch reports it back, its TLV bytes), as OFPMatch makes them."""
    entry = _fields.get((name, value))
    if entry is None:
        if len(_fields) > _CACHE_LIMIT:
            _fields.clear()
        k, v = ofp.oxm_normalize_user(name, value)
        n, wire_value, mask = ofp.oxm_from_user(k, v)
        buf = bytearray()
        ofp.oxm_serialize(n, wire_value, mask, buf, 0)
        user_name, user_value = ofp.oxm_to_user(n, wire_value, mask)
        user_mask = None
        if isinstance(user_value, tuple):
            user_value, user_mask = user_value
        entry = _fields[(name, value)] = (n[0] if isinstance(n, tuple) else n,
                                          (user_name, _norm(user_value), _norm(user_mask)), bytes(buf))
    return entry


def _instructions_of(f: Flow, ports: Dict[str, int]) -> bytes:
    outputs = tuple(_port(a.port, ports) for a in f.actions if isinstance(a, Output))
    key = (f.actions, outputs)
    data = _instruction_bytes.get(key)
    if data is None:
        if len(_instruction_bytes) > _CACHE_LIMIT:
            _instruction_bytes.clear()
        data = _instruction_bytes[key] = _instructions_bytes(instructions(f, ports))
    return data


def _encode(f: Flow, ports: Dict[str, int]) -> Wire:
    fields = [_field(FIELDS[name].osken, _port(value, ports) if name == "in_port" else value)
              for name, value in f.match]
    fields.sort(key=_oxm_type)  # as OFPMatch orders them (eth_type before the fields needing it)
    oxm = b"".join(tlv for _, _, tlv in fields)
    length = _MATCH_HEADER.size + len(oxm)
    match = _MATCH_HEADER.pack(ofp.OFPMT_OXM, length) + oxm + bytes(-length % 8)
    table_id = pipeline.table_id(f.table)
    insts = _instructions_of(f, ports)
    head = _FLOW_MOD.pack(f.cookie, 0, table_id, ofp.OFPFC_ADD, f.idle_timeout, f.hard_timeout, f.priority,
                          ofp.OFP_NO_BUFFER, 0, 0, 0)
    return Wire((table_id, f.priority, frozenset(user for _, user, _ in fields)),
                (insts, f.idle_timeout, f.hard_timeout), head + match + insts)


def _oxm_type(field):
    return field[0]


def wire(f: Flow, ports: Dict[str, int]) -> Optional[Wire]:
    """The flow's wire form for these port numbers, or None if it names a port not present."""
    if f.wire is None:
        f.wire = (tuple(f.ports()), {})
    names, by_numbers = f.wire
    numbers = tuple(ports.get(p) for p in names)
    found = by_numbers.get(numbers)
    if found is None:
        if None in numbers:
            return None
        if len(by_numbers) > 4:  # port numbers changed (a port re-added): keep the latest only
            by_numbers.clear()
        found = by_numbers[numbers] = _encode(f, ports)
    return found


def _wire_of(f: Flow, ports: Dict[str, int]) -> Wire:
    w = wire(f, ports)
    if w is None:
        raise UnresolvedPort(next(p for p in f.ports() if p not in ports and p not in _SPECIAL))
    return w


def flow_mod(f: Flow, ports: Dict[str, int]) -> tuple:
    """The OFPT_FLOW_MOD (command ADD) that adds f, as a bundle add carries it: (type, body)."""
    return ofp.OFPT_FLOW_MOD, _wire_of(f, ports).body


def message(msg) -> tuple:
    """Any os-ken message as a bundle add carries it: (type, body after the header)."""
    msg.serialize()
    return msg.msg_type, bytes(msg.buf[ofp.OFP_HEADER_SIZE:])


def desired_key(f: Flow, ports: Dict[str, int]) -> Optional[tuple]:
    """(table id, priority, match key) of a flow, or None if it names a port not present."""
    w = wire(f, ports)
    return None if w is None else w.key


def desired_content(f: Flow, ports: Dict[str, int]) -> tuple:
    """What sync compares besides key and cookie: wire instructions and timeouts."""
    return _wire_of(f, ports).content


# --- bundle adds, many to a buffer ------------------------------------------------------------

# OpenFlow header, ONF experimenter id and type, bundle id, pad, flags, the inner message's header
_BUNDLE_ADD = struct.Struct("!BBHIIII2xHBBHI")
_CHUNK = 1 << 16  # bytes per write: the switch starts on the first while the rest are encoded


def bundle_adds(bundle_id: int, flags: int, messages, first_xid: int):
    """ONF bundle-add messages carrying messages ((type, body) each), byte for byte as os-ken's
    ONFBundleAddMsg serializes them, the i-th with xid first_xid + i (modulo 2**32; its inner
    message has the same, as the bundle extension requires). Yields buffers of about _CHUNK
    bytes: os-ken queues and writes each message on its own, which costs more than encoding it."""
    pack, head, onf = _BUNDLE_ADD.pack, _BUNDLE_ADD.size, ofproto_common.ONF_EXPERIMENTER_ID
    buf, size = [], 0
    for i, (msg_type, body) in enumerate(messages):
        xid, n = (first_xid + i) & ofp.MAX_XID, head + len(body)
        buf.append(pack(ofp.OFP_VERSION, ofp.OFPT_EXPERIMENTER, n, xid, onf, ofp.ONF_ET_BUNDLE_ADD_MESSAGE,
                        bundle_id, flags, ofp.OFP_VERSION, msg_type, n - head + ofp.OFP_HEADER_SIZE, xid))
        buf.append(body)
        size += n
        if size >= _CHUNK:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def _padded_nat(actions):
    """Parsed actions with every NXActionNAT (also inside ct) as _NXActionNAT, so that they
    serialize back to the bytes the switch sent."""
    out = []
    for a in actions:
        if isinstance(a, parser.NXActionNAT) and not isinstance(a, _NXActionNAT):
            a = _NXActionNAT(a.flags, a.range_ipv4_min, a.range_ipv4_max, a.range_ipv6_min, a.range_ipv6_max,
                             a.range_proto_min, a.range_proto_max)
        elif isinstance(a, parser.NXActionCT):
            a.actions = _padded_nat(a.actions)
        out.append(a)
    return out


def installed_content(stats) -> tuple:
    """The same, for a flow the switch reports (OFPFlowStats)."""
    for inst in stats.instructions:
        if isinstance(inst, parser.OFPInstructionActions):
            inst.actions = _padded_nat(inst.actions)
    return (_instructions_bytes(stats.instructions), stats.idle_timeout, stats.hard_timeout)
