"""The authorization compiler: minimal port matches, conjunctions instead of products, rule names."""
import pytest

from vpcflow.flows import cookies
from vpcflow.flows.authz import may_send, rule_name
from vpcflow.flows.compiler import compile_deployment
from vpcflow.flows.core import Conjunction, Ct
from vpcflow.flows.index import Index
from vpcflow.flows.portmask import range_to_masks
from vpcflow.topology.loader import parse

pytestmark = pytest.mark.authz


def deployment(members: int, ports="8000-8999"):
    return parse(_data(members, ports))


def _data(members: int, ports="8000-8999"):
    return {
        "version": 1,
        "switches": {"host1": {"role": "host", "dpid": 1, "prefix": "fd00::/64"}},
        "networks": {"blue": {"id": 100, "entity": "acme", "cidr": "10.0.0.0/16"}},
        "instances": {f"vm{i}": {"switch": "host1", "port": f"vm{i}"} for i in range(members)},
        "interfaces": {f"eni-{i}": {"network": "blue", "ips": [f"10.0.{i // 200}.{i % 200 + 10}"],
                                    "security_groups": ["web"], "attach_to": f"vm{i}", "attachers": ["acme"]}
                       for i in range(members)},
        "security_groups": {"web": {"ingress": [{"proto": "tcp", "ports": ports, "from_group": "web"}],
                                    "egress": [{"proto": "any", "to": "0.0.0.0/0"}]}},
    }


def authz_flows(dep, table):
    return [f for f in compile_deployment(dep)["host1"].integration
            if f.table == table and f.feature == "authz"]


def test_group_to_group_rules_grow_with_members_not_their_product():
    counts = {}
    for n in (10, 40):
        counts[n] = len(authz_flows(deployment(n), "ingress_rules"))
    # the class's rule flows once + one clause-2 flow per member: n interfaces of one class
    # cost n flows more than none
    assert counts[40] - counts[10] == 30


def test_interfaces_of_the_same_groups_share_their_rule_flows():
    def rules(n):
        return [f for f in authz_flows(deployment(n), "ingress_rules")
                if "ipv4_src" not in dict(f.match) and "ct_mark" not in dict(f.match) and f.priority < 200]
    # clause 1 (the class and each port pair) and the conj_id flow, once for the class: the
    # same for one interface as for five, matching the class (reg2), not an interface's zone
    assert len(rules(5)) == len(rules(1)) == len(range_to_masks(8000, 8999)) + 1
    assert {dict(f.match).get("reg2") for f in rules(5)} - {None} == {Index(deployment(5)).group_class(("web",))}
    assert not any("reg6" in dict(f.match) for f in rules(5))


def test_a_member_address_is_one_flow_carrying_every_conjunction_it_is_part_of():
    dep = parse({**_data(4), "security_groups": {
        "web": {"ingress": [{"proto": "tcp", "ports": "80", "from_group": "web"},
                            {"proto": "udp", "ports": "53", "from_group": "web"}], "egress": []}}})
    flows = authz_flows(dep, "ingress_rules")
    member = [f for f in flows if dict(f.match).get("ipv4_src") == "10.0.0.10"]
    assert len(member) == 1
    # the class's two rules on the group: two conjunctions, in one flow
    assert len({a.id for a in member[0].actions if isinstance(a, Conjunction)}) == 2 == len(member[0].actions)


def test_port_ranges_use_value_mask_pairs():
    flows = authz_flows(deployment(2, ports="1024-65535"), "ingress_rules")
    clause1 = [dict(f.match)["tcp_dst"] for f in flows
               if any(isinstance(a, Conjunction) and a.clause == 1 for a in f.actions)]
    # 1024-65535 needs six pairs; the two interfaces are of one class, which has them once
    assert len(clause1) == 6
    pairs = set(clause1)
    assert all(any(p & m == v for v, m in pairs) == (p >= 1024) for p in range(65536))


def test_rule_flows_commit_with_the_rule_id_and_name_it_in_the_cookie():
    flows = authz_flows(deployment(2), "ingress_rules")
    commits = [f for f in flows if any(isinstance(a, Ct) and a.commit for a in f.actions)]
    assert commits and all(f.obj == rule_name("web", "ingress", 0) for f in commits)
    assert all(cookies.feature_of(f.cookie) == "authz" for f in commits)
    marks = {a.mark for f in commits for a in f.actions if isinstance(a, Ct)}
    assert len(marks) == 1 and 0 not in marks


def test_reachability_needs_both_ends(spec_example):
    ix = Index(spec_example)
    by_iface = {ep.interface.name: ep for ep in ix.endpoints}
    web1, web2 = by_iface["eni-web1"], by_iface["eni-web2"]
    assert may_send(ix, web1, web2)  # web egress any; web ingress 80 from anywhere
