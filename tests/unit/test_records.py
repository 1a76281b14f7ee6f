"""Interface-record changes, checked before they reach the model (issue 6)."""
import dataclasses

import pytest

from tests.conftest import data_file
from vpcflow.controller import records
from vpcflow.topology.loader import load_file

pytestmark = pytest.mark.follow


def move(dep, instance, follow=True, draining=()):
    return records.attach(dep, "eni-web2", {"instance": instance, "requester": "acme", "follow_connections": follow},
                          "r1", draining)


def test_a_followed_move_makes_a_draining_remap_of_the_old_binding():
    dep = load_file(data_file("two-hosts.yaml"))
    new, remap = move(dep, "spare1")
    assert new.interfaces["eni-web2"].attach_to == "spare1" and dep.interfaces["eni-web2"].attach_to == "web2"
    assert (remap.old_instance, remap.old_switch, remap.new_instance, remap.state) == ("web2", "host2", "spare1", "draining")


def test_a_move_onto_a_switch_where_an_old_binding_still_drains_is_refused():
    dep = load_file(data_file("two-hosts.yaml"))
    moved, remap = move(dep, "spare1")
    # back to host2 while web2 (host2) still drains: two holders of 10.0.0.12 on one switch
    with pytest.raises(records.RecordError) as e:
        move(moved, "red2", draining=[remap])
    assert e.value.status == 409 and "still drains" in e.value.message


def test_without_following_the_remap_is_complete_at_once():
    dep = load_file(data_file("two-hosts.yaml"))
    _, remap = move(dep, "spare1", follow=False)
    assert remap.state == "complete"


# --- elastic IPs ---------------------------------------------------------------------------------

EIP = "198.51.100.30"


def remap_eip(dep, interface, follow=True, draining=(), **extra):
    return records.remap_elastic_ip(dep, EIP, {"interface": interface, "follow_connections": follow, **extra},
                                    "r1", draining)


def test_an_elastic_ip_remap_records_the_old_holder_and_changes_only_the_address():
    dep = load_file(data_file("eip-follow.yaml"))
    new, remap = remap_eip(dep, "eni-2")
    assert [e.interface for e in new.elastic_ips] == ["eni-2"] and [e.interface for e in dep.elastic_ips] == ["eni-1"]
    assert new.interfaces == dep.interfaces
    assert (remap.elastic_ip, remap.old_interface, remap.holder, remap.interface, remap.old_switch, remap.state) == (
        EIP, "eni-1", "eni-1", "eni-2", "host1", "draining")
    assert remap.public()["from_interface"] == "eni-1"


@pytest.mark.parametrize("body, status", [
    ({"interface": "eni-9"}, 404), ({"interface": "eni-1"}, 409), ({"interface": 3}, 400),
    ({"interface": "eni-2", "follow_connections": "yes"}, 400), ({"interface": "eni-2", "requester": "globex"}, 403),
    ({"interface": "eni-2", "colour": "red"}, 400)])
def test_a_bad_elastic_ip_remap_is_refused_with_its_status(body, status):
    dep = load_file(data_file("eip-follow.yaml"))
    with pytest.raises(records.RecordError) as e:
        records.remap_elastic_ip(dep, EIP, body, "r1")
    assert e.value.status == status


def test_an_unknown_elastic_ip_or_a_detached_target_is_refused():
    dep = load_file(data_file("eip-follow.yaml"))
    with pytest.raises(records.RecordError) as e:
        records.remap_elastic_ip(dep, "198.51.100.99", {"interface": "eni-2"}, "r1")
    assert e.value.status == 404
    detached = records.detach(dep, "eni-2", {"requester": "acme"})
    with pytest.raises(records.RecordError) as e:
        remap_eip(detached, "eni-2")
    assert e.value.status == 409 and "not attached" in e.value.message


def test_an_elastic_ip_cannot_return_to_an_interface_it_still_drains_from():
    dep = load_file(data_file("eip-follow.yaml"))
    moved, r1 = remap_eip(dep, "eni-2")
    with pytest.raises(records.RecordError) as e:
        remap_eip(moved, "eni-1", draining=[r1])
    assert e.value.status == 409 and "still drains" in e.value.message
    back, _ = remap_eip(moved, "eni-1", draining=[])  # once complete, it may
    assert [e.interface for e in back.elastic_ips] == ["eni-1"]


