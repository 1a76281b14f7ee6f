"""`vpcflow-controller --config-file CONF` started as users start it, a real process; no OVS needed.

Every bad start is one clear message and exit status 1, never a traceback; a good start serves the
REST API with every switch of the file listed as not connected, and ends when told by its PID.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vpcflow.flows import pipeline
from vpcflow.harness.controller import ControllerProcess, free_port
from vpcflow.topology.loader import load_file

pytestmark = pytest.mark.foundation

DATA = Path(__file__).resolve().parents[1] / "data"
SPEC_EXAMPLE = DATA / "spec-example.yaml"
TWO_HOSTS = DATA / "two-hosts.yaml"
CONTROLLER = Path(sys.executable).parent / "vpcflow-controller"
TIMEOUT = 60


def run_controller(config):
    """Run the controller to its exit; a hang fails the test (subprocess.run kills the child)."""
    assert CONTROLLER.exists(), f"console script missing: {CONTROLLER}"
    try:
        return subprocess.run([str(CONTROLLER), "--config-file", str(config)], capture_output=True,
                              text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the controller did not exit within {TIMEOUT}s; it should have refused to start:\n"
                    f"{e.stderr}")


def config_for(tmp_path, topology_file, **ports):
    """Write the config as ControllerProcess does (127.0.0.1, free ports unless given); its path."""
    cp = ControllerProcess(str(tmp_path), str(topology_file), listen_host="127.0.0.1")
    for name, value in ports.items():
        setattr(cp, name, value)
    cp.write_config()
    return cp.config


def no_traceback(r):
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr


def refused(r):
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    no_traceback(r)


@pytest.fixture
def listening():
    """A socket listening on 127.0.0.1:PORT, held by the test: the port is busy."""
    sockets = []

    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sockets.append(s)
        s.bind(("127.0.0.1", 0))
        s.listen()
        return s.getsockname()[1]
    yield make
    for s in sockets:
        s.close()


# --- refusing to start ---------------------------------------------------------------------------

def test_missing_topology_file(tmp_path):
    missing = tmp_path / "absent.yaml"
    r = run_controller(config_for(tmp_path, missing))
    refused(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].count(str(missing)) == 1, lines[0]
    assert "cannot read" in lines[0] or "No such file" in lines[0], lines[0]


def test_topology_file_not_yaml(tmp_path):
    topology = tmp_path / "deployment.yaml"
    topology.write_text("switches: {host1: [unclosed\n")
    r = run_controller(config_for(tmp_path, topology))
    refused(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].count(str(topology)) == 1 and "YAML" in lines[0], lines[0]


def test_invalid_topology_file(tmp_path):
    data = yaml.safe_load(SPEC_EXAMPLE.read_text())
    data["interfaces"]["eni-web2"]["ips"] = ["10.0.0.999"]
    data["networks"]["red"]["id"] = 1 << 24
    data["instances"]["web1"]["switch"] = "host9"
    data["switches"]["host1"]["colour"] = "red"
    topology = tmp_path / "deployment.yaml"
    topology.write_text(yaml.safe_dump(data, sort_keys=False))

    r = run_controller(config_for(tmp_path, topology))
    refused(r)
    assert str(topology) in r.stderr
    lines = r.stderr.splitlines()
    for where in ("interfaces.eni-web2.ips[0]", "networks.red.id", "instances.web1.switch",
                  "switches.host1.colour"):
        assert sum(1 for line in lines if where in line) == 1, (where, r.stderr)


def test_topology_file_unset(tmp_path):
    config = tmp_path / "vpcflow.conf"
    config.write_text(f"[DEFAULT]\nofp_listen_host = 127.0.0.1\nofp_tcp_listen_port = {free_port()}\n\n"
                      f"[vpcflow]\napi_host = 127.0.0.1\napi_port = {free_port()}\napi_token = t\n")
    r = run_controller(config)
    refused(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "topology_file" in lines[0]


def test_missing_config_file(tmp_path):
    r = run_controller(tmp_path / "absent.conf")
    refused(r)
    assert "absent.conf" in r.stderr


def test_openflow_port_busy(tmp_path, listening):
    port = listening()
    r = run_controller(config_for(tmp_path, SPEC_EXAMPLE, ofp_port=port))
    refused(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "OpenFlow" in lines[0] and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


def test_api_port_busy(tmp_path, listening):
    port = listening()
    r = run_controller(config_for(tmp_path, SPEC_EXAMPLE, api_port=port))
    refused(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "API" in lines[0] and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


# --- a good start --------------------------------------------------------------------------------

@pytest.fixture
def controller(tmp_path):
    """A running controller on TWO_HOSTS, ended by its PID at teardown whatever happened."""
    cp = ControllerProcess(str(tmp_path), str(TWO_HOSTS), token="s3cret-token", listen_host="127.0.0.1")
    try:
        cp.start()  # waits (at most 20 s) for the REST API, or raises with the controller's output
        yield cp
    finally:
        proc = cp.proc
        cp.stop()
        if proc is not None:
            assert proc.poll() is not None, f"controller pid {proc.pid} still running"


def test_good_file_serves_every_switch_as_not_connected(controller):
    status, body = controller.api("GET", "/v1/switches")
    assert status == 200, body
    dep = load_file(TWO_HOSTS)
    expected = {}
    for sw in dep.switches.values():
        expected[(sw.name, pipeline.INTEGRATION)] = f"{sw.dpid:016x}"
        expected[(sw.name, pipeline.UNDERLAY)] = f"{sw.underlay_dpid:016x}"
    listed = {(s["switch"], s["bridge"]): s for s in body["switches"]}
    assert len(listed) == len(body["switches"]), "a bridge is listed twice"
    assert set(listed) == set(expected)
    assert {s["switch"] for s in body["switches"]} == set(dep.switches)
    for key, s in listed.items():
        assert s["dpid"] == expected[key], key
        assert s["connected"] is False, key
        assert s["in_sync"] is False, key


def test_api_requires_the_token(controller):
    status, body = controller.api("GET", "/v1/switches", token=None)
    assert status == 401, body
    assert "switches" not in body
    status, body = controller.api("GET", "/v1/switches", token="wrong-token")
    assert status == 401, body
    assert "switches" not in body
    status, body = controller.api("GET", "/v1/switches", token=controller.token + "x")
    assert status == 401, body
    # The right token still works: the 401s were about the token, not a broken API.
    assert controller.api("GET", "/v1/switches")[0] == 200


def test_stop_ends_the_process_by_its_pid(tmp_path):
    cp = ControllerProcess(str(tmp_path), str(TWO_HOSTS), listen_host="127.0.0.1")
    try:
        cp.start()
        proc = cp.proc
        pid = proc.pid
        assert proc.poll() is None
        cp.stop()
        assert proc.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: no such process any more
        with pytest.raises(OSError):
            cp.api("GET", "/v1/switches")  # nothing answers on the API port now
    finally:
        cp.stop()


def test_the_controllers_waits_end_at_their_timeout():
    """A request to a switch waits for the answer at most REPLY_TIMEOUT (app.py); a switch that
    never answers (its connection gone mid-request) fails that sync, and the next one runs.
    os-ken's hub.Event, under its default native threads, waited until set whatever the timeout:
    such a sync held its switch for good. framework.event's waits end at their timeout."""
    import threading
    import time

    from vpcflow.controller.framework import event

    never = event()
    late = threading.Timer(2.0, never.set)  # (so that a wait that ignores its timeout still ends)
    late.start()
    try:
        started = time.monotonic()
        assert never.wait(timeout=0.05) is False
        assert time.monotonic() - started < 1.0
    finally:
        late.cancel()
    answered = event()
    answered.set()
    assert answered.wait(timeout=0.05) is True
