"""What the controller knows: the model in force, and each bridge's connection and sync state.

Plain Python, no os-ken: the app's handlers and the REST API both read and change it.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from typing import Dict, Optional, Tuple

from vpcflow.controller import records
from vpcflow.flows import compiler, cookies, incremental, pipeline
from vpcflow.flows.compiler import Options
from vpcflow.flows.follow import Cut, ElasticFollow, Follow
from vpcflow.flows.index import Index
from vpcflow.topology.loader import DeploymentError, Problem, load_file
from vpcflow.topology.model import Deployment

LOG = logging.getLogger("vpcflow")
CHANGES_KEPT = 256  # model changes remembered to tell whether a switch changed since its last sync
RETIRED_KEPT = 4  # models kept for release_retired: more changes than that before it frees the oldest
STORE_APPLY_TIMEOUT = 10.0  # a change written to the store must reach this instance's reader in this time


def honours_tun_ipv6_src(version: str) -> bool:
    """Open vSwitch ignored set_field to tun_ipv6_src until 3.1.5, 3.3.1 and 3.4.0."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version or "")
    if not m:
        return False
    v = tuple(int(x) for x in m.groups())
    return v >= (3, 4, 0) or (3, 3, 1) <= v < (3, 4, 0) or (3, 1, 5) <= v < (3, 2, 0)


def _made(result):
    """(deployment, Remap or None) from what a records change returns (a detach: no Remap)."""
    return result if isinstance(result, tuple) else (result, None)


@dataclasses.dataclass
class BridgeState:
    switch: str
    bridge: str  # pipeline.INTEGRATION or pipeline.UNDERLAY
    connected: bool = False
    role: str = ""  # OpenFlow role this instance holds: "equal" (file mode), "master" or "slave" (store mode)
    version: str = ""
    generation: int = -1  # the model generation last synced
    flows: int = 0
    last_sync: Optional[float] = None
    last_sync_seconds: float = 0.0
    last_added: int = 0
    last_deleted: int = 0
    waiting: int = 0
    error: str = ""
    ports: Dict[str, int] = dataclasses.field(default_factory=dict)
    features: Dict[str, int] = dataclasses.field(default_factory=dict)  # flows per cookie feature
    packet_ins: int = 0
    last_packet_in: str = ""


