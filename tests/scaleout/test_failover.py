"""Several controllers sharing the switches (issue 9, items 2 to 4).

A three-member Raft store holds the deployment; two `vpcflow-controller` processes take their
intent from it, and every switch of the Mininet lab is connected to both. OpenFlow roles decide
who programs what: one master per switch, balanced. A runtime change on either instance goes
through the store and reaches every switch; the master of the switches carrying live traffic is
SIGKILLed and the other takes them over within 3 s, with no lost ping, no reset, no flow-mod;
a store member is killed meanwhile and writes go on.

Run with OVS: `flock /tmp/vpcflow-lab.lock .venv/bin/python -m pytest tests/scaleout -q -p no:cacheprovider`.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import data_file, require_system
from tests.scaleout.conftest import require_ovsdb
from vpcflow.controller.roles import assign
from vpcflow.harness.controller import wait_for
from vpcflow.store import import_deployment, read_deployment

pytestmark = pytest.mark.scaleout

TOPOLOGY = data_file("two-hosts.yaml")
SWITCHES = ("edge1", "host1", "host2")
FAILOVER_LIMIT = 3.0


def instance_names():
    """Two instance names under which one instance masters both switches the traffic crosses
    (host1 and host2): killing it takes the master of both ends away."""
    for i, j in itertools.combinations(range(100), 2):
        names = [f"vfk-{i}", f"vfk-{j}"]
        out = assign(SWITCHES, names)
        if out["host1"] == out["host2"]:
            return names
    raise AssertionError("no such names")


@pytest.fixture(scope="module")
def lab():
    require_system()
    require_ovsdb()
    from vpcflow.harness.cluster import StoreCluster
    from vpcflow.harness.lab import Lab

    with StoreCluster(prefix="vfk-cluster-") as cluster:
        import_deployment(cluster.remote, TOPOLOGY)
        with Lab(TOPOLOGY, tag="vfk", controllers=2, store=cluster.remote, instance_names=instance_names()) as lab:
            lab.cluster = cluster
            lab.server(lab.host("web2"), 7000, name="web2")
            yield lab


def by_name(lab):
    return {c.api("GET", "/v1/switches")[1]["instance"]: c for c in lab.ctls}


def master_of(lab, switch):
    return lab.masters()[(switch, "integration")]


def table_text(lab, switch, bridge):
    """A bridge's flows as ovs-ofctl shows them, without counters and ages, learned flows left out."""
    lines = lab.switches[switch].ovs.ofctl("dump-flows", bridge, "--no-stats").splitlines()
    return sorted(line.strip() for line in lines if "cookie=" in line and "cookie=0x8" not in line)


def all_tables(lab):
    return {(name, bridge): table_text(lab, name, bridge) for name, sw in lab.dep.switches.items()
            for bridge in (sw.bridge, sw.underlay_bridge)}


def ovs_roles(lab, switch, bridge):
    """{controller OpenFlow port: role} as the switch's own OVSDB reports it ("master", "slave")."""
    ovs = lab.switches[switch].ovs
    out = {}
    for uuid in ovs.vsctl("--bare", "get", "Bridge", bridge, "controller").strip("[] \n").split(", "):
        target, role = ovs.vsctl("--bare", "get", "Controller", uuid, "target", "role").split()
        out[int(target.strip('"').rsplit(":", 1)[1])] = role
    return out


def test_each_switch_has_one_master_and_the_masters_are_balanced(lab):
    ctls = by_name(lab)
    expected = assign(SWITCHES, list(ctls))
    masters = wait_for(lab.masters, 10, "one master per bridge")
    for (switch, bridge), ctl in masters.items():
        assert ctl is ctls[expected[switch]], (switch, bridge)  # both bridges of a switch together
    loads = sorted(sum(1 for s in SWITCHES if expected[s] == name) for name in ctls)
    assert loads == [1, 2]

    def as_assigned():
        status = {name: c.api("GET", "/v1/switches")[1] for name, c in ctls.items()}
        return all(body["members"] == sorted(ctls) and body["membership_generation"] > 0 and
                   all(s["connected"] and s["role"] == ("master" if expected[s["switch"]] == name else "slave")
                       and s["in_sync"] == (s["role"] == "master") for s in body["switches"])
                   for name, body in status.items()) and status
    status = wait_for(as_assigned, 20, "every bridge connected to both, in the role assigned")
    assert len({body["membership_generation"] for body in status.values()}) == 1  # the same view

    # The switches agree: each bridge has one master controller connection, the one named.
    for switch in SWITCHES:
        sw = lab.dep.switches[switch]
        for bridge in (sw.bridge, sw.underlay_bridge):
            want = {c.ofp_port: "master" if expected[switch] == name else "slave" for name, c in ctls.items()}
            wait_for(lambda: ovs_roles(lab, switch, bridge) == want, 10,
                     f"{switch}/{bridge} to report {want}: {ovs_roles(lab, switch, bridge)}")


