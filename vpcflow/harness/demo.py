"""`make demo`: bring a deployment up, drive real traffic through every mechanism, say what happened.

    python -m vpcflow.harness.demo etc/topology.yaml

Every check states what should happen and shows what did; the exit status is 1 if any differs.
Everything the demo starts (namespaces, OVS instances, the controller) is removed at the end.
"""
from __future__ import annotations

import argparse
import os
import dataclasses
import sys
import time
from typing import Callable, List

from vpcflow.cli import print_table
from vpcflow.harness.lab import Lab, LabError, wait_for

SERVICE_PORTS = (80, 5432, 8080)


@dataclasses.dataclass
class Check:
    mechanism: str
    what: str
    expected: str
    run: Callable[[Lab], str]


def tcp(src: str, ip: str, port: int):
    def run(lab: Lab) -> str:
        out = lab.client(lab.host(src), ip, port, "tcp", timeout=1.5)
        return f"answered by {out.split()[1]}" if out.startswith("ok") else "blocked"
    return run


def udp(src: str, ip: str, port: int):
    def run(lab: Lab) -> str:
        out = lab.client(lab.host(src), ip, port, "udp", timeout=1.0)
        return f"answered by {out.split()[1]}" if out.startswith("ok") else "blocked"
    return run


def ping(src: str, ip: str):
    def run(lab: Lab) -> str:
        return "replies" if lab.ping(lab.host(src), ip, count=2) > 0 else "blocked"
    return run


def forged_source(src: str, ip: str):
    """The instance sends with an address that is not its own: dropped at its port and counted."""
    def run(lab: Lab) -> str:
        from scapy.layers.inet import IP, UDP
        from scapy.layers.l2 import Ether

        from vpcflow.topology.model import dummy_mac

        switch = lab.dep.instances[src].switch
        before = lab.drops(switch, "spoofed_source")
        iface = next(i for i in lab.dep.interfaces.values() if i.attach_to == src)
        frame = Ether(src=iface.mac, dst=dummy_mac(ip)) / IP(src="10.0.0.250", dst=ip) / UDP(dport=80) / b"x"
        lab.inject(lab.host(src), "eth0", bytes(frame))
        try:
            wait_for(lambda: lab.drops(switch, "spoofed_source") > before, 2, "the drop counter")
            return "dropped, counted"
        except LabError:
            return "not counted"
    return run


def outside(src: str, ip: str):
    """Toward the external network: the edge sends it out of its uplink."""
    def run(lab: Lab) -> str:
        from scapy.layers.inet import ICMP, IP

        with lab.capture(lab.external(), "eth0", "icmp") as frames:
            lab.ping(lab.host(src), ip, count=1)
        seen = [f for f in frames if f.haslayer(ICMP) and f[ICMP].type == 8]
        return f"left the edge from {seen[0][IP].src}" if seen else "never left"
    return run


EXTERNAL_PORT = 7000


def _external_server(lab: Lab, proto: str) -> str:
    """A server on the external host that logs whom it saw (started once); its log file."""
    servers = lab.__dict__.setdefault("demo_external_servers", {})
    if proto not in servers:
        servers[proto] = lab.server(lab.external(), EXTERNAL_PORT, proto, name="external", log=True)
    return servers[proto]


def seen_from_outside(src: str, proto: str):
    """The instance reaches a server on the external host: whom does that server see?"""
    def run(lab: Lab) -> str:
        log = _external_server(lab, proto)
        before = len(open(log).read().split())
        ext_ip = lab.dep.switches[lab.edge_names()[0]].uplink.gateway_ip
        out = lab.client(lab.host(src), str(ext_ip), EXTERNAL_PORT, proto, timeout=1.5)
        new = open(log).read().split()[before:]
        if not out.startswith("ok") or not new:
            return "blocked"
        ip, port = new[-1].rsplit(":", 1)
        owner = next((b.owner for b in lab.dep.nat.blocks if str(b.ip) == ip and int(port) in b.ports), None)
        return f"seen from {ip}, {owner}'s block" if owner else f"seen from {ip}"
    return run


