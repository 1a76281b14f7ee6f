"""Connection following for elastic IPs, as compiled (issue 6): the edge records and routes,
the old holder's host keeps the translation only while its remap drains."""
import dataclasses

import pytest
from netaddr import IPAddress

from tests.conftest import data_file
from vpcflow.flows import follow
from vpcflow.flows.compiler import compile_deployment
from vpcflow.flows.core import Ct, Goto, Learn, Pop, Push, Resubmit, SetField
from vpcflow.flows.pipeline import REG_SRC_ZONE
from vpcflow.topology.loader import load_file
from vpcflow.topology.model import embed

pytestmark = pytest.mark.follow

EIP = "198.51.100.30"


@pytest.fixture(scope="module")
def dep():
    return load_file(data_file("eip-follow.yaml"))


def on(dep, interface):
    eips = tuple(dataclasses.replace(e, interface=interface) for e in dep.elastic_ips)
    return dataclasses.replace(dep, elastic_ips=eips)


def table(compiled, switch, name):
    return [f for f in compiled[switch].integration if f.table == name]


def tunnel_target(f):
    return next(a.value for a in f.actions if isinstance(a, SetField) and a.field == "tun_ipv6_dst")


def mentions_eip(f):
    return EIP in repr(f.match) or EIP in repr(f.actions)


def test_the_edge_records_every_connection_to_an_elastic_ip_under_its_holder(dep):
    compiled = compile_deployment(dep)
    new = table(compiled, "edge1", "eip_new")
    learns = [a for f in new for a in f.actions if isinstance(a, Learn)]
    assert {a.table for a in learns} == {"eip_followed"}
    assert {a.obj for a in learns} == {follow.record_name(EIP, "eni-1"), follow.record_name(EIP, "eni-1") + follow.OPENING,
                                       follow.ENDED_RECORD}

    def learn_of(**match):
        f = next(f for f in new if all(dict(f.match).get(k) == v for k, v in match.items()))
        return next(a for a in f.actions if isinstance(a, Learn))
    # the real record: at an ACK (the client saw the answer), never at a FIN or RST
    going_on = learn_of(reg4=0, ip_proto=6, tcp_flags=(follow.TCP_ACK, follow.TCP_ACK | follow.TCP_FIN | follow.TCP_RST))
    assert (going_on.idle_timeout, going_on.fin_idle_timeout) == (follow.TCP_IDLE, follow.TCP_FIN_IDLE)
    # what going on leaves (a FIN or RST), one priority below it: a record that goes soon, one
    # flow for both flags
    ending = [f for f in new if dict(f.match).get("reg4") == 0 and dict(f.match).get("ip_proto") == 6
              and "tcp_flags" not in dict(f.match)]
    assert [f.priority for f in ending] == [99]
    short = next(a for a in ending[0].actions if isinstance(a, Learn))
    assert (short.idle_timeout, short.obj) == (follow.TCP_FIN_IDLE, follow.record_name(EIP, "eni-1"))
    # a SYN's record is short, and not what a drain counts
    opening = learn_of(reg4=0, ip_proto=6, tcp_flags=(follow.TCP_SYN, follow.TCP_SYN | follow.TCP_ACK))
    assert opening.idle_timeout == follow.OPENING_IDLE and opening.obj.endswith(follow.OPENING)
    # the handshake's ACK makes the real record under whoever its SYN's record names
    binding = follow.elastic_binding(EIP, "eni-1")
    completed = learn_of(reg4=binding, reg7=1, tcp_flags=(follow.TCP_ACK, follow.TCP_ACK | follow.TCP_FIN | follow.TCP_RST))
    assert completed.obj == follow.record_name(EIP, "eni-1") and completed.idle_timeout == follow.TCP_IDLE
    route = table(compiled, "edge1", "eip_route")
    assert {tunnel_target(f) for f in route} == {str(embed(dep.switches["host1"].prefix, 0, IPAddress(EIP)))}


