"""Deployment <-> store rows, pure functions.

A row here is a plain dict {column: value} of Python values: str, int, bool, float; None for an
empty optional column; a tuple for an ordered list (stored as a position -> value map); a dict
for a map. The OVSDB JSON form is made only at the wire (client.py).

    deployment_rows(dep)        -> {table: [row, ...]}     what import writes
    deployment_from_rows(rows)  -> Deployment             what a reader builds (validated)
    file_data(dep)              -> deployment-file data   what export writes as YAML

The way back goes through the loader: rows become deployment-file data and `loader.parse`
validates and builds the Deployment, so the store's content is held to exactly the rules a file
is, and a problem is reported with the same path a file would have (`interfaces.eni-web2.ips[0]`).

NAT blocks. The Deployment holds the fixed blocks and the ones the loader allocated. The store
keeps both (a `fixed` flag), and a reader takes the stored allocation as it is: every stored
block is handed to the loader as written, and the flags are put back afterwards. So a block does
not move under a running deployment because of how the store orders its rows; a host switch
added to the store without a block gets one allocated, as in a file. A deployment file written
from the store lists the fixed blocks only, as the user wrote them: loading it allocates the
others again, the same way, because the switches keep their order (`Switch.position`).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Mapping

import yaml

from vpcflow.topology import loader
from vpcflow.topology.model import (DEFAULT_BRIDGE, DEFAULT_UNDERLAY_BRIDGE, DEFAULT_UNDERLAY_PORT, Deployment,
                                    derived_mac)
from vpcflow.store.schema import FILE_FORMAT, INTENT_TABLES

Row = Dict[str, object]
Rows = Mapping[str, Iterable[Row]]


def _optional(value):
    return None if value is None else str(value)


# --- Deployment -> rows --------------------------------------------------------------------------

def deployment_rows(dep: Deployment) -> Dict[str, List[Row]]:
    """Every intent table's rows for one deployment (tables without rows are present, empty)."""
    rows: Dict[str, List[Row]] = {table: [] for table in INTENT_TABLES}
    for position, sw in enumerate(dep.switches.values()):
        uplink = {}
        if sw.uplink is not None:
            uplink = {"port": sw.uplink.port, "gateway_ip": str(sw.uplink.gateway_ip),
                      "ip": str(sw.uplink.ip), "mac": sw.uplink.mac}
        rows["Switch"].append({
            "name": sw.name, "position": position, "role": sw.role, "dpid": sw.dpid, "prefix": str(sw.prefix),
            "bridge": sw.bridge, "underlay_bridge": sw.underlay_bridge, "underlay_port": sw.underlay_port,
            "uplink": uplink})
    rows["Network"] = [{"name": n.name, "id": n.id, "entity": n.entity, "cidr": str(n.cidr)}
                       for n in dep.networks.values()]
    rows["Instance"] = [{"name": i.name, "switch": i.switch, "port": i.port} for i in dep.instances.values()]
    rows["Interface"] = [interface_row(i) for i in dep.interfaces.values()]
    for sg in dep.security_groups.values():
        rows["Security_Group"].append({"name": sg.name})
        for direction in ("ingress", "egress"):
            for position, rule in enumerate(getattr(sg, direction)):
                rows["Rule"].append({
                    "security_group": sg.name, "direction": direction, "position": position,
                    "proto": rule.proto, "ports": _optional(rule.ports), "cidr": _optional(rule.cidr),
                    "peer_group": rule.group})
    rows["Authorization"] = [
        {"position": position, "from_network": a.src, "to_network": a.dst, "proto": a.proto,
         "ports": _optional(a.ports)}
        for position, a in enumerate(dep.authorizations)]
    nat = dep.nat
    rows["NAT_Pool"] = [{"public_ips": tuple(str(ip) for ip in nat.public_ips),
                         "reserved_ports": tuple(str(r) for r in nat.reserved_ports),
                         "block_bits": nat.block_bits}]
    rows["NAT_Block"] = [{"position": position, "owner": b.owner, "ip": str(b.ip), "ports": str(b.ports),
                          "fixed": b.fixed}
                         for position, b in enumerate(nat.blocks)]
    rows["NAT_Forward"] = [{"position": position, "public_ip": str(f.public_ip), "public_port": f.public_port,
                            "interface": f.interface, "port": f.port, "proto": f.proto}
                           for position, f in enumerate(nat.forwards)]
    rows["Elastic_IP"] = [{"position": position, "ip": str(e.ip), "interface": e.interface}
                          for position, e in enumerate(dep.elastic_ips)]
    return rows


def interface_row(iface) -> Row:
    return {"name": iface.name, "network": iface.network, "ips": tuple(str(ip) for ip in iface.ips),
            "mac": iface.mac, "security_groups": tuple(iface.security_groups),
            "source_dest_check": iface.source_dest_check, "attach_to": iface.attach_to,
            "delete_on_terminate": iface.delete_on_terminate, "attachers": tuple(iface.attachers)}


# --- rows -> deployment-file data ----------------------------------------------------------------

def _by(rows: Rows, table: str, *columns: str) -> List[Row]:
    return sorted(rows.get(table, ()), key=lambda r: tuple(r[c] for c in columns))


def _without_defaults(item: dict, defaults: dict) -> dict:
    return {k: v for k, v in item.items() if v is not None and defaults.get(k, object()) != v}


