"""Prepare a switch's bridges through the OVSDB IDL (the `ovs` Python bindings).

`ensure_bridges` is idempotent: it creates what is missing and corrects what differs, in one
transaction, and leaves every other bridge, port and column alone.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Optional, Tuple

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.util

from vpcflow.topology.model import TUNNEL_PORT, Deployment, Switch

DEFAULT_DB = "unix:/var/run/openvswitch/db.sock"
TIMEOUT = 10.0


class OvsdbError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class PortSpec:
    name: str
    type: str = ""  # "" = a system device; "geneve"; "internal"
    options: Tuple[Tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class BridgeSpec:
    name: str
    dpid: int
    ports: Tuple[PortSpec, ...]


def bridge_specs(dep: Deployment, sw: Switch) -> List[BridgeSpec]:
    """The bridges a switch needs: integration (instances, tunnel, uplink) and underlay."""
    ports = [PortSpec(TUNNEL_PORT, "geneve", (("key", "flow"), ("local_ip", "flow"), ("remote_ip", "flow")))]
    ports += [PortSpec(i.port) for i in sorted(dep.instances.values(), key=lambda i: i.port) if i.switch == sw.name]
    if sw.uplink is not None:
        ports.append(PortSpec(sw.uplink.port))
    return [BridgeSpec(sw.bridge, sw.dpid, tuple(ports)),
            BridgeSpec(sw.underlay_bridge, sw.underlay_dpid, (PortSpec(sw.underlay_port),))]


def _schema_helper(remote: str) -> ovs.db.idl.SchemaHelper:
    err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), TIMEOUT * 1000)
    if err:
        raise OvsdbError(f"cannot connect to {remote}: {ovs.util.ovs_retval_to_string(err)}")
    rpc = ovs.jsonrpc.Connection(stream)
    err, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"]))
    rpc.close()
    if err or reply.error:
        raise OvsdbError(f"{remote}: cannot read the Open_vSwitch schema")
    helper = ovs.db.idl.SchemaHelper(None, reply.result)
    helper.register_all()
    return helper


def _connect(remote: str) -> ovs.db.idl.Idl:
    idl = ovs.db.idl.Idl(remote, _schema_helper(remote))
    deadline = time.monotonic() + TIMEOUT
    seqno = idl.change_seqno
    while idl.change_seqno == seqno or not idl.has_ever_connected():
        idl.run()
        if time.monotonic() > deadline:
            raise OvsdbError(f"{remote}: no database contents after {TIMEOUT:.0f}s")
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.timer_wait(100)
        poller.block()
    return idl


def _row_by_name(idl, table: str, name: str):
    for row in idl.tables[table].rows.values():
        if row.name == name:
            return row
    return None


# How long Open vSwitch keeps an idle datapath flow (other_config:max-idle, its default 10 s).
MAX_IDLE_MS = 1000


def ensure_bridges(specs: List[BridgeSpec], controllers: List[str], remote: str = DEFAULT_DB,
                   datapath_type: str = "netdev", in_band: bool = False,
                   max_idle_ms: Optional[int] = MAX_IDLE_MS) -> Dict[str, str]:
    """Create or correct the bridges; returns {bridge: "created"|"updated"|"unchanged"}, and
    {"max-idle": "set to N ms"|"unchanged"} when max_idle_ms is given.

    The controllers are reached out of band (connection_mode=out-of-band, as Neutron's agent
    sets it) unless in_band: in-band control adds hidden flows and, on the userspace datapath,
    refreshes them in the thread that forwards packets (measured: 7% of a receiving switch's
    time, ~10% of east-west throughput). In band is for a switch whose only way to its
    controller is one of these bridges' own ports.

    max_idle_ms (None: left as it is): vpcflow records every connection by a learn action,
    so a switch's flow tables change with nearly every new connection, and each change makes
    its revalidators go through every datapath flow again. With Open vSwitch's default of 10 s,
    the flows of connections that ended long ago make every round, and a runtime change that
    waits for one (the edge, make-before-break), grow with the connection rate (measured at an
    edge taking a new connection every ~3 ms: at 10 s, 1,700 datapath flows after a minute and
    rounds past 25 ms, growing; at 1 s, ~450 and 4-9 ms). An idle connection's next packet is
    looked up again, once."""
    idl = _connect(remote)
    try:
        result = {}
        txn = ovs.db.idl.Transaction(idl)
        root = next(iter(idl.tables["Open_vSwitch"].rows.values()))
        for spec in specs:
            result[spec.name] = _ensure_bridge(idl, txn, root, spec, controllers, datapath_type, in_band)
        if max_idle_ms is not None:
            other = dict(root.other_config)
            changed = other.get("max-idle") != str(max_idle_ms)
            if changed:
                other["max-idle"] = str(max_idle_ms)
                root.other_config = other
            result["max-idle"] = f"set to {max_idle_ms} ms" if changed else "unchanged"
        status = txn.commit_block()
        if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
            raise OvsdbError(f"{remote}: transaction {status}: {txn.get_error()}")
        if status == ovs.db.idl.Transaction.UNCHANGED:
            result = {k: "unchanged" for k in result}
        return result
    finally:
        idl.close()


def _ensure_bridge(idl, txn, root, spec: BridgeSpec, controllers, datapath_type, in_band: bool = False) -> str:
    br = _row_by_name(idl, "Bridge", spec.name)
    created = br is None
    if created:
        br = txn.insert(idl.tables["Bridge"])
        br.name = spec.name
        root.addvalue("bridges", br.uuid)
        local = _new_port(idl, txn, spec.name, "internal", ())
        br.ports = [local]
    _set_if_different(br, "datapath_type", datapath_type)
    _set_if_different(br, "protocols", ["OpenFlow13"])
    _set_if_different(br, "fail_mode", ["secure"])
    other = dict(br.other_config) if not created else {}
    if other.get("datapath-id") != f"{spec.dpid:016x}":
        other["datapath-id"] = f"{spec.dpid:016x}"
        br.other_config = other
    mode = ["in-band" if in_band else "out-of-band"]
    current = sorted((c.target, list(c.connection_mode)) for c in br.controller) if not created else []
    if current != sorted((target, mode) for target in controllers):
        rows = []
        for target in controllers:
            c = txn.insert(idl.tables["Controller"])
            c.target = target
            c.connection_mode = mode
            rows.append(c)
        br.controller = rows
    existing = {p.name: p for p in (br.ports if not created else [])}
    for port in spec.ports:
        if port.name in existing:
            iface = existing[port.name].interfaces[0]
            _set_if_different(iface, "type", port.type)
            if dict(iface.options) != dict(port.options):
                iface.options = dict(port.options)
        else:
            br.addvalue("ports", _new_port(idl, txn, port.name, port.type, port.options).uuid)
    return "created" if created else "updated"


def _new_port(idl, txn, name, type_, options):
    iface = txn.insert(idl.tables["Interface"])
    iface.name = name
    iface.type = type_
    if options:
        iface.options = dict(options)
    port = txn.insert(idl.tables["Port"])
    port.name = name
    port.interfaces = [iface]
    return port


def _set_if_different(row, column: str, value):
    current = getattr(row, column, None)
    if current != value:
        setattr(row, column, value)


def bridge_names(remote: str = DEFAULT_DB) -> Optional[List[str]]:
    idl = _connect(remote)
    try:
        return sorted(b.name for b in idl.tables["Bridge"].rows.values())
    finally:
        idl.close()
