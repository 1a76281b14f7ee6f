"""The sync difference: only what differs, only flows that are ours."""
import pytest

from vpcflow.controller.sync import Installed, diff, split_by_resolvable
from vpcflow.flows import cookies
from vpcflow.flows.core import Goto, Output, flow
from vpcflow.flows.pipeline import table_id

pytestmark = pytest.mark.foundation


def f(port="p1", prio=100, reg=1):
    return flow("deliver", prio, {"reg0": reg}, (Output(port),), feature="overlay", obj="eni")


def installed(fl, cookie=None):
    return Installed(fl.key, fl.cookie if cookie is None else cookie, None)


def test_identical_tables_give_no_difference():
    a, b = f(reg=1), f(reg=2)
    d = diff({a.key: a, b.key: b}, [installed(a), installed(b)])
    assert not d and d.unchanged == 2


def test_missing_flows_are_added_and_changed_ones_replaced():
    a, b = f(reg=1), f(reg=2)
    changed = f(port="p9", reg=2)
    d = diff({a.key: a, changed.key: changed}, [installed(b)])
    assert d.add == [a, changed] and d.delete == []


def test_adds_of_new_matches_are_told_from_changes_of_installed_ones():
    """Make-before-break applies the adds of matches the bridge lacks before anything else."""
    a, b = f(reg=1), f(reg=2)
    changed = f(port="p9", reg=2)
    d = diff({a.key: a, changed.key: changed}, [installed(b)])
    assert d.new == [a] and d.made_first() == [a] and d.phases(deletes_last=False)[2] == [changed]


def test_new_matches_that_steer_are_made_with_the_changes():
    """A new route (a local one above the tunnel's) or record flow moves traffic: it is
    committed with the changes of installed flows, not before them."""
    a = f(reg=1)
    local = flow("route", 105, {"reg0": 100, "ipv4_dst": "10.0.0.12"}, (Goto("dest_lookup"),), feature="overlay",
                 obj="eni-2")
    record = flow("follow_new", 100, {"reg0": 100, "reg4": 0, "ipv4_dst": "10.0.0.12"}, (Goto("route"),),
                  feature="follow", obj="eni-2")
    d = diff({fl.key: fl for fl in (a, local, record)}, [])
    assert d.new == [a, local, record]
    assert d.made_first() == [a] and d.phases(deletes_last=False)[2] == [local, record]


def test_deletes_that_steer_are_told_from_the_others():
    """A route that goes moves traffic as a new one does: a change that deletes last makes it
    with its changes."""
    a = f(reg=1)
    local = flow("route", 105, {"reg0": 100, "ipv4_dst": "10.0.0.12"}, (Goto("dest_lookup"),), feature="overlay",
                 obj="eni-2")
    # (as the switch reports them: by table id)
    a, local = (Installed((table_id(fl.table),) + fl.key[1:], fl.cookie, None) for fl in (a, local))
    d = diff({}, [a, local])
    assert d.deletes_split() == ([local], [a])
    # a change's commits: a third takes the deletes that do not steer, or the second takes all
    assert d.phases(deletes_last=True) == ([], [local], [], [a])
    assert d.phases(deletes_last=False) == ([], [a, local], [], [])


def test_stale_flows_of_ours_are_deleted_foreign_ones_left_alone():
    a = f(reg=1)
    stale = installed(f(reg=7))
    foreign = Installed(f(reg=8).key, 0x1234, None)  # feature 0: not ours
    learned = Installed(f(reg=9).key, cookies.make("learned_gateway", "x"), None)
    d = diff({a.key: a}, [installed(a), stale, foreign, learned])
    assert d.delete == [stale] and d.add == []


def test_flows_naming_absent_ports_wait():
    a, b = f(port="here"), f(port="absent", reg=2)
    keyed, waiting = split_by_resolvable([a, b], lambda fl: None if fl is b else fl.key)
    assert list(keyed.values()) == [a] and waiting == [b]


def test_same_cookie_but_other_instructions_is_replaced():
    a = f(reg=1)
    tampered = Installed(a.key, a.cookie, None, content=b"other")
    d = diff({a.key: a}, [tampered], content=lambda fl: b"mine")
    assert d.add == [a]
    d = diff({a.key: a}, [Installed(a.key, a.cookie, None, content=b"mine")], content=lambda fl: b"mine")
    assert not d


# --- the wire form: encoded once per flow, byte for byte what os-ken's own classes make ----------

def _every_flow():
    import glob

    from vpcflow.flows.compiler import Options, compile_deployment
    from vpcflow.topology.loader import load_file

    for path in sorted(glob.glob("tests/data/*.yaml")) + ["etc/topology.yaml"]:
        dep = load_file(path)
        names = {name for sw in dep.switches.values() for name in (sw.underlay_port, "vpc-tun")}
        names |= {inst.port for inst in dep.instances.values()}
        names |= {sw.uplink.port for sw in dep.switches.values() if sw.uplink is not None}
        ports = {name: number for number, name in enumerate(sorted(n for n in names if n), 1)}
        for embed in (False, True):
            options = Options(embed_outer_source=frozenset(dep.switches) if embed else frozenset())
            for compiled in compile_deployment(dep, options).values():
                for fl in compiled.integration + compiled.underlay:
                    yield fl, ports