def test_the_state_file_keeps_elastic_ip_remaps(tmp_path):
    dep = load_file(data_file("eip-follow.yaml"))
    moved, remap = remap_eip(dep, "eni-3")
    path = str(tmp_path / "state.json")
    records.save(path, moved, dep, {remap.id: remap})
    assert [e.interface for e in records.restore(path, dep).elastic_ips] == ["eni-3"]
    assert records.restore_remaps(path)[remap.id] == remap
    # an entry that no longer fits the file is skipped, the rest is kept
    gone = dataclasses.replace(dep, elastic_ips=())
    assert records.restore(path, gone).elastic_ips == ()


def test_after_any_moves_the_carried_lookups_equal_a_fresh_scan():
    """A runtime change carries two look-ups over instead of scanning every interface: which
    interfaces an instance has (the attach checks) and the state file's attachments. After each
    move, detach and refused move, both equal what a scan of the new deployment finds."""
    import random

    base = load_file(data_file("two-hosts.yaml"))
    rnd = random.Random(7)
    dep, saved = base, (base, {})
    dep.interfaces_of("web1")  # made once; every later deployment carries it over
    entity = {name: base.networks[i.network].entity for name, i in base.interfaces.items()}
    moves = 0
    for _ in range(200):
        iface = rnd.choice(sorted(base.interfaces))
        if rnd.random() < 0.2:
            if dep.interfaces[iface].attach_to is None:
                continue
            new = records.detach(dep, iface, {"requester": entity[iface]})
        else:
            try:
                new, _ = records.attach(dep, iface, {"instance": rnd.choice(sorted(base.instances)),
                                                     "requester": entity[iface], "follow_connections": False}, "r")
            except records.RecordError:
                continue  # refused: nothing changed
        moves += 1
        fresh = dataclasses.replace(new)  # the same deployment without what was carried over
        assert {i: new.interfaces_of(i) for i in base.instances} == {i: fresh.interfaces_of(i) for i in base.instances}
        saved = (new, records.attachments(new, base, saved))
        assert saved[1] == records.attachments(fresh, base)
        dep = new
    assert moves > 100 and saved[1]  # the walk moved things, and some stayed away from home


def test_after_any_remaps_the_state_files_elastic_ips_are_those_a_full_comparison_finds():
    """The state file's remapped elastic IPs are compared position by position (a remap keeps
    the addresses and their order): after each of a random walk of remaps, away and back, they
    are what comparing every address of the deployment file finds."""
    import random

    from bench import generate
    from vpcflow.topology.loader import parse

    base = parse(generate.sized("1k"))
    rnd = random.Random(3)
    dep, remapped = base, 0
    for _ in range(150):
        eip = rnd.choice(base.elastic_ips)
        network = base.interfaces[eip.interface].network
        target = rnd.choice(sorted(i.name for i in base.interfaces.values() if i.network == network and i.attach_to))
        try:
            dep, _ = records.remap_elastic_ip(dep, str(eip.ip), {"interface": target, "follow_connections": False}, "r")
        except records.RecordError:
            continue
        remapped += 1
        before = {str(e.ip): e.interface for e in base.elastic_ips}
        assert records.elastic_ips(dep, base) == {str(e.ip): e.interface for e in dep.elastic_ips
                                                  if before[str(e.ip)] != e.interface}
    assert remapped > 100 and records.elastic_ips(dep, base)


# --- the controller's runtime changes ------------------------------------------------------------

def _moved_by_controller(tmp_path, saved_attachments=None):
    """A Controller of two-hosts.yaml with a state file (one that attaches eni-web2 elsewhere, if
    given), every switch compiled."""
    import json

    from vpcflow.controller.state import Controller

    path = tmp_path / "state.json"
    if saved_attachments is not None:
        path.write_text(json.dumps({"version": records.STATE_VERSION, "attachments": saved_attachments,
                                    "elastic_ips": {}, "remaps": {}}))
    ctl = Controller(load_file(data_file("two-hosts.yaml")), state_file=str(path))
    for name in ctl.deployment.switches:
        ctl.desired(name, "br-int", "3.1.0")
    return ctl, path


