"""A deployment file brought up on one machine, with Mininet: the lab the tests and the demo use.

Each switch of the file is a simulated hypervisor or edge: its own network namespace running its
own Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath), prepared with
`vpcflow bridge` as an operator would. The switches share an IPv6 substrate (a Linux bridge in
a namespace of its own) and reach the controller, which runs in the root namespace, over a
management link each. Every instance is a Mininet host on its switch's port; every edge has an
external host behind its uplink.

Everything is created under names of this lab and removed in `stop()`, which is safe to call
after a partial start. Processes are ended by the PIDs this lab recorded, never by name.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Dict, List, Optional

from netaddr import IPAddress, IPNetwork, spanning_cidr

from vpcflow.harness.controller import ControllerError, ControllerProcess, bin_path, wait_for
from vpcflow.flows import cookies
from vpcflow.harness.ovs import Managed, OvsInstance, kill, packet_count
from vpcflow.topology.loader import load_file
from vpcflow.topology.model import EDGE, Deployment, Switch

SHARED_SPACE = IPAddress("100.64.0.0")  # RFC 6598 space: nothing of the machine's own lives there


def mgmt_subnet(tag: str) -> IPAddress:
    """A /24 of the lab's own for the links to the controller (a /30 per switch), chosen by
    the tag so that labs with other tags can run at the same time."""
    return IPAddress(int(SHARED_SPACE) + (zlib.crc32(tag.encode()) % (64 * 256)) * 256)


def _read_available(stream) -> str:
    """What a child has written to a pipe so far, without blocking."""
    fd = stream.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return ""
    stream.seen = getattr(stream, "seen", "") + data.decode(errors="replace")
    return stream.seen


def _wait_quiet(path: str, quiet: float = 0.15, timeout: float = 3.0):
    """Until a capture file has stopped growing: tcpdump has written what had arrived."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = os.path.getsize(path) if os.path.exists(path) else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.03)


LabError = ControllerError  # one error type for everything the lab waits on


def _mininet():
    # Imported here so that the package itself does not need Mininet.
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import Host, Node

    setLogLevel("error")
    return Mininet, Host, Node


class SwitchHost:
    """One simulated hypervisor or edge: a Mininet node (namespace) with its own OVS."""

    def __init__(self, lab: "Lab", sw: Switch, node, index: int):
        self.lab, self.sw, self.node, self.index = lab, sw, node, index
        self.ovs = OvsInstance(os.path.join(lab.workdir, sw.name), self._run)

    def _run(self, cmd: str):
        out = self.node.cmd(f"{cmd}; echo __rc=$?")
        text, _, rc = out.rpartition("__rc=")
        return int(rc.strip() or 1), text

    def sh(self, cmd: str, check: bool = True) -> str:
        """Run a shell command in this switch's namespace."""
        rc, out = self._run(cmd)
        if check and rc != 0:
            raise LabError(f"{self.sw.name}: `{cmd}` failed: {out.strip()}")
        return out

    def flows(self, bridge: Optional[str] = None, *filters: str) -> List[str]:
        return self.ovs.flows(bridge or self.sw.bridge, *filters)

    def ofctl(self, command: str, *args: str, bridge: Optional[str] = None) -> str:
        return self.ovs.ofctl(command, bridge or self.sw.bridge, *args)


