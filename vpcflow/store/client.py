"""Talking to the store: the `ovs` IDL and JSON-RPC, no subprocess.

A remote is `unix:PATH`, `tcp:HOST:PORT`, or a comma-separated list of them: the members of a
clustered (Raft) database. The IDL tries the members in turn; with `leader_only` it settles only
on the leader, which is what writes use, so a write is acknowledged by the leader after the
cluster committed it. Readers may settle on any member that is connected to the cluster and not
behind what they already saw (the IDL checks the Raft index itself).

Writes are raw OVSDB operations inside an IDL transaction that also bumps `Store.generation`
(verified, so two writers serialise: one of them retries). The writer's IDL replicates the one
`Store` row only, so an import never downloads what it is about to replace.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Optional

import ovs.db.data
import ovs.db.idl
import ovs.db.schema
import ovs.db.types
import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.util

from vpcflow.store.schema import (DB_NAME, FILE_FORMAT, INTENT_TABLES, MEMBERSHIP_TABLE, META_TABLE,
                                  SCHEMA_VERSION, compatible)

TIMEOUT = 10.0
POLL_MS = 100
# A member that is gone or not the leader: try the next one soon, not after the default 8 s. A
# leader killed, the others elect one within 1 to 2 s (Raft election timer 1 s): retrying every
# 0.2 to 1 s finds it soon after (a write then waits 1 to 4 s, against 5 to 7 s with 1 to 2 s).
MIN_BACKOFF_MS = 200
MAX_BACKOFF_MS = 1000



class StoreError(RuntimeError):
    pass


class StoreConflict(StoreError):
    """A write refused because the store no longer holds what it was checked against (one of its
    "wait" operations did not hold): nothing was written."""


class Txn(ovs.db.idl.Transaction):
    """Keeps the server's per-operation results: the IDL files a failed "wait" under "try again"
    (as for its own verify), and only the results tell that one of ours failed."""

    results = None

    def _process_reply(self, msg):
        if msg.type != ovs.jsonrpc.Message.T_ERROR and isinstance(msg.result, (list, tuple)):
            self.results = list(msg.result)
        super()._process_reply(msg)

    def failed_raw_op(self, count: int) -> Optional[dict]:
        """The error of one of the last `count` operations (the raw ones), if one failed."""
        if not self.results or count == 0:
            return None
        for result in self.results[-count:]:
            if isinstance(result, dict) and "error" in result:
                return result
        return None


def split_remotes(remote: str) -> List[str]:
    """"tcp:a:1,tcp:b:2" -> ["tcp:a:1", "tcp:b:2"] (the IDL's own rule: a piece without ':'
    belongs to the previous remote)."""
    remotes: List[str] = []
    for piece in remote.split(","):
        if remotes and ":" not in piece:
            remotes[-1] += "," + piece
        elif piece:
            remotes.append(piece)
    return remotes


def fetch_schema(remote: str, timeout: float = TIMEOUT) -> dict:
    """The vpcflow schema (JSON) from the first member that answers."""
    reasons = []
    for one in split_remotes(remote):
        err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(one), int(timeout * 1000))
        if err:
            reasons.append(f"{one}: {ovs.util.ovs_retval_to_string(err)}")
            continue
        rpc = ovs.jsonrpc.Connection(stream)
        try:
            err, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("get_schema", [DB_NAME]))
        finally:
            rpc.close()
        if err:
            reasons.append(f"{one}: {ovs.util.ovs_retval_to_string(err)}")
        elif reply.error:
            reasons.append(f"{one}: no {DB_NAME} database ({reply.error})")
        else:
            version = reply.result.get("version", "")
            if not compatible(version):
                raise StoreError(f"{one}: schema version {version}, this vpcflow speaks {SCHEMA_VERSION}")
            return reply.result
    raise StoreError(f"cannot read the {DB_NAME} schema: " + "; ".join(reasons))


def run_until(idl: ovs.db.idl.Idl, done: Callable[[], bool], timeout: float, what: str) -> None:
    """Run the IDL until done() or the timeout (StoreError naming `what`). Blocks in ovs.poller,
    which yields to other green threads under eventlet."""
    deadline = time.monotonic() + timeout
    while True:
        idl.run()
        if done():
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise StoreError(f"{idl.session_name()}: timed out after {timeout:.1f}s waiting for {what}")
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.timer_wait(int(min(left, POLL_MS / 1000) * 1000))
        poller.block()


def monitoring(idl: ovs.db.idl.Idl) -> bool:
    return idl.state == idl.IDL_S_MONITORING


def open_idl(remote: str, schema_json: dict, tables: Optional[Iterable[str]] = None, leader_only: bool = True,
             timeout: float = TIMEOUT, idl_class=ovs.db.idl.Idl) -> ovs.db.idl.Idl:
    """An IDL replicating `tables` (default: all), with its first contents in."""
    helper = ovs.db.idl.SchemaHelper(None, schema_json)
    if tables is None:
        helper.register_all()
    else:
        for table in tables:
            helper.register_table(table)
    idl = idl_class(remote, helper, leader_only=leader_only)
    reconnect = getattr(getattr(idl, "_session", None), "reconnect", None)
    if reconnect is not None:
        reconnect.set_backoff(MIN_BACKOFF_MS, MAX_BACKOFF_MS)
    try:
        run_until(idl, lambda: monitoring(idl), timeout,
                  "the cluster leader" if leader_only and "," in remote else "the database contents")
    except StoreError:
        idl.close()
        raise
    return idl


# --- values: plain Python <-> OVSDB ------------------------------------------------------------

def is_list_column(column_type: ovs.db.types.Type) -> bool:
    """A map from position to value stands for an ordered list (see schema.py)."""
    return column_type.is_map() and column_type.key.type == ovs.db.types.IntegerType


def plain_value(column_type: ovs.db.types.Type, value):
    """The IDL's Python value of a column -> the row value rows.py uses."""
    if column_type.is_map():
        items = dict(value)
        return tuple(v for _, v in sorted(items.items())) if is_list_column(column_type) else items
    if column_type.is_optional():
        value = list(value) if isinstance(value, (list, tuple, set)) else [value]
        return value[0] if value else None
    if column_type.n_max != 1:
        return tuple(sorted(value))
    return value


