"""`vpcflow trace`: ofproto/trace on a live bridge, each step named by the feature and object of
its flow's cookie, ending in the verdict.

Cookies are read back through the flows compiled from the deployment file (a hash cannot be
inverted). Conntrack steps are shown as OVS reports them; a flow that matched on ct_state and
ct_mark says which rule's cached verdict decided.
"""
from __future__ import annotations

import re
import subprocess
from typing import List, Optional

from vpcflow.flows import cookies, pipeline
from vpcflow.flows.compiler import compile_deployment

STEP = re.compile(r"^\s*(\d+)\.\s+(?:(.*?), )?priority (\d+), cookie (0x[0-9a-f]+)\s*$")


class TraceError(RuntimeError):
    pass


def run_trace(bridge: str, flow: str, target: Optional[str] = None, extra: List[str] = ()) -> str:
    cmd = ["ovs-appctl"] + (["-t", target] if target else []) + ["ofproto/trace", bridge, flow, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise TraceError(r.stderr.strip() or r.stdout.strip())
    return r.stdout


def explain(trace: str, dep, switch: str) -> List[str]:
    """The trace's steps, each with what made its flow, and a last line with the verdict."""
    compiled = compile_deployment(dep)[switch]
    names = cookies.names(compiled.integration + compiled.underlay)
    tables = {t.id: t.name for t in pipeline.TABLES if t.bridge == pipeline.INTEGRATION}
    out, last = [], None
    for line in trace.splitlines():
        m = STEP.match(line)
        if not m:
            if line.strip().startswith(("Datapath actions:", "Final flow:", "bridge(", "resume conntrack", "Resuming")):
                out.append(line.rstrip())
            continue
        table, match, priority, cookie = int(m.group(1)), m.group(2) or "", m.group(3), int(m.group(4), 16)
        feature, obj = names.get(cookies.name_key(cookie), (cookies.feature_of(cookie), None))
        note = f"{feature or 'unknown cookie'} {obj or ''}".strip()
        if "ct_state=" in match and "ct_mark=" in match:
            note += " (conntrack: the connection's cached verdict)"
        out.append(f"{table:3d} {tables.get(table, '?'):15} prio {priority:>3}  {note}    [{match}]")
        last = (feature, obj)
    datapath = next((ln for ln in trace.splitlines() if ln.startswith("Datapath actions:")), "")
    if last and last[0] == "drop":
        out.append(f"verdict: dropped, {last[1].split(':', 1)[-1]}")
    elif datapath.strip().endswith("drop"):
        out.append("verdict: dropped")
    elif last:
        out.append(f"verdict: forwarded ({datapath.split(':', 1)[-1].strip()})")
    return out