class Lab(Managed):
    """Bring a deployment file up: `with Lab(path) as lab: ...`.

    With `store` (a store remote holding the same deployment), the controllers take their intent
    from the store, and there may be several of them (`controllers`, named `instance_names`),
    every switch connected to each: `lab.ctls`, `lab.ctl` the first."""

    def __init__(self, topology_file: str, tag: str = "vf", api_token: str = "lab-token", controllers: int = 1,
                 store: Optional[str] = None, instance_names: Optional[List[str]] = None):
        if controllers > 1 and not store:
            raise ValueError("several controllers share the switches through a store only")
        self.store = store
        self.instance_names = list(instance_names or [f"{tag}-c{i + 1}" for i in range(controllers)])
        self.dep: Deployment = load_file(topology_file)
        self.tag = tag  # prefix of every name this lab gives in the root namespace
        self.api_token = api_token
        self.workdir = tempfile.mkdtemp(prefix=f"vpcflow-{tag}-")
        # The controller reads a copy, so that a test can change it and reload.
        self.topology_file = os.path.join(self.workdir, "topology.yaml")
        shutil.copyfile(topology_file, self.topology_file)
        self.net = None
        self.switches: Dict[str, SwitchHost] = {}
        self.instances = {}  # instance name -> Mininet host
        self.externals = {}  # edge name -> Mininet host
        self.ctl: Optional[ControllerProcess] = None
        self.ctls: List[ControllerProcess] = []
        self.mgmt: Dict[str, IPAddress] = {}
        self.procs: List[subprocess.Popen] = []  # peers started in namespaces, ended in stop()

    # --- life cycle (Managed: `with Lab(...)` starts it and always stops it) -------------------
    def start(self, controller: bool = True):
        Mininet, Host, Node = _mininet()
        self.net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False, autoStaticArp=False)
        self.root = self.net.addHost(f"{self.tag}root", cls=Node, inNamespace=False)
        self.substrate = self.net.addHost(f"{self.tag}sub", cls=Node, inNamespace=True)
        self.substrate.cmd("ip link add br0 type bridge && ip link set br0 up")
        # A switched substrate, not a filtering one: where br_netfilter is loaded (Docker loads
        # it), every tunnelled packet crossing br0 went through ip6tables, a cost of the lab, not
        # of the switches (measured: ~7% of east-west throughput). These sysctls are the
        # substrate namespace's own (per network namespace since Linux 5.3).
        self.substrate.cmd("for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e \"$f\" ] && echo 0 > \"$f\"; done")
        for i, sw in enumerate(sorted(self.dep.switches.values(), key=lambda s: s.name)):
            node = self.net.addHost(f"{self.tag}-{sw.name}", cls=Node, inNamespace=True)
            self.switches[sw.name] = SwitchHost(self, sw, node, i)
        for host in self.switches.values():
            self._wire_switch(host)
        for inst in self.dep.instances.values():
            self._add_instance(inst, Host)
        for sw in self.dep.edges():
            self._add_external(sw, Host)
        for host in self.switches.values():
            host.ovs.start()
        # the switches' control sockets: the controller reads NAT block usage from their conntrack
        targets = ",".join(f"{name}:{host.ovs.dir}/ovs-vswitchd.ctl" for name, host in self.switches.items())
        if self.store is None:
            self.ctls = [ControllerProcess(self.workdir, self.topology_file, self.api_token,
                                           extra=f"appctl_targets = {targets}")]
        else:
            for name in self.instance_names:
                workdir = os.path.join(self.workdir, name)
                os.mkdir(workdir)
                self.ctls.append(ControllerProcess(workdir, "", self.api_token, extra=f"appctl_targets = {targets}\n"
                                                   f"store = {self.store}\ninstance_name = {name}"))
        self.ctl = self.ctls[0]
        if controller:
            for ctl in self.ctls:
                ctl.start(wait=False)  # they come up while the bridges are prepared
        self._prepare_bridges()
        for host in self.switches.values():
            self._address_underlay(host)
        if controller:
            for ctl in self.ctls:
                ctl.wait_api()
            self.wait_synced()
            self._prime_substrate()  # needs the underlay flows in place

    def stop(self):
        for proc in self.procs:
            kill(proc.pid, timeout=2)
            proc.wait()
        self.procs = []
        self.stop_controller()
        for host in self.switches.values():
            host.ovs.stop()
        if self.net is not None:
            self.net.stop()
            self.net = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- building ------------------------------------------------------------------------------
    def _link(self, a, b, name_a: str, name_b: str):
        link = self.net.addLink(a, b, intfName1=name_a, intfName2=name_b)
        for node, name in ((a, name_a), (b, name_b)):
            # Userspace OVS does not finish checksums a veth left to offload: TCP would fail.
            node.cmd(f"ethtool -K {name} tx off >/dev/null 2>&1; ip link set {name} up")
        return link

    def _wire_switch(self, host: SwitchHost):
        sw = host.sw
        self._link(host.node, self.substrate, sw.underlay_port, f"s{host.index}")
        self.substrate.cmd(f"ip link set s{host.index} master br0")
        root_ip = IPAddress(int(mgmt_subnet(self.tag)) + 4 * host.index + 1)
        self._link(host.node, self.root, "mgmt0", f"{self.tag}m{host.index}")
        self.root.cmd(f"ip addr add {root_ip}/30 dev {self.tag}m{host.index}")
        host.node.cmd(f"ip addr add {root_ip + 1}/30 dev mgmt0")
        self.mgmt[sw.name] = root_ip

    def _add_instance(self, inst, Host):
        sw = self.switches[inst.switch]
        h = self.net.addHost(inst.name, cls=Host, inNamespace=True, ip=None)
        self._link(h, sw.node, "eth0", inst.port)
        self.instances[inst.name] = h
        records = [i for i in self.dep.interfaces.values() if i.attach_to == inst.name]
        if records:
            self.configure_guest(inst.name, records[0])

    def configure_guest(self, instance: str, iface, flush: bool = False):
        """Configure the guest's eth0 as its OS would for an interface record."""
        h = self.instances[instance]
        net = self.dep.networks[iface.network]
        if flush:
            h.cmd("ip addr flush dev eth0")
        h.cmd(f"ip link set eth0 address {iface.mac}")
        for ip in iface.ips:
            h.cmd(f"ip addr add {ip}/{net.cidr.prefixlen} dev eth0")
        h.cmd(f"ip route replace default via {net.gateway_ip} dev eth0")

    def _add_external(self, sw: Switch, Host):
        up = sw.uplink
        h = self.net.addHost(f"x{sw.name}"[:15], cls=Host, inNamespace=True, ip=None)
        self._link(h, self.switches[sw.name].node, "eth0", up.port)
        subnet = spanning_cidr([up.ip, up.gateway_ip])
        subnet = IPNetwork(f"{up.gateway_ip}/{min(subnet.prefixlen, 30)}")
        h.cmd(f"ip addr add {up.gateway_ip}/{subnet.prefixlen} dev eth0")
        for public in list(self.dep.nat.public_ips) + [e.ip for e in self.dep.elastic_ips]:
            h.cmd(f"ip route add {public}/32 via {up.ip} dev eth0")
        self.externals[sw.name] = h

    def _prepare_bridges(self):
        """`vpcflow bridge` for every switch, as its operator would run it (all at once)."""
        running = {}
        for name, host in self.switches.items():
            cmd = [bin_path("vpcflow"), "bridge", self.topology_file, "--switch", name, "--db", host.ovs.db]
            for ctl in self.ctls:
                cmd += ["--controller", f"tcp:{self.mgmt[name]}:{ctl.ofp_port}"]
            running[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, proc in running.items():
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise LabError(f"vpcflow bridge --switch {name} failed: {err.strip()}")

    def _address_underlay(self, host: SwitchHost):
        """The switch's own substrate address on its underlay port, and routes to the others.

        Retried until it holds: after an ovs-vswitchd restart the old port device may still be
        going away while the new one comes."""
        sw = host.sw
        covering = spanning_cidr([s.prefix for s in self.dep.switches.values()])
        dev = sw.underlay_bridge
        commands = [f"ip link set {dev} up",
                    f"ip -6 addr replace {sw.substrate_address}/{covering.prefixlen} dev {dev} nodad",
                    # the prefix route goes with a link flap and does not come back by itself
                    f"ip -6 route replace {covering} dev {dev}"]
        commands += [f"ip -6 route show {o.prefix} | grep -q via || ip -6 route add {o.prefix} via {o.substrate_address} dev {dev}"
                     for o in self.dep.switches.values() if o.name != sw.name]

        def configured():
            return all(host._run(cmd)[0] == 0 for cmd in commands)
        wait_for(configured, 10, f"{sw.name}: substrate address and routes on {dev}", interval=0.1)

    def restart_vswitchd(self, switch: str):
        """Restart one switch's ovs-vswitchd, then redo what its host's network config would: the
        underlay port is a new device without its address, and the tunnel neighbours are gone."""
        host = self.switches[switch]
        host.ovs.restart_vswitchd()
        self._address_underlay(host)
        self._prime_substrate()

    def _prime_substrate(self):
        """Give each switch's tunnel endpoint its peers' MACs, as a substrate with static
        neighbours would. Left to itself, Open vSwitch drops the first packet toward a new peer
        while it resolves the neighbour, and its snooping of the kernel's own neighbour discovery
        misses replies that hit an existing datapath flow: the first packet of a test would be
        lost to that, not to anything vpcflow does."""
        macs = {name: host.sh(f"cat /sys/class/net/{host.sw.underlay_bridge}/address").strip()
                for name, host in self.switches.items()}
        for host in self.switches.values():
            for other in self.dep.switches.values():
                if other.name != host.sw.name:
                    host.ovs.appctl("tnl/neigh/set", host.sw.underlay_bridge, str(other.substrate_address),
                                    macs[other.name])

    # --- the controller ------------------------------------------------------------------------
    def start_controller(self, wait: bool = True):
        """(Re)start the controller processes, on the same ports and files."""
        for ctl in self.ctls:
            ctl.start(wait=wait)

    def stop_controller(self, sig=signal.SIGTERM):
        for ctl in self.ctls:
            ctl.stop(sig)

    def api(self, method: str, path: str, body=None, token: Optional[str] = "default"):
        return self.ctl.api(method, path, body, token)

    def controller_output(self) -> str:
        return self.ctl.output() if self.ctl else ""

    def wait_synced(self, timeout: float = 30.0):
        """Every bridge runs the model in force: synced by its controller, or with several, by
        exactly one master among the running ones."""
        running = [c for c in self.ctls if c.proc is not None]
        if len(self.ctls) == 1:
            self.ctl.wait_synced(timeout)
            return
        wait_for(lambda: self.masters(running, synced=True) is not None, timeout,
                 "every bridge synced by exactly one master")

    def masters(self, ctls=None, synced: bool = False) -> Optional[Dict[tuple, ControllerProcess]]:
        """{(switch, bridge): the controller that is its master}, when every bridge has exactly
        one master among `ctls` (default: the running ones; with `synced`, one in sync), else None."""
        ctls = ctls if ctls is not None else [c for c in self.ctls if c.proc is not None]
        out: Dict[tuple, ControllerProcess] = {}
        seen: Dict[tuple, int] = {}
        for ctl in ctls:
            for key, s in ctl.switches().items():
                if s["role"] == "master" and (s["in_sync"] or not synced):
                    out[key] = ctl
                seen[key] = seen.get(key, 0) + (s["role"] == "master")
        if not seen or any(n != 1 for n in seen.values()) or len(out) != len(seen):
            return None
        return out

    def rewrite(self, text: str):
        """Replace the deployment file the controller reads (then reload())."""
        with open(self.topology_file, "w") as f:
            f.write(text)

    def reload(self, sync_timeout: float = 30.0):
        """POST /v1/reload, then wait until every bridge runs the new model."""
        status, body = self.api("POST", "/v1/reload", {})
        if status == 200:
            self.dep = load_file(self.topology_file)
            self.wait_synced(sync_timeout)
        return status, body

    # --- traffic -------------------------------------------------------------------------------
    def peer(self, node, *args: str) -> subprocess.Popen:
        """Start `python -m vpcflow.harness.peer ARGS` in a node's namespace; ended by stop()."""
        proc = node.popen([sys.executable, "-m", "vpcflow.harness.peer", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def server(self, node, port: int, proto: str = "tcp", name: Optional[str] = None,
               log: bool = False) -> Optional[str]:
        """A peer server in the node; waits until it listens. Returns its log file, if asked for."""
        ready = os.path.join(self.workdir, f"ready-{node.name}-{proto}-{port}")
        args = ["server", "--proto", proto, "--port", str(port), "--name", name or node.name, "--ready", ready]
        logfile = os.path.join(self.workdir, f"seen-{node.name}-{proto}-{port}") if log else None
        if logfile:
            args += ["--log", logfile]
        proc = self.peer(node, *args)

        def listening():
            if proc.poll() is not None:
                raise LabError(f"server {proto}/{port} in {node.name} exited: {proc.stdout.read()}")
            return os.path.exists(ready)
        wait_for(listening, 10, f"server {proto}/{port} in {node.name}")
        return logfile

    def client(self, node, host, port: int, proto: str = "tcp", timeout: float = 2.0,
               late: Optional[float] = None) -> str:
        """One request from the node: "ok NAME" (NAME = who answered) or "fail REASON". late: the
        client half-closes and the server answers that many seconds after its FIN (peer.py)."""
        out = node.cmd(f"{sys.executable} -m vpcflow.harness.peer client --proto {proto} --host {host} "
                       f"--port {port} --timeout {timeout}" + (f" --late {late}" if late is not None else ""))
        return out.strip().splitlines()[-1] if out.strip() else "fail no output"

    def inject(self, node, iface: str, frames, count: int = 1):
        """Send raw Ethernet frames (one, or a list) out of an interface in the node's namespace."""
        frames = [frames] * count if isinstance(frames, (bytes, bytearray)) else list(frames) * count
        path = os.path.join(self.workdir, f"inject-{node.name}-{len(self.procs)}.hex")
        with open(path, "w") as f:
            f.write("\n".join(bytes(fr).hex() for fr in frames))
        script = ("import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
                  f"s.bind(({iface!r}, 0)); [s.send(bytes.fromhex(h)) for h in open(sys.argv[1]).read().split()]")
        out = node.cmd(f"{sys.executable} -c \"{script}\" {path}; echo __rc=$?")
        if not out.strip().endswith("__rc=0"):
            raise LabError(f"inject on {node.name}:{iface} failed: {out}")

    @contextlib.contextmanager
    def capture(self, node, iface: str, bpf: str = ""):
        """Capture with tcpdump while the block runs; yields a list that then holds the frames
        (scapy packets)."""
        import scapy.layers.l2  # noqa: F401  (registers Ethernet for rdpcap)
        from scapy.utils import rdpcap

        pcap = os.path.join(self.workdir, f"cap-{node.name}-{iface}-{len(self.procs)}.pcap")
        proc = node.popen(["tcpdump", "-i", iface, "--immediate-mode", "-U", "-n", "-w", pcap, *bpf.split()],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        # tcpdump says "listening on" once its socket is open
        wait_for(lambda: "listening on" in _read_available(proc.stderr), 10, f"tcpdump on {node.name}:{iface}")
        frames: list = []
        try:
            yield frames
        finally:
            _wait_quiet(pcap)
            kill(proc.pid, timeout=5)
            proc.wait()
            frames.extend(rdpcap(pcap) if os.path.getsize(pcap) > 24 else [])

    @staticmethod
    def ping(node, ip, count: int = 1, timeout: float = 1.0) -> int:
        """Echo replies received."""
        out = node.cmd(f"ping -c{count} -W{timeout:g} -i0.2 {ip}")
        for line in out.splitlines():
            if "received" in line:
                return int(line.split(",")[1].split()[0])
        return 0

    # --- counters ----------------------------------------------------------------------------
    def object_flows(self, switch: str, feature: str, obj: str) -> List[str]:
        """The flows of one feature and object on a switch's integration bridge."""
        mask = f"cookie={cookies.make(feature, obj):#x}/{cookies.FEATURE_MASK | cookies.OBJECT_MASK:#x}"
        return self.switches[switch].flows(None, mask)

    def counted(self, switch: str, feature: str, obj: str) -> int:
        """Packets through an object's flows (OVS folds datapath counters in every so often)."""
        return sum(packet_count(line) for line in self.object_flows(switch, feature, obj))

    def drops(self, switch: str, reason: str) -> int:
        return self.counted(switch, "drop", f"drop:{reason}")

    # --- for tests -----------------------------------------------------------------------------
    def host(self, name: str):
        return self.instances[name]

    def external(self, edge: Optional[str] = None):
        if edge is None:
            edge = next(iter(self.externals))
        return self.externals[edge]

    def edge_names(self):
        return [s.name for s in self.dep.switches.values() if s.role == EDGE]
