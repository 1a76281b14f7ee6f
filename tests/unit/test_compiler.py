"""The pure compiler: every flow fits the pipeline, output is deterministic, cookies name things."""
import pytest
from netaddr import IPAddress, IPNetwork

from vpcflow.flows import cookies, pipeline
from vpcflow.flows.compiler import Options, compile_deployment
from vpcflow.flows.arp import computed_reply
from vpcflow.flows.core import Ct, Goto, Load, Move, Output, SetField, flow
from vpcflow.flows.index import Index
from vpcflow.flows.ofctl import render
from vpcflow.topology.model import dummy_mac

pytestmark = pytest.mark.foundation


def all_flows(compiled):
    for sw in compiled.values():
        yield from sw.integration
        yield from sw.underlay


def test_every_flow_fits_its_table(spec_example, two_hosts):
    for dep in (spec_example, two_hosts):
        for f in all_flows(compile_deployment(dep)):
            pipeline.verify(f)


def test_verify_rejects_a_field_the_table_may_not_match():
    bad = flow("classify", 10, {"ipv4_dst": "10.0.0.1"}, (), feature="pipeline", obj="x")
    with pytest.raises(pipeline.PipelineError, match="may not match"):
        pipeline.verify(bad)


def test_verify_rejects_a_backward_or_undeclared_goto():
    with pytest.raises(pipeline.PipelineError):
        pipeline.verify(flow("route", 10, {}, (Goto("port_security"),), feature="pipeline", obj="x"))


def test_verify_rejects_a_conntrack_recirculation_out_of_turn_and_an_unknown_table():
    # (the goto check covers ct's table too; an allowed one passes)
    pipeline.verify(flow("egress_acl", 10, {}, (Ct("reg5", "egress_rules"),), feature="pipeline", obj="x"))
    with pytest.raises(pipeline.PipelineError, match="may not go to"):
        pipeline.verify(flow("egress_acl", 10, {}, (Ct("reg5", "ingress_rules"),), feature="pipeline", obj="x"))
    with pytest.raises(pipeline.PipelineError, match="unknown table"):
        pipeline.verify(flow("no_such_table", 10, {}, (), feature="pipeline", obj="x"))


def test_compile_is_deterministic(two_hosts):
    a = compile_deployment(two_hosts)
    b = compile_deployment(two_hosts)
    for name in a:
        assert render(a[name].integration) == render(b[name].integration)


def test_every_table_of_a_host_ends_in_a_counted_drop(two_hosts):
    flows = compile_deployment(two_hosts)["host1"].integration
    for table in ("classify", "port_security", "arp_responder", "route", "substrate_in", "deliver"):
        misses = [f for f in flows if f.table == table and f.priority == 0]
        assert len(misses) == 1 and misses[0].actions == ()
        assert cookies.feature_of(misses[0].cookie) == "drop"
        assert misses[0].obj == f"drop:{pipeline.table(table).miss}"


def test_cookies_name_feature_and_object(two_hosts):
    flows = compile_deployment(two_hosts)["host1"].integration
    ps = [f for f in flows if f.table == "port_security" and f.priority == 100]
    assert {f.obj for f in ps} == {"eni-web1", "eni-web3", "eni-red1"}
    for f in ps:
        assert cookies.feature_of(f.cookie) == "port_security"
        assert (f.cookie & cookies.OBJECT_MASK) >> cookies.OBJECT_SHIFT == cookies.object_hash(f.obj)
        assert cookies.is_managed(f.cookie)


def test_a_change_of_actions_changes_the_cookie_but_not_the_key():
    a = flow("deliver", 100, {"reg0": 1}, (Output("p1"),), feature="overlay", obj="eni-1")
    b = flow("deliver", 100, {"reg0": 1}, (Output("p2"),), feature="overlay", obj="eni-1")
    assert a.key == b.key and a.cookie != b.cookie
    assert a.cookie >> cookies.OBJECT_SHIFT == b.cookie >> cookies.OBJECT_SHIFT


def test_learned_features_are_never_managed():
    assert not cookies.is_managed(cookies.make("learned_gateway", "edge1:gateway"))
    assert not cookies.is_managed(0)