def test_encoded_flow_mod_is_byte_for_byte_the_osken_one():
    from vpcflow.controller import render
    from vpcflow.controller.framework import ofp, parser

    class Datapath:
        ofproto, ofproto_parser, id = ofp, parser, 1

    dp, count = Datapath(), 0
    for fl, ports in _every_flow():
        reference = render.osken_flow_mod(dp, fl, ports)
        reference.set_xid(7)
        reference.serialize()
        assert render.flow_mod(fl, ports) == render.message(reference), fl
        assert render.desired_key(fl, ports) == (reference.table_id, fl.priority,
                                                 render.match_key(render._match(fl, ports)))
        assert render.desired_content(fl, ports) == (render._instructions_bytes(reference.instructions),
                                                     fl.idle_timeout, fl.hard_timeout)
        # in a bundle, as the controller sends it
        bundle = b"".join(render.bundle_adds(1, ofp.ONF_BF_ATOMIC, [render.flow_mod(fl, ports)], 9))
        reference = parser.ONFBundleAddMsg(dp, 1, ofp.ONF_BF_ATOMIC, render.osken_flow_mod(dp, fl, ports), [])
        reference.set_xid(9)
        reference.serialize()
        assert bundle == bytes(reference.buf)
        count += 1
    assert count > 1000


def test_bundle_adds_are_osken_ones_back_to_back_with_consecutive_xids():
    from vpcflow.controller import render
    from vpcflow.controller.framework import ofp, parser

    class Datapath:
        ofproto, ofproto_parser, id = ofp, parser, 1

    dp, ports = Datapath(), {"p1": 1}
    flows = [f(reg=r) for r in range(2000)]
    delete = render.delete_strict(dp, 3, 100, render._match(flows[0], ports), flows[0].cookie)
    msgs = [render.message(delete)] + [render.flow_mod(fl, ports) for fl in flows]
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    buffers = list(render.bundle_adds(5, flags, msgs, ofp.MAX_XID - 1))
    assert len(buffers) > 1  # written in a few large writes, not one per message
    reference = []
    for i, m in enumerate([render.delete_strict(dp, 3, 100, render._match(flows[0], ports), flows[0].cookie)]
                          + [render.osken_flow_mod(dp, fl, ports) for fl in flows]):
        add = parser.ONFBundleAddMsg(dp, 5, flags, m, [])
        add.set_xid((ofp.MAX_XID - 1 + i) & ofp.MAX_XID)  # past the largest xid: 0, 1, ...
        add.serialize()
        reference.append(bytes(add.buf))
    assert b"".join(buffers) == b"".join(reference)


def test_wire_form_follows_the_port_numbers():
    from vpcflow.controller import render

    fl = f(port="p1")
    assert render.desired_key(fl, {}) is None
    one, two = render.desired_content(fl, {"p1": 1}), render.desired_content(fl, {"p1": 2})
    assert one != two and render.desired_content(fl, {"p1": 1}) == one


def test_a_diff_from_what_a_bridge_holds_equals_the_full_diff():
    """diff_since compares only the flows that are not the objects the bridge holds: after any
    mix of kept, dropped, added, re-made (equal, other object), changed and port-waiting flows,
    it gives the full diff's adds, new matches, deletes and count, and what the bridge then holds."""
    import collections
    import random

    from vpcflow.controller.sync import diff_since, held

    def key_of(fl):
        return None if fl.actions[0].port == "absent" else fl.key

    def content(fl):
        return fl.actions

    rnd = random.Random(5)
    hold = held({fl.key: fl for fl in (f(reg=i) for i in range(40))})
    for _ in range(300):
        flows = []
        for fl in hold.desired.values():
            roll = rnd.random()
            if roll < 0.1:
                continue  # dropped
            flows.append(fl if roll < 0.8 else f(reg=fl.match[0][1]) if roll < 0.9  # kept, or re-made equal
                         else f(port=rnd.choice(["p2", "p3"]), reg=fl.match[0][1]))  # or changed
        present = {fl.key for fl in flows}
        for _ in range(rnd.randrange(4)):
            fl = f(port=rnd.choice(["p1", "absent"]), reg=rnd.randrange(60))
            if fl.key not in present:
                present.add(fl.key)
                flows.append(fl)
        rnd.shuffle(flows)
        desired, waiting = split_by_resolvable(flows, key_of)
        full = diff(desired, [Installed(k, fl.cookie, fl, content(fl)) for k, fl in hold.desired.items()], content)
        quick, now, quick_waiting = diff_since(hold, flows, key_of, content)
        assert {fl.key for fl in quick.add} == {fl.key for fl in full.add}
        assert {fl.key for fl in quick.new} == {fl.key for fl in full.new}
        assert {i.key for i in quick.delete} == {i.key for i in full.delete} and quick.unchanged == full.unchanged
        assert set(map(id, quick_waiting)) == set(map(id, waiting))
        assert now.desired == desired and all(now.desired[k] is fl for k, fl in desired.items())
        assert now.features == collections.Counter(fl.feature for fl in desired.values())
        hold = now
