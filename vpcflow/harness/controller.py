"""The controller as users run it: `vpcflow-controller --config-file FILE`, a real process.

Used by the lab and by the OVS-level tests; it writes the config, starts the process, talks to
its REST API and ends it by its PID.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Optional

POLL = 0.05


class ControllerError(RuntimeError):
    pass


def wait_for(predicate, timeout: float, what: str, interval: float = POLL):
    """Poll until predicate() is truthy; return its value, or raise naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ControllerError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bin_path(name: str) -> str:
    """A console script of this package, next to the running interpreter (the venv)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else name


class ControllerProcess:
    def __init__(self, workdir: str, topology_file: str, token: str = "test-token",
                 listen_host: str = "0.0.0.0", extra: str = ""):
        self.workdir = workdir
        self.topology_file = topology_file
        self.token = token
        self.listen_host = listen_host
        self.extra = extra  # more lines for the [vpcflow] section
        self.ofp_port = free_port()
        self.api_port = free_port()
        self.metrics_port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.config = os.path.join(workdir, "vpcflow.conf")
        self.log = os.path.join(workdir, "controller.log")

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(f"""[DEFAULT]
ofp_listen_host = {self.listen_host}
ofp_tcp_listen_port = {self.ofp_port}

[vpcflow]
topology_file = {self.topology_file}
state_file = {self.workdir}/state.json
api_host = 127.0.0.1
api_port = {self.api_port}
api_token = {self.token}
metrics_port = {self.metrics_port}
arp_probe_interval = 2
{self.extra}
""")

    def start(self, wait: bool = True):
        self.write_config()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([bin_path("vpcflow-controller"), "--config-file", self.config],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_api()

    def wait_api(self, timeout: float = 20.0):
        wait_for(self._api_up, timeout, "the controller's REST API")

    def _api_up(self):
        if self.proc.poll() is not None:
            raise ControllerError(f"controller exited with {self.proc.returncode}:\n{self.output()}")
        try:
            self.api("GET", "/v1/switches")
            return True
        except OSError:
            return False

    def output(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()[-6000:]
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def ofp_target(self) -> str:
        return f"tcp:127.0.0.1:{self.ofp_port}"

    def api(self, method: str, path: str, body=None, token: Optional[str] = "default", raw: Optional[bytes] = None,
            timeout: float = 5.0):
        """Call the REST API: (status, decoded JSON, or text for non-JSON answers)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method)
        tok = self.token if token == "default" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, _decode(resp)
        except urllib.error.HTTPError as e:
            return e.code, _decode(e)

    def switches(self):
        return {(s["switch"], s["bridge"]): s for s in self.api("GET", "/v1/switches")[1]["switches"]}

    def wait_synced(self, timeout: float = 30.0, bridges=None):
        """Until the bridges (default: every bridge in the file) run the model in force."""
        def synced():
            status = self.switches()
            wanted = [status[b] for b in bridges] if bridges else list(status.values())
            return wanted and all(s["in_sync"] for s in wanted)
        try:
            wait_for(synced, timeout, "bridges in sync")
        except ControllerError:
            raise ControllerError(f"not in sync: {json.dumps(list(self.switches().values()), indent=1, default=str)}\n"
                                  f"{self.output()}") from None


def _decode(resp):
    raw = resp.read() or b""
    if resp.headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(raw or b"{}")
    return raw.decode()
