"""Interface records at runtime (seed 002): attach, detach and move, and elastic-IP remaps
(seed 003), persisted in the state file.

A runtime change is a new attachment for an interface record, or a new interface for an
elastic IP. It is checked against the model
in force (who may attach, whether the instance exists, whether its port already carries an
address of that network), applied as a new immutable Deployment, and written to the state file
so that a restarted controller comes back with it. A refused change leaves everything as it was.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from typing import Dict, List, Optional

from vpcflow.flows.follow import Cut
from vpcflow.topology.model import Deployment, same_elastic_addresses

LOG = logging.getLogger("vpcflow.records")
STATE_VERSION = 1


class RecordError(Exception):
    """A refused change: `status` is the HTTP status that says why (400, 403, 404, 409)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _string(body: dict, field: str, required: bool = True) -> Optional[str]:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise RecordError(400, f"field {field!r} must be a non-empty string")
    return value


def _follow(body: dict) -> bool:
    follow = body.get("follow_connections", False)
    if not isinstance(follow, bool):
        raise RecordError(400, "field 'follow_connections' must be true or false")
    return follow


def check_body(body: dict, allowed) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise RecordError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; expected {sorted(allowed)}")


@dataclasses.dataclass
class Remap:
    """An address that moved from one instance to another, and whether its connections follow."""

    id: str
    interface: str
    ips: List[str]
    network: str
    old_instance: str
    old_switch: str
    old_port: str
    new_instance: str
    follow: bool
    state: str = "draining"  # "draining" while followed connections remain, then "complete"
    connections: int = 0
    created: float = dataclasses.field(default_factory=time.time)
    # an elastic-IP remap: the address, and the interface that held it (`interface` holds it now)
    elastic_ip: Optional[str] = None
    old_interface: Optional[str] = None

    @property
    def holder(self) -> str:
        """Whom the followed connections were recorded under: the old instance of a moved
        record (recorded at the senders' switches), the old interface of an elastic IP
        (recorded at the edge)."""
        return self.old_interface if self.elastic_ip else self.old_instance

    def public(self) -> dict:
        out = {"id": self.id, "interface": self.interface, "ips": self.ips, "from": self.old_instance,
               "to": self.new_instance, "follow_connections": self.follow, "state": self.state,
               "connections": self.connections}
        if self.elastic_ip:
            out.update(elastic_ip=self.elastic_ip, from_interface=self.old_interface)
        return out


def attach(dep: Deployment, iface_id: str, body: dict, remap_id: str, draining=()):
    """(deployment with the interface attached to body["instance"], the Remap if it moved).

    draining: remaps still draining; the record cannot land on a switch where one of its old
    bindings still takes followed connections (two holders of one address on one switch)."""
    check_body(body, {"instance", "requester", "follow_connections"})
    iface = _interface(dep, iface_id)
    instance = _string(body, "instance")
    requester = _string(body, "requester")
    follow = _follow(body)
    if instance not in dep.instances:
        raise RecordError(404, f"no instance {instance!r}")
    _check_attacher(dep, iface, requester)
    for other in dep.interfaces_of(instance):
        if other != iface.name and dep.interfaces[other].network == iface.network:
            raise RecordError(409, f"instance {instance} already has {other} in network {iface.network}")
    new_switch = dep.instances[instance].switch
    for r in draining:
        if r.interface == iface.name and r.old_switch == new_switch:
            raise RecordError(409, f"{iface.name} still drains remap {r.id} on {new_switch}; "
                                   f"attach it elsewhere or wait until that remap completes")
    remap = None
    old = iface.attach_to
    if old is not None and old != instance:
        old_inst = dep.instances[old]
        if follow and old_inst.switch == dep.instances[instance].switch:
            raise RecordError(409, f"following connections needs {instance} on another switch than {old} "
                                   f"({old_inst.switch}); move without follow_connections")
        remap = Remap(remap_id, iface.name, [str(ip) for ip in iface.ips], iface.network, old, old_inst.switch,
                      old_inst.port, instance, follow, "draining" if follow else "complete")
    return _with_attachment(dep, iface.name, instance), remap


