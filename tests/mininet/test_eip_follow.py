"""Elastic-IP remaps with connection following (issue 6), real TCP from the external host.

tests/data/eip-follow.yaml: 198.51.100.30 starts on eni-1 (vm1, host1); eni-2 is on vm2 (host2),
eni-3 on vm3 (host3), eni-4 on vm4 (host1, beside vm1). Every instance runs a server on 7100
that says its name; the external client's streams check every byte they get back.
"""
import os
import re
import time

import pytest

from tests.conftest import data_file, require_system
from vpcflow.harness.controller import wait_for

pytestmark = pytest.mark.follow

EIP = "198.51.100.30"
PORT = 7100


@pytest.fixture(scope="module")
def lab():
    require_system()
    from vpcflow.harness.lab import Lab

    with Lab(data_file("eip-follow.yaml"), tag="vfe") as lab:
        for name in ("vm1", "vm2", "vm3", "vm4"):
            lab.server(lab.host(name), PORT, name=name)
        yield lab


class Stream:
    """A long-lived connection from the external host to the elastic IP, exchanging numbered lines."""

    def __init__(self, lab, name, timeout="3", extra=()):
        self.progress = os.path.join(lab.workdir, f"progress-{name}")
        self.proc = lab.peer(lab.external(), "stream", "--host", EIP, "--port", str(PORT),
                             "--progress", self.progress, "--timeout", timeout, "--interval", "0.02", *extra)
        wait_for(lambda: self.count() > 10, 10, f"stream {name} running")
        self.server = open(self.progress + ".server").read()

    def count(self):
        try:
            return int(open(self.progress).read() or 0)
        except FileNotFoundError:
            return 0

    def goes_on(self, what):
        now = self.count()
        wait_for(lambda: self.count() > now + 20, 10, what)

    def end(self):
        """Close it (FIN); its summary: the stream never saw an error or a wrong byte."""
        self.proc.terminate()
        summary, _ = self.proc.communicate(timeout=15)
        return summary.strip()


def holder(lab):
    return lab.api("GET", "/v1/elastic-ips")[1]["elastic_ips"][EIP]["interface"]


def remap(lab, interface, follow):
    status, body = lab.api("POST", f"/v1/elastic-ips/{EIP}/remap", {"interface": interface, "follow_connections": follow})
    assert status == 200, body
    lab.wait_synced()
    return body["remap"]["id"]


def state(lab, rid):
    return lab.api("GET", f"/v1/remaps/{rid}")[1]


def answered_by(lab):
    return lab.client(lab.external(), EIP, PORT)


def edge_records(lab):
    """The edge's records of connections (not the markers of ended ones, which stay a minute)."""
    markers = "load:0xffffffff->NXM_NX_REG4[]"  # follow.ENDED_BINDING
    return [line for line in lab.switches["edge1"].flows() if " table=81," in line and markers not in line]


def test_connections_stay_on_their_instances_through_chained_remaps_and_a_restart(lab):
    assert holder(lab) == "eni-1" and answered_by(lab) == "ok vm1"
    first = Stream(lab, "first", timeout="10")
    assert first.server == "vm1"
    # its record lives as long as it goes on, idle up to TCP_IDLE (not its SYN's record's 10 s)
    wait_for(lambda: [line for line in edge_records(lab) if "idle_timeout=300," in line and "priority=100," in line],
             5, "the first connection's record, with the idle timeout of one going on")
    r1 = remap(lab, "eni-2", follow=True)  # vm1 (host1) -> vm2 (host2)
    assert state(lab, r1)["state"] == "draining"
    wait_for(lambda: state(lab, r1)["connections"] >= 1, 5, "the first connection counted")
    assert answered_by(lab) == "ok vm2"
    first.goes_on("the first connection going on after the remap")
    second = Stream(lab, "second", timeout="10")
    assert second.server == "vm2"
    r2 = remap(lab, "eni-3", follow=True)  # vm2 (host2) -> vm3 (host3), while r1 still drains
    assert answered_by(lab) == "ok vm3"
    first.goes_on("the first connection going on after the second remap")
    second.goes_on("the second connection going on after the second remap")
    # the state file keeps the binding and the drains; the records stay in the edge
    lab.stop_controller()
    lab.start_controller()
    lab.wait_synced()
    assert holder(lab) == "eni-3"
    assert state(lab, r1)["state"] == "draining" and state(lab, r2)["state"] == "draining"
    first.goes_on("the first connection going on after a controller restart")
    second.goes_on("the second connection going on after a controller restart")
    assert answered_by(lab) == "ok vm3"
    # each drain ends with its own last connection, and takes every flow it added with it
    assert first.end().endswith("error=")
    wait_for(lambda: state(lab, r1)["state"] == "complete", 15, "the first remap to complete")
    assert state(lab, r2)["state"] == "draining"
    second.goes_on("the second connection going on after the first remap completed")
    assert second.end().endswith("error=")
    wait_for(lambda: state(lab, r2)["state"] == "complete", 15, "the second remap to complete")
    lab.wait_synced()
    edge = lab.switches["edge1"].flows()
    assert not any(" table=83," in line and "reg4=" in line for line in edge), edge
    assert [line for line in edge if f"nw_src={EIP}" in line and "table=50" in line and "tun_ipv6_src" in line
            and "fd00:5ee0:0:3::" not in line] == []
    for old in ("host1", "host2"):
        assert not any(EIP in line for line in lab.switches[old].flows()), old
    wait_for(lambda: not edge_records(lab), 15, "the edge's records of the ended connections to go")