class Controller:
    def __init__(self, deployment: Deployment, topology_file: Optional[str] = None,
                 state_file: Optional[str] = None, store=None):
        self.topology_file = topology_file
        self.state_file = state_file
        self.store = store  # a store_source.StoreSource in store mode: the intent is the store's
        self.lock = threading.RLock()
        self.bridges: Dict[int, BridgeState] = {}
        self.generation = -1  # raised by every _install
        # the compiled switches of the model in force, and which switches each model change touched
        self._switches = incremental.Compiled(None)
        self.index: Optional[Index] = None
        self._changes = []
        self._located = None  # the switches (Deployment.switches) self._locations was made from
        self._retired = []  # (Index, Compiled) of the models changes replaced, until release_retired
        self.cuts: Dict[tuple, Cut] = {}  # (network, ip) -> the pending cut of an address (_cuts_after)
        self.base = deployment  # as the deployment file says, before runtime changes
        self._saved = None  # (deployment, attachments) the state file was last written with
        if store is None:
            self.remaps: Dict[str, records.Remap] = records.restore_remaps(state_file)
            self.cuts = records.restore_cuts(state_file)
            self._install(records.restore(state_file, deployment))
            self._ready_for_changes()
        else:
            from vpcflow.controller.store_source import remaps_from_update

            self.remaps = remaps_from_update(store.first)
            self.store_generation = store.first.generation  # the store generation in force
            self._applied = threading.Condition()
            self._install(deployment)

    @classmethod
    def from_config(cls, conf) -> "Controller":
        if getattr(conf, "store", None):
            from vpcflow.controller.store_source import StoreSource

            source = StoreSource(conf.store)
            if conf.state_file:
                LOG.info("store mode: state_file %s is not used, runtime changes go to the store", conf.state_file)
            return cls(source.first.deployment, store=source)
        return cls(load_file(conf.topology_file), conf.topology_file, conf.state_file)

    def change(self, make):
        """Apply a runtime change: make(deployment) -> new deployment (and a Remap, or None), or
        raises RecordError and nothing changes. The change is in the state file before it is in
        force; in store mode it is written to the store, and in force once this instance's reader
        has seen it (store_update)."""
        if self.store is not None:
            return self._change_in_store(make)
        with self.lock:
            new, remap = _made(make(self.deployment))
            remaps = dict(self.remaps)
            if remap is not None:
                remaps[remap.id] = remap
            cuts = self._cuts_after(self.deployment, new, remaps)
            self._saved = records.save(self.state_file, new, self.base, remaps, self._saved, cuts)
            self.remaps, self.cuts = remaps, cuts
            self._install(new)
            return self.generation, remap

    def _change_in_store(self, make):
        from vpcflow.store import StoreConflict, StoreError

        with self.lock:
            seen = self.deployment
            new, remap = _made(make(seen))
        try:
            written = self.store.write(seen, new, remap)
        except StoreConflict as e:
            raise records.RecordError(409, f"store: {e}") from None
        except StoreError as e:
            raise records.RecordError(503, f"store unavailable, nothing changed: {e}") from None
        with self._applied:
            if not self._applied.wait_for(lambda: self.store_generation >= written, STORE_APPLY_TIMEOUT):
                LOG.warning("store generation %d written but not seen by this instance within %.0fs",
                            written, STORE_APPLY_TIMEOUT)
        with self.lock:
            return self.generation, (self.remaps.get(remap.id, remap) if remap is not None else None)

    def store_update(self, update) -> bool:
        """A store Update (store mode): install its deployment and remaps. Whether anything the
        switches get changed (then every bridge is to be synced)."""
        installed = False
        with self.lock:
            if update.deployment is None:
                LOG.error("store content rejected, keeping the deployment in force:\n%s",
                          "\n".join(f"  {p}" for p in update.problems))
            elif update.changes:
                from vpcflow.controller.store_source import remaps_from_update

                remaps = remaps_from_update(update)
                for rid, r in remaps.items():  # counts are this instance's own, not written each poll
                    old = self.remaps.get(rid)
                    if old is not None and old.state == r.state == "draining":
                        r.connections = old.connections
                moved = update.moved_interfaces() if update.attachments_only() else None
                self.cuts = self._cuts_after(self.deployment, update.deployment, remaps, moved)
                self.remaps = remaps
                self.base = update.deployment
                self._install(update.deployment)
                installed = True
                LOG.info("store generation %d in force (%d changes%s)", update.generation, len(update.changes),
                         ", moved " + ", ".join(update.moved_interfaces()) if update.moved_interfaces() else "")
        with self._applied:
            self.store_generation = max(self.store_generation, update.generation)
            self._applied.notify_all()
        return installed

    def next_remap_id(self) -> str:
        return f"r{len(self.remaps) + 1}-{int(time.time() * 1000) % 100000}"

    def draining(self):
        return [r for r in self.remaps.values() if r.state == "draining"]

    def remap_progress(self, remap_id: str, connections: int, complete: bool = True):
        """The followed connections a draining remap still has; at none, it is complete and
        every flow it added goes with the next compile. complete=False (store mode, an instance
        that is not the designated one): the count is kept, the completion left to that one."""
        with self.lock:
            r = self.remaps.get(remap_id)
            if r is None or r.state != "draining":
                return False
            r.connections = connections
            if connections or not complete:
                return False
            if self.store is None:
                r.state = "complete"
                self._saved = records.save(self.state_file, self.deployment, self.base, self.remaps, self._saved,
                                           self.cuts)
                self._install(self.deployment)
                return True
            done = dataclasses.replace(r, state="complete", connections=0)
        # Store mode: in force when this instance's reader sees it, as on every other instance.
        from vpcflow.store import StoreError

        try:
            self.store.put_remap(done)
        except StoreError as e:
            LOG.error("remap %s: writing its completion to the store failed: %s", remap_id, e)
            return False
        return True

    def follows(self):
        """The draining remaps, as the compiler takes them, and the pending cuts."""
        out = list(self.cuts.values())
        for r in self.draining():
            if r.elastic_ip:
                out.append(ElasticFollow(r.id, r.elastic_ip, r.old_interface))
            else:
                out.extend(Follow(r.id, r.network, ip, r.old_instance, r.old_switch, r.old_port, r.interface,
                                  order=r.created) for ip in r.ips)
        return tuple(out)

    def cut_progress(self, network: str, ip: str, records_left: int) -> bool:
        """The quiet records a pending cut still has; at none it ends, and the address records
        as a quiet one again (with the next compile, made here). Whether it ended."""
        with self.lock:
            if records_left or (network, ip) not in self.cuts:
                return False
            cuts = {key: c for key, c in self.cuts.items() if key != (network, ip)}
            if self.store is None:
                self._saved = records.save(self.state_file, self.deployment, self.base, self.remaps, self._saved,
                                           cuts)
            self.cuts = cuts
            self._install(self.deployment)
            return True

    def _cuts_after(self, before: Deployment, after: Deployment, remaps, moved=None) -> dict:
        """The pending cuts (flows.follow.Cut) once `after` is in force, with the remaps: those
        there are, and one for each address the change moved without following. In the state
        file. None in store mode, where every instance must compile the store's content alike
        (a cut ends when one instance counts no record, not at a store generation): there a
        cut connection's record may count toward a followed remap of its address soon after
        until it idles out."""
        if self.index is None or self.store is not None or after.interfaces is before.interfaces:
            return self.cuts  # (a rule edit or an elastic IP's remap: no interface scanned, at 100k 80 ms)
        names = after.replaced_from(before) if moved is None else moved
        # (an address a draining remap moved is that remap's: its move was followed, or it
        # drains an earlier one, which owns its quiet records)
        followed = {(r.network, ip) for r in remaps.values() if r.state == "draining" and not r.elastic_ip
                    for ip in r.ips}
        cuts, now = dict(self.cuts), time.time()
        for network, ip, iface in records.left_addresses(before, after, names):
            if (network, ip) not in followed and (network, ip) not in cuts:
                cuts[(network, ip)] = Cut(f"cut:{iface}", network, ip, now)
        return cuts

    def _install(self, dep: Deployment):
        if self.index is not None:  # freed after this change's syncs (release_retired), not on its way
            self._retired = (self._retired + [(self.index, self._switches)])[-RETIRED_KEPT:]
        self.deployment = dep
        compiler.release_frozen()
        with compiler.without_gc():  # (as a compile: objects that live on, no cycles)
            # derived from the one in force where a runtime change allows (flows/incremental.py)
            self.index = incremental.next_index(self.index, dep, self.follows())
            # switches whose inputs did not change keep their compiled flows (flows/incremental.py)
            self._switches, changed = self._switches.update(self.index)
        self.generation += 1
        self._changes = (self._changes + [(self.generation, changed)])[-CHANGES_KEPT:]
        self._names = None
        if dep.switches is not self._located:  # (a runtime change keeps them: 2,000 switches, ~5 ms)
            self._located = dep.switches
            self._locations = {}
            for sw in dep.switches.values():
                self._locations[sw.dpid] = (sw.name, pipeline.INTEGRATION)
                self._locations[sw.underlay_dpid] = (sw.name, pipeline.UNDERLAY)
            for dpid, (name, bridge) in self._locations.items():
                self.bridges.setdefault(dpid, BridgeState(name, bridge))
            for dpid in [d for d in self.bridges if d not in self._locations]:
                del self.bridges[dpid]

    def release_retired(self):
        """Free what the changes since the last call replaced (each one's Index and compiled
        switches, with the flows and runs only they held): the app calls this once a change's
        syncs are done. Freed in _install, they were ~3 ms of a 100k-interface move, between
        the API call and the switches' new flows."""
        with self.lock:
            retired, self._retired = self._retired, []
        del retired  # (here, outside the lock)

    def locate(self, dpid: int) -> Optional[Tuple[str, str]]:
        return self._locations.get(dpid)

    def model_in_force(self):
        """(generation, compiled flows) of the model in force: what all the syncs of one runtime
        change sync to, though another change may come into force meanwhile (its own syncs
        follow). Mixed, the change's phases would not hold across switches: an elastic IP's old
        holder could let go of it (the new model) before the edge, synced to the old one, stopped
        sending it the address's new connections."""
        with self.lock:
            return self.generation, self._switches

    def desired(self, name: str, bridge: str, version: str, model=None):
        """(generation, flows) for one bridge, compiled once per model and OVS capability; of
        `model` (model_in_force()) when given, else of the model in force."""
        with self.lock:
            generation, switches = model or (self.generation, self._switches)
            embed = honours_tun_ipv6_src(version)
            options = Options(embed_outer_source=frozenset({name}) if embed else frozenset())
            return generation, switches.switch(name, options).bridge(bridge)

    def unchanged_since(self, name: str, generation: int, model=None) -> Optional[int]:
        """The generation in force (or `model`'s) if no model change after `generation` up to it
        can have changed this switch's flows, else None; `generation` itself if it is already
        as new (a later sync got there first: nothing to take back)."""
        with self.lock:
            upto = self.generation if model is None else model[0]
            if generation >= upto:
                return generation
            if generation < self._changes[0][0] - 1:
                return None  # older than what is remembered
            if all(changed is not None and name not in changed
                   for g, changed in self._changes if generation < g <= upto):
                return upto
            return None

    def changed_switches(self, since: int):
        """The switches whose flows the model changes after generation `since` may have changed
        (what their syncs will find changed); None: every switch, or older than remembered."""
        with self.lock:
            if since < self._changes[0][0] - 1:
                return None
            out = set()
            for g, changed in self._changes:
                if g > since:
                    if changed is None:
                        return None
                    out |= changed
            return out

    def name_of(self, cookie: int):
        """(feature, object) that a cookie names, from the flows compiled for the model in force."""
        with self.lock:
            if self._names is None:
                self._names = {}
                for name in self.deployment.switches:
                    sw = self._switches.switch(name)
                    self._names.update(cookies.names(sw.integration + sw.underlay))
            return self._names.get(cookies.name_key(cookie), (cookies.feature_of(cookie), None))

    def reload(self):
        """Re-read the deployment file: the problems, or [] once the new model is in force."""
        if self.store is not None:
            return [Problem("", f"the intent is the store's ({self.store.remote}): change it with "
                                "`vpcflow store import`, there is no deployment file to reload")]
        try:
            dep = load_file(self.topology_file)
        except DeploymentError as e:
            return e.problems
        with self.lock:
            new = records.restore(self.state_file, dep)
            # an interface the file moved (or dropped) cuts its connections as an API move does
            cuts = self._cuts_after(self.deployment, new, self.remaps)
            if cuts != self.cuts:
                records.save(self.state_file, new, dep, self.remaps, None, cuts)
            self.base, self._saved, self.cuts = dep, None, cuts
            self._install(new)
            self._ready_for_changes()
        return []

    def _ready_for_changes(self):
        """Look up now what the first runtime change would otherwise look up over every interface
        (~300 ms at 100k interfaces, on the first API call): the interfaces of each instance
        (records.attach), and the attachments the state file holds (records.save then compares
        only the interfaces a change replaced)."""
        self.deployment.interfaces_of("")
        if self.state_file:
            self._saved = (self.deployment, records.attachments(self.deployment, self.base))

    # --- bridge state --------------------------------------------------------------------------
    def connected(self, dpid, role: str = "equal"):
        """role: "equal" where no role is asked for (file mode); "" until a role request is answered."""
        with self.lock:
            self.bridges[dpid].connected = True
            self.bridges[dpid].role = role

    def disconnected(self, dpid):
        with self.lock:
            if dpid in self.bridges:
                self.bridges[dpid].connected = False
                self.bridges[dpid].role = ""

    def set_role(self, dpid, role: str):
        with self.lock:
            if dpid in self.bridges:
                self.bridges[dpid].role = role

    def synced(self, dpid, generation, *, version, ports, installed, added, deleted, waiting, seconds,
               features=None):
        with self.lock:
            b = self.bridges.get(dpid)
            if b is None:
                return
            b.version, b.ports, b.generation, b.flows = version, ports, generation, installed
            b.last_added, b.last_deleted, b.waiting = added, deleted, waiting
            b.last_sync, b.last_sync_seconds, b.error = time.time(), seconds, ""
            b.features = dict(features or {})

    def sync_failed(self, dpid, error):
        with self.lock:
            if dpid in self.bridges:
                self.bridges[dpid].error = error

    def packet_in(self, dpid, what: str):
        with self.lock:
            b = self.bridges.get(dpid)
            if b is not None:
                b.packet_ins += 1
                b.last_packet_in = what

    def all_integration_connected(self) -> bool:
        with self.lock:
            return all(b.connected for b in self.bridges.values() if b.bridge == pipeline.INTEGRATION)

    def port_number(self, dpid, name):
        b = self.bridges.get(dpid)
        return b.ports.get(name) if b else None

    def status(self):
        """GET /v1/switches: every bridge of every switch in the file, connected or not."""
        with self.lock:
            out = []
            for dpid, b in sorted(self.bridges.items(), key=lambda kv: (kv[1].switch, kv[1].bridge)):
                out.append({
                    "switch": b.switch, "bridge": b.bridge, "dpid": f"{dpid:016x}", "connected": b.connected,
                    "role": b.role,  # a slave's bridge is its master's to sync: never in sync here
                    "ovs_version": b.version, "flows": b.flows, "in_sync": b.connected and b.generation == self.generation
                    and b.role in ("equal", "master") and not b.error and not b.waiting,
                    "last_sync": b.last_sync, "last_sync_seconds": round(b.last_sync_seconds, 4),
                    "last_added": b.last_added, "last_deleted": b.last_deleted,
                    "waiting_for_ports": b.waiting, "error": b.error, "packet_ins": b.packet_ins,
                    "flows_by_feature": dict(b.features),
                })
            return {"generation": self.generation, "switches": out}
