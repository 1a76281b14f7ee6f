"""Interface records at runtime (issue 6, item 1): attach, detach and move through the REST API,
with real traffic; refusals change nothing; the state survives a controller restart."""
import pytest

from tests.conftest import data_file, require_system
from vpcflow.harness.controller import wait_for

pytestmark = pytest.mark.follow


@pytest.fixture(scope="module")
def lab():
    require_system()
    from vpcflow.harness.lab import Lab

    with Lab(data_file("two-hosts.yaml"), tag="vfr") as lab:
        lab.server(lab.host("web2"), 7000, name="web2")
        lab.server(lab.host("spare1"), 7000, name="spare1")
        yield lab


def post(lab, path, body):
    return lab.api("POST", path, body)


@pytest.mark.parametrize("path, body, status, words", [
    ("/v1/interfaces/eni-web2/detach", {"requester": "globex"}, 403, "attachers"),
    ("/v1/interfaces/eni-nope/detach", {"requester": "acme"}, 404, "eni-nope"),
    ("/v1/interfaces/eni-web2/attach", {"instance": "vm-nope", "requester": "acme"}, 404, "vm-nope"),
    ("/v1/interfaces/eni-web3/attach", {"instance": "web1", "requester": "acme"}, 409, "already has eni-web1"),
    ("/v1/interfaces/eni-web2/attach", {"instance": 7, "requester": "acme"}, 400, "instance"),
    ("/v1/interfaces/eni-web2/attach", {"instance": "spare1", "requester": "acme", "colour": 1}, 400, "colour"),
])
def test_refused_changes_change_nothing(lab, path, body, status, words):
    generation = lab.api("GET", "/v1/switches")[1]["generation"]
    got, answer = post(lab, path, body)
    assert got == status and words in answer["error"]
    assert lab.api("GET", "/v1/switches")[1]["generation"] == generation
    assert lab.client(lab.host("web1"), "10.0.0.12", 7000) == "ok web2"


def test_detach_stops_delivery_at_once(lab):
    status, body = post(lab, "/v1/interfaces/eni-web2/detach", {"requester": "acme"})
    assert status == 200, body
    lab.wait_synced()
    assert lab.client(lab.host("web1"), "10.0.0.12", 7000, timeout=1).startswith("fail")
    assert not any("nw_dst=10.0.0.12" in line and "reg0=0x64" in line for line in lab.switches["host2"].flows())


def test_attach_elsewhere_and_keep_it_across_a_restart(lab):
    status, body = post(lab, "/v1/interfaces/eni-web2/attach", {"instance": "spare1", "requester": "acme"})
    assert status == 200, body
    lab.wait_synced()
    lab.configure_guest("spare1", lab.dep.interfaces["eni-web2"])  # the guest brings its address up
    assert lab.client(lab.host("web1"), "10.0.0.12", 7000) == "ok spare1"
    # the move cut the address's connections: until their records are gone, it records under
    # its holder (flows/follow.py Cut), and then with its network's quiet flows again
    wait_for(lambda: not [line for line in lab.switches["host1"].flows()
                          if " table=39," in line and "nw_dst=10.0.0.12" in line], 15, "the cut to end")
    lab.wait_synced()
    lab.stop_controller()
    lab.start_controller()
    lab.wait_synced()
    assert lab.api("GET", "/v1/interfaces")[1]["interfaces"]["eni-web2"]["attach_to"] == "spare1"
    for s in lab.api("GET", "/v1/switches")[1]["switches"]:
        assert (s["last_added"], s["last_deleted"]) == (0, 0), s  # came back as it was
    assert lab.client(lab.host("web1"), "10.0.0.12", 7000) == "ok spare1"


def test_following_needs_another_switch(lab):
    # eni-web2 is on spare1 (host1) now; red1 is on host1 too
    status, body = post(lab, "/v1/interfaces/eni-web2/attach",
                        {"instance": "red1", "requester": "acme", "follow_connections": True})
    assert status == 409 and "another switch" in body["error"]
