"""NAT block usage from a conntrack dump of the NAT zone (issue 7)."""
import pytest

from vpcflow.controller.nat_usage import ports_in_use

pytestmark = pytest.mark.ops

DUMP = """\
tcp,orig=(src=10.0.0.11,dst=203.0.113.1,sport=40000,dport=7000),reply=(src=203.0.113.1,dst=198.51.100.10,sport=7000,dport=1024),zone=0,mark=100,protoinfo=(state=ESTABLISHED)
udp,orig=(src=10.0.0.13,dst=203.0.113.1,sport=40001,dport=7000),reply=(src=203.0.113.1,dst=198.51.100.10,sport=7000,dport=1024),zone=0,mark=100
udp,orig=(src=10.0.0.13,dst=203.0.113.1,sport=40002,dport=7001),reply=(src=203.0.113.1,dst=198.51.100.10,sport=7001,dport=1279),zone=0,mark=100
tcp,orig=(src=10.0.0.12,dst=203.0.113.1,sport=40003,dport=7000),reply=(src=203.0.113.1,dst=198.51.100.10,sport=7000,dport=1280),zone=0,mark=100
icmp,orig=(src=10.0.0.11,dst=203.0.113.1,id=7,type=8,code=0),reply=(src=203.0.113.1,dst=198.51.100.10,id=7,type=0,code=0),zone=0,mark=100
tcp,orig=(src=203.0.113.1,dst=198.51.100.20,sport=5000,dport=80),reply=(src=10.0.0.21,dst=203.0.113.1,sport=80,dport=5000),zone=0,mark=100
"""


def test_each_translated_port_counts_once_per_protocol_and_only_in_its_block():
    blocks = [("block:a", "198.51.100.10", 1024, 1279), ("block:b", "198.51.100.10", 1280, 1535),
              ("block:c", "198.51.100.11", 1024, 1279)]
    # tcp/1024 and udp/1024 are two ports in use; ICMP ids and inbound (DNAT) entries are not ports
    assert ports_in_use(DUMP, blocks) == {"block:a": 3, "block:b": 1, "block:c": 0}


def test_garbage_lines_count_nothing():
    assert ports_in_use("garbage\n\ntcp,orig=(\n", [("block:a", "198.51.100.10", 1024, 1279)]) == {"block:a": 0}