def remap_elastic_ip(dep: Deployment, ip: str, body: dict, remap_id: str, draining=()):
    """(deployment with the elastic IP on body["interface"], the Remap).

    The edge records every connection to an elastic IP under the interface that holds it, so
    the old and the new interface may live anywhere, on one switch too: there the host's
    conntrack keeps each connection's translation to the old instance. An elastic IP can go
    back to an interface it left while that remap still drains: its records name it and the
    edge would take them for its own."""
    check_body(body, {"interface", "requester", "follow_connections"})
    eip = next((e for e in dep.elastic_ips if str(e.ip) == ip), None)
    if eip is None:
        raise RecordError(404, f"no elastic IP {ip!r}")
    iface = _interface(dep, _string(body, "interface"))
    requester = _string(body, "requester", required=False)
    follow = _follow(body)
    if requester is not None:
        _check_attacher(dep, iface, requester)
    if eip.interface == iface.name:
        raise RecordError(409, f"elastic IP {ip} is already on {iface.name}")
    for other in dep.elastic_ips:
        if other.interface == iface.name:
            raise RecordError(409, f"interface {iface.name} already has elastic IP {other.ip}")
    if iface.attach_to is None:
        raise RecordError(409, f"interface {iface.name} is not attached: an elastic IP needs an instance")
    for r in draining:
        if r.elastic_ip == ip and r.old_interface == iface.name:
            raise RecordError(409, f"{iface.name} still drains remap {r.id} of {ip}; "
                                   f"wait until that remap completes")
    old = dep.interfaces[eip.interface]
    remap = None
    if old.attach_to is not None:
        old_inst = dep.instances[old.attach_to]
        remap = Remap(remap_id, iface.name, [ip], old.network, old.attach_to, old_inst.switch, old_inst.port,
                      iface.attach_to, follow, "draining" if follow else "complete",
                      elastic_ip=ip, old_interface=old.name)
    return _with_elastic_ip(dep, eip.ip, iface.name), remap


def detach(dep: Deployment, iface_id: str, body: dict) -> Deployment:
    check_body(body, {"requester"})
    iface = _interface(dep, iface_id)
    _check_attacher(dep, iface, _string(body, "requester"))
    if iface.attach_to is None:
        raise RecordError(409, f"interface {iface.name} is not attached")
    return _with_attachment(dep, iface.name, None)


def _interface(dep: Deployment, iface_id: str):
    iface = dep.interfaces.get(iface_id)
    if iface is None:
        raise RecordError(404, f"no interface {iface_id!r}")
    return iface


def _check_attacher(dep: Deployment, iface, requester: str) -> None:
    if requester not in iface.attachers:
        raise RecordError(403, f"{requester!r} is not among the attachers of {iface.name}")


def _with_attachment(dep: Deployment, iface_name: str, instance: Optional[str]) -> Deployment:
    return dep.with_interfaces({iface_name: dataclasses.replace(dep.interfaces[iface_name], attach_to=instance)})


def _with_elastic_ip(dep: Deployment, ip, iface_name: str) -> Deployment:
    eips = tuple(dataclasses.replace(e, interface=iface_name) if e.ip == ip else e for e in dep.elastic_ips)
    return dataclasses.replace(dep, elastic_ips=eips)


def left_addresses(old: Deployment, new: Deployment, names=None) -> List[tuple]:
    """(network, ip, interface) of every address that left its instance: moved, detached or
    deleted. names: the interfaces that may have changed (None: every one). Those not followed
    by a draining remap are cut (controller/state.py, flows/follow.py: Cut)."""
    out = []
    for name in sorted(old.interfaces if names is None else names):
        before, after = old.interfaces.get(name), new.interfaces.get(name)
        if before is None or before.attach_to is None:
            continue
        if after is not None and after.attach_to == before.attach_to:
            continue
        out += [(before.network, str(ip), name) for ip in before.ips]
    return out


