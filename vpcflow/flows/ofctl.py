"""Render flows as `ovs-ofctl add-flows` text (port names, not numbers)."""
from __future__ import annotations

from typing import Iterable

from vpcflow.flows import pipeline
from vpcflow.flows.assemble import in_order
from vpcflow.flows.core import (CT_FLAGS, FIELDS, Conjunction, Ct, Flow, Goto, Learn, LearnSpec, Load, Move,
                                Output, Pop, Push, Resubmit, SetField)

_SPECIAL = {"IN_PORT": "in_port", "LOCAL": "LOCAL", "NORMAL": "NORMAL", "CONTROLLER": "CONTROLLER:65535"}


def _value(v) -> str:
    if isinstance(v, tuple):
        return f"{_value(v[0])}/{_value(v[1])}"
    if isinstance(v, int):
        return hex(v) if v > 9 else str(v)
    return str(v)


def _subfield(name: str, ofs: int, n_bits: int) -> str:
    f = FIELDS[name]
    if ofs == 0 and n_bits == f.bits:
        return f"{f.nxm}[]"
    return f"{f.nxm}[{ofs}..{ofs + n_bits - 1}]"


def _learn_spec(s: LearnSpec) -> str:
    n = s.width
    if s.kind == "output":
        return f"output:{_subfield(s.src, s.src_ofs, n)}"
    src = hex(s.src) if isinstance(s.src, int) else _subfield(s.src, s.src_ofs, n)
    dst = _subfield(s.dst, s.dst_ofs, n)
    return f"{dst}={src}" if s.kind == "match" else f"load:{src}->{dst}"


def nat_text(n) -> str:
    """nat, nat(src=IP), nat(src=IP:LO-HI), as ovs-ofctl writes them."""
    if n.kind is None:
        return "nat"
    ports = ""
    if n.port_lo is not None:
        ports = f":{n.port_lo}" if n.port_hi in (None, n.port_lo) else f":{n.port_lo}-{n.port_hi}"
    return f"nat({n.kind}={n.ip}{ports})"


def action_text(a) -> str:
    if isinstance(a, Output):
        return _SPECIAL.get(a.port) or f"output:{a.port}"
    if isinstance(a, Goto):
        return f"goto_table:{pipeline.table_id(a.table)}"
    if isinstance(a, SetField):
        return f"set_field:{_value(a.value)}->{FIELDS[a.field].ofctl}"
    if isinstance(a, Move):
        return f"move:{_subfield(a.src, a.src_ofs, a.width)}->{_subfield(a.dst, a.dst_ofs, a.width)}"
    if isinstance(a, Load):
        return f"load:{hex(a.value)}->{_subfield(a.dst, a.ofs, a.width)}"
    if isinstance(a, Ct):
        args = ["commit"] if a.commit else []
        args.append(f"zone={_subfield(a.zone, 0, 16)}" if isinstance(a.zone, str) else f"zone={a.zone}")
        if a.table:
            args.append(f"table={pipeline.table_id(a.table)}")
        if a.nat is not None:
            args.append(nat_text(a.nat))
        sets = [f"load:{hex(a.mark)}->NXM_NX_CT_MARK[]"] if a.mark is not None else []
        if a.label_bit is not None:
            sets.append(f"load:0x1->NXM_NX_CT_LABEL[{a.label_bit}]")
        if sets:
            args.append(f"exec({','.join(sets)})")
        return f"ct({','.join(args)})"
    if isinstance(a, Resubmit):
        return f"resubmit(,{pipeline.table_id(a.table)})"
    if isinstance(a, Push):
        return f"push:{FIELDS[a.field].nxm}[]"
    if isinstance(a, Pop):
        return f"pop:{FIELDS[a.field].nxm}[]"
    if isinstance(a, Conjunction):
        return f"conjunction({a.id},{a.clause}/{a.n_clauses})"
    if isinstance(a, Learn):
        args = [f"table={pipeline.table_id(a.table)}", f"priority={a.priority}", f"cookie={hex(a.cookie)}"]
        for name in ("idle_timeout", "hard_timeout", "fin_idle_timeout", "fin_hard_timeout"):
            if getattr(a, name):
                args.append(f"{name}={getattr(a, name)}")
        if a.send_flow_rem:
            args.append("send_flow_rem")
        args += [_learn_spec(s) for s in a.specs]
        return f"learn({','.join(args)})"
    raise TypeError(f"no ofctl form for {a!r}")


def _match_text(name, value) -> str:
    if name == "ct_state":  # as ovs-ofctl prints it: ct_state=+est+trk
        v, mask = value if isinstance(value, tuple) else (value, value)
        flags = "".join(("+" if v & bit else "-") + flag for flag, bit in CT_FLAGS.items() if mask & bit)
        return f"ct_state={flags}"
    return f"{FIELDS[name].ofctl}={_value(value)}"


def flow_text(f: Flow) -> str:
    parts = [f"table={pipeline.table_id(f.table)}", f"priority={f.priority}", f"cookie={hex(f.cookie)}"]
    if f.idle_timeout:
        parts.append(f"idle_timeout={f.idle_timeout}")
    if f.hard_timeout:
        parts.append(f"hard_timeout={f.hard_timeout}")
    parts += [_match_text(name, v) for name, v in f.match]
    actions = ",".join(action_text(a) for a in f.actions) or "drop"
    return ",".join(parts) + f",actions={actions}"


def render(flows: Iterable[Flow], explain: bool = False) -> str:
    """One flow per line, by table and priority; with explain, a `# table: feature object`
    comment above each flow (ovs-ofctl add-flows skips comment lines)."""
    lines = []
    for f in in_order(flows):
        if explain:
            lines.append(f"# {f.table}: {f.feature} {f.obj}")
        lines.append(flow_text(f))
    return "".join(line + "\n" for line in lines)
