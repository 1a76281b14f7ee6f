"""The NAT compiler (issue 5): hosts translate into their block, the edge demultiplexes by
(public IP, port value/mask) without translating, and both renderers speak ct(nat)."""
import types

import pytest
from netaddr import IPAddress

from tests.conftest import data_file
from vpcflow.flows import cookies, nat, pipeline
from vpcflow.flows.compiler import Options, compile_deployment
from vpcflow.flows.core import Ct, CtNat, Goto, Learn, Output, SetField, ct_flags, flow
from vpcflow.flows.ofctl import action_text, render
from vpcflow.flows.portmask import covers, range_to_masks
from vpcflow.topology.loader import load_file
from vpcflow.topology.model import embed

pytestmark = pytest.mark.nat

PUBLIC = "198.51.100.10"
EIP = "198.51.100.20"


@pytest.fixture(scope="module")
def dep():
    return load_file(data_file("nat.yaml"))


@pytest.fixture(scope="module")
def compiled(dep):
    return compile_deployment(dep)


def block_of(dep, owner):
    return next(b for b in dep.nat.blocks if b.owner == owner)


def nat_flows(compiled, switch, table=None):
    return [f for f in compiled[switch].integration if f.feature == "nat" and (table is None or f.table == table)]


def ct_of(f) -> Ct:
    return next(a for a in f.actions if isinstance(a, Ct))


def test_every_nat_flow_fits_its_table(compiled):
    for sw in compiled.values():
        for f in sw.integration:
            pipeline.verify(f)
    assert pipeline.table_id("nat_out") == 45 and pipeline.table_id("to_edge") > pipeline.table_id("nat_snat") > 45


def test_a_host_translates_new_connections_into_its_block(dep, compiled):
    block = block_of(dep, "host1")
    commits = {(dict(f.match)["reg0"], dict(f.match)["ipv4_src"]): (f, ct_of(f))
               for f in nat_flows(compiled, "host1", "nat_snat") if any(isinstance(a, Ct) and a.commit for a in f.actions)}
    # web1 (blue) and red1 (red) share 10.0.0.11; web3 is blue's 10.0.0.13
    assert set(commits) == {(100, "10.0.0.11"), (200, "10.0.0.11"), (100, "10.0.0.13")}
    for (netid, _), (f, ct) in commits.items():
        assert ct.zone == nat.NAT_ZONE and ct.table == "to_edge"
        assert ct.nat == CtNat("src", PUBLIC, block.ports.lo, block.ports.hi)
        # only a packet of no known connection commits: +new and no network mark yet
        assert dict(f.match)["ct_state"] == ct_flags("+trk+new") and dict(f.match)["ct_mark"] == 0
        assert ct.mark == netid  # the connection remembers its network


def test_a_known_connection_passes_only_in_its_own_network(compiled):
    known = [f for f in nat_flows(compiled, "host1", "nat_snat") if Goto("to_edge") in f.actions]
    assert {(dict(f.match)["reg0"], dict(f.match)["ct_mark"]) for f in known} == {(100, 100), (200, 200)}
    miss = next(f for f in compiled["host1"].integration if f.table == "nat_snat" and f.priority == 0)
    assert miss.obj == "drop:nat_collision"


def test_an_elastic_ip_translates_its_interface_one_to_one(compiled):
    commit = next(f for f in nat_flows(compiled, "host2", "nat_snat") if dict(f.match).get("ipv4_src") == "10.0.0.21")
    assert ct_of(commit).nat == CtNat("src", EIP)  # no port range: ports kept
    assert commit.obj == "eip:198.51.100.20"
    dnat = next(f for f in nat_flows(compiled, "host2", "nat_in") if dict(f.match).get("ipv4_dst") == EIP)
    assert ct_of(dnat).nat == CtNat("dst", "10.0.0.21") and ct_of(dnat).commit


def test_a_forward_is_translated_on_the_host_of_its_interface(compiled):
    fwd = [f for f in nat_flows(compiled, "host2", "nat_in") if f.obj.startswith("forward:")]
    got = {(dict(f.match)["ip_proto"], dict(f.match).get("tcp_dst") or dict(f.match).get("udp_dst")): ct_of(f).nat
           for f in fwd}
    assert got == {(6, 8080): CtNat("dst", "10.0.0.12", 80, 80), (17, 5353): CtNat("dst", "10.0.0.12", 5353, 5353),
                   (17, 6000): CtNat("dst", "10.0.0.12", 6000, 6000)}
    # a new connection only (ct_mark 0): later packets of a known one are translated already
    assert all(dict(f.match)["ct_mark"] == 0 for f in fwd)
    known = [f for f in nat_flows(compiled, "host2", "nat_in") if Goto("nat_accept") in f.actions]
    assert {dict(f.match)["ct_mark"] for f in known} == {100}
    assert not [f for f in nat_flows(compiled, "host1", "nat_in") if f.obj.startswith("forward:")]


