"""The deployment-file loader: the spec's example loads, and every kind of problem is reported
with its path in the file."""
import copy
import re
from pathlib import Path

import pytest
import yaml
from netaddr import IPAddress

from vpcflow.topology import model
from vpcflow.topology.loader import DeploymentError, Problem, load_file, load_text, parse

pytestmark = pytest.mark.foundation

EXAMPLE_FILE = Path(__file__).resolve().parents[1] / "data" / "spec-example.yaml"
EXAMPLE = yaml.safe_load(EXAMPLE_FILE.read_text())


def example():
    return copy.deepcopy(EXAMPLE)


def problems_of(data) -> list[Problem]:
    with pytest.raises(DeploymentError) as caught:
        parse(data)
    return caught.value.problems


# --- Mutations of the example, addressed by the same paths the loader reports --------------------

def _steps(path: str):
    return [int(s[1:-1]) if s.startswith("[") else s for s in re.findall(r"[^.\[\]]+|\[\d+\]", path)]


def _parent(data, path: str):
    *head, last = _steps(path)
    for step in head:
        data = data[step]
    return data, last


def put(path: str, value):
    def mutate(data):
        parent, key = _parent(data, path)
        parent[key] = value
    return mutate


def drop(path: str):
    def mutate(data):
        parent, key = _parent(data, path)
        del parent[key]
    return mutate


def append(path: str, value):
    def mutate(data):
        parent, key = _parent(data, path)
        parent[key].append(value)
    return mutate


def both(*mutations):
    def mutate(data):
        for m in mutations:
            m(data)
    return mutate


BLOCK = {"owner": "host2", "ip": "198.51.100.10", "ports": "4352-4607"}
FORWARD = {"public": "198.51.100.10:8081", "interface": "eni-web2", "port": 80, "proto": "tcp"}

