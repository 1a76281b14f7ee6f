"""StoreReader: the store's current Deployment, and what changed since the last read.

    reader = StoreReader("tcp:127.0.0.1:6641,tcp:127.0.0.1:6642,tcp:127.0.0.1:6643")
    update = reader.read()              # the first read: every row is an insert
    while True:
        update = reader.wait(timeout)   # blocks in ovs.poller (a green thread yields under eventlet)
        if update is None: continue     # nothing changed within the timeout
        update.moved_interfaces()       # ("eni-web2",): only attach_to changed
        update.attachments_only()       # True: the controller can move records without a recompile
        update.deployment               # validated; None (and update.problems) if the store is invalid

Changes are reported by natural key (schema.NATURAL_KEYS), not by row UUID: an import that
rewrites every row with the same content reports nothing, and one that differs in one interface's
attachment reports that one row and column. The reader keeps a plain copy of every row and
compares only the rows the IDL says it touched (its `notify` hook); after a reconnect that
reloaded the database the touched set covers every row, and rows deleted meanwhile are found by
comparing the copy with the IDL's rows.

The Deployment is rebuilt through the loader (every check a file gets) when anything but
attachments changed; an attachment-only change is applied to the previous Deployment directly,
so a move costs one row, not a parse of the whole store.
"""
from __future__ import annotations

import dataclasses
import time
from types import MappingProxyType
from typing import Dict, Iterator, Mapping, Optional, Set, Tuple

import ovs.db.idl

from vpcflow.store import client, rows
from vpcflow.store.schema import INTENT_TABLES, MEMBERSHIP_TABLE, META_TABLE, natural_key
from vpcflow.topology.loader import DeploymentError, Problem
from vpcflow.topology.model import Deployment, frozen_map

INSERT, UPDATE, DELETE = "insert", "update", "delete"


@dataclasses.dataclass(frozen=True, order=True)
class Change:
    table: str  # "Interface"
    key: str  # its natural key: "eni-web2", "web/ingress[1]", "[0]"
    kind: str  # insert, update or delete
    columns: Tuple[str, ...]  # the columns that differ (all of them for an insert or delete)


@dataclasses.dataclass(frozen=True)
class Update:
    deployment: Optional[Deployment]  # None when the store's content is rejected (keep the last one)
    problems: Tuple[Problem, ...]  # why it was rejected, with the paths a file would have
    changes: Tuple[Change, ...]  # since the previous read, sorted; Store (the generation) left out
    remaps: Mapping[str, Mapping[str, object]]  # Remap rows by id, as plain values
    generation: int  # Store.generation: every vpcflow write bumps it
    rebuilt: bool  # the Deployment went through the loader (False: reused, or attachments applied)

    def moved_interfaces(self) -> Tuple[str, ...]:
        """Interface records whose attachment changed (and nothing else of theirs)."""
        return tuple(c.key for c in self.changes
                     if c.table == "Interface" and c.kind == UPDATE and c.columns == ("attach_to",))

    def intent_changes(self) -> Tuple[Change, ...]:
        return tuple(c for c in self.changes if c.table in INTENT_TABLES)

    def attachments_only(self) -> bool:
        """Every change to the deployment is an interface moving (remaps may change too)."""
        return all(c.table == "Interface" and c.kind == UPDATE and c.columns == ("attach_to",)
                   for c in self.intent_changes())


class _TrackingIdl(ovs.db.idl.Idl):
    """Notes which rows the IDL created, updated or deleted since the reader last looked."""

    def __init__(self, *args, **kwargs):
        self.touched: Set[Tuple[str, object]] = set()
        super().__init__(*args, **kwargs)

    def notify(self, event, row, updates=None):
        self.touched.add((row._table.name, row.uuid))


def diff_rows(table: str, old: Dict[str, dict], new: Dict[str, dict]) -> Tuple[Change, ...]:
    """Changes between two {natural key: row} views of one table."""
    changes = []
    for key in old.keys() | new.keys():
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if before is None:
            changes.append(Change(table, key, INSERT, tuple(sorted(after))))
        elif after is None:
            changes.append(Change(table, key, DELETE, tuple(sorted(before))))
        else:
            columns = tuple(sorted(c for c in before.keys() | after.keys() if before.get(c) != after.get(c)))
            changes.append(Change(table, key, UPDATE, columns))
    return tuple(changes)


def apply_attachments(dep: Deployment, attachments: Mapping[str, Optional[str]]) -> Deployment:
    """dep with these interfaces attached (None: detached); DeploymentError as the loader would
    report a reference to an instance that does not exist."""
    problems = [Problem(f"interfaces.{name}.attach_to", f"instance {instance!r} does not exist")
                for name, instance in sorted(attachments.items())
                if instance is not None and instance not in dep.instances]
    if problems:
        raise DeploymentError(problems, "store")
    interfaces = dict(dep.interfaces)
    for name, instance in attachments.items():
        interfaces[name] = dataclasses.replace(interfaces[name], attach_to=instance)
    return dataclasses.replace(dep, interfaces=frozen_map(interfaces))


