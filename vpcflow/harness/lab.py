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

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional

from netaddr import IPAddress, IPNetwork, spanning_cidr

from vpcflow.topology.loader import load_file
from vpcflow.topology.model import EDGE, Deployment, Switch

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
MGMT_BASE = IPAddress("100.127.0.0")  # shared address space: each switch gets a /30 to the controller
POLL = 0.05


class LabError(RuntimeError):
    pass


def wait_for(predicate, timeout: float, what: str, interval: float = POLL):
    """Poll until predicate() is truthy; return its value, or raise naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mininet():
    # Imported here so that the package itself does not need Mininet.
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import Host, Node

    setLogLevel("error")
    return Mininet, Host, Node


def bin_path(name: str) -> str:
    """A console script of this package, next to the running interpreter (the venv)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else name


class SwitchHost:
    """One simulated hypervisor or edge: a Mininet node (namespace) with its own OVS."""

    def __init__(self, lab: "Lab", sw: Switch, node, index: int):
        self.lab, self.sw, self.node, self.index = lab, sw, node, index
        self.dir = os.path.join(lab.workdir, sw.name)
        self.db = f"unix:{self.dir}/db.sock"
        self.pids: List[int] = []
        os.makedirs(self.dir, exist_ok=True)

    @property
    def env(self) -> str:
        d = self.dir
        return f"OVS_RUNDIR={d} OVS_DBDIR={d} OVS_LOGDIR={d} OVS_SYSCONFDIR={d}"

    def sh(self, cmd: str, check: bool = True) -> str:
        """Run a shell command in this switch's namespace, with its OVS environment."""
        out = self.node.cmd(f"{self.env} {cmd}; echo __rc=$?")
        text, _, rc = out.rpartition("__rc=")
        if check and rc.strip() != "0":
            raise LabError(f"{self.sw.name}: `{cmd}` failed: {text.strip()}")
        return text

    def start_ovs(self):
        d = self.dir
        self.sh(f"ovsdb-tool create {d}/conf.db {OVS_SCHEMA}")
        self.sh(f"ovsdb-server {d}/conf.db --remote=punix:{d}/db.sock --pidfile={d}/ovsdb-server.pid "
                f"--unixctl={d}/ovsdb-server.ctl --log-file={d}/ovsdb-server.log --detach --no-chdir")
        self.pids.append(self._pid("ovsdb-server"))
        self.sh(f"ovs-vsctl --db={self.db} --no-wait init")
        self.sh(f"ovs-vswitchd {self.db} --pidfile={d}/ovs-vswitchd.pid --unixctl={d}/ovs-vswitchd.ctl "
                f"--log-file={d}/ovs-vswitchd.log --detach --no-chdir")
        self.pids.append(self._pid("ovs-vswitchd"))

    def _pid(self, daemon: str) -> int:
        with open(os.path.join(self.dir, f"{daemon}.pid")) as f:
            return int(f.read().strip())

    def stop_ovs(self):
        """Ask each daemon of this instance to exit through its own control socket (instant,
        where SIGTERM takes about 2 s), then make sure by PID."""
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            subprocess.run(["ovs-appctl", "-t", f"{self.dir}/{daemon}.ctl", "exit"], capture_output=True, timeout=10)
        for pid in reversed(self.pids):
            _kill(pid, grace=1.0)
        self.pids = []

    def restart_vswitchd(self):
        """Stop and start ovs-vswitchd only (bridges stay in OVSDB, flows are lost)."""
        _kill(self.pids.pop())
        d = self.dir
        self.sh(f"ovs-vswitchd {self.db} --pidfile={d}/ovs-vswitchd.pid --unixctl={d}/ovs-vswitchd.ctl "
                f"--log-file={d}/ovs-vswitchd.log --detach --no-chdir")
        self.pids.append(self._pid("ovs-vswitchd"))

    def ofctl(self, *args: str, bridge: Optional[str] = None) -> str:
        """ovs-ofctl against a bridge of this switch, through its management socket."""
        target = f"unix:{self.dir}/{bridge or self.sw.bridge}.mgmt"
        cmd = ["ovs-ofctl", "-O", "OpenFlow13", args[0], target, *args[1:]]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def appctl(self, *args: str) -> str:
        cmd = ["ovs-appctl", "-t", f"{self.dir}/ovs-vswitchd.ctl", *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def flows(self, bridge: Optional[str] = None) -> List[str]:
        lines = self.ofctl("dump-flows", bridge=bridge).splitlines()
        return [ln for ln in lines if "cookie=" in ln]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill(pid: int, timeout: float = 5.0, grace: float = 0.0):
    """End one process we started: wait `grace` for it to go by itself, then TERM, then KILL."""
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL)
    if not _alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(POLL)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Lab:
    """Bring a deployment file up: `with Lab(path) as lab: ...`."""

    def __init__(self, topology_file: str, tag: str = "vf", api_token: str = "lab-token"):
        self.topology_file = os.path.abspath(topology_file)
        self.dep: Deployment = load_file(self.topology_file)
        self.tag = tag  # prefix of every name this lab gives in the root namespace
        self.api_token = api_token
        self.workdir = tempfile.mkdtemp(prefix=f"vpcflow-{tag}-")
        self.net = None
        self.switches: Dict[str, SwitchHost] = {}
        self.instances = {}  # instance name -> Mininet host
        self.externals = {}  # edge name -> Mininet host
        self.controller: Optional[subprocess.Popen] = None
        self.ofp_port = free_port()
        self.api_port = free_port()
        self.metrics_port = free_port()
        self.mgmt: Dict[str, IPAddress] = {}

    # --- life cycle ----------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, controller: bool = True):
        Mininet, Host, Node = _mininet()
        self.net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False, autoStaticArp=False)
        self.root = self.net.addHost(f"{self.tag}root", cls=Node, inNamespace=False)
        self.substrate = self.net.addHost(f"{self.tag}sub", cls=Node, inNamespace=True)
        self.substrate.cmd("ip link add br0 type bridge && ip link set br0 up")
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
            host.start_ovs()
        if controller:
            self.start_controller(wait=False)  # it comes up while the bridges are prepared
        self._prepare_bridges()
        for host in self.switches.values():
            self._address_underlay(host)
        if controller:
            wait_for(lambda: self._api_up(), 20, "the controller's REST API")
            self.wait_synced()

    def stop(self):
        self.stop_controller()
        for host in self.switches.values():
            host.stop_ovs()
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
        root_ip = IPAddress(int(MGMT_BASE) + 4 * host.index + 1)
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
            cmd = [bin_path("vpcflow"), "bridge", self.topology_file, "--switch", name, "--db", host.db,
                   "--controller", f"tcp:{self.mgmt[name]}:{self.ofp_port}"]
            running[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, proc in running.items():
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise LabError(f"vpcflow bridge --switch {name} failed: {err.strip()}")

    def _address_underlay(self, host: SwitchHost):
        """The switch's own substrate address on its underlay port, and routes to the others."""
        sw = host.sw
        covering = spanning_cidr([s.prefix for s in self.dep.switches.values()])
        wait_for(lambda: "state" in host.sh(f"ip link show {sw.underlay_bridge}", check=False), 10,
                 f"{sw.name}: device {sw.underlay_bridge}")
        host.sh(f"ip link set {sw.underlay_bridge} up")
        host.sh(f"ip -6 addr add {sw.substrate_address}/{covering.prefixlen} dev {sw.underlay_bridge} nodad")
        for other in self.dep.switches.values():
            if other.name != sw.name:
                host.sh(f"ip -6 route add {other.prefix} via {other.substrate_address} dev {sw.underlay_bridge}")

    # --- the controller ------------------------------------------------------------------------
    def controller_config(self) -> str:
        path = os.path.join(self.workdir, "vpcflow.conf")
        with open(path, "w") as f:
            f.write(f"""[DEFAULT]
ofp_listen_host = 0.0.0.0
ofp_tcp_listen_port = {self.ofp_port}

[vpcflow]
topology_file = {self.topology_file}
state_file = {self.workdir}/state.json
api_host = 127.0.0.1
api_port = {self.api_port}
api_token = {self.api_token}
metrics_port = {self.metrics_port}
arp_probe_interval = 2
""")
        return path

    def start_controller(self, wait: bool = True):
        conf = self.controller_config()
        self.controller_log = os.path.join(self.workdir, "controller.log")
        with open(self.controller_log, "ab") as log:
            self.controller = subprocess.Popen([bin_path("vpcflow-controller"), "--config-file", conf],
                                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            wait_for(lambda: self._api_up(), 20, "the controller's REST API")

    def _api_up(self):
        if self.controller.poll() is not None:
            raise LabError(f"controller exited with {self.controller.returncode}:\n{self.controller_output()}")
        try:
            self.api("GET", "/v1/switches")
            return True
        except OSError:
            return False

    def controller_output(self) -> str:
        try:
            with open(self.controller_log) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop_controller(self, sig=signal.SIGTERM):
        if self.controller is None:
            return
        if self.controller.poll() is None:
            self.controller.send_signal(sig)
            try:
                self.controller.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.controller.kill()
                self.controller.wait()
        self.controller = None

    def api(self, method: str, path: str, body=None, token: Optional[str] = "default"):
        """Call the controller's REST API: (status, decoded JSON)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method)
        tok = self.api_token if token == "default" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait_synced(self, timeout: float = 30.0):
        """Until every bridge of every switch is connected and in sync with the model in force."""
        def synced():
            _, body = self.api("GET", "/v1/switches")
            return body.get("switches") and all(s["in_sync"] for s in body["switches"])
        try:
            wait_for(synced, timeout, "every bridge in sync")
        except LabError:
            _, body = self.api("GET", "/v1/switches")
            raise LabError(f"not in sync: {json.dumps(body, indent=1)}\n{self.controller_output()}") from None

    # --- for tests -----------------------------------------------------------------------------
    def host(self, name: str):
        return self.instances[name]

    def external(self, edge: Optional[str] = None):
        if edge is None:
            edge = next(iter(self.externals))
        return self.externals[edge]

    def edge_names(self):
        return [s.name for s in self.dep.switches.values() if s.role == EDGE]
