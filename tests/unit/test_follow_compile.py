"""Connection following for elastic IPs, as compiled (issue 6): the edge records and routes,
the old holder's host keeps the translation only while its remap drains."""
import dataclasses

import pytest
from netaddr import IPAddress

from tests.conftest import data_file
from vpcflow.flows import follow
from vpcflow.flows.compiler import compile_deployment
from vpcflow.flows.core import Learn, SetField
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
    learns = [a for f in table(compiled, "edge1", "eip_new") for a in f.actions if isinstance(a, Learn)]
    assert {a.table for a in learns} == {"eip_followed"} and len(learns) == 2  # TCP and UDP
    assert {a.obj for a in learns} == {follow.record_name(EIP, "eni-1")}
    tcp = next(f for f in table(compiled, "edge1", "eip_new") if dict(f.match).get("ip_proto") == 6)
    # at an ACK (not at an unanswered SYN), never at a FIN or RST (a record no FIN would shorten)
    assert dict(tcp.match)["tcp_flags"] == (follow.TCP_ACK, follow.TCP_ACK | follow.TCP_FIN | follow.TCP_RST)
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
    # the old host keeps the address's translation and its way out; the edge takes its answers
    assert any(mentions_eip(f) for f in table(draining, "host1", "substrate_in"))
    assert any(mentions_eip(f) for f in table(draining, "host1", "to_edge"))
    assert not any(mentions_eip(f) for f in table(draining, "host1", "nat_in"))  # no new connection there
    senders = [f for f in table(draining, "edge1", "substrate_in") if mentions_eip(f)]
    assert len(senders) == 2
    # complete: every flow the remap added is gone
    done = compile_deployment(moved)
    assert not any(mentions_eip(f) for f in done["host1"].integration)
    assert not any(dict(f.match).get("reg4") for f in table(done, "edge1", "eip_route"))
    assert len([f for f in table(done, "edge1", "substrate_in") if mentions_eip(f)]) == 1


def test_a_remap_on_one_host_changes_only_the_new_connections_translation(dep):
    moved = on(dep, "eni-4")  # vm4 is on host1 beside vm1
    draining = compile_deployment(moved, follows=[follow.ElasticFollow("r1", EIP, "eni-1")])
    dnat = [f for f in table(draining, "host1", "nat_in") if mentions_eip(f)]
    assert len(dnat) == 1 and "10.0.0.14" in repr(dnat[0].actions)
    assert len([f for f in table(draining, "edge1", "substrate_in") if mentions_eip(f)]) == 1
