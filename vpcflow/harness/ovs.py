"""A private Open vSwitch instance: its own ovsdb-server and ovs-vswitchd, files in one folder.

Used by the lab (one per simulated switch, inside that switch's namespace) and by OVS-level
tests (in the root namespace, usually with the dummy datapath so no kernel device is made).
`run` executes a shell command where the instance lives and returns (exit status, output).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable, List, Tuple

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
POLL = 0.05


class OvsError(RuntimeError):
    pass


class Managed:
    """What a test or a bench starts: `with X() as x` starts it, and stops whatever it got to
    start when starting fails half way, or when the block ends however it ends."""

    def start(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()


def local_run(cmd: str) -> Tuple[int, str]:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill(pid: int, timeout: float = 5.0, grace: float = 0.0):
    """End one process we started: wait `grace` for it to go by itself, then TERM, then KILL."""
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        if not alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL)


class OvsInstance:
    def __init__(self, directory: str, run: Callable[[str], Tuple[int, str]] = local_run,
                 vswitchd_args: str = ""):
        self.dir = directory
        self.run = run
        self.vswitchd_args = vswitchd_args  # e.g. "--enable-dummy=override"
        self.db = f"unix:{directory}/db.sock"
        self.pids: List[int] = []
        os.makedirs(directory, exist_ok=True)

    @property
    def env(self) -> str:
        d = self.dir
        return f"OVS_RUNDIR={d} OVS_DBDIR={d} OVS_LOGDIR={d} OVS_SYSCONFDIR={d}"

    def sh(self, cmd: str, check: bool = True) -> str:
        rc, out = self.run(f"{self.env} {cmd}")
        if check and rc != 0:
            raise OvsError(f"`{cmd}` failed ({rc}): {out.strip()}")
        return out

    def start(self):
        d = self.dir
        self.sh(f"ovsdb-tool create {d}/conf.db {OVS_SCHEMA}")
        self.sh(f"ovsdb-server {d}/conf.db --remote=punix:{d}/db.sock --pidfile={d}/ovsdb-server.pid "
                f"--unixctl={d}/ovsdb-server.ctl --log-file={d}/ovsdb-server.log --detach --no-chdir")
        self.pids.append(self._pid("ovsdb-server"))
        self.sh(f"ovs-vsctl --db={self.db} --no-wait init")
        self.start_vswitchd()

    def start_vswitchd(self):
        d = self.dir
        self.sh(f"ovs-vswitchd {self.db} --pidfile={d}/ovs-vswitchd.pid --unixctl={d}/ovs-vswitchd.ctl "
                f"--log-file={d}/ovs-vswitchd.log --detach --no-chdir {self.vswitchd_args}")
        self.pids.append(self._pid("ovs-vswitchd"))

    def _pid(self, daemon: str) -> int:
        with open(os.path.join(self.dir, f"{daemon}.pid")) as f:
            return int(f.read().strip())

    def _exit(self, daemon: str):
        # Asking through the instance's own control socket is instant; SIGTERM takes about 2 s.
        subprocess.run(["ovs-appctl", "-t", f"{self.dir}/{daemon}.ctl", "exit"], capture_output=True, timeout=10)

    def stop(self):
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            self._exit(daemon)
        for pid in reversed(self.pids):
            kill(pid, grace=1.0)
        self.pids = []

    def restart_vswitchd(self):
        """ovs-vswitchd stops and starts again: bridges stay in OVSDB, flows are gone."""
        pid = self._pid("ovs-vswitchd")
        self._exit("ovs-vswitchd")
        kill(pid, grace=1.0)
        self.pids.remove(pid)
        self.start_vswitchd()

    def vsctl(self, *args: str) -> str:
        cmd = ["ovs-vsctl", f"--db={self.db}", *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def ofctl(self, command: str, bridge: str, *args: str) -> str:
        """ovs-ofctl against one bridge, through its management socket (works from any namespace)."""
        cmd = ["ovs-ofctl", "-O", "OpenFlow13", command, f"unix:{self.dir}/{bridge}.mgmt", *args]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise OvsError(f"ovs-ofctl {command} {bridge}: {r.stderr.strip()}")
        return r.stdout

    def appctl(self, *args: str) -> str:
        cmd = ["ovs-appctl", "-t", f"{self.dir}/ovs-vswitchd.ctl", *args]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise OvsError(f"ovs-appctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def flows(self, bridge: str, *filters: str) -> List[str]:
        """dump-flows lines (with counters), optionally filtered, e.g. "cookie=0x.../0x..."."""
        return [ln.strip() for ln in self.ofctl("dump-flows", bridge, *filters).splitlines() if "cookie=" in ln]

    def wait_bridge_mgmt(self, bridge: str, timeout: float = 10.0):
        path = os.path.join(self.dir, f"{bridge}.mgmt")
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise OvsError(f"bridge {bridge} did not come up")
            time.sleep(POLL)


def packet_count(flow_line: str) -> int:
    for part in flow_line.split(", "):
        if part.startswith("n_packets="):
            return int(part.split("=")[1])
    raise ValueError(f"no n_packets in {flow_line!r}")