def from_outside(ip: str, port: int, proto: str = "tcp"):
    """A client on the external host (a forward, an elastic IP)."""
    def run(lab: Lab) -> str:
        out = lab.client(lab.external(), ip, port, proto, timeout=1.5)
        return f"answered by {out.split()[1]}" if out.startswith("ok") else "blocked"
    return run


def _followed(lab: Lab, client, ip: str, port: int, change, old: str, after=None) -> str:
    """A stream from `client` to ip:port (served by `old`) runs while `change(lab)` (an API call:
    (status, body)) moves the address with follow_connections; then a new connection, the stream
    going on, its end, and the remap completing."""
    progress = os.path.join(lab.workdir, f"demo-follow-{ip}")
    proc = lab.peer(client, "stream", "--host", ip, "--port", str(port), "--progress", progress,
                    "--timeout", "10", "--interval", "0.02")
    count = lambda: int(open(progress).read() or 0) if os.path.exists(progress) else 0  # noqa: E731
    wait_for(lambda: count() > 10, 10, f"the stream to {ip}")
    status, body = change(lab)
    if status != 200:
        return f"refused: {body.get('error')}"
    lab.wait_synced()
    if after:
        after(lab)
    new = lab.client(client, ip, port)
    before = count()
    wait_for(lambda: count() > before + 20, 10, "the stream going on after the change")
    proc.terminate()
    summary, _ = proc.communicate(timeout=15)
    rid = body["remap"]["id"]
    wait_for(lambda: lab.api("GET", f"/v1/remaps/{rid}")[1]["state"] == "complete", 15, "the remap to complete")
    kept = old if f"server={old}" in summary and summary.strip().endswith("error=") else "broken"
    return f"old stream kept on {kept}, new on {new.split()[-1]}, remap complete"


def follow_move():
    """A stream to eni-web2's address runs while the record moves to spare1 (another switch) with
    follow_connections: the stream stays with web2, a new connection reaches spare1, and the
    remap completes once the stream ends. Last: it moves the record for good."""
    def run(lab: Lab) -> str:
        return _followed(lab, lab.host("web1"), "10.0.0.12", 8080,
                         lambda lab: lab.api("POST", "/v1/interfaces/eni-web2/attach",
                                             {"instance": "spare1", "requester": "acme", "follow_connections": True}),
                         "web2", after=lambda lab: lab.configure_guest("spare1", lab.dep.interfaces["eni-web2"]))
    return run


def eip_remap():
    """The external host streams to the elastic IP 198.51.100.20 (eni-web2 on web2, host2) while
    it is remapped to eni-web1 (web1, host1) with follow_connections: the stream stays with
    web2, a new connection reaches web1, and the remap completes once the stream ends."""
    def run(lab: Lab) -> str:
        return _followed(lab, lab.external(), "198.51.100.20", 80,
                         lambda lab: lab.api("POST", "/v1/elastic-ips/198.51.100.20/remap",
                                             {"interface": "eni-web1", "follow_connections": True}), "web2")
    return run


