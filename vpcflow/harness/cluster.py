"""Private vpcflow stores for tests: one standalone ovsdb-server, or a three-member Raft cluster.

Everything lives in one temporary folder (databases, pid files, control sockets, logs); members
listen on 127.0.0.1 ports chosen free at start. Processes are ended by the PIDs they wrote, and
the folder is removed, by `stop()`; both classes are context managers, so a failing test cleans
up too.

    with StoreCluster() as cluster:          # create-cluster, join-cluster x2, a leader elected
        cluster.remote                       # "tcp:127.0.0.1:P1,tcp:127.0.0.1:P2,tcp:127.0.0.1:P3"
        cluster.kill(cluster.leader())       # SIGKILL one member
        cluster.wait_leader()                # the other two elect one
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from typing import List, Optional

from vpcflow.harness.controller import free_port, wait_for
from vpcflow.harness.ovs import Managed, alive, kill
from vpcflow.store.schema import DB_NAME, default_schema_path

START_TIMEOUT = 20.0


class StoreHarnessError(RuntimeError):
    pass


def _run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise StoreHarnessError(f"`{' '.join(cmd)}` failed ({r.returncode}): {(r.stdout + r.stderr).strip()}")
    return r.stdout


def distinct_free_ports(count: int) -> List[int]:
    """Ports free now and different from each other (free_port alone may hand one out twice)."""
    ports: List[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class _Server:
    """One ovsdb-server process serving one database file."""

    def __init__(self, directory: str, name: str, db_file: str, remote_arg: str):
        self.dir = directory
        self.name = name
        self.db_file = db_file
        self.remote_arg = remote_arg  # ptcp:PORT:127.0.0.1 or punix:PATH
        self.ctl = os.path.join(directory, f"{name}.ctl")
        self.pid: Optional[int] = None

    def start(self):
        pidfile = os.path.join(self.dir, f"{self.name}.pid")
        _run("ovsdb-server", self.db_file, f"--remote={self.remote_arg}", f"--pidfile={pidfile}",
             f"--unixctl={self.ctl}", f"--log-file={os.path.join(self.dir, self.name + '.log')}",
             "--detach", "--no-chdir")
        with open(pidfile) as f:
            self.pid = int(f.read().strip())

    def running(self) -> bool:
        return self.pid is not None and alive(self.pid)

    def kill(self):
        """SIGKILL: a crash, no goodbye to the cluster."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            wait_for(lambda: not alive(self.pid), 5.0, f"{self.name} (pid {self.pid}) to die")

    def stop(self):
        if self.pid is not None:
            kill(self.pid, timeout=3.0)

    def appctl(self, *args: str) -> str:
        return _run("ovs-appctl", "-t", self.ctl, *args)


class StoreServer(Managed):
    """A standalone (not clustered) store on a unix socket."""

    def __init__(self, schema: str = "", prefix: str = "vfs9-store-"):
        self.schema = schema or default_schema_path()
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.socket = os.path.join(self.dir, "db.sock")
        self.remote = f"unix:{self.socket}"
        db_file = os.path.join(self.dir, "store.db")
        self.server = _Server(self.dir, "ovsdb-server", db_file, f"punix:{self.socket}")

    def start(self):
        _run("ovsdb-tool", "create", self.server.db_file, self.schema)
        self.server.start()
        wait_for(lambda: os.path.exists(self.socket), START_TIMEOUT, "the store's socket")

    def stop(self):
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class StoreCluster(Managed):
    """Three ovsdb-server processes holding one clustered vpcflow database."""

    def __init__(self, size: int = 3, schema: str = "", prefix: str = "vfs9-cluster-"):
        self.schema = schema or default_schema_path()
        self.dir = tempfile.mkdtemp(prefix=prefix)
        ports = distinct_free_ports(2 * size)
        self.raft_ports, self.client_ports = ports[:size], ports[size:]
        self.members: List[_Server] = [
            _Server(self.dir, f"s{i + 1}", os.path.join(self.dir, f"s{i + 1}.db"),
                    f"ptcp:{port}:127.0.0.1")
            for i, port in enumerate(self.client_ports)]

    @property
    def remotes(self) -> List[str]:
        return [f"tcp:127.0.0.1:{port}" for port in self.client_ports]

    @property
    def remote(self) -> str:
        return ",".join(self.remotes)

    def remote_of(self, index: int) -> str:
        return self.remotes[index]

    def start(self):
        first_raft = f"tcp:127.0.0.1:{self.raft_ports[0]}"
        _run("ovsdb-tool", "create-cluster", self.members[0].db_file, self.schema, first_raft)
        for member, port in zip(self.members[1:], self.raft_ports[1:]):
            _run("ovsdb-tool", "join-cluster", member.db_file, DB_NAME, f"tcp:127.0.0.1:{port}", first_raft)
        for member in self.members:
            member.start()
        self.wait_leader()
        wait_for(lambda: all(self.joined(i) for i in range(len(self.members))), START_TIMEOUT,
                 "every member to join the cluster")

    def status(self, index: int) -> dict:
        """cluster/status of one member: {"Role": "leader", "Status": "cluster member", ...}."""
        text = self.members[index].appctl("cluster/status", DB_NAME)
        return dict(m.groups() for m in re.finditer(r"^(\w[\w ]*): (.*)$", text, re.M))

    def joined(self, index: int) -> bool:
        return self.members[index].running() and self.status(index).get("Status") == "cluster member"

    def leader(self) -> Optional[int]:
        """The index of the member that says it is the leader, if one does."""
        for index, member in enumerate(self.members):
            if member.running():
                try:
                    if self.status(index).get("Role") == "leader":
                        return index
                except StoreHarnessError:
                    continue  # not answering (yet): not the leader we can name
        return None

    def wait_leader(self, timeout: float = START_TIMEOUT, exclude: Optional[int] = None) -> int:
        """Poll until a running member other than `exclude` is the leader; its index."""
        def elected():
            index = self.leader()
            return index is not None and index != exclude and index + 1  # index 0 must be truthy
        return wait_for(elected, timeout, "a cluster leader") - 1

    def followers(self) -> List[int]:
        leader = self.leader()
        return [i for i, m in enumerate(self.members) if m.running() and i != leader]

    def kill(self, index: int):
        self.members[index].kill()

    def stop(self):
        for member in self.members:
            member.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