def test_while_a_remap_drains_recorded_connections_go_to_the_old_holders_host(dep):
    moved = on(dep, "eni-2")
    draining = compile_deployment(moved, follows=[follow.ElasticFollow("r1", EIP, "eni-1")])
    host1 = str(embed(dep.switches["host1"].prefix, 0, IPAddress(EIP)))
    host2 = str(embed(dep.switches["host2"].prefix, 0, IPAddress(EIP)))
    route = {(f.priority, dict(f.match).get("reg4")): tunnel_target(f) for f in table(draining, "edge1", "eip_route")}
    assert route[(200, follow.elastic_binding(EIP, "eni-1"))] == host1
    assert {t for (prio, reg4), t in route.items() if reg4 is None} == {host2}  # new ones, and every SYN
    # a handshake whose SYN went to the old holder completes there: its ACK makes the old record
    old = follow.elastic_binding(EIP, "eni-1")
    completions = [a for f in table(draining, "edge1", "eip_new") if dict(f.match).get("reg4") == old
                   for a in f.actions if isinstance(a, Learn) and a.obj != follow.ENDED_RECORD]
    assert completions and {a.obj for a in completions} == {follow.record_name(EIP, "eni-1")}
    # the old host keeps the address's translation and its way out; the edge takes its answers
    assert any(mentions_eip(f) for f in table(draining, "host1", "substrate_in"))
    assert any(mentions_eip(f) for f in table(draining, "host1", "to_edge"))
    # a new connection a stale datapath flow still brings there is the old holder's (see nat._old_holder_keeps_stragglers)
    dnat = [f for f in table(draining, "host1", "nat_in") if mentions_eip(f)]
    assert len(dnat) == 1 and "10.0.0.11" in repr(dnat[0].actions) and dnat[0].obj.endswith(":draining")
    senders = [f for f in table(draining, "edge1", "substrate_in") if mentions_eip(f) and f.feature == "nat"]
    assert len(senders) == 2
    # complete: every flow the remap added is gone
    done = compile_deployment(moved)
    assert not any(mentions_eip(f) for f in done["host1"].integration)
    assert not any(dict(f.match).get("reg4") for f in table(done, "edge1", "eip_route"))
    assert len([f for f in table(done, "edge1", "substrate_in") if mentions_eip(f) and f.feature == "nat"]) == 1


def test_a_remap_on_one_host_changes_only_the_new_connections_translation(dep):
    moved = on(dep, "eni-4")  # vm4 is on host1 beside vm1
    draining = compile_deployment(moved, follows=[follow.ElasticFollow("r1", EIP, "eni-1")])
    dnat = [f for f in table(draining, "host1", "nat_in") if mentions_eip(f)]
    assert len(dnat) == 1 and "10.0.0.14" in repr(dnat[0].actions)
    assert len([f for f in table(draining, "edge1", "substrate_in") if mentions_eip(f) and f.feature == "nat"]) == 1


def test_an_interface_moved_with_following_takes_its_elastic_ip_along_at_once():
    """While the move drains, the record's old binding only finishes its connections: the
    elastic IP's traffic goes to where the interface is now (etc/topology.yaml: eni-web2 holds
    198.51.100.20, web2 is on host2, spare1 on host1)."""
    from vpcflow.controller import records

    dep = load_file("etc/topology.yaml")
    moved, remap = records.attach(dep, "eni-web2", {"instance": "spare1", "requester": "acme",
                                                    "follow_connections": True}, "r1")
    follows = [follow.Follow(remap.id, remap.network, ip, remap.old_instance, remap.old_switch, remap.old_port,
                             remap.interface) for ip in remap.ips]
    compiled = compile_deployment(moved, follows=follows)
    eip = "198.51.100.20"
    new_host = str(embed(dep.switches["host1"].prefix, 0, IPAddress(eip)))
    assert {tunnel_target(f) for f in table(compiled, "edge1", "eip_route")
            if dict(f.match).get("ipv4_dst") == eip} == {new_host}
    dnat = [f for f in table(compiled, "host1", "nat_in") if dict(f.match).get("ipv4_dst") == eip]
    assert len(dnat) == 1 and "10.0.0.12" in repr(dnat[0].actions)
    assert not [f for f in table(compiled, "host2", "nat_in") if dict(f.match).get("ipv4_dst") == eip]


