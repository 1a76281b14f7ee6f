"""Data path: iperf3 TCP and ping between two instances on two hosts.

- vpcflow: the Lab (each host its own namespace and ovs-vswitchd, the controller's full
  pipeline: port security, conntrack authorization, Geneve with embedded IPv6 addresses; the
  bridges made by `vpcflow bridge`, controller out of band; the substrate a Linux bridge in a
  namespace of its own, without bridge netfilter).
- baseline: the same shape without vpcflow: two switch namespaces, each its own ovs-vswitchd
  (userspace datapath) with NORMAL bridges br-int and br-ul, a plain Geneve port over IPv6 and
  a veth as the substrate; the instances are namespaces on a veth into br-int.
- context: a plain veth pair between two namespaces (the kernel alone, no Open vSwitch).

The NAT path, measured after (the east-west setups are stopped first):
- vpcflow: a Lab of one host and one edge with an uplink to the external host. Instance vma
  reaches the external host through the host's SNAT (its port block on the shared public IP),
  then Geneve to the edge and out of the uplink; the external host reaches instance vme by its
  elastic IP through the edge's demultiplexing (no translation there) and the host's DNAT.
- baseline: the plain OVS pair above (two switch namespaces, NORMAL bridges, plain Geneve over
  IPv6), the instance on one side and the external host on the other, plus the same translation
  done by hand on the instance's switch: Open vSwitch's own userspace conntrack (`ct(commit,
  nat(src=PUBLIC))` for the instance's new connections, `ct(commit, nat(dst=INSTANCE))` for new
  ones to the elastic IP, `ct(nat)` to translate the rest back). Same mechanism and same hops,
  without vpcflow's pipeline (port security, authorization, demultiplexing). The external host
  reaches the public addresses by static neighbours (the vpcflow edge answers ARP for them).
Both directions: iperf3 TCP instance -> external (SNAT) and external -> elastic IP (DNAT).
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

# The NAT path: one host, one edge with its uplink to the external host.
PUBLIC, EIP, E_IP, EXT = "198.51.100.10", "198.51.100.20", "10.0.0.13", "203.0.113.1"
NAT_DEPLOYMENT = {
    "version": 1,
    "switches": {"host1": {"role": "host", "dpid": 1, "prefix": "fd00:5ee0:0:1::/64"},
                 "edge1": {"role": "edge", "dpid": 0xe1, "prefix": "fd00:5ee0:0:e1::/64",
                           "uplink": {"port": "uplink", "gateway_ip": EXT, "ip": "203.0.113.2"}}},
    "networks": {"blue": {"id": 100, "entity": "acme", "cidr": "10.0.0.0/24"}},
    "instances": {"vma": {"switch": "host1", "port": "vma"}, "vme": {"switch": "host1", "port": "vme"}},
    "interfaces": {"eni-a": {"network": "blue", "ips": [A_IP], "security_groups": ["bench"], "attach_to": "vma"},
                   "eni-e": {"network": "blue", "ips": [E_IP], "security_groups": ["bench"], "attach_to": "vme"}},
    "security_groups": {"bench": {
        "ingress": [{"proto": "tcp", "ports": str(PORT), "from": "0.0.0.0/0"}, {"proto": "icmp", "from": "0.0.0.0/0"}],
        "egress": [{"proto": "any", "to": "0.0.0.0/0"}]}},
    "nat": {"public_ips": [PUBLIC], "reserved_ports": ["0-1023"], "block_bits": 8},
    "elastic_ips": [{"ip": EIP, "interface": "eni-e"}],
}


class Pair:
    """Two instance namespaces with `run(side, cmd)`, iperf3 -s in b; subclasses build the rest."""

    ends = "ab"  # the sides whose eth0 gets the guests' MTU
    servers = "b"  # the sides running iperf3 -s

    def __init__(self):
        self.procs = []

    def run(self, side: str, cmd: str, timeout: float = 60) -> str:
        raise NotImplementedError

    def popen(self, side: str, argv):
        raise NotImplementedError

    def start_server(self):
        # Geneve over IPv6 adds 70 bytes and the substrate links have an MTU of 1500: the
        # guests get a smaller one, as a cloud's DHCP would give them (same for every setup).
        for side in self.ends:
            self.run(side, f"ip link set eth0 mtu {MTU}")
        for side in self.servers:
            self.procs.append(self.popen(side, ["iperf3", "-s", "-p", str(PORT)]))

    def iperf(self, seconds: int, client: str = "a", dst: str = B_IP) -> float:
        """Gbit/s received, client -> dst; retried while the server is still coming up."""
        for _ in range(20):
            # (an attempt on a path that carries nothing fails in 3 s, not at TCP's own give-up:
            # 20 of those were minutes before the section could say so)
            out = self.run(client, f"iperf3 -c {dst} -p {PORT} -t {seconds} -J --connect-timeout 3000",
                           timeout=seconds + 30)
            try:
                return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
            except (ValueError, KeyError):
                subprocess.run(["sleep", "0.2"])
        raise RuntimeError(f"iperf3 failed: {out[-500:]}")

    def ping(self, side: str, count: int, dst: str = None) -> float:
        """Median round trip in ms, after one warm-up packet."""
        dst = dst or (B_IP if side == "a" else A_IP)
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
    def __init__(self, workdir: str, deployment: dict = DEPLOYMENT, sides=None, tag: str = TAG):
        super().__init__()
        from vpcflow.harness.lab import Lab

        self.sides = sides or {"a": "vma", "b": "vmb"}  # side -> instance name ("external": the edge's host)
        path = os.path.join(workdir, f"{tag}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(deployment, f)
        self.lab = Lab(path, tag=tag)

    def __enter__(self):
        self.lab.__enter__()
        return self

    def __exit__(self, *exc):
        self.stop_procs()
        self.lab.__exit__(*exc)

    def node(self, side):
        name = self.sides[side]
        return self.lab.external() if name == "external" else self.lab.host(name)

    def run(self, side, cmd, timeout=60):
        return self.node(side).cmd(f"timeout {timeout} {cmd}")

    def popen(self, side, argv):
        return self.node(side).popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class NetnsPair(Pair):
    """Namespaces made with `ip netns`, named vfb-*, all deleted on exit."""

    aliases = {}  # side -> the namespace that plays it

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.namespaces = []

    def ns(self, suffix: str) -> str:
        return f"{TAG}-{self.name}-{self.aliases.get(suffix, suffix)}"

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

    addresses = (("a", A_IP + "/24"), ("b", B_IP + "/24"))  # the two ends (side, address)

    def __init__(self, workdir: str, name: str = "plain"):
        super().__init__(name)
        self.workdir = workdir
        self.ovs = []

    def build(self):
        ends = [(self.add_ns(side), ip) for side, ip in self.addresses]
        switches = [self.add_ns("s1"), self.add_ns("s2")]
        self.veth(switches[0], "sub0", switches[1], "sub0")
        for n, (sw, (inst, ip)) in enumerate(zip(switches, ends), 1):
            self.veth(sw, "vm", inst, "eth0")
            self.in_ns(inst, f"ip addr add {ip} dev eth0")
            ovs = OvsInstance(os.path.join(self.workdir, f"{self.name}-ovs{n}"),
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


class NatLabPair(LabPair):
    """vpcflow's NAT path: a = vma (SNAT), e = vme (elastic IP), x = the external host."""

    ends, servers = "aex", "xe"

    def __init__(self, workdir: str):
        super().__init__(workdir, NAT_DEPLOYMENT, {"a": "vma", "e": "vme", "x": "external"},
                         tag=f"vn{os.getpid() % 1000:03d}")