def test_a_change_after_start_writes_the_attachments_a_full_comparison_finds(tmp_path):
    """The controller looks up the state file's attachments at start (the first change then
    compares only what it replaced): after a restart from a state file that moved one interface,
    a detach of another writes both, as comparing every interface with the file finds."""
    import json

    ctl, path = _moved_by_controller(tmp_path, {"eni-web2": "spare1"})
    ctl.change(lambda d: records.detach(d, "eni-web1", {"requester": "acme"}))
    written = json.loads(path.read_text())["attachments"]
    assert written == records.attachments(ctl.deployment, ctl.base) == {"eni-web2": "spare1", "eni-web1": None}


def test_what_a_change_replaced_is_freed_after_its_syncs_not_on_its_way(tmp_path):
    """The Index and compiled switches a runtime change replaces are kept until the app has
    synced the change (release_retired), and then freed; changes that come faster than their
    syncs keep a few (RETIRED_KEPT), not all."""
    import weakref

    from vpcflow.controller import state

    ctl, _ = _moved_by_controller(tmp_path)
    homes = ["spare1", "web2"]
    replaced = []
    for i in range(state.RETIRED_KEPT + 2):
        replaced.append(weakref.ref(ctl.index))
        ctl.change(lambda d: records.attach(d, "eni-web2", {"instance": homes[i % 2], "requester": "acme",
                                                            "follow_connections": False}, "r1"))
        for name in ctl.deployment.switches:
            ctl.desired(name, "br-int", "3.1.0")
    assert [r() is not None for r in replaced] == [False] * 2 + [True] * state.RETIRED_KEPT
    ctl.release_retired()
    assert [r() for r in replaced] == [None] * len(replaced) and ctl.index is not None


def test_an_interface_detached_while_its_remap_drains_keeps_its_old_binding(tmp_path):
    """The compile took an old binding's addresses from the interface's current ones, and failed
    (KeyError) once the interface was detached: the API's detach answered 500 after the state
    file had it, and every later compile failed too."""
    from vpcflow.flows.compiler import compile_deployment
    from vpcflow.flows.index import Index

    ctl, _ = _moved_by_controller(tmp_path)
    attach = {"instance": "spare1", "requester": "acme", "follow_connections": True}
    ctl.change(lambda d: records.attach(d, "eni-web2", attach, "r1"))
    ctl.change(lambda d: records.detach(d, "eni-web2", {"requester": "acme"}))
    _, flows = ctl.desired("host2", "integration", "3.1.0")
    # web2 still sends from the address, and its followed connections still reach it
    assert any(f.table == "port_security" and ("ipv4_src", "10.0.0.12") in f.match for f in flows)
    assert any(f.table == "deliver" and ("ipv4_dst", "10.0.0.12") in f.match for f in flows)
    fresh = compile_deployment(ctl.deployment, follows=ctl.follows())["host2"].integration
    assert {f.key for f in flows} == {f.key for f in fresh}
    assert Index(ctl.deployment, ctl.follows()).old_bindings_of("eni-web2")


def test_a_move_without_following_leaves_a_cut_until_its_quiet_records_are_gone(tmp_path):
    """flows/follow.py Cut: a move without following, or a detach, of an address no remap drains
    leaves a pending cut (the address then records under its holder); a followed move leaves
    none; the cut ends when the app counts no quiet record of it, and the address is quiet again."""
    from vpcflow.flows.follow import Cut

    ctl, _ = _moved_by_controller(tmp_path)
    attach = {"instance": "spare1", "requester": "acme"}
    ctl.change(lambda d: records.attach(d, "eni-web2", {**attach, "follow_connections": True}, "r1"))
    assert not ctl.cuts  # followed: the remap drains instead
    ctl.change(lambda d: records.detach(d, "eni-web1", {"requester": "acme"}))
    assert list(ctl.cuts) == [("blue", "10.0.0.11")] and isinstance(ctl.cuts[("blue", "10.0.0.11")], Cut)
    assert any(f.kind == "cut" for f in ctl.follows())
    # both left their instances; only the unfollowed one is cut
    assert records.left_addresses(ctl.base, ctl.deployment) == [("blue", "10.0.0.11", "eni-web1"),
                                                               ("blue", "10.0.0.12", "eni-web2")]
    generation = ctl.generation
    assert_compiled_as_fresh(ctl)
    assert not ctl.cut_progress("blue", "10.0.0.11", 2)  # records left: it stays
    assert ctl.cut_progress("blue", "10.0.0.11", 0) and not ctl.cuts and ctl.generation == generation + 1
    assert_compiled_as_fresh(ctl)  # (the network's follow flows made again, not carried)