def json_value(column_type: ovs.db.types.Type, value):
    """A row value -> OVSDB JSON for a raw operation (checked against the column's constraints)."""
    if is_list_column(column_type):
        value = dict(enumerate(value))
    elif column_type.is_optional():
        value = [] if value is None else [value]
    return ovs.db.data.Datum.from_python(column_type, value, lambda x: x).to_json()


def json_row(table: ovs.db.schema.TableSchema, row: Dict[str, object]) -> dict:
    return {name: json_value(table.columns[name].type, value) for name, value in row.items()}


# --- writes -------------------------------------------------------------------------------------

class StoreWriter:
    """A connection for writes: to the leader of a cluster. Each write is one transaction that
    also bumps Store.generation; `transact` returns the new generation once the write is
    committed (for a cluster: by a majority), and raises StoreError otherwise.

    `tables`: what its IDL replicates besides the Store row (membership.py follows the
    Controller_Instance rows through its writer)."""

    def __init__(self, remote: str, timeout: float = TIMEOUT, tables: Iterable[str] = ()):
        self.remote = remote
        self.timeout = timeout
        schema_json = fetch_schema(remote, timeout)
        self.tables = ovs.db.schema.DbSchema.from_json(schema_json).tables
        missing = [t for t in tables if t not in self.tables]
        if missing:
            raise StoreError(f"{remote}: schema version {schema_json.get('version')} has no table "
                             f"{', '.join(missing)} (convert the database to this vpcflow's schema)")
        self.idl = open_idl(remote, schema_json, [META_TABLE, *tables], leader_only=True, timeout=timeout)

    def close(self):
        self.idl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def transact(self, ops: Callable[[], List[dict]], source: Optional[str] = None, refused: str = "",
                 bump: bool = True, membership: bool = False, timeout: Optional[float] = None) -> int:
        """Commit the raw operations ops() makes (called again on each retry); the new generation.

        bump=False: the generation is left alone (and returned as it is): a member's beat, which
        is no change of anything a reader follows. membership=True: Store.membership is set to the
        new generation too (a join or a removal of a controller instance).

        A write whose outcome is unknown (the leader went away before answering) is retried: the
        callers' operations are idempotent (replace, set a column, delete-then-insert by key).
        If one of them fails (a "wait" that does not hold), nothing is written and StoreError
        says `refused`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            run_until(self.idl, lambda: monitoring(self.idl), max(left, 0.0), "the cluster leader")
            seqno = self.idl.change_seqno
            txn = Txn(self.idl)
            generation = self._bump_generation(txn, source, membership) if bump else self.generation()
            raw = ops()
            for op in raw:
                txn.add_op(op)
            status = self._commit(txn, deadline)
            if status == Txn.SUCCESS:
                return generation
            if status != Txn.TRY_AGAIN:
                raise StoreError(f"{self.remote}: write failed ({status}): {txn.get_error()}")
            failed = txn.failed_raw_op(len(raw))
            if failed is not None:  # our own "wait" did not hold: not worth retrying
                raise StoreConflict(f"{refused or 'write refused'} ({failed.get('error')})")
            # The leader changed or another writer came first: wait for fresh contents, retry.
            run_until(self.idl, lambda: self.idl.change_seqno != seqno and monitoring(self.idl),
                      max(deadline - time.monotonic(), 0.0), "the store to come back after a failed write")

    def generation(self) -> int:
        rows = list(self.idl.tables[META_TABLE].rows.values())
        return rows[0].generation if rows else 0

    def _bump_generation(self, txn: Txn, source: Optional[str], membership: bool = False) -> int:
        rows = list(self.idl.tables[META_TABLE].rows.values())
        if rows:
            meta = rows[0]
            meta.verify("generation")  # two writers at once: one of them retries
            generation = meta.generation + 1
        else:
            meta = txn.insert(self.idl.tables[META_TABLE])
            meta.format = FILE_FORMAT
            generation = 1
        meta.generation = generation
        if source is not None:
            meta.source = source
        if membership:
            meta.membership = [generation]
        return generation

    def _commit(self, txn: Txn, deadline: float) -> str:
        status = txn.commit()
        while status == Txn.INCOMPLETE:
            if time.monotonic() > deadline:
                txn.abort()
                raise StoreError(f"{self.remote}: no answer to a write within {self.timeout:.0f}s; "
                                 "it may or may not have been committed")
            self.idl.run()
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            txn.wait(poller)
            poller.timer_wait(POLL_MS)
            poller.block()
            status = txn.commit()
        return status

    # The writes vpcflow makes.

    def insert_op(self, table: str, row: Dict[str, object]) -> dict:
        return {"op": "insert", "table": table, "row": json_row(self.tables[table], row)}

    def replace_intent(self, table_rows: Dict[str, List[Dict[str, object]]], source: str = "") -> int:
        """Every intent table emptied and filled with these rows, in one transaction."""
        def ops():
            deletes = [{"op": "delete", "table": table, "where": []} for table in INTENT_TABLES]
            return deletes + [self.insert_op(table, row) for table, rows in table_rows.items() for row in rows]
        return self.transact(ops, source=source)

    def set_attachment(self, interface: str, instance: Optional[str]) -> int:
        """One interface record moves (instance None: detached): one column of one row."""
        where = [["name", "==", interface]]
        column = self.tables["Interface"].columns["attach_to"].type
        return self.transact(refused=f"no interface {interface!r} in the store", ops=lambda: [
            # No such interface: the wait fails and nothing is written.
            {"op": "wait", "table": "Interface", "where": where, "columns": ["name"], "until": "==",
             "rows": [{"name": interface}], "timeout": 0},
            {"op": "update", "table": "Interface", "where": where,
             "row": {"attach_to": json_value(column, instance)}}])

    def put_remap(self, remap: Dict[str, object]) -> int:
        """Insert or replace the Remap row with remap["id"] (delete-then-insert: idempotent)."""
        return self.transact(lambda: [{"op": "delete", "table": "Remap", "where": [["id", "==", remap["id"]]]},
                                      self.insert_op("Remap", remap)])

    def delete_remap(self, remap_id: str) -> int:
        return self.transact(lambda: [{"op": "delete", "table": "Remap", "where": [["id", "==", remap_id]]}])

    def runtime_change(self, attachments: Dict[str, tuple] = None, elastic_ips: Dict[str, tuple] = None,
                       remap: Optional[Dict[str, object]] = None) -> int:
        """A controller's runtime change in one transaction: interfaces moved
        ({interface: (instance seen, new instance)}, None: detached), elastic IPs given to another
        interface ({ip: (interface seen, new interface)}) and the remap it made. Each row must still
        hold what the controller saw (a "wait"): otherwise StoreConflict and nothing is written."""
        attachments, elastic_ips = attachments or {}, elastic_ips or {}
        attach_type = self.tables["Interface"].columns["attach_to"].type

        def ops():
            out = []
            for name, (seen, instance) in sorted(attachments.items()):
                where = [["name", "==", name]]
                out.append({"op": "wait", "table": "Interface", "where": where, "columns": ["attach_to"],
                            "until": "==", "rows": [{"attach_to": json_value(attach_type, seen)}], "timeout": 0})
                out.append({"op": "update", "table": "Interface", "where": where,
                            "row": {"attach_to": json_value(attach_type, instance)}})
            for ip, (seen, interface) in sorted(elastic_ips.items()):
                where = [["ip", "==", ip]]
                out.append({"op": "wait", "table": "Elastic_IP", "where": where, "columns": ["interface"],
                            "until": "==", "rows": [{"interface": seen}], "timeout": 0})
                out.append({"op": "update", "table": "Elastic_IP", "where": where, "row": {"interface": interface}})
            if remap is not None:
                out.append({"op": "delete", "table": "Remap", "where": [["id", "==", remap["id"]]]})
                out.append(self.insert_op("Remap", remap))
            return out
        return self.transact(ops, refused="the store changed meanwhile, nothing written; retry")

    # Membership of the controller instances (membership.py): a row each, by name.

    def join(self, name: str, api: str = "") -> int:
        """This instance's row, new (a row of the same name, a previous life's, is replaced):
        a membership change."""
        return self.transact(lambda: [
            {"op": "delete", "table": MEMBERSHIP_TABLE, "where": [["name", "==", name]]},
            self.insert_op(MEMBERSHIP_TABLE, {"name": name, "beat": 0, "api": api})], membership=True)

    def beat(self, name: str, beat: int, timeout: Optional[float] = None) -> None:
        """Set this instance's beat (no generation bump). StoreConflict if its row is gone: a peer
        judged it dead and removed it; it must join again."""
        where = [["name", "==", name]]
        self.transact(bump=False, timeout=timeout, refused=f"{name} is no longer a member", ops=lambda: [
            {"op": "wait", "table": MEMBERSHIP_TABLE, "where": where, "columns": ["name"], "until": "==",
             "rows": [{"name": name}], "timeout": 0},
            {"op": "update", "table": MEMBERSHIP_TABLE, "where": where, "row": {"beat": beat}}])

    def remove_member(self, name: str, beat_seen: int, timeout: Optional[float] = None) -> int:
        """Remove a member judged dead, if its beat is still the one judged (StoreConflict, nothing
        written, if it beat meanwhile or someone removed it first): a membership change."""
        where = [["name", "==", name]]
        return self.transact(membership=True, timeout=timeout, refused=f"{name} beat again or is gone", ops=lambda: [
            {"op": "wait", "table": MEMBERSHIP_TABLE, "where": where, "columns": ["beat"], "until": "==",
             "rows": [{"beat": beat_seen}], "timeout": 0},
            {"op": "delete", "table": MEMBERSHIP_TABLE, "where": where}])

    def leave(self, name: str, timeout: Optional[float] = None) -> int:
        """This instance's row removed (a clean stop): a membership change."""
        return self.transact(membership=True, timeout=timeout, ops=lambda: [
            {"op": "delete", "table": MEMBERSHIP_TABLE, "where": [["name", "==", name]]}])