def test_translated_packets_go_to_the_edge_with_vni_0(dep, compiled):
    to_edge = nat_flows(compiled, "host1", "to_edge")
    assert [dict(f.match)["ipv4_src"] for f in to_edge] == [PUBLIC]
    actions = to_edge[0].actions
    assert actions[0] == SetField("tunnel_id", 0) and actions[-1] == Output("vpc-tun")
    miss = next(f for f in compiled["host1"].integration if f.table == "to_edge" and f.priority == 0)
    assert miss.obj == "drop:nat_block_full" and miss.actions == ()


def test_the_host_reverses_translation_only_from_the_edge(dep, compiled):
    entry = [f for f in nat_flows(compiled, "host1", "substrate_in")]
    edge = dep.switches["edge1"]
    assert len(entry) == 1
    m = dict(entry[0].match)
    assert m["tunnel_id"] == 0 and m["tun_ipv6_src"] == (str(edge.prefix.network), str(edge.prefix.netmask))
    assert ct_of(entry[0]) == Ct(0, "nat_in", nat=CtNat())
    accept = {dict(f.match)["ct_mark"]: f for f in nat_flows(compiled, "host1", "nat_accept")}
    assert set(accept) == {100, 200} and Goto("dest_lookup") in accept[100].actions


def test_the_edge_demultiplexes_each_block_to_its_host_without_translating(dep, compiled):
    edge = compiled["edge1"].integration
    for owner in ("host1", "host2", "host3"):
        block, host = block_of(dep, owner), dep.switches[owner]
        inbound = [f for f in edge if f.table == "uplink_in" and f.obj == nat.block_name(block)]
        for proto in ("tcp", "udp"):
            pairs = [dict(f.match)[f"{proto}_dst"] for f in inbound if f"{proto}_dst" in dict(f.match)]
            pairs = [p if isinstance(p, tuple) else (p, 0xFFFF) for p in pairs]
            assert sorted(pairs) == range_to_masks(block.ports.lo, block.ports.hi)  # the minimal cover
        for f in inbound:
            assert dict(f.match)["ipv4_dst"] == PUBLIC
            assert SetField("tun_ipv6_dst", str(embed(host.prefix, 0, IPAddress(PUBLIC)))) in f.actions
            # no translation: nothing but the tunnel fields is written
            assert {a.field for a in f.actions if isinstance(a, SetField)} == {"tunnel_id", "tun_ipv6_dst"}
    host3 = [f for f in edge if f.table == "uplink_in" and f.obj == nat.block_name(block_of(dep, "host3"))]
    assert len(host3) == 2 * 5  # 61441-61456 is not aligned: five pairs, per protocol
    allocated = [f for f in edge if f.table == "uplink_in" and f.obj == nat.block_name(block_of(dep, "host1"))]
    assert len(allocated) == 2  # aligned: one pair per protocol


def test_nothing_outside_a_block_reaches_a_host(compiled):
    edge = compiled["edge1"].integration
    drops = [f for f in edge if f.table == "uplink_in" and f.obj == "drop:nat_no_block"]
    assert {dict(f.match)["ipv4_dst"] for f in drops} == {PUBLIC, "198.51.100.11", EIP}
    assert all(f.priority < nat.PRIORITY for f in drops)


def test_the_edge_accepts_translated_packets_only_from_the_owning_host(dep, compiled):
    edge = compiled["edge1"].integration
    block = block_of(dep, "host2")
    out = [f for f in edge if f.table == "substrate_in" and f.obj == nat.block_name(block)]
    assert out and all(dict(f.match)["tun_ipv6_src"][0] == str(dep.switches["host2"].prefix.network) for f in out)
    for f in out:
        m = dict(f.match)
        value, mask = m.get("tcp_src") or m.get("udp_src")
        assert all(covers([(value, mask)], p) == (p in block.ports) for p in range(0, 65536, 7))
        assert Goto("edge_out") in f.actions
    assert any(f.obj == "drop:nat_outside_block" and dict(f.match) == {"tunnel_id": 0} for f in edge)


def test_the_edge_answers_arp_for_public_and_elastic_addresses(dep, compiled):
    edge = compiled["edge1"].integration
    answered = {dict(f.match)["arp_tpa"] for f in edge if f.table == "uplink_in" and "arp_tpa" in dict(f.match)}
    assert answered == {"203.0.113.2", PUBLIC, "198.51.100.11", EIP}