def test_records_stop_at_the_senders_fin_or_rst(dep):
    """A packet of a connection whose sender has sent FIN or RST is not recorded as going on. A
    host knows it from its conntrack (ct_label bit ENDED, set in the sender's zone): such a
    packet makes only the one-second record. The edge learns a marker at the FIN or RST, above a
    SYN's record and below the records, that stops the lookup with reg4 = ENDED_BINDING."""
    compiled = compile_deployment(dep)
    marks = Ct(REG_SRC_ZONE, "route", commit=True, label_bit=follow.ENDED_BIT)
    for switch, name in (("host1", "follow_new"), ("edge1", "eip_new")):
        new = table(compiled, switch, name)

        def learning(idle):
            return [f for f in new if any(isinstance(a, Learn) and a.idle_timeout == idle for a in f.actions)]
        going_on = learning(follow.TCP_IDLE)
        label_clear = [f for f in going_on if dict(f.match).get("ct_label") == (0, follow.ENDED)]
        assert going_on and label_clear == (going_on if switch == "host1" else []), switch
        # every flow that makes the short record marks the connection ended, and so does a
        # recorded connection's FIN or RST (on a host, the first one only: the label still clear)
        short, recorded = learning(follow.TCP_FIN_IDLE), [f for f in new if f.obj == "ended"]
        assert short and sorted(dict(f.match)["tcp_flags"] for f in recorded) == [
            (follow.TCP_FIN, follow.TCP_FIN), (follow.TCP_RST, follow.TCP_RST)], switch
        for f in short + recorded:
            if switch == "host1":
                assert f.actions[-1] == marks and (f in short or dict(f.match)["ct_label"] == (0, follow.ENDED))
            else:
                marker = next(a for a in f.actions if isinstance(a, Learn) and a.obj == follow.ENDED_RECORD)
                assert follow.OPENING_PRIORITY < marker.priority < 100 and marker.idle_timeout == follow.ENDED_IDLE
                assert any(spec.kind == "load" and spec.dst == "reg4" and spec.src == follow.ENDED_BINDING
                           for spec in marker.specs)
        # nothing else goes through conntrack (the edge has none for elastic IPs)
        assert not any(isinstance(a, Ct) for f in new if switch == "edge1" or f not in short + recorded
                       for a in f.actions), switch


def _run_stack(actions, fields):
    """The fields at each Resubmit, and at the end, as Open vSwitch's action stack leaves them."""
    fields, stack, looked_up = dict(fields), [], []
    for a in actions:
        if isinstance(a, Push):
            stack.append(fields[a.field])
        elif isinstance(a, Pop):
            fields[a.field] = stack.pop()
        elif isinstance(a, Resubmit):
            looked_up.append((a.table, dict(fields)))
    assert not stack
    return looked_up, fields


def test_a_received_rst_is_looked_up_as_its_connections_other_direction(dep):
    """On a host where the receiver's conntrack begins, and at the edge where an elastic IP's
    holder sends out: the RST is looked up among the records with its addresses and ports
    swapped (the record there takes its FIN timeout), then goes on as it came."""
    compiled = compile_deployment(dep)
    packet = {"ipv4_src": "10.0.0.12", "ipv4_dst": "10.0.0.11", "tcp_src": 7100, "tcp_dst": 40000}
    reverse = {"ipv4_src": "10.0.0.11", "ipv4_dst": "10.0.0.12", "tcp_src": 40000, "tcp_dst": 7100}
    rst = (follow.TCP_RST, follow.TCP_RST)
    (host,) = [f for f in table(compiled, "host1", "ingress_acl") if dict(f.match).get("tcp_flags") == rst]
    assert all(host.priority > f.priority for f in table(compiled, "host1", "ingress_acl") if f is not host)
    (conntrack,) = [f for f in table(compiled, "host1", "ingress_acl") if f.obj == "conntrack"]
    assert host.actions[-1:] == conntrack.actions  # and on to the receiver's conntrack
    assert _run_stack(host.actions, packet) == ([("followed", reverse)], packet)
    edge = table(compiled, "edge1", "substrate_in")
    for f in [f for f in edge if f.feature == "nat" and mentions_eip(f)]:
        (ends,) = [g for g in edge if g.priority > f.priority and dict(g.match) == {**dict(f.match), **{
            "ip_proto": 6, "tcp_flags": rst}}]
        assert ends.actions[-len(f.actions):] == f.actions  # and out, as the holder's other packets
        assert _run_stack(ends.actions, packet) == ([("eip_followed", reverse)], packet)