def checks_for(lab: Lab) -> List[Check]:
    """The checks that fit etc/topology.yaml."""
    return [
        Check("overlay, same host", "web1 -> web3 (10.0.0.13) icmp", "replies", ping("web1", "10.0.0.13")),
        Check("overlay, across hosts", "web1 -> web2 (10.0.0.12) tcp/80", "answered by web2", tcp("web1", "10.0.0.12", 80)),
        Check("isolation", "web1 -> 10.0.0.13 tcp/8080 (web3 in blue, red1 in red)", "answered by web3",
              tcp("web1", "10.0.0.13", 8080)),
        Check("isolation", "red1 -> 10.0.0.12 icmp (only blue has it)", "blocked", ping("red1", "10.0.0.12")),
        Check("overlay, across hosts", "red1 -> db1 (10.0.0.11 in red) tcp/5432", "answered by db1",
              tcp("red1", "10.0.0.11", 5432)),
        Check("anti-spoofing", "web1 sends as 10.0.0.250", "dropped, counted", forged_source("web1", "10.0.0.13")),
        Check("security group", "web2 -> web1 tcp/8080 (8000-8999 from group web)", "answered by web1",
              tcp("web2", "10.0.0.11", 8080)),
        Check("security group", "web2 -> web1 udp/8080 (no udp rule)", "blocked", udp("web2", "10.0.0.11", 8080)),
        Check("security group", "web1 -> web2 tcp/5432 (no rule)", "blocked", tcp("web1", "10.0.0.12", 5432)),
        Check("authorization", "web1 (blue) -> pg1 (green) tcp/5432", "answered by pg1", tcp("web1", "10.3.0.10", 5432)),
        Check("authorization", "pg1 (green) -> web1 (blue) tcp/80: no green->blue", "blocked", tcp("pg1", "10.0.0.11", 80)),
        Check("edge", "web1 -> 203.0.113.1 (external) icmp", "left the edge from 198.51.100.10",
              outside("web1", "203.0.113.1")),
        Check("distributed NAT", "web1 (host1) -> external server tcp/7000: whom it sees",
              "seen from 198.51.100.10, host1's block", seen_from_outside("web1", "tcp")),
        Check("distributed NAT", "db1 (red, host2) -> external server udp/7000: whom it sees",
              "seen from 198.51.100.10, host2's block", seen_from_outside("db1", "udp")),
        Check("distributed NAT", "web3 -> 203.0.113.1 icmp echo through the NAT", "replies", ping("web3", "203.0.113.1")),
        Check("NAT forward", "external -> 198.51.100.10:8080 tcp (forward to web1:80)", "answered by web1",
              from_outside("198.51.100.10", 8080)),
        Check("elastic IP", "external -> 198.51.100.20 tcp/80 (elastic IP of web2)", "answered by web2",
              from_outside("198.51.100.20", 80)),
        Check("connection following", "198.51.100.20 remapped eni-web2 -> eni-web1 during an external tcp/80 stream",
              "old stream kept on web2, new on web1, remap complete", eip_remap()),
        Check("connection following", "eni-web2 moves web2 -> spare1 during a tcp/8080 stream",
              "old stream kept on web2, new on spare1, remap complete", follow_move()),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("topology", nargs="?", default="etc/topology.yaml")
    args = p.parse_args(argv)
    started = time.monotonic()
    print(f"bringing up {args.topology}: one namespace and Open vSwitch per switch, controller in the root namespace")
    with Lab(args.topology, tag="vdemo") as lab:
        print(f"up and in sync in {time.monotonic() - started:.1f}s")
        for name in lab.dep.instances:
            for port in SERVICE_PORTS:
                lab.server(lab.host(name), port, "tcp")
                lab.server(lab.host(name), port, "udp")
        rows, failures = [], 0
        for check in checks_for(lab):
            result = check.run(lab)
            ok = result == check.expected
            failures += not ok
            rows.append((check.mechanism, check.what, check.expected, result, "ok" if ok else "DIFFERS"))
        print_table(("mechanism", "check", "expected", "result", ""), rows)
        print()
        print_table(("switch", "bridge", "flows", "last sync"),
               [(s["switch"], s["bridge"], str(s["flows"]), f"{s['last_sync_seconds'] * 1000:.0f} ms")
                for s in lab.api("GET", "/v1/switches")[1]["switches"]])
    print(f"\n{len(rows) - failures} of {len(rows)} checks as expected; everything torn down "
          f"({time.monotonic() - started:.1f}s in all)")
    return 1 if failures else 0



if __name__ == "__main__":
    sys.exit(main())