class StoreReader:
    """One IDL replica of the whole store. Not thread-safe: use it from one thread (native or green)."""

    def __init__(self, remote: str, leader_only: bool = False, timeout: float = client.TIMEOUT):
        self.remote = remote
        schema_json = client.fetch_schema(remote, timeout)
        # Everything but the controllers' beats: they are not the intent, and come every half second.
        tables = [t for t in schema_json["tables"] if t != MEMBERSHIP_TABLE]
        self.idl: _TrackingIdl = client.open_idl(remote, schema_json, tables, leader_only=leader_only,
                                                 timeout=timeout, idl_class=_TrackingIdl)
        self.columns = {name: table.columns for name, table in self.idl.tables.items()}
        self.plain_rows: Dict[str, Dict[object, dict]] = {table: {} for table in self.idl.tables}
        self.deployment: Optional[Deployment] = None  # the last valid one
        self.problems: Tuple[Problem, ...] = ()  # why the store's content is rejected now
        self.read_once = False

    def close(self):
        self.idl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- waiting ----------------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether the IDL has seen changes not read yet (runs the IDL once, does not block)."""
        self.idl.run()
        return bool(self.idl.touched)

    def wait(self, timeout: float) -> Optional[Update]:
        """The next Update, or None if nothing changed within the timeout."""
        try:
            client.run_until(self.idl, lambda: bool(self.idl.touched), timeout, "a change")
        except client.StoreError:
            return None
        return self.read()

    def updates(self, idle: float = 1.0) -> Iterator[Update]:
        """Every Update, forever, the first one with all rows (for the loop of a hub thread)."""
        yield self.read()
        while True:
            update = self.wait(idle)
            if update is not None:
                yield update

    def wait_for(self, predicate, timeout: float, what: str = "a condition") -> Update:
        """Read until predicate(update) holds; the Update that satisfied it (StoreError on timeout).
        Changes of the updates read meanwhile are not reported again."""
        deadline = time.monotonic() + timeout
        update = self.read()
        while not predicate(update):
            left = deadline - time.monotonic()
            if left <= 0:
                raise client.StoreError(f"{self.remote}: timed out after {timeout:.1f}s waiting for {what}")
            update = self.wait(left) or update
        return update

    # --- reading ----------------------------------------------------------------------------

    def read(self) -> Update:
        """The store as it is now, and the changes since the previous read."""
        self.idl.run()
        touched, self.idl.touched = self.idl.touched, set()
        # After a reconnect that reloaded everything, rows deleted meanwhile got no notification:
        # their table has fewer rows than the copy.
        tables = {t for t, _ in touched} | {t for t, mine in self.plain_rows.items()
                                            if len(mine) != len(self.idl.tables[t].rows)}
        changes = []
        attachments = {}  # interface -> instance, for the rows that changed
        for table in tables:
            old, new = self._refresh(table, {u for t, u in touched if t == table})
            if table != META_TABLE:
                changes += diff_rows(table, old, new)
            if table == "Interface":
                attachments = {name: row["attach_to"] for name, row in new.items()}
        changes.sort()
        rebuilt = self._follow(tuple(c for c in changes if c.table in INTENT_TABLES), attachments)
        deployment = None if self.problems else self.deployment
        return Update(deployment, self.problems, tuple(changes), self._remaps(), self._generation(), rebuilt)

    def _follow(self, intent: Tuple[Change, ...], attachments: Mapping[str, Optional[str]]) -> bool:
        """Bring the Deployment up to date with the intent changes; whether it went through the loader."""
        first = not self.read_once
        self.read_once = True
        if not intent and not first:
            return False
        moves = all(c.table == "Interface" and c.kind == UPDATE and c.columns == ("attach_to",) for c in intent)
        if moves and not first and not self.problems:
            try:
                self.deployment = apply_attachments(self.deployment, {c.key: attachments[c.key] for c in intent})
                return False
            except DeploymentError:
                pass  # rebuilt below, so the problems are the loader's own
        self._rebuild()
        return True

    def rows(self) -> Dict[str, list]:
        """Every table's rows as of the last read(), as plain values (what rows.py converts)."""
        return {table: list(by_uuid.values()) for table, by_uuid in self.plain_rows.items()}

    def _refresh(self, table: str, uuids: Set[object]):
        """Bring the plain copy of these rows (and any vanished ones) up to date; the old and new
        {natural key: row} views of what changed."""
        idl_rows = self.idl.tables[table].rows
        mine = self.plain_rows[table]
        uuids = uuids | {u for u in mine if u not in idl_rows}
        old, new = {}, {}
        for uuid in uuids:
            before = mine.pop(uuid, None)
            if before is not None:
                old[natural_key(table, before)] = before
            row = idl_rows.get(uuid)
            if row is not None:
                after = self._plain(table, row)
                mine[uuid] = after
                new[natural_key(table, after)] = after
        return old, new

    def _plain(self, table: str, row) -> dict:
        return {name: client.plain_value(column.type, getattr(row, name))
                for name, column in self.columns[table].items()}

    def _rebuild(self):
        try:
            self.deployment = rows.deployment_from_rows(self.rows(), f"store {self.remote}")
            self.problems = ()
        except DeploymentError as error:  # the last valid Deployment stays for the next move
            self.problems = tuple(error.problems)

    def _remaps(self) -> Mapping[str, Mapping[str, object]]:
        return MappingProxyType({r["id"]: MappingProxyType(dict(r)) for r in self.plain_rows.get("Remap", {}).values()})

    def _generation(self) -> int:
        meta = list(self.plain_rows.get(META_TABLE, {}).values())
        return meta[0]["generation"] if meta else 0