# --- the state file --------------------------------------------------------------------------
def attachments(dep: Deployment, base: Deployment, previous=None) -> Dict[str, Optional[str]]:
    """The attachments in which `dep` differs from the deployment file's `base`. previous: (a
    deployment of the same base, its attachments); where dep has its interfaces, or was made from
    it by with_interfaces (a runtime change), only the interfaces replaced since are compared
    (every interface, at each change, was 53 ms at 100,000 interfaces)."""
    if previous is not None and previous[0].interfaces is dep.interfaces:  # an elastic IP's remap, say
        return previous[1]
    names = dep.replaced_from(previous[0]) if previous is not None else None
    if names is None:
        names, out = dep.interfaces, {}
    else:
        out = {name: instance for name, instance in previous[1].items() if name not in names}
    for name in names:
        iface = dep.interfaces.get(name)
        if iface is not None and name in base.interfaces and base.interfaces[name].attach_to != iface.attach_to:
            out[name] = iface.attach_to
    return out


def elastic_ips(dep: Deployment, base: Deployment) -> Dict[str, str]:
    """The elastic IPs that `dep` gives to another interface than the deployment file's `base`."""
    a, b = base.elastic_ips, dep.elastic_ips
    if same_elastic_addresses(a, b):
        # compared by position, and only the ones a change replaced (str() of a thousand
        # addresses, twice, was 2.5 ms)
        return {str(y.ip): y.interface for x, y in zip(a, b) if x is not y and x.interface != y.interface}
    before = {str(e.ip): e.interface for e in base.elastic_ips}
    return {str(e.ip): e.interface for e in dep.elastic_ips if before.get(str(e.ip), e.interface) != e.interface}


def save(path: Optional[str], dep: Deployment, base: Deployment, remaps: Dict[str, Remap], previous=None,
         cuts=None):
    """Write the state file atomically (a crash leaves the old one or the new one): what `dep`
    changed at runtime from the deployment file's `base`, the remaps and the pending cuts
    (flows.follow.Cut, by (network, ip)). Returns (dep, its attachments): the `previous` of the
    next save (see attachments), None without a file."""
    if not path:
        return None
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    attached = attachments(dep, base, previous)
    state = {"version": STATE_VERSION, "attachments": attached, "elastic_ips": elastic_ips(dep, base),
             "remaps": {k: dataclasses.asdict(r) for k, r in remaps.items()},
             "cuts": [dataclasses.asdict(c) for _, c in sorted((cuts or {}).items())]}
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        tmp = f.name
    os.replace(tmp, path)
    return dep, attached


def restore_remaps(path: Optional[str]) -> Dict[str, Remap]:
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return {k: Remap(**v) for k, v in json.load(f).get("remaps", {}).items()}
    except (OSError, ValueError, TypeError) as e:
        LOG.error("state file %s: remaps unreadable (%s): none restored", path, e)
        return {}


def restore_cuts(path: Optional[str]) -> dict:
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            cuts = [Cut(**c) for c in json.load(f).get("cuts", [])]
    except (OSError, ValueError, TypeError) as e:
        LOG.error("state file %s: cuts unreadable (%s): none restored", path, e)
        return {}
    return {(c.network, c.ip): c for c in cuts}


def restore(path: Optional[str], dep: Deployment) -> Deployment:
    """The deployment with the runtime attachments of the state file applied. Entries that no
    longer fit the file (a record or instance gone) are skipped, each with a warning."""
    if not path or not os.path.exists(path):
        return dep
    try:
        with open(path) as f:
            state = json.load(f)
        changes = state["attachments"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        LOG.error("state file %s unreadable (%s): starting from the deployment file alone", path, e)
        return dep
    for iface, instance in sorted(changes.items()):
        if iface not in dep.interfaces or (instance is not None and instance not in dep.instances):
            LOG.warning("state file %s: %s -> %s no longer fits the deployment file: skipped", path, iface, instance)
            continue
        dep = _with_attachment(dep, iface, instance)
    known = {str(e.ip): e.ip for e in dep.elastic_ips}
    for ip, iface in sorted(state.get("elastic_ips", {}).items()):
        taken = {e.interface for e in dep.elastic_ips if str(e.ip) != ip}
        if ip not in known or iface not in dep.interfaces or iface in taken:
            LOG.warning("state file %s: elastic IP %s -> %s no longer fits the deployment file: skipped",
                        path, ip, iface)
            continue
        dep = _with_elastic_ip(dep, known[ip], iface)
    return dep
