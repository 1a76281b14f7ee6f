"""The controller in store mode: its intent from a store, not from a deployment file.

A real `vpcflow-controller` (no topology_file, `store = unix:...`) and a real ovs-vswitchd bridge:
the bridge gets the flows the file gives, a move written to the store reaches it without a
restart, and a runtime API call lands in the store first.
Run with OVS: `flock /tmp/vpcflow-lab.lock .venv/bin/python -m pytest tests/scaleout/test_controller_store.py`.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import threading

import pytest
import yaml

from tests.conftest import data_file
from vpcflow.harness.controller import ControllerProcess, bin_path, wait_for
from vpcflow.store import StoreReader, StoreWriter, import_deployment, read_deployment

pytestmark = pytest.mark.scaleout

TOPOLOGY = data_file("two-hosts.yaml")
HOST1 = [("host1", "integration"), ("host1", "underlay")]


def expected_flows(path: str, switch: str = "host1") -> str:
    return subprocess.run([bin_path("vpcflow"), "flows", path, "--switch", switch], check=True,
                          capture_output=True, text=True).stdout


def port_numbers(ovs) -> dict:
    out = ovs.vsctl("--format=csv", "--no-headings", "--columns=name,ofport", "list", "Interface")
    return dict(line.replace('"', "").split(",") for line in out.splitlines() if line)


def differs(ovs, bridge: str, flows_text: str, tmp_path) -> str:
    """What `ovs-ofctl diff-flows` finds between the bridge and the flows (empty: the same).
    diff-flows does not resolve port names in a file: they are replaced by the bridge's numbers."""
    ports = port_numbers(ovs)
    flows_text = re.sub(r"(in_port=|output:)([A-Za-z][\w.-]*)",
                        lambda m: m.group(1) + ports.get(m.group(2), m.group(2)), flows_text)
    path = tmp_path / "expected.flows"
    path.write_text(flows_text)
    r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "diff-flows", f"unix:{ovs.dir}/{bridge}.mgmt", str(path)],
                       capture_output=True, text=True)
    assert r.returncode in (0, 2), r.stderr
    return r.stdout


def moved_file(tmp_path, interface: str, instance: str) -> str:
    with open(TOPOLOGY) as f:
        data = yaml.safe_load(f)
    data["interfaces"][interface]["attach_to"] = instance
    path = tmp_path / "moved.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture
def store_controller(store_server, tmp_path):
    import_deployment(store_server.remote, TOPOLOGY)
    workdir = tmp_path / "controller"
    workdir.mkdir()
    # No deployment file at all: the store is the intent.
    ctl = ControllerProcess(str(workdir), "", listen_host="127.0.0.1", extra=f"store = {store_server.remote}")
    ctl.start()
    yield ctl
    ctl.stop()



@contextlib.contextmanager
def following(source, ctl):
    """What the app's follow_store does, in a thread of the test: store updates reach ctl."""
    stop = threading.Event()

    def follow():
        while not stop.is_set():
            update = source.reader.wait(0.2)
            if update is not None:
                ctl.store_update(update)
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        yield
    finally:
        stop.set()
        follower.join(5)

def test_the_controller_follows_the_store(private_ovs, store_server, store_controller, tmp_path):
    ctl = store_controller
    subprocess.run([bin_path("vpcflow"), "bridge", TOPOLOGY, "--switch", "host1", "--db", private_ovs.db,
                    "--datapath-type", "dummy", "--controller", ctl.ofp_target], check=True, capture_output=True)
    private_ovs.wait_bridge_mgmt("br-int")
    ctl.wait_synced(bridges=HOST1)
    assert differs(private_ovs, "br-int", expected_flows(TOPOLOGY), tmp_path) == ""
    generation = ctl.api("GET", "/v1/switches")[1]["generation"]

    # A move written to the store (by anyone) reaches the bridge, no restart.
    moved = expected_flows(moved_file(tmp_path, "eni-web2", "spare1"))
    assert "in_port=spare1" in moved and differs(private_ovs, "br-int", moved, tmp_path) != ""
    with StoreWriter(store_server.remote) as writer:
        writer.set_attachment("eni-web2", "spare1")
    wait_for(lambda: differs(private_ovs, "br-int", moved, tmp_path) == "", 10, "the move to reach br-int")
    status, body = ctl.api("GET", "/v1/interfaces")
    assert body["interfaces"]["eni-web2"]["attach_to"] == "spare1"
    assert ctl.api("GET", "/v1/switches")[1]["generation"] > generation

    # A runtime API call is written to the store, and in force when the call returns.
    with StoreReader(store_server.remote) as reader:
        before = reader.read().generation
        status, body = ctl.api("POST", "/v1/interfaces/eni-web2/attach", {"instance": "web2", "requester": "acme"})
        assert status == 200, body
        assert body["remap"]["from"] == "spare1" and body["remap"]["to"] == "web2"
        update = reader.wait_for(lambda u: u.generation > before, 5, "the API's write")
        assert update.deployment.interfaces["eni-web2"].attach_to == "web2"
        assert set(update.remaps) == {body["remap"]["id"]}
    assert ctl.api("GET", "/v1/interfaces")[1]["interfaces"]["eni-web2"]["attach_to"] == "web2"
    assert read_deployment(store_server.remote).interfaces["eni-web2"].attach_to == "web2"
    ctl.wait_synced(bridges=HOST1)
    wait_for(lambda: differs(private_ovs, "br-int", expected_flows(TOPOLOGY), tmp_path) == "", 10,
             "br-int back to the file's flows")

    # Refused calls write nothing; reload has no file to read.
    status, body = ctl.api("POST", "/v1/interfaces/eni-web2/attach", {"instance": "web2", "requester": "globex"})
    assert status == 403, body
    assert ctl.api("POST", "/v1/reload")[0] == 400
    assert read_deployment(store_server.remote).interfaces["eni-web2"].attach_to == "web2"


