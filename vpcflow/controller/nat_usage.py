"""NAT block usage: how many ports of each block the host's conntrack holds.

OpenFlow cannot read conntrack, so this asks the switch's own control socket
(`ovs-appctl -t TARGET dpctl/dump-conntrack zone=0`) where the operator gave one
(`[vpcflow] appctl_targets`, switch:path): on the controller's machine, or forwarded to it.
A translated connection's reply tuple names the public address and port it took.
"""
from __future__ import annotations

import logging
import re
import subprocess
from typing import Dict, Iterable, Optional

LOG = logging.getLogger("vpcflow.nat_usage")
APPCTL_TIMEOUT = 2.0

REPLY = re.compile(r"^(tcp|udp),.*?reply=\(src=[^,]+,dst=([^,]+),sport=\d+,dport=(\d+)\)")


def ports_in_use(dump: str, blocks: Iterable) -> Dict[str, int]:
    """{block name: distinct (protocol, port) pairs its public address holds} from a conntrack
    dump of the NAT zone. blocks: (name, ip, lo, hi)."""
    blocks = list(blocks)
    used = {name: set() for name, *_ in blocks}
    for line in dump.splitlines():
        m = REPLY.match(line.strip())
        if not m:
            continue  # ICMP (ids, not ports), or a line of another shape
        proto, ip, port = m.group(1), m.group(2), int(m.group(3))
        for name, block_ip, lo, hi in blocks:
            if ip == block_ip and lo <= port <= hi:
                used[name].add((proto, port))
    return {name: len(pairs) for name, pairs in used.items()}


def dump_nat_zone(target: str, zone: int = 0) -> Optional[str]:
    """The switch's conntrack entries in the NAT zone, or None (logged) if it cannot be asked."""
    try:
        r = subprocess.run(["ovs-appctl", "-t", target, "dpctl/dump-conntrack", f"zone={zone}"],
                           capture_output=True, text=True, timeout=APPCTL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        LOG.warning("NAT usage: ovs-appctl -t %s failed: %s", target, e)
        return None
    if r.returncode != 0:
        LOG.warning("NAT usage: ovs-appctl -t %s dpctl/dump-conntrack: %s", target, r.stderr.strip())
        return None
    return r.stdout


def block_usage(ctl, targets) -> list:
    """Every NAT block: its host, size and the ports in use (None where the host's control
    socket is not known). One conntrack dump per host."""
    from vpcflow.flows import nat  # the compiler's view of who serves which block

    with ctl.lock:
        blocks = nat.nat_plan(ctl.index).blocks
    by_host = {}
    for b, host in blocks:
        by_host.setdefault(host.name, []).append((nat.block_name(b), str(b.ip), b.ports.lo, b.ports.hi))
    used = {}
    for switch, host_blocks in by_host.items():
        target = targets.get(switch)
        dump = dump_nat_zone(target) if target else None
        if dump is not None:
            used.update({(name, switch): n for name, n in ports_in_use(dump, host_blocks).items()})
    return [{"block": nat.block_name(b), "ip": str(b.ip), "ports": f"{b.ports.lo}-{b.ports.hi}", "owner": b.owner,
             "switch": host.name, "size": b.ports.hi - b.ports.lo + 1,
             "in_use": used.get((nat.block_name(b), host.name))} for b, host in blocks]