def test_a_remap_between_two_instances_of_one_host_follows_too(lab):
    if holder(lab) != "eni-1":
        remap(lab, "eni-1", follow=False)
    old = Stream(lab, "same-host", timeout="10")
    assert old.server == "vm1"
    rid = remap(lab, "eni-4", follow=True)  # both on host1: its conntrack keeps the old connection on vm1
    assert answered_by(lab) == "ok vm4"
    old.goes_on("the old connection going on beside the new holder")
    assert state(lab, rid)["state"] == "draining"
    assert old.end().endswith("error=")
    wait_for(lambda: state(lab, rid)["state"] == "complete", 15, "the remap to complete")


def test_without_following_the_old_connection_breaks(lab):
    before = holder(lab)
    old = Stream(lab, "cut", timeout="3")
    target = "eni-2" if before != "eni-2" else "eni-3"
    remap(lab, target, follow=False)
    summary, _ = old.proc.communicate(timeout=30)
    assert "error=" in summary and not summary.strip().endswith("error="), summary
    assert answered_by(lab) == f"ok vm{target[-1]}"


HOST_OF = {"eni-1": "host1", "eni-2": "host2", "eni-3": "host3", "eni-4": "host1"}
HOST_PREFIX = {"host1": "fd00:5ee0:0:1::", "host2": "fd00:5ee0:0:2::", "host3": "fd00:5ee0:0:3::"}
ENTRY = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+)Z\|", re.M)


def bundles(log: str):
    """[(commit time, {flow-mod lines})] of the bundles an ovs-vswitchd's vconn debug log shows
    committed, in commit order."""
    adds, out = {}, []
    starts = [m.start() for m in ENTRY.finditer(log)] + [len(log)]
    for a, b in zip(starts, starts[1:]):
        entry = log[a:b]
        bundle = re.search(r"bundle_id=(\S+)", entry)
        if "received:" not in entry or bundle is None:
            continue
        if "BUNDLE_ADD" in entry:
            adds.setdefault(bundle.group(1), set()).update(line for line in entry.splitlines() if "FLOW_MOD" in line)
        elif "type=COMMIT_REQUEST" in entry:
            out.append((ENTRY.match(entry).group(1), adds.pop(bundle.group(1), set())))
    return out


def committed_during(lab, names, action):
    """{switch: bundles(...)} of the named switches while action() runs (vconn debug log)."""
    logs = {n: os.path.join(lab.switches[n].ovs.dir, "ovs-vswitchd.log") for n in names}
    offsets = {n: os.path.getsize(path) for n, path in logs.items()}
    for n in logs:
        lab.switches[n].ovs.appctl("vlog/set", "vconn:file:dbg")
    try:
        action()
    finally:
        for n in logs:
            lab.switches[n].ovs.appctl("vlog/set", "vconn:file:info")
    committed = {}
    for n, path in logs.items():
        with open(path) as f:
            f.seek(offsets[n])
            committed[n] = bundles(f.read())
    return committed