# (id, mutation, expected path, expected reason substring)
CASES = [
    # unknown keys, at every level
    ("top-level key", put("switchs", {}), "switchs", "unknown key"),
    ("switch key", put("switches.host1.prfix", "x"), "switches.host1.prfix", "unknown key"),
    ("uplink key", put("switches.edge1.uplink.gw", "x"), "switches.edge1.uplink.gw", "unknown key"),
    ("network key", put("networks.blue.vni", 1), "networks.blue.vni", "unknown key"),
    ("instance key", put("instances.web1.host", "x"), "instances.web1.host", "unknown key"),
    ("interface key", put("interfaces.eni-web1.ip", "x"), "interfaces.eni-web1.ip", "unknown key"),
    ("group key", put("security_groups.web.ingres", []), "security_groups.web.ingres", "unknown key"),
    ("rule key", put("security_groups.web.ingress[0].form", "x"),
     "security_groups.web.ingress[0].form", "unknown key"),
    ("egress rule uses from", both(drop("security_groups.web.egress[0].to"),
                                   put("security_groups.web.egress[0].from", "0.0.0.0/0")),
     "security_groups.web.egress[0].from", "unknown key"),
    ("authorization key", put("authorizations[0].port", "1"), "authorizations[0].port", "unknown key"),
    ("nat key", put("nat.block_bit", 8), "nat.block_bit", "unknown key"),
    ("block key", put("nat.blocks[0].port", "1"), "nat.blocks[0].port", "unknown key"),
    ("forward key", put("nat.forwards[0].to", "x"), "nat.forwards[0].to", "unknown key"),
    ("elastic ip key", put("elastic_ips[0].eni", "x"), "elastic_ips[0].eni", "unknown key"),
    # missing required keys
    ("missing version", drop("version"), "version", "missing required key"),
    ("missing dpid", drop("switches.host1.dpid"), "switches.host1.dpid", "missing required key"),
    ("missing cidr", drop("networks.blue.cidr"), "networks.blue.cidr", "missing required key"),
    ("missing port", drop("instances.web1.port"), "instances.web1.port", "missing required key"),
    ("missing ips", drop("interfaces.eni-web1.ips"), "interfaces.eni-web1.ips", "missing required key"),
    ("missing proto", drop("security_groups.web.ingress[0].proto"),
     "security_groups.web.ingress[0].proto", "missing required key"),
    ("missing block ports", drop("nat.blocks[0].ports"), "nat.blocks[0].ports", "missing required key"),
    ("missing uplink ip", drop("switches.edge1.uplink.ip"), "switches.edge1.uplink.ip", "missing"),
    # wrong types
    ("section not a mapping", put("networks", ["blue"]), "networks", "must be a mapping"),
    ("item not a mapping", put("switches.host1", "host"), "switches.host1", "must be a mapping"),
    ("name not a string", lambda data: data["networks"].update({7: {"id": 7, "entity": "x",
                                                                    "cidr": "10.7.0.0/24"}}),
     "networks.7", "name must be a non-empty string"),
    ("id not an integer", put("networks.blue.id", "100"), "networks.blue.id", "must be an integer"),
    ("id is a boolean", put("networks.blue.id", True), "networks.blue.id", "must be an integer"),
    ("ips not a list", put("interfaces.eni-web1.ips", "10.0.0.11"), "interfaces.eni-web1.ips",
     "must be a list"),
    ("empty ips", put("interfaces.eni-web1.ips", []), "interfaces.eni-web1.ips", "at least one"),
    ("flag not a boolean", put("interfaces.eni-web1.source_dest_check", "yes"),
     "interfaces.eni-web1.source_dest_check", "true or false"),
    ("entity not a string", put("networks.blue.entity", 5), "networks.blue.entity", "string"),
    ("rules not a list", put("security_groups.web.ingress", {"proto": "tcp"}),
     "security_groups.web.ingress", "must be a list"),
    ("block_bits not an integer", put("nat.block_bits", "8"), "nat.block_bits", "integer"),
    # version
    ("version 2", put("version", 2), "version", "must be 1"),
    # addresses and CIDRs
    ("bad cidr", put("networks.blue.cidr", "10.0.0.0/33"), "networks.blue.cidr", "not a CIDR"),
    ("cidr without length", put("networks.blue.cidr", "10.0.0.0"), "networks.blue.cidr", "not a CIDR"),
    ("cidr host bits", put("networks.blue.cidr", "10.0.0.5/24"), "networks.blue.cidr", "host bits"),
    ("network too small", put("networks.red.cidr", "10.0.0.8/31"), "networks.red.cidr", "too small"),
    ("bad address", put("interfaces.eni-web1.ips", ["10.0.0.300"]), "interfaces.eni-web1.ips[0]",
     "not an IPv4 address"),
    ("outside cidr", put("interfaces.eni-web2.ips", ["10.1.0.5"]), "interfaces.eni-web2.ips[0]",
     "address 10.1.0.5 is outside network blue (10.0.0.0/24)"),
    ("network address", put("interfaces.eni-web2.ips", ["10.0.0.0"]), "interfaces.eni-web2.ips[0]",
     "network address"),
    ("broadcast address", put("interfaces.eni-web2.ips", ["10.0.0.255"]), "interfaces.eni-web2.ips[0]",
     "broadcast address"),
    ("gateway address", put("interfaces.eni-web2.ips", ["10.0.0.1"]), "interfaces.eni-web2.ips[0]",
     "gateway"),
    ("address twice in a network", put("interfaces.eni-web2.ips", ["10.0.0.12", "10.0.0.11"]),
     "interfaces.eni-web2.ips[1]", "already used in network blue by interfaces.eni-web1.ips[0]"),
    ("address twice in one interface", put("interfaces.eni-web1.ips", ["10.0.0.11", "10.0.0.11"]),
     "interfaces.eni-web1.ips[1]", "already used"),
    ("rule cidr is IPv6", put("security_groups.web.ingress[0].from", "::/0"),
     "security_groups.web.ingress[0].from", "IPv4"),
    ("uplink ip", put("switches.edge1.uplink.gateway_ip", "203.0.113"),
     "switches.edge1.uplink.gateway_ip", "not an IPv4 address"),
    ("uplink ip is the gateway", put("switches.edge1.uplink.ip", "203.0.113.1"),
     "switches.edge1.uplink.ip", "gateway"),
    # network ids
    ("network id twice", put("networks.red.id", 100), "networks.red.id", "already used by network blue"),
    ("network id over 24 bits", put("networks.blue.id", 1 << 24), "networks.blue.id", "24 bits"),
    ("network id 0", put("networks.blue.id", 0), "networks.blue.id", "reserved"),
    # switches
    ("role", put("switches.host1.role", "router"), "switches.host1.role", "host or edge"),
    ("dpid twice", put("switches.host2.dpid", 1), "switches.host2.dpid", "already used by switch host1"),
    ("dpid string", put("switches.host2.dpid", "zz"), "switches.host2.dpid", "not an integer"),
    ("dpid 0", put("switches.host2.dpid", 0), "switches.host2.dpid", "outside"),
    ("dpid top bit", put("switches.host2.dpid", 1 << 63), "switches.host2.dpid", "underlay"),
    ("prefix twice", put("switches.host2.prefix", "fd00:5ee0:0:1::/64"), "switches.host2.prefix",
     "already used by switch host1"),
    ("prefixes overlap", put("switches.host2.prefix", "fd00:5ee0:0:1:8000::/72"), "switches.host2.prefix",
     "overlaps the prefix of switch host1"),
    ("prefix longer than /72", put("switches.host1.prefix", "fd00:5ee0:0:1::/80"), "switches.host1.prefix",
     "longer than /72"),
    ("prefix not IPv6", put("switches.host1.prefix", "10.0.0.0/8"), "switches.host1.prefix", "IPv6"),
    ("edge without uplink", drop("switches.edge1.uplink"), "switches.edge1.uplink", "needs an uplink"),
    ("host with uplink", put("switches.host1.uplink", {"port": "up", "gateway_ip": "203.0.113.1",
                                                       "ip": "203.0.113.3"}),
     "switches.host1.uplink", "only an edge"),
    ("switch name", put("switches.a-very-long-switch-name", {"role": "host", "dpid": 9,
                                                             "prefix": "fd00:5ee0:0:9::/64"}),
     "switches.a-very-long-switch-name", "Linux interface name"),
    ("bridge name", put("switches.host1.bridge", "br int"), "switches.host1.bridge", "Linux interface name"),
    ("bridge names clash", put("switches.host1.underlay_bridge", "br-int"),
     "switches.host1.underlay_bridge", "already used by its bridge"),
    ("bridge named as the tunnel port", put("switches.host1.bridge", model.TUNNEL_PORT),
     "switches.host1.bridge", "tunnel port"),
    # instances
    ("instance name", put("instances.web1/x", {"switch": "host1", "port": "p9"}), "instances.web1/x",
     "Linux interface name"),
    ("instance port name", put("instances.web1.port", "web-port-number-1"), "instances.web1.port",
     "Linux interface name"),
    ("instance on an edge", put("instances.web1.switch", "edge1"), "instances.web1.switch",
     "host switches"),
    ("port twice on a switch", put("instances.db1.port", "web2"), "instances.db1.port",
     "already used by instance web2"),
    ("port is the bridge", put("instances.db1.port", "br-int"), "instances.db1.port", "its bridge"),
    # references
    ("unknown switch", put("instances.web1.switch", "host9"), "instances.web1.switch",
     "switch 'host9' does not exist"),
    ("unknown network", put("interfaces.eni-web1.network", "green"), "interfaces.eni-web1.network",
     "network 'green' does not exist"),
    ("unknown instance", put("interfaces.eni-web1.attach_to", "web9"), "interfaces.eni-web1.attach_to",
     "instance 'web9' does not exist"),
    ("unknown group", put("interfaces.eni-web1.security_groups", ["web", "app"]),
     "interfaces.eni-web1.security_groups[1]", "security group 'app' does not exist"),
    ("unknown from_group", put("security_groups.web.ingress[1].from_group", "app"),
     "security_groups.web.ingress[1].from_group", "does not exist"),
    ("unknown to_group", put("security_groups.web.egress[0]", {"proto": "any", "to_group": "app"}),
     "security_groups.web.egress[0].to_group", "does not exist"),
    ("unknown authorization to", put("authorizations[0].to", "green"), "authorizations[0].to",
     "does not exist"),
    ("unknown authorization from", put("authorizations[0].from", "green"), "authorizations[0].from",
     "does not exist"),
    ("unknown block owner", put("nat.blocks[0].owner", "host9"), "nat.blocks[0].owner",
     "neither a switch nor an interface"),
    ("block owned by an edge", put("nat.blocks[0].owner", "edge1"), "nat.blocks[0].owner", "edge switch"),
    ("unknown forward interface", put("nat.forwards[0].interface", "eni-x"), "nat.forwards[0].interface",
     "does not exist"),
    ("unknown elastic ip interface", put("elastic_ips[0].interface", "eni-x"), "elastic_ips[0].interface",
     "does not exist"),
    # MACs
    ("bad mac", put("interfaces.eni-web1.mac", "02:00:00:00:00"), "interfaces.eni-web1.mac",
     "not a MAC address"),
    ("multicast mac", put("interfaces.eni-web1.mac", "01:00:5e:00:00:01"), "interfaces.eni-web1.mac",
     "multicast"),
    ("unquoted mac", put("interfaces.eni-web1.mac", 9331200011), "interfaces.eni-web1.mac", "quoted"),
    ("mac twice", put("interfaces.eni-web2.mac", "02:00:00:00:00:11"), "interfaces.eni-web2.mac",
     "already used by interface eni-web1"),
    ("uplink mac", put("switches.edge1.uplink.mac", "ff:ff:ff:ff:ff:ff"), "switches.edge1.uplink.mac",
     "multicast"),
    # protocols and ports
    ("proto", put("security_groups.web.ingress[0].proto", "sctp"), "security_groups.web.ingress[0].proto",
     "one of tcp, udp, icmp, any"),
    ("ports with icmp", put("security_groups.web.ingress[2].ports", "1"),
     "security_groups.web.ingress[2].ports", "tcp and udp only"),
    ("ports with any", put("authorizations[0].proto", "any"), "authorizations[0].ports", "tcp and udp only"),
    ("ports reversed", put("security_groups.web.ingress[0].ports", "90-80"),
     "security_groups.web.ingress[0].ports", "low port first"),
    ("port 0 in a rule", put("security_groups.web.ingress[0].ports", 0),
     "security_groups.web.ingress[0].ports", "1..65535"),
    ("port over 65535", put("authorizations[0].ports", "70000"), "authorizations[0].ports", "1..65535"),
    ("ports not a range", put("authorizations[0].ports", "80,443"), "authorizations[0].ports",
     "not a port or a range"),
    ("both from and from_group", put("security_groups.web.ingress[1].from", "10.0.0.0/8"),
     "security_groups.web.ingress[1]", "exactly one of from and from_group"),
    ("neither to nor to_group", drop("security_groups.web.egress[0].to"), "security_groups.web.egress[0]",
     "exactly one of to and to_group"),
    ("authorization within one network", put("authorizations[0].to", "blue"), "authorizations[0].to",
     "within network blue"),
    # NAT
    ("block_bits too small", put("nat.block_bits", 3), "nat.block_bits", "outside 4..16"),
    ("block_bits too large", put("nat.block_bits", 17), "nat.block_bits", "outside 4..16"),
    ("public ip twice", append("nat.public_ips", "198.51.100.10"), "nat.public_ips[2]", "listed twice"),
    ("reserved port range", put("nat.reserved_ports", ["1024-0"]), "nat.reserved_ports[0]", "low port first"),
    ("blocks overlap", append("nat.blocks", dict(BLOCK, ports="4300-4400")), "nat.blocks[1].ports",
     "overlap nat.blocks[0]"),
    ("block on a reserved port", put("nat.blocks[0].ports", "1000-1100"), "nat.blocks[0].ports",
     "reserved ports 0-1023"),
    ("block outside 1..65535", put("nat.blocks[0].ports", "65000-70000"), "nat.blocks[0].ports", "1..65535"),
    ("block ip not public", put("nat.blocks[0].ip", "198.51.100.99"), "nat.blocks[0].ip",
     "not one of nat.public_ips"),
    ("forward inside a block", put("nat.forwards[0].public", "198.51.100.10:4100"), "nat.forwards[0].public",
     "inside the NAT block nat.blocks[0] (4096-4351)"),
    ("forward ip not public", put("nat.forwards[0].public", "198.51.100.99:80"), "nat.forwards[0].public",
     "not one of nat.public_ips"),
    ("forward twice", append("nat.forwards", dict(FORWARD, public="198.51.100.10:8080")),
     "nat.forwards[1].public", "already forwarded by nat.forwards[0]"),
    ("forward without port", put("nat.forwards[0].public", "198.51.100.10"), "nat.forwards[0].public",
     "address and port"),
    ("forward proto", put("nat.forwards[0].proto", "icmp"), "nat.forwards[0].proto", "tcp or udp"),
    ("forward port range", put("nat.forwards[0].port", "80-81"), "nat.forwards[0].port", "single port"),
    # elastic IPs
    ("elastic ip twice", append("elastic_ips", {"ip": "198.51.100.20", "interface": "eni-web2"}),
     "elastic_ips[1].ip", "already an elastic IP at elastic_ips[0]"),
    ("elastic ip is a nat ip", put("elastic_ips[0].ip", "198.51.100.11"), "elastic_ips[0].ip",
     "NAT public address"),
    ("two elastic ips on one interface", append("elastic_ips", {"ip": "198.51.100.21",
                                                                "interface": "eni-web1"}),
     "elastic_ips[1].interface", "already has elastic IP 198.51.100.20"),
]


