"""The controller's intent from the store (`[vpcflow] store = unix:... | tcp:...,tcp:...`).

    source = StoreSource(remote)       # reads the store once: source.first is the first Update
    source.write(seen, new, remap)     # a runtime change, one transaction; the store generation
    for update in source.updates():    # every change, for the app's hub thread

A runtime change is never put in force directly: it is written to the store, and takes effect
when this instance's reader sees it, as it does on every other instance. The store's Remap rows
are the remaps (no state file in store mode).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Dict, Mapping, Optional

from vpcflow.controller import records
from vpcflow.store import StoreError, StoreReader, StoreWriter, Update
from vpcflow.store.client import TIMEOUT
from vpcflow.topology.loader import DeploymentError
from vpcflow.topology.model import Deployment

LOG = logging.getLogger("vpcflow.store")

# The Remap table's columns: records.Remap (elastic_ip and old_interface are optional: 1.1.0)
REMAP_COLUMNS = ("id", "interface", "ips", "network", "old_instance", "old_switch", "old_port", "new_instance",
                 "follow", "state", "connections", "created", "elastic_ip", "old_interface")


def remap_row(remap: records.Remap) -> Dict[str, object]:
    values = dataclasses.asdict(remap)
    row = {c: values[c] for c in REMAP_COLUMNS}
    row["ips"] = tuple(row["ips"])
    row["created"] = float(row["created"])
    return row


def remap_from_row(row: Mapping[str, object]) -> records.Remap:
    values = {c: row[c] for c in REMAP_COLUMNS if c in row}
    values["ips"] = list(values.get("ips", ()))
    return records.Remap(**values)


def remaps_from_update(update: Update) -> Dict[str, records.Remap]:
    return {rid: remap_from_row(row) for rid, row in sorted(update.remaps.items())}


def first_deployment(remote: str, timeout: float = TIMEOUT) -> Deployment:
    """The store's deployment, for the start-up check: StoreError if the store does not answer,
    DeploymentError if what it holds is invalid."""
    with StoreReader(remote, timeout=timeout) as reader:
        update = reader.read()
    if update.deployment is None:
        raise DeploymentError(update.problems, f"store {remote}")
    return update.deployment


class StoreSource:
    def __init__(self, remote: str, timeout: float = TIMEOUT):
        self.remote = remote
        self.timeout = timeout
        self.reader = StoreReader(remote, timeout=timeout)
        self.first = self.reader.read()
        if self.first.deployment is None:
            self.reader.close()
            raise DeploymentError(self.first.problems, f"store {remote}")
        self._writer: Optional[StoreWriter] = None
        self._write_lock = threading.Lock()

    def updates(self, idle: float = 1.0):
        return self.reader.updates(idle)

    def close(self):
        self.reader.close()
        if self._writer is not None:
            self._writer.close()

    # --- writes ---------------------------------------------------------------------------------
    def _transact(self, write):
        """write(writer) with a connected writer; a writer that failed is replaced next time."""
        with self._write_lock:
            try:
                if self._writer is None:
                    self._writer = StoreWriter(self.remote, self.timeout)
                return write(self._writer)
            except StoreError:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
                raise

    def write(self, seen: Deployment, new: Deployment, remap: Optional[records.Remap]) -> int:
        """The difference between `seen` (the deployment the change was checked against) and `new`,
        and the remap, as one transaction; the new store generation. StoreConflict if the store no
        longer holds what `seen` says for a changed row."""
        attachments = {name: (seen.interfaces[name].attach_to, iface.attach_to)
                       for name, iface in new.interfaces.items()
                       if name in seen.interfaces and seen.interfaces[name].attach_to != iface.attach_to}
        before = {str(e.ip): e.interface for e in seen.elastic_ips}
        elastic_ips = {str(e.ip): (before[str(e.ip)], e.interface) for e in new.elastic_ips
                       if str(e.ip) in before and before[str(e.ip)] != e.interface}
        row = remap_row(remap) if remap is not None else None
        return self._transact(lambda w: w.runtime_change(attachments, elastic_ips, row))

    def put_remap(self, remap: records.Remap) -> int:
        return self._transact(lambda w: w.put_remap(remap_row(remap)))