def test_a_remap_commits_the_edges_new_matches_before_the_hosts_and_its_changes_after(lab):
    """Make-before-break: the edge first accepts the elastic IP's packets from the new holder's
    host, in a bundle of its own, before the hosts sync; its datapath flows are revalidated
    meanwhile, so the new holder's first answers do not meet a datapath flow that still drops
    them. Where the traffic goes changes in a later bundle, once the hosts are ready; the old
    holder's host lets go of the address (its translation) only after that, so that the new
    connections the edge sends it until then are still taken (not followed: nothing keeps them)."""
    old = holder(lab)
    target = "eni-2" if HOST_OF[old] != "host2" else "eni-3"
    new_host, old_host = HOST_OF[target], HOST_OF[old]
    committed = committed_during(lab, ("edge1", new_host, old_host), lambda: remap(lab, target, follow=False))
    edge = committed["edge1"]

    def edge_bundle(*words):
        return next(i for i, (_, mods) in enumerate(edge) if any(all(w in m for w in words) for m in mods))

    accept_new = edge_bundle("ADD", f"nw_src={EIP}", HOST_PREFIX[new_host])
    drop_old = edge_bundle("DEL_STRICT", f"nw_src={EIP}", HOST_PREFIX[old_host])
    assert accept_new < drop_old, edge
    host_commits = [t for t, mods in committed[new_host] if any("DEL" not in m for m in mods)]
    assert host_commits and edge[accept_new][0] <= min(host_commits) and max(host_commits) <= edge[drop_old][0]
    let_go = [t for t, mods in committed[old_host] if any("DEL_STRICT" in m and f"nw_dst={EIP}" in m for m in mods)]
    assert let_go and min(let_go) >= edge[drop_old][0], (let_go, edge[drop_old][0])
    assert answered_by(lab) == f"ok vm{target[-1]}"


def installed(lab):
    return {name: sw.ofctl("dump-flows", "--no-stats") for name, sw in lab.switches.items()}


def test_a_refused_remap_changes_nothing(lab):
    before = holder(lab), installed(lab)
    for body, status in (({"interface": "eni-9"}, 404), ({"interface": before[0]}, 409),
                         ({"interface": "eni-1", "follow_connections": "yes"}, 400),
                         ({"interface": "eni-1", "requester": "globex"}, 403), ({"nic": "eni-1"}, 400)):
        got, reply = lab.api("POST", f"/v1/elastic-ips/{EIP}/remap", body)
        assert got == status and reply["error"], (body, reply)
    assert lab.api("POST", "/v1/elastic-ips/198.51.100.99/remap", {"interface": "eni-1"})[0] == 404
    assert (holder(lab), installed(lab)) == before


def test_two_remaps_asked_at_once_each_let_go_only_after_the_edge_moved(lab):
    """A failover script remaps back to back: the second change comes while the first one's
    switches are syncing. Runtime changes' runs go one at a time and every switch of a run syncs
    to one model, so each change keeps make-before-break: a host lets go of the address (its
    translation) only after the edge stopped sending the address's traffic to it."""
    first = holder(lab)
    targets = [e for e in ("eni-1", "eni-2", "eni-3") if HOST_OF[e] != HOST_OF[first]]

    def remap_twice():
        for target in targets:  # not waiting for the first to be synced
            status, body = lab.api("POST", f"/v1/elastic-ips/{EIP}/remap",
                                   {"interface": target, "follow_connections": False})
            assert status == 200, body
        lab.wait_synced()
    committed = committed_during(lab, list(lab.switches), remap_twice)
    let_go_hosts = 0
    for host in {HOST_OF[first], HOST_OF[targets[0]]}:
        let_go = [t for t, mods in committed[host] if any("DEL_STRICT" in m and f"nw_dst={EIP}" in m for m in mods)]
        stopped = [t for t, mods in committed["edge1"]
                   if any("DEL_STRICT" in m and f"nw_src={EIP}" in m and HOST_PREFIX[host] in m for m in mods)]
        if let_go:
            let_go_hosts += 1
            assert stopped and min(let_go) >= min(stopped), (host, let_go, stopped, committed["edge1"])
    assert let_go_hosts >= 1  # the first holder's host at least let go
    assert holder(lab) == targets[1] and answered_by(lab) == f"ok vm{targets[1][-1]}"