def test_a_syn_that_finds_an_ended_connections_marker_takes_its_place(dep):
    """At the edge a new connection on an ended one's 5-tuple finds the marker (ENDED_BINDING):
    its SYN learns its record at the marker's priority, which replaces the marker, so that the
    handshake's ACK finds the record, and the connection is followed as any other."""
    compiled = compile_deployment(dep)
    syn = (follow.TCP_SYN, follow.TCP_SYN | follow.TCP_ACK)
    (reopen,) = [f for f in table(compiled, "edge1", "eip_new")
                 if dict(f.match).get("reg4") == follow.ENDED_BINDING and dict(f.match).get("tcp_flags") == syn]
    learn = next(a for a in reopen.actions if isinstance(a, Learn))
    binding = follow.elastic_binding(EIP, "eni-1")
    assert learn.priority == follow.ENDED_PRIORITY and learn.obj.endswith(follow.OPENING)
    assert {(s.dst, s.src) for s in learn.specs if s.kind == "load"} == {("reg4", binding), ("reg7", 1)}
    assert Goto("eip_route") in reopen.actions


# --- a network's quiet records, and the flows of an address a remap or a cut moved ---------------

def two_hosts():
    return load_file(data_file("two-hosts.yaml"))


def moved_web2(follow_connections: bool):
    """eni-web2 (10.0.0.12) from web2 (host2) to spare1 (host1): the deployment and its Remap."""
    from vpcflow.controller import records

    return records.attach(two_hosts(), "eni-web2", {"instance": "spare1", "requester": "acme",
                                                    "follow_connections": follow_connections}, "r1")


def following(remap, order=1.0, old_instance=None, old_switch=None):
    return [follow.Follow(remap.id, remap.network, ip, old_instance or remap.old_instance,
                          old_switch or remap.old_switch, remap.old_port, remap.interface, order=order)
            for ip in remap.ips]


def addressed(flows):
    """The flows among these that match a destination address, by that address."""
    out = {}
    for f in flows:
        if isinstance(dict(f.match).get("ipv4_dst"), str):  # (not a network's: a masked match)
            out.setdefault(dict(f.match)["ipv4_dst"], []).append(f)
    return out


def learned_names(flows):
    return {a.obj for f in flows for a in f.actions if isinstance(a, Learn)}


def quiet_redirects(compiled, switch):
    return {dict(f.match)["ipv4_dst"]: f for f in table(compiled, switch, "route")
            if dict(f.match).get("reg4") == follow.QUIET}


def test_a_quiet_network_records_every_address_with_one_set_of_flows():
    """With no remap draining, a host's record flows do not depend on the addresses it may
    reach: one set per network, whose records carry QUIET (and go where the address lives)."""
    compiled = compile_deployment(two_hosts())
    for switch in ("host1", "host2"):
        new = table(compiled, switch, "follow_new")
        assert not addressed(new), switch
        assert learned_names(new) >= {follow.quiet_name("blue"), follow.quiet_name("red")}
        # toward the network's own addresses only: nothing through the NAT is recorded
        learning = [f for f in new if any(isinstance(a, Learn) for a in f.actions)]
        assert learning and all(dict(f.match)["ipv4_dst"] == ("10.0.0.0", "255.255.255.0") for f in learning)
        assert not quiet_redirects(compiled, switch)