def rows_to_data(rows: Rows, allocated_blocks: bool = True) -> dict:
    """The deployment-file data the rows stand for. allocated_blocks=False leaves the allocated
    NAT blocks out (a file for people: loading it allocates them again)."""
    data: dict = {"version": FILE_FORMAT}
    data["switches"] = {r["name"]: _switch_data(r) for r in _by(rows, "Switch", "position", "name")}
    data["networks"] = {r["name"]: {"id": r["id"], "entity": r["entity"], "cidr": r["cidr"]}
                        for r in _by(rows, "Network", "name")}
    data["instances"] = {r["name"]: {"switch": r["switch"], "port": r["port"]} for r in _by(rows, "Instance", "name")}
    data["interfaces"] = {r["name"]: _interface_data(r) for r in _by(rows, "Interface", "name")}
    groups = {r["name"]: {} for r in _by(rows, "Security_Group", "name")}
    # ingress before egress, as the spec writes them
    for r in sorted(rows.get("Rule", ()), key=lambda r: (r["security_group"], r["direction"] != "ingress",
                                                         r["position"])):
        peer = ("from", "from_group") if r["direction"] == "ingress" else ("to", "to_group")
        rule = _without_defaults({"proto": r["proto"], "ports": r["ports"], peer[0]: r["cidr"],
                                  peer[1]: r["peer_group"]}, {})
        # A rule of a group with no Security_Group row lands in a group the loader then reports.
        groups.setdefault(r["security_group"], {}).setdefault(r["direction"], []).append(rule)
    data["security_groups"] = groups
    data["authorizations"] = [
        _without_defaults({"from": r["from_network"], "to": r["to_network"], "proto": r["proto"],
                           "ports": r["ports"]}, {})
        for r in _by(rows, "Authorization", "position")]
    data["nat"] = _nat_data(rows, allocated_blocks)
    data["elastic_ips"] = [{"ip": r["ip"], "interface": r["interface"]} for r in _by(rows, "Elastic_IP", "position")]
    # Empty sections are left out, as a person would.
    return {k: v for k, v in data.items() if v or k in ("version", "switches")}


def to_yaml(data: dict) -> str:
    """Block style for sections, flow style for the leaves ({role: host, ...}), as the spec's examples."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)


def _switch_data(r: Row) -> dict:
    item = {"role": r["role"], "dpid": f"{r['dpid']:#x}", "prefix": r["prefix"]}
    if r["uplink"]:
        uplink = dict(r["uplink"])
        if uplink.get("mac") == derived_mac(f"{r['name']}-uplink"):
            del uplink["mac"]
        item["uplink"] = uplink
    item.update(_without_defaults(
        {"bridge": r["bridge"], "underlay_bridge": r["underlay_bridge"], "underlay_port": r["underlay_port"]},
        {"bridge": DEFAULT_BRIDGE, "underlay_bridge": DEFAULT_UNDERLAY_BRIDGE,
         "underlay_port": DEFAULT_UNDERLAY_PORT}))
    return item


def _interface_data(r: Row) -> dict:
    item = {"network": r["network"], "ips": list(r["ips"]), "mac": r["mac"],
            "security_groups": list(r["security_groups"]), "source_dest_check": r["source_dest_check"],
            "attach_to": r["attach_to"], "delete_on_terminate": r["delete_on_terminate"],
            "attachers": list(r["attachers"])}
    return _without_defaults(item, {"mac": derived_mac(r["name"]), "security_groups": [], "attachers": [],
                                    "source_dest_check": True, "delete_on_terminate": False})


def _nat_data(rows: Rows, allocated_blocks: bool) -> dict:
    pools = list(rows.get("NAT_Pool", ()))
    pool = pools[0] if pools else {"public_ips": (), "reserved_ports": (), "block_bits": 8}
    blocks = [{"owner": r["owner"], "ip": r["ip"], "ports": r["ports"]}
              for r in _by(rows, "NAT_Block", "position") if allocated_blocks or r["fixed"]]
    forwards = [{"public": f"{r['public_ip']}:{r['public_port']}", "interface": r["interface"], "port": r["port"],
                 "proto": r["proto"]}
                for r in _by(rows, "NAT_Forward", "position")]
    nat = {"public_ips": list(pool["public_ips"]), "reserved_ports": list(pool["reserved_ports"]),
           "block_bits": pool["block_bits"], "blocks": blocks, "forwards": forwards}
    return _without_defaults(nat, {"public_ips": [], "reserved_ports": [], "block_bits": 8, "blocks": [],
                                   "forwards": []})


# --- rows -> Deployment ----------------------------------------------------------------------------

def deployment_from_rows(rows: Rows, source: str = "store") -> Deployment:
    """The validated Deployment the rows stand for; DeploymentError lists every problem."""
    dep = loader.parse(rows_to_data(rows), source)
    stored = _by(rows, "NAT_Block", "position")
    # The loader took every stored block as written (fixed); the first len(stored) blocks are
    # those, in order, and any after them were allocated now for a host that had none.
    blocks = tuple(dataclasses.replace(block, fixed=row["fixed"]) for block, row in zip(dep.nat.blocks, stored))
    blocks += dep.nat.blocks[len(stored):]
    return dataclasses.replace(dep, nat=dataclasses.replace(dep.nat, blocks=blocks))


def file_data(dep: Deployment) -> dict:
    """Deployment-file data for a person: the fixed NAT blocks only, defaults left out."""
    return rows_to_data(deployment_rows(dep), allocated_blocks=False)