def test_port_security_binds_mac_and_ip_to_the_port(two_hosts):
    flows = compile_deployment(two_hosts)["host1"].integration
    web1 = two_hosts.interfaces["eni-web1"]
    ip_flows = [f for f in flows if f.table == "port_security" and dict(f.match).get("ipv4_src") == "10.0.0.11"]
    assert len(ip_flows) == 1
    m = dict(ip_flows[0].match)
    assert m["in_port"] == "web1" and m["eth_src"] == web1.mac


def answered(flows, port: str, spa: str):
    """The addresses the ARP responder answers for a request from a port and address: those of
    the class that port security loads into reg1 for it."""
    loads = {(a.dst, a.value) for f in flows if f.table == "port_security" and dict(f.match).get("in_port") == port
             and dict(f.match).get("arp_spa") == spa for a in f.actions if isinstance(a, Load)}
    classes = {v for reg, v in loads if reg == "reg1"}
    networks = {v for reg, v in loads if reg == "reg0"}
    return sorted(dict(f.match)["arp_tpa"] for f in flows
                  if f.table == "arp_responder" and f.priority == 100 and
                  (dict(f.match).get("reg1") in classes or ("reg1" not in dict(f.match)
                                                           and dict(f.match).get("reg0") in networks)))


def test_arp_answers_only_addresses_of_the_network_and_its_gateway(two_hosts):
    flows = compile_deployment(two_hosts)["host1"].integration
    # its blue peers and the gateway; not red's 10.0.0.13 twin (same address, other class); its
    # own address is dropped before (a gratuitous request)
    assert answered(flows, "web1", "10.0.0.11") == ["10.0.0.1", "10.0.0.11", "10.0.0.12", "10.0.0.13"]
    assert answered(flows, "web1", "10.0.0.12") == []  # web1 asking from another's address
    assert "10.0.0.11" not in answered(flows, "red1", "10.0.0.13")
    own = next(f for f in flows if f.table == "arp_responder" and f.priority == 110
               and dict(f.match).get("arp_tpa") == "10.0.0.11")
    assert own.actions == ()
    replies = [f for f in flows if f.table == "arp_responder" and f.priority == 100]
    assert replies and all(f.actions == computed_reply() for f in replies)


def test_the_computed_arp_reply_is_the_dummy_mac_of_the_requested_address():
    # the reply's actions, applied to a request as Open vSwitch applies them (moves and loads on
    # the fields' bits), give the dummy MAC of the requested address and swap the addresses
    fields = {"eth_src": 0x02AA00000001, "eth_dst": 0xFFFFFFFFFFFF, "arp_op": 1, "arp_sha": 0x02AA00000001,
              "arp_spa": int(IPAddress("10.0.0.11")), "arp_tha": 0, "arp_tpa": int(IPAddress("10.0.0.12"))}
    out = None
    for a in computed_reply():
        if isinstance(a, Move):
            value = (fields[a.src] >> a.src_ofs) & ((1 << a.width) - 1)
            keep = fields[a.dst] & ~(((1 << a.width) - 1) << a.dst_ofs)
            fields[a.dst] = keep | (value << a.dst_ofs)
        elif isinstance(a, Load):
            keep = fields[a.dst] & ~(((1 << a.width) - 1) << a.ofs)
            fields[a.dst] = keep | (a.value << a.ofs)
        else:
            out = a
    mac = int(dummy_mac(IPAddress("10.0.0.12")).replace(":", ""), 16)
    assert fields["eth_src"] == fields["arp_sha"] == mac
    assert fields["eth_dst"] == fields["arp_tha"] == 0x02AA00000001
    assert fields["arp_op"] == 2
    assert fields["arp_spa"] == int(IPAddress("10.0.0.12")) and fields["arp_tpa"] == int(IPAddress("10.0.0.11"))
    assert out == Output("IN_PORT")