# On the instance's switch of the baseline: Open vSwitch's conntrack NAT by hand, then NORMAL.
CT_NAT_FLOWS = f"""
table=0,priority=100,ip,in_port=vm,actions=ct(zone=1,nat,table=1)
table=0,priority=100,ip,in_port=gnv0,actions=ct(zone=1,nat,table=1)
table=0,priority=0,actions=NORMAL
table=1,priority=100,ct_state=+new+trk,ip,in_port=vm,actions=ct(commit,zone=1,nat(src={PUBLIC}),table=2)
table=1,priority=100,ct_state=+new+trk,ip,in_port=gnv0,nw_dst={EIP},actions=ct(commit,zone=1,nat(dst={A_IP}),table=2)
table=1,priority=50,ct_state=+est+trk,ip,actions=NORMAL
table=1,priority=50,ct_state=+rel+trk,ip,actions=NORMAL
table=1,priority=0,actions=drop
table=2,priority=0,actions=NORMAL
"""


class NatOvsPair(OvsPair):
    """The plain OVS pair with the instance (a, which also holds the elastic IP's target
    address: e) on one side, the external host (x) on the other, and conntrack NAT flows on
    the instance's switch."""

    ends, servers = "ax", "xa"
    aliases = {"e": "a"}
    addresses = (("a", A_IP + "/24"), ("x", EXT + "/24"))

    def __init__(self, workdir: str):
        super().__init__(workdir, "natplain")

    def build(self):
        super().build()
        mac = {side: self.in_ns(self.ns(side), "cat /sys/class/net/eth0/address").strip() for side in "ax"}
        # Static neighbours: the public addresses lead to the instance's MAC (its switch translates).
        self.in_ns(self.ns("a"), f"ip route add {EXT}/32 dev eth0; ip neigh replace {EXT} lladdr {mac['x']} dev eth0")
        self.in_ns(self.ns("x"), "; ".join(f"ip route add {ip}/32 dev eth0; ip neigh replace {ip} lladdr {mac['a']} dev eth0"
                                           for ip in (PUBLIC, EIP)))
        path = os.path.join(self.workdir, "ct-nat.flows")
        with open(path, "w") as f:
            f.write(CT_NAT_FLOWS.strip() + "\n")
        self.ovs[0].ofctl("replace-flows", "br-int", path)