def test_a_remap_on_a_quiet_edge_is_programmed_at_once(lab):
    """With no traffic, an Open vSwitch starts a revalidation round only every 500 ms: the edge's
    two revalidator waits (make-before-break) each lasted one, and a remap took 0.5 to 1 s to
    reach the edge (measured), while its clients' first new connections still went to the old
    holder. The controller nudges the edge's revalidators while it waits: well under 300 ms
    each way, from the call until the edge committed its last bundle."""
    lab.wait_synced()
    for target in [e for e in ("eni-1", "eni-2") if e != holder(lab)] + [holder(lab)]:
        started = time.time()
        status, body = lab.api("POST", f"/v1/elastic-ips/{EIP}/remap",
                               {"interface": target, "follow_connections": False})
        assert status == 200, body
        def edge_synced():
            edge = lab.ctl.switches()[("edge1", "integration")]
            return edge if edge["in_sync"] and edge["last_sync"] > started else None
        edge = wait_for(edge_synced, 10, "the edge's sync")
        assert edge["last_sync"] - started < 0.3, (target, edge["last_sync"] - started)
        lab.wait_synced()


def test_packets_after_the_clients_fin_do_not_hold_a_drain(lab):
    # The external client half-closes and hears its answer two seconds later, after its record
    # at the edge has ended (one second after its FIN): its ACKs of the answer must not make a
    # record that lives for the whole idle timeout (TCP_IDLE, 300 s) under the holder's binding,
    # or the remap below would drain for five minutes, counting a connection that has ended.
    before = holder(lab)
    assert lab.client(lab.external(), EIP, PORT, timeout=10, late=2) == f"ok vm{before[-1]}"
    rid = remap(lab, next(e for e in ("eni-1", "eni-2", "eni-3") if HOST_OF[e] != HOST_OF[before]), follow=True)
    wait_for(lambda: state(lab, rid)["state"] == "complete", 15, "the remap to complete")


def test_a_connection_the_old_holder_resets_does_not_hold_a_drain(lab):
    # The holder resets the external client's connection after a followed remap (its service
    # stopped, say). The client's socket is closed by the RST and sends nothing more: its record at
    # the edge would be counted for the whole idle timeout (TCP_IDLE, 300 s) if the RST that left
    # through the edge did not end it.
    before = holder(lab)
    trigger = os.path.join(lab.workdir, "reset-now")
    reset = Stream(lab, "reset", timeout="10", extra=("--reset-when", trigger))
    assert reset.server == f"vm{before[-1]}"
    rid = remap(lab, next(e for e in ("eni-1", "eni-2", "eni-3") if HOST_OF[e] != HOST_OF[before]), follow=True)
    wait_for(lambda: state(lab, rid)["connections"] >= 1, 5, "the followed connection counted")
    open(trigger, "w").close()
    summary, _ = reset.proc.communicate(timeout=15)
    assert "reset=yes error=" in summary and summary.strip().endswith("error="), summary
    wait_for(lambda: state(lab, rid)["state"] == "complete", 15, "the remap to complete")


def test_a_client_that_reuses_its_5_tuple_at_once_is_followed(lab):
    # A client behind a NAT may open its next connection on the 5-tuple of one that just ended
    # (here: ended by its RST, which frees the port at once). The edge marks an ended connection
    # for a minute so that its late packets are not recorded again; the new connection's SYN,
    # once the old record has gone, must not be taken for one of those: it is recorded, and
    # followed across a remap.
    before = holder(lab)
    first = Stream(lab, "first-of-41000", extra=("--source-port", "41000", "--abort"))
    wait_for(lambda: any("tp_src=41000" in line for line in edge_records(lab)), 10, "the first connection's record")
    summary = first.end()
    assert summary.endswith("error="), summary
    # its record gone (a second after its RST), its marker still there
    wait_for(lambda: not any("tp_src=41000" in line and "priority=100," in line for line in edge_records(lab)), 10,
             "the first record gone")
    assert any("tp_src=41000" in line and "0xffffffff->NXM_NX_REG4" in line for line in lab.switches["edge1"].flows())
    reused = Stream(lab, "reused", timeout="3", extra=("--source-port", "41000"))
    assert reused.server == f"vm{before[-1]}"
    remap(lab, next(e for e in ("eni-1", "eni-2", "eni-3") if HOST_OF[e] != HOST_OF[before]), follow=True)
    reused.goes_on("the reused connection going on after the remap")
    assert reused.end().endswith("error=")
