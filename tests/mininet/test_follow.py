"""Connection following (issue 6) with real TCP: an interface record moves from web2 (host2) to
spare1 (host1) with its address; web1's open connection keeps reaching web2, byte for byte,
while new connections reach spare1; the remap completes when that connection ends."""
import os

import pytest

from tests.conftest import data_file, require_system
from vpcflow.harness.controller import wait_for

pytestmark = pytest.mark.follow


@pytest.fixture(scope="module")
def lab():
    require_system()
    from vpcflow.harness.lab import Lab

    with Lab(data_file("two-hosts.yaml"), tag="vff") as lab:
        for name in ("web2", "spare1"):
            lab.server(lab.host(name), 7100, name=name)
        yield lab


def stream(lab, name, timeout="3", extra=()):
    progress = os.path.join(lab.workdir, f"progress-{name}")
    proc = lab.peer(lab.host("web1"), "stream", "--host", "10.0.0.12", "--port", "7100", "--progress", progress,
                    "--timeout", timeout, "--interval", "0.02", *extra)
    count = lambda: int(open(progress).read() or 0) if os.path.exists(progress) else 0  # noqa: E731
    wait_for(lambda: count() > 10, 10, f"stream {name} running")
    return proc, count, open(progress + ".server").read()


def move(lab, instance, follow):
    status, body = lab.api("POST", "/v1/interfaces/eni-web2/attach",
                           {"instance": instance, "requester": "acme", "follow_connections": follow})
    assert status == 200, body
    lab.wait_synced()
    lab.configure_guest(instance, lab.dep.interfaces["eni-web2"])  # the guest brings the address up
    return body["remap"]["id"]


def remap(lab, remap_id):
    return lab.api("GET", f"/v1/remaps/{remap_id}")[1]


def matches(lab, switch, table):
    """Each flow of one table of a switch as ovs-ofctl shows it, up to its actions (the match,
    and the timeouts and counters before it)."""
    heads = (line.split(" actions=")[0] for line in lab.switches[switch].flows())
    return [head for head in heads if f" table={table}," in head]


def test_a_followed_connection_survives_the_move_and_completes_the_remap(lab):
    proc, count, server = stream(lab, "followed", timeout="10")
    assert server == "web2"
    # the connection's record at the sender's switch lives as long as the connection goes on,
    # idle up to TCP_IDLE (not the 10 s of its SYN's record: a pause would lose its binding)
    wait_for(lambda: [m for m in matches(lab, "host1", 38) if "nw_dst=10.0.0.12" in m and "idle_timeout=300," in m], 5,
             "the connection's record, with the idle timeout of one going on")
    rid = move(lab, "spare1", follow=True)
    assert remap(lab, rid)["state"] == "draining"
    wait_for(lambda: remap(lab, rid)["connections"] >= 1, 5, "the followed connection counted")
    assert f'vpcflow_remap_followed_connections{{remap="{rid}"}}' in lab.api("GET", "/metrics", token=None)[1]
    # new connections: the new instance
    assert lab.client(lab.host("web1"), "10.0.0.12", 7100) == "ok spare1"
    # the old one keeps going, every byte checked, across a controller restart too
    moved = count()
    wait_for(lambda: count() > moved + 20, 10, "the followed connection going on")
    lab.stop_controller()
    lab.start_controller()
    lab.wait_synced()
    assert remap(lab, rid)["state"] == "draining"
    moved = count()
    wait_for(lambda: count() > moved + 20, 10, "the followed connection going on after a restart")
    proc.terminate()
    summary, _ = proc.communicate(timeout=15)
    assert summary.strip().endswith("error="), summary
    # its end completes the remap, and every flow it added goes
    wait_for(lambda: remap(lab, rid)["state"] == "complete", 15, "the remap to complete")
    lab.wait_synced()
    for switch in ("host1", "host2", "edge1"):
        assert not any("reg4=" in match for match in matches(lab, switch, 40)), switch
    assert not any("nw_dst=10.0.0.12" in match and "reg0=0x64" in match for match in matches(lab, "host2", 70))


def test_without_following_the_old_connection_breaks(lab):
    proc, count, server = stream(lab, "cut", timeout="3")
    assert server == "spare1"
    move(lab, "web2", follow=False)
    out, _ = proc.communicate(timeout=30)
    assert "error=" in out and not out.strip().endswith("error="), out
    assert lab.client(lab.host("web1"), "10.0.0.12", 7100) == "ok web2"


def test_packets_after_the_senders_fin_do_not_hold_a_drain(lab):
    # web1 half-closes, and web2 answers two seconds later: by then web1's record has ended (one
    # second after its FIN), and web1's ACKs of the answer are recorded afresh. They must not make
    # a record that lives for the whole idle timeout (TCP_IDLE, 300 s) under web2's binding: the
    # move below would then drain for five minutes, counting a connection that has ended.
    assert lab.client(lab.host("web1"), "10.0.0.12", 7100, timeout=10, late=2) == "ok web2"
    rid = move(lab, "spare1", follow=True)
    wait_for(lambda: remap(lab, rid)["state"] == "complete", 15, "the remap to complete")


def test_a_connection_the_old_holder_resets_does_not_hold_a_drain(lab):
    # eni-web2 is on spare1 now (the test before). web1's connection to it is followed when the
    # address moves back to web2; then spare1 resets it (its service stopped, say). web1's socket
    # is closed by the RST and sends nothing more: its record would be counted for the whole idle
    # timeout (TCP_IDLE, 300 s) if the RST it received did not end it.
    trigger = os.path.join(lab.workdir, "reset-now")
    proc, _, server = stream(lab, "reset", timeout="10", extra=("--reset-when", trigger))
    assert server == "spare1"
    rid = move(lab, "web2", follow=True)
    wait_for(lambda: remap(lab, rid)["connections"] >= 1, 5, "the followed connection counted")
    open(trigger, "w").close()
    summary, _ = proc.communicate(timeout=15)
    assert "reset=yes error=" in summary and summary.strip().endswith("error="), summary
    wait_for(lambda: remap(lab, rid)["state"] == "complete", 15, "the remap to complete")
