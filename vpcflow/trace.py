"""`vpcflow trace`: ofproto/trace on a live bridge, each step named by the feature and object of
its flow's cookie, ending in the verdict.

Cookies are read back through the flows compiled from the deployment file (a hash cannot be
inverted); learned flows are named by the learn action that wrote them (the followed
connection's binding, the echo return). ofproto/trace does not consult conntrack: it resumes
every recirculation as +trk+new unless told otherwise. So `live_trace` looks each conntrack step
up in the switch's own conntrack table (dpctl/dump-conntrack in that zone, by the packet's
5-tuple, either direction), names the entry that decides, and traces again with the state that
entry gives (--ct-next), step by step. A flow that matched on ct_state and ct_mark then says
which rule's cached verdict decided.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
from typing import List, Optional

from vpcflow.flows import cookies, pipeline
from vpcflow.flows.compiler import compile_deployment

STEP = re.compile(r"^\s*(\d+)\.\s+(?:(.*?), )?priority (\d+), cookie (0x[0-9a-f]+)\s*$")


class TraceError(RuntimeError):
    pass


def run_trace(bridge: str, flow: str, target: Optional[str] = None, extra: List[str] = ()) -> str:
    return run_appctl(target, "ofproto/trace", bridge, flow, *extra)


CT_STEP = re.compile(r"^Datapath actions: .*?\bct\(([^)]*)\)")
MAX_CT_STEPS = 8


def _tuple(flow: str):
    """(proto, src, dst, sport, dport) of an ovs-ofctl flow description; None where not given."""
    fields = dict(part.split("=", 1) if "=" in part else (part, "") for part in flow.split(","))
    proto = next((p for p in ("tcp", "udp", "icmp") if p in fields), None)
    proto = proto or {"6": "tcp", "17": "udp", "1": "icmp"}.get(fields.get("nw_proto", fields.get("ip_proto", "")))
    # a field the description leaves out is 0 in the traced packet (ofproto/trace), ports too
    ported = "0" if proto in ("tcp", "udp") else None
    return (proto, fields.get("nw_src", fields.get("ip_src")), fields.get("nw_dst", fields.get("ip_dst")),
            fields.get("tp_src", fields.get("tcp_src", fields.get("udp_src", ported))),
            fields.get("tp_dst", fields.get("tcp_dst", fields.get("udp_dst", ported))))


ENTRY = re.compile(r"^(\w+),orig=\(src=([^,]+),dst=([^,]+)(?:,sport=(\d+),dport=(\d+))?[^)]*\),"
                   r"reply=\(src=([^,]+),dst=([^,]+)(?:,sport=(\d+),dport=(\d+))?[^)]*\)")


def find_entry(dump: str, packet):
    """(entry line, direction "orig"/"reply", ct-next state) of the conntrack entry the packet
    belongs to, or None. A TCP entry that never saw an answer (SYN_SENT) still gives +new."""
    proto, src, dst, sport, dport = packet
    for line in dump.splitlines():
        m = ENTRY.match(line.strip())
        if not m or (proto and m.group(1) != proto):
            continue
        for direction, (s, d, sp, dp) in (("orig", m.group(2, 3, 4, 5)), ("reply", m.group(6, 7, 8, 9))):
            if (s, d) == (src, dst) and (sport is None or sp == sport) and (dport is None or dp == dport):
                if direction == "reply":
                    return line.strip(), direction, "trk,est,rpl"
                state = "trk,new" if "state=SYN_SENT" in line else "trk,est"
                return line.strip(), direction, state
    return None


@dataclasses.dataclass(frozen=True)
class CtNote:
    """What the switch's conntrack says about one conntrack step of a trace."""

    zone: int
    state: str  # as --ct-next takes it
    entry: Optional[str]  # the dump line, None: no entry
    direction: Optional[str]
    mark: int

    def text(self, verdicts) -> str:
        flags = "+" + self.state.replace(",", "+")
        if self.entry is None:
            return f"conntrack zone {self.zone}: no entry for this packet: {flags}"
        out = f"conntrack zone {self.zone}: {self.direction} direction of [{self.entry}]: {flags}"
        if self.mark in verdicts:
            # ofproto/trace cannot carry an entry's mark into the next step; the mark names the rule
            out += f"; its mark is the cached verdict of {' '.join(filter(None, verdicts[self.mark]))}"
        return out