def assert_compiled_as_fresh(ctl):
    from vpcflow.flows.compiler import compile_deployment

    fresh = compile_deployment(ctl.deployment, follows=ctl.follows())
    for name in ctl.deployment.switches:
        _, flows = ctl.desired(name, "integration", "3.1.0")
        assert {f.key for f in flows} == {f.key for f in fresh[name].integration}, name


def test_a_cut_that_ends_makes_its_networks_follow_flows_again(tmp_path):
    ctl, _ = _moved_by_controller(tmp_path)
    ctl.change(lambda d: records.attach(d, "eni-web2", {"instance": "spare1", "requester": "acme"}, "r1"))
    assert list(ctl.cuts) == [("blue", "10.0.0.12")]
    assert_compiled_as_fresh(ctl)
    assert ctl.cut_progress("blue", "10.0.0.12", 0)
    assert_compiled_as_fresh(ctl)  # not the runs of the cut's time, carried over


def test_a_pending_cut_survives_a_restart_and_a_bad_one_in_the_state_file_is_dropped(tmp_path, caplog):
    import json

    from vpcflow.controller.state import Controller

    ctl, path = _moved_by_controller(tmp_path)
    ctl.change(lambda d: records.attach(d, "eni-web2", {"instance": "spare1", "requester": "acme"}, "r1"))
    restarted = Controller(load_file(data_file("two-hosts.yaml")), state_file=str(path))
    assert restarted.cuts == ctl.cuts and list(restarted.cuts) == [("blue", "10.0.0.12")]
    state = json.loads(path.read_text())
    state["cuts"] = [{"network": "blue", "ip": "10.0.0.12"}]  # no remap_id, no order
    path.write_text(json.dumps(state))
    restarted = Controller(load_file(data_file("two-hosts.yaml")), state_file=str(path))
    assert restarted.cuts == {} and "cuts unreadable" in caplog.text
    # the rest of the state file still holds: the move is in force
    assert restarted.deployment.interfaces["eni-web2"].attach_to == "spare1"


def test_a_reload_that_moves_an_interface_leaves_a_cut_as_an_api_move_does(tmp_path):
    """The deployment file edited to move eni-web2 from web2 to spare1, then reloaded: its
    connections are cut as an API move's are, and the pending cut is in the state file."""
    import json

    import yaml

    from vpcflow.controller.state import Controller

    topology = tmp_path / "topology.yaml"
    data = yaml.safe_load(open(data_file("two-hosts.yaml")))
    topology.write_text(yaml.safe_dump(data))
    path = tmp_path / "state.json"
    ctl = Controller(load_file(str(topology)), str(topology), str(path))
    for name in ctl.deployment.switches:
        ctl.desired(name, "br-int", "3.1.0")
    data["interfaces"]["eni-web2"]["attach_to"] = "spare1"
    topology.write_text(yaml.safe_dump(data))
    assert ctl.reload() == []
    assert ctl.deployment.interfaces["eni-web2"].attach_to == "spare1"
    assert list(ctl.cuts) == [("blue", "10.0.0.12")]
    assert [c["ip"] for c in json.loads(path.read_text())["cuts"]] == ["10.0.0.12"]
    assert_compiled_as_fresh(ctl)
    assert ctl.reload() == [] and list(ctl.cuts) == [("blue", "10.0.0.12")]  # (the same file again: no new cut)