def test_a_change_on_one_instance_reaches_the_switches_the_other_masters(lab):
    owner = master_of(lab, "host1")
    other = next(c for c in lab.ctls if c is not owner)
    before = table_text(lab, "host1", "br-int")
    generation = owner.api("GET", "/v1/switches")[1]["generation"]
    owner_sync = owner.switches()[("host1", "integration")]["last_sync"]
    slave_sync = other.switches()[("host1", "integration")]["last_sync"]

    # eni-web2 moves from host2 to host1, following its connections: a draining remap
    status, body = other.api("POST", "/v1/interfaces/eni-web2/attach",
                             {"instance": "spare1", "requester": "acme", "follow_connections": True})
    assert status == 200, body
    remap = body["remap"]["id"]
    assert read_deployment(lab.cluster.remote).interfaces["eni-web2"].attach_to == "spare1"
    # host1's master got it from the store, and programmed it
    wait_for(lambda: owner.api("GET", "/v1/switches")[1]["generation"] > generation, 10, "the owner to follow")
    lab.wait_synced()
    assert owner.api("GET", "/v1/interfaces")[1]["interfaces"]["eni-web2"]["attach_to"] == "spare1"
    assert table_text(lab, "host1", "br-int") != before
    host1 = owner.switches()[("host1", "integration")]
    assert host1["last_sync"] != owner_sync and host1["role"] == "master"
    assert other.switches()[("host1", "integration")]["last_sync"] == slave_sync  # the slave sent nothing

    # Nothing to follow: the remap completes, written by one instance (the lowest name), seen by both.
    for ctl in lab.ctls:
        wait_for(lambda: ctl.api("GET", f"/v1/remaps/{remap}")[1]["state"] == "complete", 15, "the remap to complete")
    completed = [c for c in lab.ctls if f"remap {remap} complete" in c.output()]
    assert [c.api("GET", "/v1/switches")[1]["instance"] for c in completed] == [min(by_name(lab))]

    # and back, through the owner this time: the tables are as they were
    status, body = owner.api("POST", "/v1/interfaces/eni-web2/attach", {"instance": "web2", "requester": "acme"})
    assert status == 200, body
    wait_for(lambda: other.api("GET", "/v1/interfaces")[1]["interfaces"]["eni-web2"]["attach_to"] == "web2", 10,
             "the other instance to follow")
    lab.wait_synced()
    wait_for(lambda: table_text(lab, "host1", "br-int") == before, 10, "host1 back to its first tables")
    assert lab.client(lab.host("web1"), "10.0.0.12", 7000) == "ok web2"


def test_the_master_killed_under_traffic_and_a_store_member_with_it(lab):
    victim = master_of(lab, "host1")
    assert master_of(lab, "host2") is victim
    survivor = next(c for c in lab.ctls if c is not victim)
    taken = sorted(key for key, ctl in lab.masters().items() if ctl is victim)
    last_sync = {key: s["last_sync"] for key, s in survivor.switches().items()}

    progress = os.path.join(lab.workdir, "progress-failover")
    stream = lab.peer(lab.host("web1"), "stream", "--host", "10.0.0.12", "--port", "7000", "--progress", progress,
                      "--timeout", "10")
    count = lambda: int(open(progress).read() or 0) if os.path.exists(progress) else 0  # noqa: E731
    wait_for(lambda: count() > 10, 10, "the stream running")
    pinger = lab.host("web1").popen(["ping", "-i", "0.01", "-c", "1500", "-W", "1", "10.0.0.12"],
                                    stdout=subprocess.PIPE, text=True)
    lab.procs.append(pinger)
    before = all_tables(lab)

    started = time.monotonic()
    victim.stop(signal.SIGKILL)

    def took_over():
        status = survivor.switches()
        return all(status[key]["role"] == "master" and status[key]["in_sync"]
                   and status[key]["last_sync"] != last_sync[key] for key in taken)
    wait_for(took_over, 10, "the survivor to master the victim's switches")
    failover = time.monotonic() - started
    print(f"failover: {failover:.2f}s for {taken}")
    assert failover < FAILOVER_LIMIT, failover
    assert pinger.poll() is None  # the ping flood spans the failover
    status = survivor.switches()
    for key in taken:
        assert (status[key]["last_added"], status[key]["last_deleted"]) == (0, 0), status[key]  # no flow-mod
    assert all_tables(lab) == before  # no churn
    assert survivor.api("GET", "/v1/switches")[1]["members"] == [survivor.api("GET", "/v1/switches")[1]["instance"]]

    # A store member goes too (the leader: a new one is elected): writes go on.
    lab.cluster.kill(lab.cluster.leader())
    started = time.monotonic()
    status, body = survivor.api("POST", "/v1/interfaces/eni-web3/attach", {"instance": "spare1", "requester": "acme"},
                                timeout=30)
    print(f"attach with the store leader killed: {time.monotonic() - started:.2f}s")
    assert status == 200, body
    assert read_deployment(lab.cluster.remote).interfaces["eni-web3"].attach_to == "spare1"
    survivor.wait_synced(bridges=[("host1", "integration")])

    out, _ = pinger.communicate(timeout=60)
    assert " 0% packet loss" in out, out
    before_stop = count()
    wait_for(lambda: count() > before_stop + 10, 10, "the stream still running")
    stream.terminate()
    summary, _ = stream.communicate(timeout=15)
    assert summary.strip().endswith("error="), summary  # no reset, every byte checked
    for ctl in lab.ctls:  # the slave never tried to program; nothing failed
        assert "Traceback" not in ctl.output() and "OpenFlow error" not in ctl.output(), ctl.output()