@pytest.mark.parametrize("mutate, path, reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problem_is_reported_with_its_path(mutate, path, reason):
    data = example()
    mutate(data)
    problems = problems_of(data)
    assert any(p.path == path and reason in p.message for p in problems), problems


# --- The example and what the loader builds from it ----------------------------------------------

def test_spec_example_loads():
    deployment = load_file(EXAMPLE_FILE)
    assert list(deployment.switches) == ["host1", "host2", "edge1"]  # file order
    assert deployment.switches["host1"].dpid == 1
    assert deployment.switches["edge1"].dpid == 0xE1
    assert deployment.networks["red"].id == 200
    assert deployment.interfaces["eni-web1"].mac == "02:00:00:00:00:11"
    assert deployment.instances["db1"].switch == "host2"


def test_spec_embedding_example():
    deployment = load_file(EXAMPLE_FILE)
    host2, blue = deployment.switches["host2"], deployment.networks["blue"]
    assert str(model.embed(host2.prefix, blue.id, IPAddress("10.0.0.3"))) == "fd00:5ee0:0:2:0:64:a00:3"


def test_missing_macs_are_derived():
    deployment = load_file(EXAMPLE_FILE)
    assert deployment.interfaces["eni-web2"].mac == model.derived_mac("eni-web2")
    assert deployment.switches["edge1"].uplink.mac == model.derived_mac("edge1-uplink")


def test_values_are_model_values():
    deployment = load_file(EXAMPLE_FILE)
    web = deployment.security_groups["web"]
    assert web.ingress[1] == model.Rule("tcp", model.PortRange(8000, 8999), None, "web")
    assert web.egress == (model.Rule("any", None, model.IPNetwork("0.0.0.0/0"), None),)
    assert deployment.authorizations == (
        model.Authorization("blue", "red", "tcp", model.PortRange(5432, 5432)),)
    nat = deployment.nat
    assert nat.reserved_ports == (model.PortRange(0, 1023), model.PortRange(25, 25))
    # the fixed block as written, then the block allocated to the host without one (nat_alloc)
    assert nat.blocks[0] == model.NatBlock("host1", IPAddress("198.51.100.10"), model.PortRange(4096, 4351),
                                           fixed=True)
    assert [(b.owner, b.fixed) for b in nat.blocks[1:]] == [("host2", False)]
    assert nat.forwards == (model.Forward(IPAddress("198.51.100.10"), 8080, "eni-web1", 80, "tcp"),)
    assert deployment.elastic_ips == (model.ElasticIp(IPAddress("198.51.100.20"), "eni-web1"),)


def test_deployment_is_immutable():
    deployment = parse(example())
    with pytest.raises(TypeError):
        deployment.switches["host9"] = deployment.switches["host1"]
    assert isinstance(deployment.interfaces["eni-web1"].ips, tuple)


def test_optional_sections_and_fields():
    data = example()
    for section in ("security_groups", "authorizations", "nat", "elastic_ips"):
        del data[section]
    for iface in data["interfaces"].values():
        iface.pop("security_groups", None)
    data["switches"]["host1"].update(bridge="br0", underlay_bridge="br-sub", underlay_port="eth1")
    deployment = parse(data)
    assert deployment.nat == model.Nat()
    host1 = deployment.switches["host1"]
    assert (host1.bridge, host1.underlay_bridge, host1.underlay_port) == ("br0", "br-sub", "eth1")
    assert deployment.switches["host2"].bridge == model.DEFAULT_BRIDGE


def _attached_to(instance):
    return lambda d: [i.name for i, _, _ in d.attached_interfaces() if i.attach_to == instance]


@pytest.mark.parametrize("mutate, check", [
    pytest.param(put("switches.host2.dpid", "0x2"), lambda d: d.switches["host2"].dpid == 2,
                 id="dpid string"),
    pytest.param(put("security_groups.web.ingress[0].ports", 80),
                 lambda d: d.security_groups["web"].ingress[0].ports == model.PortRange(80, 80),
                 id="ports int"),
    pytest.param(put("interfaces.eni-web2.mac", "02-AB-CD-EF-00-01"),
                 lambda d: d.interfaces["eni-web2"].mac == "02:ab:cd:ef:00:01", id="mac normalised"),
    pytest.param(put("switches.edge1.uplink.mac", "02:00:00:00:00:E1"),
                 lambda d: d.switches["edge1"].uplink.mac == "02:00:00:00:00:e1", id="uplink mac"),
    pytest.param(put("nat.forwards[0].public", "198.51.100.10:80"),
                 lambda d: d.nat.forwards[0].public_port == 80, id="forward on a reserved port"),
    pytest.param(put("interfaces.eni-web1.attach_to", None),
                 lambda d: d.interfaces["eni-web1"].attach_to is None, id="attach_to null"),
    pytest.param(put("interfaces.eni-web3", {"network": "blue", "ips": ["10.0.0.13"], "attach_to": "web1"}),
                 lambda d: _attached_to("web1")(d) == ["eni-web1", "eni-web3"],
                 id="two interfaces of one network on one instance"),
    pytest.param(put("nat.blocks[0].owner", "eni-web2"), lambda d: d.nat.blocks[0].owner == "eni-web2",
                 id="block owned by an interface"),
])
def test_accepted_variants(mutate, check):
    data = example()
    mutate(data)
    assert check(parse(data))


# --- Reporting --------------------------------------------------------------------------------------

def test_every_problem_is_reported():
    data = example()
    data["networks"]["red"]["id"] = 100
    data["interfaces"]["eni-web2"]["ips"] = ["10.1.0.5"]
    data["switches"]["host1"]["prfix"] = "x"
    data["nat"]["blocks"][0]["ports"] = "1000-1100"
    data["authorizations"][0]["to"] = "green"
    paths = [p.path for p in problems_of(data)]
    assert sorted(paths) == sorted(["networks.red.id", "interfaces.eni-web2.ips[0]", "switches.host1.prfix",
                                    "nat.blocks[0].ports", "authorizations[0].to"])


def test_a_bad_item_does_not_cascade():
    """A switch with a bad prefix is reported once; its instances do not also say it is missing."""
    data = example()
    data["switches"]["host1"]["prefix"] = "nonsense"
    assert [p.path for p in problems_of(data)] == ["switches.host1.prefix"]


def test_problems_behind_a_bad_field_are_reported_too():
    """One bad field does not hide the item's other problems."""
    data = example()
    data["switches"]["host2"].update(prefix="fd00:5ee0:0:2::/80", dpid=1)
    data["instances"]["web1"]["switch"] = "edge1"
    del data["switches"]["edge1"]["uplink"]
    data["interfaces"]["eni-web2"].update(ips=["10.0.0.1"], security_groups=["nope"])
    paths = [p.path for p in problems_of(data)]
    assert sorted(paths) == sorted(["switches.host2.prefix", "switches.host2.dpid", "switches.edge1.uplink",
                                    "instances.web1.switch", "interfaces.eni-web2.ips[0]",
                                    "interfaces.eni-web2.security_groups[0]"])


def test_problem_and_error_text():
    reason = "address 10.1.0.5 is outside network blue (10.0.0.0/24)"
    problem = Problem("interfaces.eni-web2.ips[0]", reason)
    assert str(problem) == f"interfaces.eni-web2.ips[0]: {reason}"
    error = DeploymentError([problem, Problem("version", "must be 1, not 2")])
    assert str(error).splitlines() == [str(problem), "version: must be 1, not 2"]


@pytest.mark.parametrize("data, reason", [
    (None, "empty"),
    ([1, 2], "must be a mapping"),
])
def test_whole_file_problems(data, reason):
    problems = problems_of(data)
    assert problems[0].path == "" and reason in problems[0].message


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(DeploymentError) as caught:
        load_file(missing)
    [problem] = caught.value.problems
    assert problem.path == str(missing) and "cannot read" in problem.message


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nswitches: {host1: [\n")
    with pytest.raises(DeploymentError) as caught:
        load_file(path)
    [problem] = caught.value.problems
    assert problem.path == str(path) and "invalid YAML: line" in problem.message


def test_duplicate_yaml_keys_are_reported_with_other_problems():
    twin = "networks:\n  blue: {id: 7, entity: x, cidr: 10.9.0.0/24}"
    text = EXAMPLE_FILE.read_text().replace("networks:", twin, 1)
    text = text.replace("version: 1", "version: 2")
    with pytest.raises(DeploymentError) as caught:
        load_text(text, "f.yaml")
    messages = [str(p) for p in caught.value.problems]
    assert any("key 'blue' appears twice" in m for m in messages), messages
    assert "version: must be 1, not 2" in messages


def test_problem_free_file_raises_nothing():
    load_text(EXAMPLE_FILE.read_text())


def _node_paths(node, prefix=()):
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, child in items:
        yield prefix + (key,)
        yield from _node_paths(child, prefix + (key,))


@pytest.mark.parametrize("odd", [None, 0, True, 1.5, "", "x", [], {}, [None], {1: 2}, 1 << 70, ":80"],
                         ids=repr)
def test_odd_values_anywhere_are_problems_not_crashes(odd):
    for path in _node_paths(EXAMPLE):
        data = example()
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = copy.deepcopy(odd)
        try:
            parse(data)
        except DeploymentError as error:
            assert all(isinstance(p.path, str) and p.message for p in error.problems)