def test_an_address_a_remap_moved_records_under_its_holder_and_its_quiet_records_go_to_the_old_one():
    moved, remap = moved_web2(True)
    compiled = compile_deployment(moved, follows=following(remap))
    for switch in ("host1", "host2"):
        own = addressed(table(compiled, switch, "follow_new"))
        assert set(own) == {"10.0.0.12"}, switch  # the moved address alone has flows of its own
        assert learned_names(own["10.0.0.12"]) >= {follow.record_name("10.0.0.12", "spare1"),
                                                   follow.record_name("10.0.0.12", "web2")}
        redirect = quiet_redirects(compiled, switch)["10.0.0.12"]
        assert redirect.actions[0].value == follow.binding_id("web2") and redirect.actions[1].table == "route"
        # and that binding's route goes to web2's switch
        assert any(dict(f.match).get("reg4") == follow.binding_id("web2") for f in table(compiled, switch, "route"))


def test_the_quiet_records_of_a_chain_go_to_the_old_holder_of_its_first_remap():
    """Two remaps of one address drain (web2 on host2 -> spare1 on host1 -> spare3 on a third
    host): the records made while it was quiet were made when web2 held it, whichever remap
    came last."""
    import yaml

    from vpcflow.controller import records
    from vpcflow.topology.loader import parse

    data = yaml.safe_load(open(data_file("two-hosts.yaml")))
    data["switches"]["host3"] = {"role": "host", "dpid": 3, "prefix": "fd00:5ee0:0:3::/64"}
    data["instances"]["spare3"] = {"switch": "host3", "port": "spare3"}
    dep = parse(data)
    body = {"requester": "acme", "follow_connections": True}
    once, r1 = records.attach(dep, "eni-web2", {**body, "instance": "spare1"}, "r1")
    twice, r2 = records.attach(once, "eni-web2", {**body, "instance": "spare3"}, "r2", [r1])
    first, later = following(r1, order=1.0), following(r2, order=2.0)
    for follows in (first + later, later + first):
        compiled = compile_deployment(twice, follows=follows)
        for switch in ("host1", "host2", "host3"):
            redirect = quiet_redirects(compiled, switch)["10.0.0.12"]
            assert redirect.actions[0].value == follow.binding_id("web2"), switch
    assert follow.chain_firsts(later + first)[("blue", "10.0.0.12")].remap_id == "r1"


def test_a_cut_address_records_under_its_holder_and_its_quiet_records_stay_where_it_lives():
    """A move without following cuts the address's connections: until their quiet records are
    gone the address records under its holder (a later followed remap must not count them),
    and nothing sends them to the old holder."""
    moved, _ = moved_web2(False)
    cut = [follow.Cut("cut:eni-web2", "blue", "10.0.0.12", 1.0)]
    compiled = compile_deployment(moved, follows=cut)
    own = addressed(table(compiled, "host1", "follow_new"))
    assert set(own) == {"10.0.0.12"} and follow.record_name("10.0.0.12", "spare1") in learned_names(own["10.0.0.12"])
    assert not quiet_redirects(compiled, "host1")
    # a followed remap after the cut: the cut came first, the quiet records are still not sent on
    moved2, remap2 = moved_web2(True)
    compiled = compile_deployment(moved2, follows=cut + following(remap2, order=2.0))
    assert not quiet_redirects(compiled, "host1")


def test_a_detached_address_whose_remap_drains_records_nothing_new():
    from vpcflow.controller import records

    moved, remap = moved_web2(True)
    detached = records.detach(moved, "eni-web2", {"requester": "acme"})
    compiled = compile_deployment(detached, follows=following(remap))
    own = addressed(table(compiled, "host2", "follow_new"))["10.0.0.12"]
    assert [f.actions for f in own] == [(Goto("route"),)]
