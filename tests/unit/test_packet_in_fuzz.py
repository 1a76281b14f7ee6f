"""Whatever bytes a packet-in carries, the controller describes them and goes on (issue 7)."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from vpcflow.controller.app import describe_packet
from vpcflow.controller.state import Controller
from vpcflow.topology.loader import load_file
from tests.conftest import data_file

pytestmark = pytest.mark.ops

ETHERTYPES = st.sampled_from([0x0800, 0x0806, 0x86DD, 0x8100, 0x88CC, 0x8847, 0x0000, 0xFFFF])


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_garbage(data):
    assert isinstance(describe_packet(data), str)


@settings(max_examples=1500, deadline=None)
@given(ETHERTYPES, st.binary(max_size=120))
def test_a_known_ethertype_with_a_truncated_or_garbled_body(ethertype, body):
    frame = b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", ethertype) + body
    assert isinstance(describe_packet(frame), str)


def test_packet_ins_are_counted_per_bridge():
    ctl = Controller(load_file(data_file("two-hosts.yaml")))
    ctl.packet_in(1, describe_packet(b"\x00" * 3))
    ctl.packet_in(1, describe_packet(None))
    host1 = next(s for s in ctl.status()["switches"] if (s["switch"], s["bridge"]) == ("host1", "integration"))
    assert host1["packet_ins"] == 2
    ctl.packet_in(12345, "unknown datapath: ignored")  # must not raise