def live_trace(bridge: str, flow: str, target: Optional[str] = None, extra: List[str] = ()):
    """(trace, notes): the trace with each conntrack step's state taken from the switch's
    conntrack, and one note per step naming the entry (or its absence)."""
    packet = _tuple(flow)
    states, notes = [], []
    while True:
        args = list(extra) + [arg for st in states for arg in ("--ct-next", st)]
        raw = run_trace(bridge, flow, target, args)
        steps = [CT_STEP.match(ln) for ln in raw.splitlines()]
        steps = [m.group(1) for m in steps if m]
        if len(steps) <= len(states) or len(states) >= MAX_CT_STEPS or not packet[1]:
            return raw, notes
        zone = re.search(r"zone=(\d+)", steps[len(states)])
        zone = int(zone.group(1)) if zone else 0
        dump = run_appctl(target, "dpctl/dump-conntrack", f"zone={zone}")
        found = find_entry(dump, packet)
        line, direction, state = found or (None, None, "trk,new")
        states.append(state)
        mark = re.search(r"\bmark=(\d+)", line or "")
        notes.append(CtNote(zone, state, line, direction, int(mark.group(1)) if mark else 0))


def run_appctl(target: Optional[str], *args: str) -> str:
    cmd = ["ovs-appctl"] + (["-t", target] if target else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise TraceError(r.stderr.strip() or r.stdout.strip())
    return r.stdout


def explain(trace: str, dep, switch: str, ct_notes: List[str] = ()) -> List[str]:
    """The trace's steps, each with what made its flow, and a last line with the verdict.
    ct_notes: what live_trace found in conntrack (CtNote), one per recirculation, in order."""
    compiled = compile_deployment(dep)[switch]
    names = cookies.names(compiled.integration + compiled.underlay)
    tables = {t.id: t.name for t in pipeline.TABLES if t.bridge == pipeline.INTEGRATION}
    out, last = [], None
    notes = list(ct_notes)
    # ct_mark value -> the rule whose verdict it caches (flows matching that mark name it)
    verdicts = {dict(f.match)["ct_mark"]: (f.feature, f.obj) for f in compiled.integration
                if isinstance(dict(f.match).get("ct_mark"), int) and dict(f.match)["ct_mark"] and f.feature != "drop"}
    for line in trace.splitlines():
        m = STEP.match(line)
        if not m:
            if line.strip().startswith(("Datapath actions:", "Final flow:", "bridge(", "resume conntrack", "Resuming")):
                out.append(line.rstrip())
            elif line.startswith("recirc(") and "conntrack" in line:
                out.append(notes.pop(0).text(verdicts) if notes else line.rstrip())
            continue
        table, match, priority, cookie = int(m.group(1)), m.group(2) or "", m.group(3), int(m.group(4), 16)
        feature, obj = names.get(cookies.name_key(cookie), (cookies.feature_of(cookie), None))
        note = f"{feature or 'unknown cookie'} {obj or ''}".strip()
        if "ct_state=" in match and "ct_mark=" in match:
            note += " (conntrack: the connection's cached verdict)"
        out.append(f"{table:3d} {tables.get(table, '?'):15} prio {priority:>3}  {note}    [{match}]")
        last = (feature, obj)
    datapath = next((ln for ln in reversed(trace.splitlines()) if ln.startswith("Datapath actions:")), "")
    if last and last[0] == "drop":
        out.append(f"verdict: dropped, {last[1].split(':', 1)[-1]}")
    elif datapath.strip().endswith("drop"):
        out.append("verdict: dropped")
    elif last:
        out.append(f"verdict: forwarded ({datapath.split(':', 1)[-1].strip()})")
    return out