def _measure(setups: dict, out: dict, runs: int, tests: dict, once: dict):
    """Start every setup, then `runs` rounds of every test in `tests`, alternating between the
    setups, then the tests in `once` (pings: 20 round trips each)."""
    entered = []
    try:
        for pair in setups.values():
            pair.__enter__()
            entered.append(pair)
            pair.start_server()
        for _ in range(runs):
            for what, test in tests.items():
                for name, pair in setups.items():
                    out[name].setdefault(what, []).append(test(pair))
        for what, test in once.items():
            for name, pair in setups.items():
                out[name].setdefault(what, []).append(test(pair))
    finally:
        for pair in reversed(entered):
            pair.__exit__(None, None, None)


def section(runs: int, seconds: int) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"vpcflow-{TAG}-datapath-")
    setups = {"vpcflow": LabPair(workdir), "plain OVS": OvsPair(workdir), "veth": NetnsPair("veth")}
    out = {name: {"gbps": [], "ping_ab": [], "ping_ba": []} for name in setups}
    try:
        _measure(setups, out, runs, {"gbps": lambda pair: pair.iperf(seconds)},
                 {"ping_ab": lambda pair: pair.ping("a", 20), "ping_ba": lambda pair: pair.ping("b", 20)})
        nat = {"vpcflow": NatLabPair(workdir), "plain OVS + conntrack NAT": NatOvsPair(workdir)}
        out["nat"] = {name: {} for name in nat}
        try:
            _measure(nat, out["nat"], runs, {
                "out_gbps": lambda pair: pair.iperf(seconds, "a", EXT),
                "in_gbps": lambda pair: pair.iperf(seconds, "x", EIP)}, {
                "ping_out": lambda pair: pair.ping("a", 20, EXT),
                "ping_in": lambda pair: pair.ping("x", 20, EIP)})
        except Exception as e:  # the east-west figures stand without it
            out["nat"] = {"error": f"{type(e).__name__}: {e}"}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out
