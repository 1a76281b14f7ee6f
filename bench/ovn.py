"""The peer: the same synthetic deployment loaded into OVN (Debian's ovn-central).

Private daemons only: NB and SB ovsdb-servers and ovn-northd with every file in one temporary
folder, ended by their PIDs. The NB is filled in ONE OVSDB transaction (JSON-RPC `transact` on
its socket), then `ovn-nbctl --wait=sb sync` waits until northd has written the logical flows.

The mapping: a network is a logical switch, an interface a logical switch port (addresses and
port security); a security group a port group whose rules are allow-related ACLs (group rules
use the group's address set), plus one drop port group, as OpenStack Neutron does; a tenant's
networks hang off one logical router with a distributed gateway port on a shared external
switch, each network with an SNAT of its own port range, each elastic IP a dnat_and_snat.
Port forwards and cross-network authorizations have no row of their own (the router connects
the tenant's networks).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile

from bench import generate
from bench.util import median, now, sh
from vpcflow.harness.ovs import Managed, kill
from vpcflow.topology.loader import parse

SCHEMAS = "/usr/share/ovn"
DROP_PRIORITY, ALLOW_PRIORITY = 1001, 1002


def ensure_installed(may_install: bool):
    """None when ovn-northd is there (installed now if allowed), else why not."""
    if shutil.which("ovn-northd") and shutil.which("ovn-nbctl"):
        return None
    if not may_install:
        return "ovn-central is not installed (the smoke run does not install it; `make bench` does)"
    # policy-rc.d stops the package from starting a system-wide OVN; leave an existing one alone.
    policy = "/usr/sbin/policy-rc.d"
    ours = not os.path.exists(policy)
    if ours:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        sh("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ovn-central ovn-common",
           check=False, timeout=900)
    finally:
        if ours:
            os.unlink(policy)
    return None if shutil.which("ovn-northd") else "apt-get install ovn-central ovn-common failed"


class Ovn(Managed):
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="vpcflow-vfb-ovn-")
        self.pids = []
        self.nb = f"unix:{self.dir}/nb.sock"

    def daemon(self, name: str, cmd: str):
        d = self.dir
        sh(f"OVN_RUNDIR={d} OVS_RUNDIR={d} {cmd} --pidfile={d}/{name}.pid --unixctl={d}/{name}.ctl "
           f"--log-file={d}/{name}.log --detach --no-chdir")
        with open(f"{d}/{name}.pid") as f:
            self.pids.append(int(f.read()))

    def start(self):
        d = self.dir
        for db in ("nb", "sb"):
            sh(f"ovsdb-tool create {d}/{db}.db {SCHEMAS}/ovn-{db}.ovsschema")
            self.daemon(db, f"ovsdb-server {d}/{db}.db --remote=punix:{d}/{db}.sock")
        self.daemon("northd", f"ovn-northd --ovnnb-db={self.nb} --ovnsb-db=unix:{d}/sb.sock")
        self.nbctl("init")

    def stop(self):
        for pid in reversed(self.pids):
            kill(pid, timeout=5)
        self.pids = []
        shutil.rmtree(self.dir, ignore_errors=True)

    def nbctl(self, *args: str, timeout: float = 900) -> str:
        r = subprocess.run(["ovn-nbctl", f"--db={self.nb}", "--timeout", str(int(timeout)), *args],
                           capture_output=True, text=True, timeout=timeout + 10)
        if r.returncode != 0:
            raise RuntimeError(f"ovn-nbctl {' '.join(args)[:200]}: {r.stderr.strip()}")
        return r.stdout

    def transact(self, ops) -> None:
        """One OVSDB transaction on the NB socket; raise on any error in the reply."""
        request = json.dumps({"method": "transact", "params": ["OVN_Northbound", *ops], "id": 1}).encode()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(f"{self.dir}/nb.sock")
            s.sendall(request)
            decoder, buf = json.JSONDecoder(), ""
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("NB closed the connection")
                buf += chunk.decode()
                try:
                    reply, _ = decoder.raw_decode(buf)
                except ValueError:
                    continue
                if reply.get("id") == 1:
                    break
        errors = [r for r in reply.get("result") or [] if isinstance(r, dict) and "error" in r]
        if reply.get("error") or errors:
            raise RuntimeError(f"NB transaction failed: {reply.get('error') or errors[0]}")


def _set(values):
    return ["set", list(values)]


def _refs(names):
    return _set(["named-uuid", n] for n in names)


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _ports(rule, field):
    if rule.ports is None:
        return ""
    lo, hi = rule.ports.lo, rule.ports.hi
    return f" && {field} == {lo}" if lo == hi else f" && {field} >= {lo} && {field} <= {hi}"


def acl_match(group: str, direction: str, rule) -> str:
    port, peer = ("outport", "ip4.src") if direction == "ingress" else ("inport", "ip4.dst")
    m = f"{port} == @pg_{_ident(group)} && ip4"
    if rule.group is not None:
        m += f" && {peer} == $pg_{_ident(rule.group)}_ip4"
    elif rule.cidr is not None and rule.cidr.prefixlen:
        m += f" && {peer} == {rule.cidr}"
    if rule.proto in ("tcp", "udp"):
        m += f" && {rule.proto}" + _ports(rule, f"{rule.proto}.dst")
    elif rule.proto == "icmp":
        m += " && icmp4"
    return m


def nb_operations(dep):
    """The deployment as NB insert operations (for one transaction)."""
    ops = []

    def insert(table, row, name=None):
        op = {"op": "insert", "table": table, "row": row}
        if name:
            op["uuid-name"] = name
        ops.append(op)

    ports_of_group, ports_of_net = {g: [] for g in dep.security_groups}, {n: [] for n in dep.networks}
    every = []
    for iface in dep.interfaces.values():
        ref = "p_" + _ident(iface.name)
        address = " ".join([iface.mac] + [str(ip) for ip in iface.ips])
        insert("Logical_Switch_Port", {"name": iface.name, "addresses": _set([address]),
                                       "port_security": _set([address] if iface.source_dest_check else [])}, ref)
        ports_of_net[iface.network].append(ref)
        for g in iface.security_groups:
            ports_of_group[g].append(ref)
        every.append(ref)
    for name, sg in dep.security_groups.items():
        acls = []
        for direction in ("ingress", "egress"):
            for i, rule in enumerate(getattr(sg, direction)):
                ref = f"a_{_ident(name)}_{direction}_{i}"
                insert("ACL", {"direction": "to-lport" if direction == "ingress" else "from-lport",
                               "priority": ALLOW_PRIORITY, "match": acl_match(name, direction, rule),
                               "action": "allow-related"}, ref)
                acls.append(ref)
        insert("Port_Group", {"name": f"pg_{_ident(name)}", "ports": _refs(ports_of_group[name]), "acls": _refs(acls)})
    insert("ACL", {"direction": "to-lport", "priority": DROP_PRIORITY, "match": "outport == @pg_drop && ip",
                   "action": "drop"}, "a_drop_in")
    insert("ACL", {"direction": "from-lport", "priority": DROP_PRIORITY, "match": "inport == @pg_drop && ip",
                   "action": "drop"}, "a_drop_out")
    insert("Port_Group", {"name": "pg_drop", "ports": _refs(every), "acls": _refs(["a_drop_in", "a_drop_out"])})

    tenants = {}
    for net in dep.networks.values():
        tenants.setdefault(net.entity, []).append(net)
    blocks = list(dep.nat.blocks)
    eips = {}
    for e in dep.elastic_ips:
        eips.setdefault(dep.networks[dep.interfaces[e.interface].network].entity, []).append(e)
    ext_ports = []
    for t, (tenant, nets) in enumerate(sorted(tenants.items())):
        lrps, nats = [], []
        for net in nets:
            lrp, rp = f"lrp-{net.name}", f"rp_{_ident(net.name)}"
            insert("Logical_Router_Port", {"name": lrp, "mac": f"0a:00:00:{net.id >> 16 & 255:02x}:{net.id >> 8 & 255:02x}:{net.id & 255:02x}",
                                           "networks": _set([f"{net.gateway_ip}/{net.cidr.prefixlen}"])}, _ident(lrp))
            lrps.append(_ident(lrp))
            insert("Logical_Switch_Port", {"name": f"rp-{net.name}", "type": "router", "addresses": _set(["router"]),
                                           "options": ["map", [["router-port", lrp]]]}, rp)
            insert("Logical_Switch", {"name": net.name, "ports": _refs(ports_of_net[net.name] + [rp])})
            block = blocks[net.id % len(blocks)] if blocks else None
            if block is not None:
                ref = f"nat_{_ident(net.name)}"
                insert("NAT", {"type": "snat", "external_ip": str(block.ip), "logical_ip": str(net.cidr),
                               "external_port_range": str(block.ports)}, ref)
                nats.append(ref)
        for i, e in enumerate(eips.get(tenant, ())):
            ref = f"eip_{t}_{i}"
            insert("NAT", {"type": "dnat_and_snat", "external_ip": str(e.ip),
                           "logical_ip": str(dep.interfaces[e.interface].primary_ip)}, ref)
            nats.append(ref)
        gw = f"lrp-gw-{tenant}"
        insert("Gateway_Chassis", {"name": f"{gw}-gw1", "chassis_name": "gw1", "priority": 1}, f"gc_{t}")
        insert("Logical_Router_Port", {"name": gw, "mac": f"0a:01:00:00:{t >> 8 & 255:02x}:{t & 255:02x}",
                                       "networks": _set([f"172.16.{t >> 8 & 255}.{t & 255}/12"]),
                                       "gateway_chassis": _refs([f"gc_{t}"])}, f"gw_{t}")
        insert("Logical_Switch_Port", {"name": f"ext-{tenant}", "type": "router", "addresses": _set(["router"]),
                                       "options": ["map", [["router-port", gw]]]}, f"ext_{t}")
        ext_ports.append(f"ext_{t}")
        insert("Logical_Router", {"name": f"r-{tenant}", "ports": _refs(lrps + [f"gw_{t}"]), "nat": _refs(nats)})
    insert("Logical_Switch_Port", {"name": "ext-localnet", "type": "localnet", "addresses": _set(["unknown"]),
                                   "options": ["map", [["network_name", "physnet"]]]}, "ext_localnet")
    insert("Logical_Switch", {"name": "ext", "ports": _refs(ext_ports + ["ext_localnet"])})
    return ops


def _sync(ovn: Ovn) -> float:
    t = now()
    ovn.nbctl("--wait=sb", "sync")
    return now() - t


def section(size: str, runs: int, changes: int) -> dict:
    dep = parse(generate.sized(size))
    ops = nb_operations(dep)
    out = {"size": size, "rows": len(ops), "load": [], "sync": [], "total": [], "change": []}
    group = generate.group_names(0)[0]
    rule = dep.security_groups[group].ingress[0]
    wider = type(rule)(rule.proto, type(rule.ports)(80, 81), rule.cidr, rule.group)
    matches = [acl_match(group, "ingress", rule), acl_match(group, "ingress", wider)]
    for run in range(runs):
        with Ovn() as ovn:
            t = now()
            ovn.transact(ops)
            out["load"].append(now() - t)
            out["sync"].append(_sync(ovn))
            out["total"].append(out["load"][-1] + out["sync"][-1])
            if run == runs - 1:
                out["lflows"] = int(sh(f"ovn-sbctl --db=unix:{ovn.dir}/sb.sock --columns=_uuid --bare list "
                                       "Logical_Flow | grep -c .", check=False).strip() or 0)
                pg = f"pg_{_ident(group)}"
                for i in range(changes):  # the rule edit, back and forth, each waited for
                    old, new = matches[i % 2], matches[(i + 1) % 2]
                    t = now()
                    ovn.nbctl("--wait=sb", "--", "--type=port-group", "acl-del", pg, "to-lport", str(ALLOW_PRIORITY), old,
                              "--", "--type=port-group", "acl-add", pg, "to-lport", str(ALLOW_PRIORITY), new,
                              "allow-related")
                    out["change"].append(now() - t)
    out["version"] = sh("ovn-northd --version", check=False).splitlines()[0]
    out["total_median"] = median(out["total"])
    out["change_median"] = median(out["change"])
    return out
