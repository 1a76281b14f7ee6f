"""The embedded-address overlay across hosts (issue 3), with real traffic between namespaces,
each simulated host running its own Open vSwitch."""
import os

import pytest
from netaddr import IPAddress
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.conftest import data_file, require_system
from vpcflow.harness.controller import wait_for
from vpcflow.harness.forge import geneve_frame
from vpcflow.topology.model import embed

pytestmark = pytest.mark.overlay


@pytest.fixture(scope="module")
def lab():
    require_system()
    from vpcflow.harness.lab import Lab

    with Lab(data_file("two-hosts.yaml"), tag="vfo") as lab:
        for name in ("web2", "red2"):
            lab.server(lab.host(name), 7000, name=name)
            lab.server(lab.host(name), 7000, proto="udp", name=name)
        yield lab


def substrate_link(lab, switch):
    return f"s{lab.switches[switch].index}"


def test_ping_tcp_udp_across_hosts(lab):
    web1 = lab.host("web1")
    assert lab.ping(web1, "10.0.0.12", count=3) == 3
    assert lab.client(web1, "10.0.0.12", 7000, "tcp") == "ok web2"
    assert lab.client(web1, "10.0.0.12", 7000, "udp") == "ok web2"


def test_two_tenants_with_one_cidr_stay_apart_across_hosts(lab):
    # 10.0.0.12 is web2 (blue) and red2 (red), both on host2.
    assert lab.client(lab.host("red1"), "10.0.0.12", 7000, "tcp") == "ok red2"
    assert lab.client(lab.host("web1"), "10.0.0.12", 7000, "udp") == "ok web2"
    assert lab.client(lab.host("red1"), "10.0.0.11", 7000, "tcp", timeout=1).startswith("fail")


def test_outer_headers_carry_the_embedded_addresses_and_network_id(lab):
    host1 = lab.dep.switches["host1"]
    host2 = lab.dep.switches["host2"]
    with lab.capture(lab.substrate, substrate_link(lab, "host2"), "udp port 6081") as frames:
        assert lab.ping(lab.host("web1"), "10.0.0.12", count=2) == 2
    to_web2 = [f for f in frames if f.haslayer(GENEVE) and f[IPv6].dst == str(embed(host2.prefix, 100, IPAddress("10.0.0.12")))]
    assert len(to_web2) >= 2, [f.summary() for f in frames]
    for f in to_web2:
        assert f[GENEVE].vni == 100
        inner = f[GENEVE].payload
        assert inner[IP].src == "10.0.0.11" and inner[IP].dst == "10.0.0.12" and inner.haslayer(ICMP)
        # Debian 12's OVS 3.1.0 ignores tun_ipv6_src: the outer source is then the switch's own
        # address; where OVS honours it, it is the sender's embedded address. Both lie in host1's prefix.
        assert IPAddress(f[IPv6].src) in host1.prefix
        assert f[IPv6].src in (str(host1.substrate_address), str(embed(host1.prefix, 100, IPAddress("10.0.0.11"))))
    replies = [f for f in frames if f.haslayer(GENEVE) and f[IPv6].src != str(host1.substrate_address)
               and IPAddress(f[IPv6].dst) in host1.prefix]
    assert replies and all(f[IPv6].dst == str(embed(host1.prefix, 100, IPAddress("10.0.0.11"))) for f in replies)


def forged(lab, outer_src, inner_src, payload):
    return geneve_frame(lab, "host1", outer_src, 100, inner_src, "10.0.0.11", UDP(sport=4444, dport=7002) / payload)


def test_a_forged_substrate_packet_is_dropped_and_counted(lab):
    seen = lab.server(lab.host("web1"), 7002, proto="udp", log=True)
    before = lab.drops("host1", "substrate_spoofed")
    # 10.0.0.12 (blue) lives on host2: from any other prefix it is a forgery.
    lab.inject(lab.substrate, "br0", forged(lab, "fd00:5ee0:0:3::1", "10.0.0.12", b"forged"))
    lab.inject(lab.substrate, "br0", forged(lab, "fd00:5ee0:0:e1::1", "10.0.0.12", b"forged-edge"))
    wait_for(lambda: lab.drops("host1", "substrate_spoofed") >= before + 2, 5, "two counted drops")
    # The same packet from host2's prefix is genuine and arrives: the test can see delivery.
    lab.inject(lab.substrate, "br0", forged(lab, "fd00:5ee0:0:2::1", "10.0.0.12", b"genuine"))
    wait_for(lambda: os.path.exists(seen) and open(seen).read(), 5, "the genuine packet at web1")
    assert [line.split(":")[0] for line in open(seen).read().split()] == ["10.0.0.12"]


def test_nothing_is_flooded_onto_the_substrate(lab):
    with lab.capture(lab.substrate, "br0", "udp port 6081") as frames:
        assert lab.ping(lab.host("web1"), "10.0.0.77") == 0  # unused address: ARP unanswered
        assert lab.ping(lab.host("web1"), "10.0.0.255") == 0  # broadcast
    assert frames == []


def test_traffic_to_the_outside_goes_to_the_edge(lab):
    ext = lab.external()
    with lab.capture(ext, "eth0", "icmp") as frames:
        lab.ping(lab.host("web1"), "203.0.113.1", count=2)
    requests = [f for f in frames if f.haslayer(ICMP) and f[ICMP].type == 8]
    assert requests and requests[0][IP].src == "10.0.0.11"
    edge = lab.dep.switches["edge1"]
    learned = lab.object_flows("edge1", "learned_gateway", "edge1:gateway")
    assert learned and requests[0][Ether].src == edge.uplink.mac


def test_an_interface_moved_to_another_host_is_reached_there(lab):
    """Last in this module: it changes the deployment."""
    spare = lab.host("spare1")
    lab.server(spare, 7000, name="spare1")
    text = open(lab.topology_file).read().replace(
        "eni-web2: {network: blue, ips: [10.0.0.12], attach_to: web2,",
        "eni-web2: {network: blue, ips: [10.0.0.12], attach_to: spare1,")
    assert "attach_to: spare1" in text
    lab.rewrite(text)
    status, body = lab.reload()
    assert status == 200, body
    lab.configure_guest("spare1", lab.dep.interfaces["eni-web2"])  # the guest brings the address up
    assert lab.client(lab.host("web1"), "10.0.0.12", 7000, "tcp") == "ok spare1"
    # host2 no longer takes blue traffic for 10.0.0.12, and web2 may no longer send from it
    host2_flows = "\n".join(lab.switches["host2"].flows())
    assert "reg0=0x64,nw_dst=10.0.0.12" not in host2_flows
    assert lab.client(lab.host("web2"), "10.0.0.11", 7000, "tcp", timeout=1).startswith("fail")
