"""The store as a three-member Raft cluster (ovsdb-tool create-cluster / join-cluster): a member
dies (SIGKILL), writes go on through the other two, and every acknowledged write is still there."""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest

from tests.scaleout.conftest import require_ovsdb
from vpcflow.harness.cluster import StoreCluster
from vpcflow.harness.controller import wait_for
from vpcflow.harness.ovs import alive
from vpcflow.store import StoreReader, StoreWriter, import_deployment
from vpcflow.store.reader import UPDATE, Change
from vpcflow.topology.loader import load_file
from vpcflow.topology.model import frozen_map

pytestmark = pytest.mark.scaleout

TOPOLOGY = Path(__file__).resolve().parents[2] / "etc" / "topology.yaml"
WRITES_BEFORE, WRITES_AFTER = 20, 20
WRITE_TIMEOUT = 20.0  # a write may wait for a new leader: election and reconnection take seconds
READ_TIMEOUT = 10.0


def remap(i: int) -> dict:
    return {"id": f"vfs9-w{i}", "interface": "eni-web2", "ips": ("10.0.0.12",), "network": "blue",
            "old_instance": "web2", "old_switch": "host2", "old_port": "web2", "new_instance": "spare1",
            "follow": True, "state": "draining", "connections": i, "created": float(i)}


def test_the_cluster_starts_with_one_leader_and_stops_without_a_trace():
    require_ovsdb()
    with StoreCluster() as cluster:
        roles = sorted(cluster.status(i)["Role"] for i in range(3))
        assert roles == ["follower", "follower", "leader"]
        pids, directory = [m.pid for m in cluster.members], cluster.dir
        assert all(alive(pid) for pid in pids)
    assert not any(alive(pid) for pid in pids)
    assert not os.path.exists(directory)


class Writer(threading.Thread):
    """Writes Remap rows one after another, as fast as the cluster takes them, and notes when
    each was acknowledged; a kill lands at any point of a write."""

    def __init__(self, remote: str):
        super().__init__(daemon=True)
        self.remote = remote
        self.acknowledged = []  # (id, time acknowledged)
        self.error = None
        self.halt = threading.Event()

    def run(self):
        try:
            with StoreWriter(self.remote, timeout=WRITE_TIMEOUT) as writer:
                i = 0
                while not self.halt.is_set():
                    writer.put_remap(remap(i))
                    self.acknowledged.append((f"vfs9-w{i}", time.monotonic()))
                    i += 1
        except Exception as e:  # reported by the test, not lost in the thread
            self.error = e

    def acknowledged_after(self, moment: float) -> int:
        return sum(1 for _, at in self.acknowledged if at > moment)


@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_writes_continue_when_a_member_dies_and_nothing_acknowledged_is_lost(store_cluster, victim):
    dep = import_deployment(store_cluster.remote, str(TOPOLOGY))
    writer = Writer(store_cluster.remote)
    writer.start()
    try:
        wait_for(lambda: writer.error or len(writer.acknowledged) >= WRITES_BEFORE, READ_TIMEOUT, "the first writes")
        leader = store_cluster.leader()
        index = leader if victim == "leader" else store_cluster.followers()[0]
        store_cluster.kill(index)
        killed_at = time.monotonic()
        wait_for(lambda: writer.error or writer.acknowledged_after(killed_at) >= WRITES_AFTER, WRITE_TIMEOUT,
                 f"{WRITES_AFTER} writes acknowledged after the kill")
    finally:
        writer.halt.set()
        writer.join(WRITE_TIMEOUT + 5)
    assert writer.error is None, f"a write failed: {writer.error}"
    assert not writer.is_alive()
    assert not store_cluster.members[index].running()
    new_leader = store_cluster.wait_leader(exclude=index)
    assert (new_leader != leader) == (victim == "leader")
    acknowledged = {name: n for n, (name, _) in enumerate(writer.acknowledged)}
    with StoreWriter(store_cluster.remote, timeout=WRITE_TIMEOUT) as moves:
        moves.set_attachment("eni-web2", "spare1")
    survivors = [i for i in range(3) if i != index]
    for i in survivors:
        # Each survivor on its own (leader or follower): every acknowledged write, and the import.
        with StoreReader(store_cluster.remote_of(i), leader_only=False, timeout=READ_TIMEOUT) as reader:
            update = reader.wait_for(lambda u: set(acknowledged) <= set(u.remaps)
                                     and u.deployment is not None
                                     and u.deployment.interfaces["eni-web2"].attach_to == "spare1",
                                     READ_TIMEOUT, f"every acknowledged write on member {i}")
        # A write cut off by the kill may be there without its acknowledgement: at most one.
        unacknowledged = set(update.remaps) - set(acknowledged)
        assert len(unacknowledged) <= 1, unacknowledged
        assert all(update.remaps[name]["connections"] == n for name, n in acknowledged.items())
        moved = dict(dep.interfaces, **{"eni-web2": dataclasses.replace(dep.interfaces["eni-web2"],
                                                                        attach_to="spare1")})
        assert update.deployment == dataclasses.replace(dep, interfaces=frozen_map(moved))


def test_the_deployment_is_the_same_on_every_member(store_cluster):
    dep = import_deployment(store_cluster.remote, str(TOPOLOGY))
    assert dep == load_file(TOPOLOGY)
    for i in range(3):
        with StoreReader(store_cluster.remote_of(i), leader_only=False, timeout=READ_TIMEOUT) as reader:
            reader.wait_for(lambda u: u.deployment == dep, READ_TIMEOUT, f"the import on member {i}")


def test_a_reader_follows_the_cluster_when_its_member_dies(store_cluster):
    import_deployment(store_cluster.remote, str(TOPOLOGY))
    with StoreReader(store_cluster.remote, leader_only=False, timeout=READ_TIMEOUT) as reader:
        reader.read()
        connected_to = reader.idl.session_name()
        index = store_cluster.remotes.index(connected_to)
        store_cluster.kill(index)
        with StoreWriter(store_cluster.remote, timeout=WRITE_TIMEOUT) as writer:
            writer.set_attachment("eni-web2", "spare1")
        # Everything the reader reports until it shows the move: the move alone, though it had
        # to reconnect to another member and may have reloaded the whole database.
        changes = []
        deadline = time.monotonic() + WRITE_TIMEOUT
        while True:
            update = reader.wait(max(deadline - time.monotonic(), 0.0))
            assert update is not None, "the reader never showed the move"
            changes += update.changes
            if update.deployment.interfaces["eni-web2"].attach_to == "spare1":
                break
        assert changes == [Change("Interface", "eni-web2", UPDATE, ("attach_to",))]
        assert reader.idl.session_name() != connected_to
