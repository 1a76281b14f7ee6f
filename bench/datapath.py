"""Data path: iperf3 TCP and ping between two instances on two hosts.

- vpcflow: the Lab (each host its own namespace and ovs-vswitchd, the controller's full
  pipeline: port security, conntrack authorization, Geneve with embedded IPv6 addresses).
- baseline: the same shape without vpcflow: two switch namespaces, each its own ovs-vswitchd
  (userspace datapath) with NORMAL bridges br-int and br-ul, a plain Geneve port over IPv6 and
  a veth as the substrate; the instances are namespaces on a veth into br-int.
- context: a plain veth pair between two namespaces (the kernel alone, no Open vSwitch).
Runs alternate between the setups so that a change of machine load hits both.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile

import yaml

from bench.util import median, sh
from vpcflow.harness.ovs import OvsInstance, kill, local_run

# The process id in the tag keeps names apart from another run on the same machine.
TAG = f"vb{os.getpid() % 1000:03d}"
PORT = 5201
MTU = 1400
DEPLOYMENT = {
    "version": 1,
    "switches": {"host1": {"role": "host", "dpid": 1, "prefix": "fd00:5ee0:0:1::/64"},
                 "host2": {"role": "host", "dpid": 2, "prefix": "fd00:5ee0:0:2::/64"}},
    "networks": {"blue": {"id": 100, "entity": "acme", "cidr": "10.0.0.0/24"}},
    "instances": {"vma": {"switch": "host1", "port": "vma"}, "vmb": {"switch": "host2", "port": "vmb"}},
    "interfaces": {"eni-a": {"network": "blue", "ips": ["10.0.0.11"], "security_groups": ["bench"], "attach_to": "vma"},
                   "eni-b": {"network": "blue", "ips": ["10.0.0.12"], "security_groups": ["bench"], "attach_to": "vmb"}},
    "security_groups": {"bench": {
        "ingress": [{"proto": "tcp", "ports": str(PORT), "from_group": "bench"}, {"proto": "icmp", "from": "10.0.0.0/24"}],
        "egress": [{"proto": "any", "to": "0.0.0.0/0"}]}},
}
A_IP, B_IP = "10.0.0.11", "10.0.0.12"


class Pair:
    """Two instance namespaces with `run(side, cmd)`, iperf3 -s in b; subclasses build the rest."""

    def __init__(self):
        self.procs = []

    def run(self, side: str, cmd: str, timeout: float = 60) -> str:
        raise NotImplementedError

    def popen(self, side: str, argv):
        raise NotImplementedError

    def start_server(self):
        # Geneve over IPv6 adds 70 bytes and the substrate links have an MTU of 1500: the
        # guests get a smaller one, as a cloud's DHCP would give them (same for every setup).
        for side in "ab":
            self.run(side, f"ip link set eth0 mtu {MTU}")
        self.procs.append(self.popen("b", ["iperf3", "-s", "-p", str(PORT)]))

    def iperf(self, seconds: int) -> float:
        """Gbit/s received, a -> b; retried while the server is still coming up."""
        for _ in range(20):
            out = self.run("a", f"iperf3 -c {B_IP} -p {PORT} -t {seconds} -J", timeout=seconds + 30)
            try:
                return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
            except (ValueError, KeyError):
                subprocess.run(["sleep", "0.2"])
        raise RuntimeError(f"iperf3 failed: {out[-500:]}")

    def ping(self, side: str, count: int) -> float:
        """Median round trip in ms, after one warm-up packet."""
        dst = B_IP if side == "a" else A_IP
        self.run(side, f"ping -c1 -W2 {dst}")
        out = self.run(side, f"ping -c{count} -i0.05 -W2 {dst}")
        times = [float(t) for t in re.findall(r"time=([0-9.]+) ms", out)]
        if not times:
            raise RuntimeError(f"no ping reply {side}: {out[-300:]}")
        return median(times)

    def stop_procs(self):
        for p in self.procs:
            kill(p.pid, timeout=2)
            p.wait()
        self.procs = []


class LabPair(Pair):
    def __init__(self, workdir: str):
        super().__init__()
        from vpcflow.harness.lab import Lab

        path = os.path.join(workdir, "datapath.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(DEPLOYMENT, f)
        self.lab = Lab(path, tag=TAG)

    def __enter__(self):
        self.lab.__enter__()
        return self

    def __exit__(self, *exc):
        self.stop_procs()
        self.lab.__exit__(*exc)

    def node(self, side):
        return self.lab.host("vma" if side == "a" else "vmb")

    def run(self, side, cmd, timeout=60):
        return self.node(side).cmd(f"timeout {timeout} {cmd}")

    def popen(self, side, argv):
        return self.node(side).popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class NetnsPair(Pair):
    """Namespaces made with `ip netns`, named vfb-*, all deleted on exit."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.namespaces = []

    def ns(self, suffix: str) -> str:
        return f"{TAG}-{self.name}-{suffix}"

    def add_ns(self, suffix: str) -> str:
        name = self.ns(suffix)
        sh(f"ip netns add {name}")
        self.namespaces.append(name)
        sh(f"ip -n {name} link set lo up")
        return name

    def in_ns(self, ns: str, cmd: str, check: bool = True) -> str:
        return sh(f"ip netns exec {ns} sh -c {shlex.quote(cmd)}", check=check)

    def veth(self, ns1, name1, ns2, name2):
        sh(f"ip -n {ns1} link add {name1} type veth peer name {name2} netns {ns2}")
        for ns, name in ((ns1, name1), (ns2, name2)):
            # Userspace OVS does not finish checksums a veth left to offload: TCP would fail.
            self.in_ns(ns, f"ethtool -K {name} tx off >/dev/null 2>&1; ip link set {name} up")

    def run(self, side, cmd, timeout=60):
        r = subprocess.run(["ip", "netns", "exec", self.ns(side), "sh", "-c", f"timeout {timeout} {cmd}"],
                           capture_output=True, text=True)
        return r.stdout + r.stderr

    def popen(self, side, argv):
        return subprocess.Popen(["ip", "netns", "exec", self.ns(side), *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        try:
            self.build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def build(self):
        a, b = self.add_ns("a"), self.add_ns("b")
        self.veth(a, "eth0", b, "eth0")
        for ns, ip in ((a, A_IP), (b, B_IP)):
            self.in_ns(ns, f"ip addr add {ip}/24 dev eth0")

    def __exit__(self, *exc):
        self.stop_procs()
        for ns in reversed(self.namespaces):
            sh(f"ip netns del {ns}", check=False)
        self.namespaces = []


class OvsPair(NetnsPair):
    """Plain Open vSwitch: NORMAL bridges and a plain Geneve tunnel over an IPv6 substrate."""

    def __init__(self, workdir: str):
        super().__init__("plain")
        self.workdir = workdir
        self.ovs = []

    def build(self):
        a, b = self.add_ns("a"), self.add_ns("b")
        switches = [self.add_ns("s1"), self.add_ns("s2")]
        self.veth(switches[0], "sub0", switches[1], "sub0")
        for n, (sw, inst, ip) in enumerate(zip(switches, (a, b), (A_IP, B_IP)), 1):
            self.veth(sw, "vm", inst, "eth0")
            self.in_ns(inst, f"ip addr add {ip}/24 dev eth0")
            ovs = OvsInstance(os.path.join(self.workdir, f"ovs{n}"),
                              lambda cmd, ns=sw: local_run(f"ip netns exec {ns} sh -c {shlex.quote(cmd)}"))
            self.ovs.append(ovs)
            ovs.start()
            peer = f"fd00:b::{3 - n}"
            ovs.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
                      "--", "add-port", "br-int", "vm",
                      "--", "add-port", "br-int", "gnv0", "--", "set", "interface", "gnv0", "type=geneve",
                      f"options:remote_ip={peer}",
                      "--", "add-br", "br-ul", "--", "set", "bridge", "br-ul", "datapath_type=netdev",
                      "--", "add-port", "br-ul", "sub0")
            ovs.wait_bridge_mgmt("br-ul")
            self.in_ns(sw, f"ip link set br-int up; ip link set br-ul up; "
                           f"ip -6 addr add fd00:b::{n}/64 dev br-ul nodad")
        self.in_ns(switches[0], "ping -6 -c1 -W2 fd00:b::2 >/dev/null", check=False)  # resolve the neighbour

    def __exit__(self, *exc):
        self.stop_procs()
        for ovs in self.ovs:
            ovs.stop()
        self.ovs = []
        super().__exit__(*exc)


def section(runs: int, seconds: int) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"vpcflow-{TAG}-datapath-")
    setups = {"vpcflow": LabPair(workdir), "plain OVS": OvsPair(workdir), "veth": NetnsPair("veth")}
    out = {name: {"gbps": [], "ping_ab": [], "ping_ba": []} for name in setups}
    entered = []
    try:
        for pair in setups.values():
            pair.__enter__()
            entered.append(pair)
            pair.start_server()
        for _ in range(runs):
            for name, pair in setups.items():
                out[name]["gbps"].append(pair.iperf(seconds))
        for name, pair in setups.items():
            out[name]["ping_ab"].append(pair.ping("a", 20))
            out[name]["ping_ba"].append(pair.ping("b", 20))
    finally:
        for pair in reversed(entered):
            pair.__exit__(None, None, None)
        shutil.rmtree(workdir, ignore_errors=True)
    return out
