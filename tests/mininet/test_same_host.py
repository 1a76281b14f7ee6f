"""Instances on one host switch, real traffic (issue 2): one network reaches itself, another
network with the same addresses does not, and a forged source never leaves its port."""
import os

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.conftest import data_file, require_system
from vpcflow.harness.controller import wait_for
from vpcflow.topology.model import dummy_mac

pytestmark = pytest.mark.foundation


@pytest.fixture(scope="module")
def lab():
    require_system()
    from vpcflow.harness.lab import Lab

    with Lab(data_file("two-hosts.yaml"), tag="vfs") as lab:
        lab.server(lab.host("web3"), 7000, name="web3")
        lab.server(lab.host("red1"), 7000, name="red1")
        lab.server(lab.host("web3"), 7000, proto="udp", name="web3")
        lab.server(lab.host("red1"), 7000, proto="udp", name="red1")
        yield lab


def test_arp_is_answered_with_the_dummy_mac(lab):
    web1 = lab.host("web1")
    assert lab.ping(web1, "10.0.0.13") == 1
    neigh = web1.cmd("ip neigh show 10.0.0.13")
    assert "0e:00:0a:00:00:0d" in neigh, neigh


def test_arp_for_an_unused_address_gets_no_answer(lab):
    before = lab.drops("host1", "arp_unanswered")
    web1 = lab.host("web1")
    assert lab.ping(web1, "10.0.0.99") == 0
    assert "lladdr" not in web1.cmd("ip neigh show 10.0.0.99")
    assert lab.drops("host1", "arp_unanswered") > before


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_same_network_reaches_itself_and_not_the_twin_address(lab, proto):
    # 10.0.0.13 is web3 in blue and red1 in red, both on host1: web1 (blue) gets web3.
    assert lab.client(lab.host("web1"), "10.0.0.13", 7000, proto) == "ok web3"


def test_icmp_between_instances_of_one_network(lab):
    assert lab.ping(lab.host("web3"), "10.0.0.11", count=3) == 3


def test_another_network_is_not_reachable_even_with_a_known_address(lab):
    # 10.0.0.11 exists only in blue; red1 asks for it in red and gets nothing.
    red1 = lab.host("red1")
    assert lab.ping(red1, "10.0.0.11") == 0
    assert lab.client(red1, "10.0.0.11", 7000, "tcp", timeout=1).startswith("fail")


def test_a_forged_source_is_dropped_at_the_port(lab):
    web1 = lab.host("web1")
    seen = lab.server(lab.host("web3"), 7001, proto="udp", log=True)
    mac = lab.dep.interfaces["eni-web1"].mac
    to_web3 = dummy_mac("10.0.0.13")

    def frame(src_mac, src_ip):
        return bytes(Ether(src=src_mac, dst=to_web3) / IP(src=src_ip, dst="10.0.0.13") / UDP(sport=5555, dport=7001)
                     / b"probe")

    before = lab.drops("host1", "spoofed_source")
    lab.inject(web1, "eth0", frame(mac, "10.0.0.99"))            # someone else's address
    lab.inject(web1, "eth0", frame("02:00:00:00:00:99", "10.0.0.11"))  # someone else's MAC
    lab.inject(web1, "eth0", frame(mac, "10.0.0.11"))            # its own: this one passes
    wait_for(lambda: os.path.exists(seen) and open(seen).read(), 5, "the genuine datagram at web3")
    # Frames from one port are handled in order: the forged two came first and never arrived.
    assert [line.split(":")[0] for line in open(seen).read().split()] == ["10.0.0.11"]
    assert lab.drops("host1", "spoofed_source") >= before + 2