def test_same_cidr_in_two_networks_stays_apart(two_hosts):
    flows = compile_deployment(two_hosts)["host1"].integration
    route = {}  # what a packet to (network, address) takes: the highest route flow for it
    for f in sorted((f for f in flows if f.table == "route" and f.priority >= 100), key=lambda f: f.priority):
        route[(dict(f.match)["reg0"], dict(f.match).get("ipv4_dst"))] = f
    # 10.0.0.13 is web3 (blue, local) and red1 (red, local); 10.0.0.12 is web2/red2 on host2
    assert route[(100, "10.0.0.13")].actions == (Goto("dest_lookup"),)
    tun = {a.field: a.value for a in route[(200, "10.0.0.12")].actions if isinstance(a, SetField)}
    assert tun["tunnel_id"] == 200
    assert tun["tun_ipv6_dst"] == "fd00:5ee0:0:2:0:c8:a00:c"


def test_outer_source_is_embedded_only_where_ovs_honours_it(two_hosts):
    plain = compile_deployment(two_hosts)["host1"].integration
    honoured = compile_deployment(two_hosts, Options(embed_outer_source=frozenset({"host1"})))["host1"].integration
    text_plain, text_honoured = render(plain), render(honoured)
    assert "TUN_IPV6_SRC" not in text_plain
    assert "NXM_NX_TUN_IPV6_SRC[0..31]" in text_honoured


def test_underlay_readdresses_the_prefix_to_the_switch(two_hosts):
    ul = compile_deployment(two_hosts)["host2"].underlay
    decap = next(f for f in ul if f.priority == 100)
    m = dict(decap.match)
    assert m["ipv6_dst"] == ("fd00:5ee0:0:2::", "ffff:ffff:ffff:ffff::")
    assert SetField("ipv6_dst", "fd00:5ee0:0:2::1") in decap.actions
    assert IPNetwork("fd00:5ee0:0:2::/64")


def test_ofctl_text_names_ports(two_hosts):
    text = render(compile_deployment(two_hosts)["host1"].integration)
    assert "in_port=web1" in text and "output:web3" in text and "output:vpc-tun" in text
    assert all(line.startswith("table=") for line in text.splitlines())


def test_no_endpoint_of_a_switch_is_accepted_from_the_substrate(two_hosts):
    # the accepts are shared by every switch of the network, its own endpoints' too: a packet
    # from the switch's own prefix is dropped above them
    flows = compile_deployment(two_hosts)["host1"].integration
    own_prefix = str(two_hosts.switches["host1"].prefix.network)
    accepts = [f for f in flows if f.table == "substrate_in" and f.actions
               and dict(f.match).get("tun_ipv6_src", ("",))[0] == own_prefix]
    drop = [f for f in flows if f.table == "substrate_in" and not f.actions
            and dict(f.match).get("tun_ipv6_src", ("",))[0] == own_prefix]
    assert accepts and len(drop) == 1 and drop[0].priority > max(f.priority for f in accepts)
    assert len(drop[0].match) == 1 and drop[0].obj == "drop:substrate_spoofed"


def test_the_arp_responder_answers_exactly_what_each_asker_may_reach():
    """Classes, their runs and the network's common answers together give every asker what seed
    004 says: the addresses of its network it may talk to either way (authz.may_send), and the
    gateway where it talks outside. Checked for every asker of a generated deployment (groups
    with address ranges, several classes per network)."""
    from bench import generate
    from vpcflow.flows.authz import may_send, talks_outside
    from vpcflow.topology.loader import parse

    dep = parse(generate.generate(160, 16, 20, 4))
    ix = Index(dep)
    compiled = compile_deployment(dep)
    checked = 0
    for sw in ix.hosts:
        flows = compiled[sw.name].integration
        for src in ix.by_switch.get(sw.name, ()):
            expected = {str(p.ip) for p in ix.by_network[src.network.name]
                        if may_send(ix, src, p) or may_send(ix, p, src)}
            if talks_outside(ix, src.interface, src.network.cidr):
                expected.add(str(src.network.gateway_ip))
            port = dep.instances[src.interface.attach_to].port
            assert set(answered(flows, port, src.ip_text)) == expected, (sw.name, src.interface.name)
            checked += 1
    assert checked == 160 + sum(1 for i in dep.interfaces.values() if len(i.ips) > 1)
