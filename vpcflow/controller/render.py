"""Render Flow values as OpenFlow 1.3 messages (os-ken objects), and read installed flows back.

Sync compares flows by (table id, priority, match, cookie): `match_key` gives the same
canonical form for a match we build and for one the switch reports.
"""
from __future__ import annotations

from typing import Dict, Optional

from vpcflow.controller.framework import nicira_ext, ofp, parser
from vpcflow.flows import pipeline
from vpcflow.flows.core import (FIELDS, Conjunction, Ct, CtNat, Flow, Goto, Learn, Load, Move, Output, Resubmit,
                                SetField)

_SPECIAL = {"IN_PORT": ofp.OFPP_IN_PORT, "LOCAL": ofp.OFPP_LOCAL, "NORMAL": ofp.OFPP_NORMAL,
            "CONTROLLER": ofp.OFPP_CONTROLLER}
_NXM_NAMES = {t.name for t in nicira_ext.oxm_types}
NX_NAT_F_SRC, NX_NAT_F_DST = 1 << 0, 1 << 1  # nx_action_nat flags (os-ken names only the range bits)


class UnresolvedPort(LookupError):
    """The flow names a port the switch does not have (yet)."""


def nxm_name(field: str) -> str:
    """os-ken's name for a field as NXM subfield (move, load, learn)."""
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


def flow_mod(dp, f: Flow, ports: Dict[str, int], command=None):
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


def desired_key(f: Flow, ports: Dict[str, int]) -> Optional[tuple]:
    """(table id, priority, match key) of a flow, or None if it names a port not present."""
    if any(p not in ports for p in f.ports()):
        return None
    return (pipeline.table_id(f.table), f.priority, match_key(_match(f, ports)))


def _instructions_bytes(insts) -> bytes:
    buf = bytearray()
    for inst in insts:
        inst.serialize(buf, len(buf))
    return bytes(buf)


def desired_content(f: Flow, ports: Dict[str, int]) -> tuple:
    """What sync compares besides key and cookie: wire instructions and timeouts."""
    return (_instructions_bytes(instructions(f, ports)), f.idle_timeout, f.hard_timeout)


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