def test_a_store_without_a_deployment_is_one_line_and_exit_1(store_server, tmp_path):
    ctl = ControllerProcess(str(tmp_path), "", listen_host="127.0.0.1", extra=f"store = {store_server.remote}")
    ctl.write_config()
    r = subprocess.run([bin_path("vpcflow-controller"), "--config-file", ctl.config], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "holds no deployment" in r.stderr and "Traceback" not in r.stderr, r.stderr
    ctl = ControllerProcess(str(tmp_path), "", listen_host="127.0.0.1", extra=f"store = unix:{tmp_path}/none.sock")
    ctl.write_config()
    r = subprocess.run([bin_path("vpcflow-controller"), "--config-file", ctl.config], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "does not answer" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# --- the store glue without a switch -------------------------------------------------------------

def test_remaps_round_trip_through_rows():
    from vpcflow.controller.records import Remap
    from vpcflow.controller.store_source import remap_from_row, remap_row

    remap = Remap("r1-1", "eni-web2", ["10.0.0.12"], "blue", "web2", "host2", "web2", "spare1", True,
                  connections=3, created=12.5)
    assert remap_from_row(remap_row(remap)) == remap


def test_a_change_is_in_force_once_the_reader_saw_it_and_a_stale_one_is_refused(store_server):

    from vpcflow.controller import records
    from vpcflow.controller.state import Controller
    from vpcflow.controller.store_source import StoreSource

    import_deployment(store_server.remote, TOPOLOGY)
    source = StoreSource(store_server.remote)
    ctl = Controller(source.first.deployment, store=source)
    try:
        attach = {"instance": "spare1", "requester": "acme"}
        # Moved behind this instance's back, and its reader not run yet: its view is stale.
        with StoreWriter(store_server.remote) as writer:
            writer.set_attachment("eni-web2", "red2")
        with pytest.raises(records.RecordError) as refused:
            ctl.change(lambda dep: records.attach(dep, "eni-web2", attach, "r1"))
        assert refused.value.status == 409
        assert read_deployment(store_server.remote).interfaces["eni-web2"].attach_to == "red2"

        with following(source, ctl):
            wait_for(lambda: ctl.deployment.interfaces["eni-web2"].attach_to == "red2", 5, "the reader to catch up")
            generation, remap = ctl.change(lambda dep: records.attach(dep, "eni-web2", attach, "r2"))
            # Returned only once in force here: the deployment, the remap and the store agree.
            assert ctl.deployment.interfaces["eni-web2"].attach_to == "spare1"
            assert remap.id == "r2" and set(ctl.remaps) == {"r2"} and ctl.remaps["r2"].new_instance == "spare1"
            assert read_deployment(store_server.remote).interfaces["eni-web2"].attach_to == "spare1"
    finally:
        source.close()


def test_an_elastic_ip_remap_goes_through_the_store(store_server):
    from vpcflow.controller import records
    from vpcflow.controller.state import Controller
    from vpcflow.controller.store_source import StoreSource

    topology = str(data_file("../../etc/topology.yaml"))
    import_deployment(store_server.remote, topology)
    source = StoreSource(store_server.remote)
    ctl = Controller(source.first.deployment, store=source)
    try:
        eip = "198.51.100.20"
        with following(source, ctl):
            _, remap = ctl.change(lambda dep: records.remap_elastic_ip(
                dep, eip, {"interface": "eni-web1", "follow_connections": True}, "r1"))
        assert [e.interface for e in ctl.deployment.elastic_ips if str(e.ip) == eip] == ["eni-web1"]
        # the remap row keeps what the edge follows: a restarted (or another) controller counts it
        stored = StoreSource(store_server.remote)
        try:
            from vpcflow.controller.store_source import remaps_from_update
            again = remaps_from_update(stored.first)["r1"]
            assert (again.elastic_ip, again.old_interface, again.holder, again.state) == (
                eip, "eni-web2", "eni-web2", "draining")
        finally:
            stored.close()
        assert ctl.remaps["r1"].holder == "eni-web2" and remap.id == "r1"
    finally:
        source.close()