def test_icmp_echo_replies_follow_a_learned_record_and_errors_go_to_every_serving_host(dep, compiled):
    edge = compiled["edge1"].integration
    learners = [f for f in edge if any(isinstance(a, Learn) for a in f.actions)
                and f.table == "substrate_in"]
    assert learners and all(dict(f.match)["icmpv4_type"] == 8 for f in learners)
    learn = next(a for a in learners[0].actions if isinstance(a, Learn))
    assert learn.table == "nat_icmp" and cookies.feature_of(learn.cookie) == "learned_nat"
    errors = [f for f in edge if f.table == "nat_icmp" and f.feature == "nat"]
    assert sorted(dict(f.match)["icmpv4_type"] for f in errors) == [3, 11, 12]
    copies = {a.value for a in errors[0].actions if isinstance(a, SetField) and a.field == "tun_ipv6_dst"}
    assert copies == {str(embed(dep.switches[h].prefix, 0, IPAddress(PUBLIC))) for h in ("host1", "host2", "host3")}


def test_cookies_name_blocks_forwards_and_elastic_ips(dep, compiled):
    objs = {f.obj for sw in compiled.values() for f in sw.integration if f.feature == "nat"}
    assert "block:198.51.100.10:61441-61456" in objs
    assert "forward:198.51.100.10:8080/tcp" in objs and "eip:198.51.100.20" in objs
    for f in nat_flows(compiled, "edge1"):
        assert cookies.feature_of(f.cookie) == "nat"


def test_without_nat_the_overlay_path_is_unchanged(two_hosts):
    flows = compile_deployment(two_hosts)["host1"].integration
    assert not [f for f in flows if f.feature == "nat"]
    legacy = [f for f in flows if f.table == "nat_out" and f.feature == "overlay"]
    assert legacy and all(SetField("tunnel_id", dict(f.match)["reg0"]) in f.actions for f in legacy)


def test_outer_source_embedding_is_honoured_for_nat_traffic(dep):
    honoured = compile_deployment(dep, Options(embed_outer_source=frozenset({"host1"})))["host1"].integration
    to_edge = next(f for f in honoured if f.table == "to_edge" and f.feature == "nat")
    assert "NXM_NX_TUN_IPV6_SRC" in render([to_edge])


def test_ct_nat_in_ofctl_text():
    assert action_text(Ct(0, "nat_snat", nat=CtNat())) == "ct(zone=0,table=46,nat)"
    text = action_text(Ct(0, "to_edge", commit=True, mark=100, nat=CtNat("src", PUBLIC, 4096, 4351)))
    assert text == "ct(commit,zone=0,table=47,nat(src=198.51.100.10:4096-4351),exec(load:0x64->NXM_NX_CT_MARK[]))"
    assert action_text(Ct(0, "nat_accept", commit=True, nat=CtNat("dst", "10.0.0.12", 80, 80))) == \
        "ct(commit,zone=0,table=53,nat(dst=10.0.0.12:80))"


def test_ct_nat_values_are_checked():
    with pytest.raises(ValueError):
        Ct(0, nat=CtNat("src", PUBLIC))  # an address needs commit
    with pytest.raises(ValueError):
        CtNat("src")
    with pytest.raises(ValueError):
        CtNat("src", PUBLIC, 5000, 4000)


@pytest.mark.parametrize("ct_nat", [CtNat(), CtNat("src", EIP), CtNat("dst", "10.0.0.12", 80, 80),
                                    CtNat("src", PUBLIC, 4096, 4351)])
def test_openflow_ct_nat_is_padded_and_parses_back(ct_nat):
    from vpcflow.controller import render as of
    from vpcflow.controller.framework import parser

    f = flow("nat_snat", 1, {}, (Ct(0, "to_edge", commit=ct_nat.kind is not None, nat=ct_nat),),
             feature="nat", obj="x")
    wire = of._instructions_bytes(of.instructions(f, {}))
    assert len(wire) % 8 == 0
    inst = parser.OFPInstructionActions.parser(wire, 0)
    ct = inst.actions[0]
    assert ct.len % 8 == 0 and sum(a.len for a in ct.actions) % 8 == 0
    back = ct.actions[0]
    assert back.flags == {None: 0, "src": 1, "dst": 2}[ct_nat.kind]
    if ct_nat.ip:
        assert back.range_ipv4_min == ct_nat.ip
    if ct_nat.port_lo:
        assert back.range_proto_min == ct_nat.port_lo
    # what the switch reports back (these bytes, parsed) compares equal to what sync wants
    stats = types.SimpleNamespace(instructions=[inst], idle_timeout=0, hard_timeout=0)
    assert of.installed_content(stats) == of.desired_content(f, {})
