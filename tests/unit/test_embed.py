"""Seed 004's address embedding: embed/decode and `vpcflow address`.

The oracle for the properties is the spec's formula computed with the standard library's
`ipaddress` (prefix | netid << 32 | ipv4), independent of netaddr and of the code under test.
"""
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork

from vpcflow.topology.model import decode, embed, embed_text

pytestmark = pytest.mark.overlay

DATA = Path(__file__).resolve().parents[1] / "data"
SPEC_EXAMPLE = DATA / "spec-example.yaml"
VPCFLOW = Path(sys.executable).parent / "vpcflow"
TIMEOUT = 60


# --- the spec's example ---------------------------------------------------------------------------

def test_spec_example():
    got = embed(IPNetwork("fd00:5ee0:0:2::/64"), 100, IPAddress("10.0.0.3"))
    assert got == IPAddress("fd00:5ee0:0:2:0:64:a00:3")
    assert got.version == 6
    assert str(got) == "fd00:5ee0:0:2:0:64:a00:3"


def test_spec_example_decodes():
    prefix, netid, ipv4 = decode(IPAddress("fd00:5ee0:0:2:0:64:a00:3"), 64)
    assert str(prefix) == "fd00:5ee0:0:2::/64"
    assert netid == 100
    assert ipv4 == IPAddress("10.0.0.3") and ipv4.version == 4


# --- properties ----------------------------------------------------------------------------------

@st.composite
def prefixes(draw):
    """A substrate prefix of length 48..72 with its host bits zero."""
    length = draw(st.integers(48, 72))
    bits = draw(st.integers(0, (1 << 128) - 1))
    network = bits >> (128 - length) << (128 - length)
    return IPNetwork(f"{IPAddress(network, 6)}/{length}")


netids = st.integers(1, (1 << 24) - 1)
ipv4s = st.integers(0, (1 << 32) - 1).map(lambda v: IPAddress(v, 4))


@given(prefixes(), netids, ipv4s)
def test_embed_matches_the_spec_formula(prefix, netid, ipv4):
    oracle = ipaddress.IPv6Address(int(ipaddress.IPv6Network(str(prefix)).network_address)
                                   | netid << 32 | int(ipaddress.IPv4Address(str(ipv4))))
    got = embed(prefix, netid, ipv4)
    assert got.version == 6
    assert ipaddress.IPv6Address(str(got)) == oracle


@given(prefixes(), st.integers(0, (1 << 24) - 1), ipv4s)
def test_embed_text_writes_what_netaddr_writes(prefix, netid, ipv4):
    """The compiler's fast text of an embedded address is netaddr's, zero words and all
    (prefixes of any bits, the all-zero one included, netid 0 as the NAT's external VNI)."""
    assert embed_text(prefix, netid, ipv4) == str(embed(prefix, netid, ipv4))


def test_embed_text_of_a_mostly_zero_address():
    # the forms with an IPv4 tail (IPv4-mapped, IPv4-compatible) and long zero runs
    for prefix in ("::/64", "::ffff:0:0/96", "0:0:0:0:1::/80"):
        assert embed_text(IPNetwork(prefix), 0, IPAddress("10.0.0.1")) == str(embed(IPNetwork(prefix), 0, IPAddress("10.0.0.1")))


@given(prefixes(), netids, ipv4s)
def test_decode_inverts_embed(prefix, netid, ipv4):
    got_prefix, got_netid, got_ipv4 = decode(embed(prefix, netid, ipv4), prefix.prefixlen)
    assert (str(got_prefix), got_netid, str(got_ipv4)) == (str(prefix), netid, str(ipv4))
    assert got_prefix.prefixlen == prefix.prefixlen
    assert got_ipv4.version == 4


@given(prefixes(), netids, ipv4s)
def test_embedded_address_lies_inside_the_prefix(prefix, netid, ipv4):
    address = embed(prefix, netid, ipv4)
    assert address in prefix
    assert ipaddress.IPv6Address(str(address)) in ipaddress.IPv6Network(str(prefix))


# Values at the field boundaries: where an overlapping or misplaced field would collide.
edge_netids = st.sampled_from([1, 2, 0xFF, 0x100, 0xFFFF, 0x10000, 1 << 23, (1 << 24) - 1])
edge_ipv4s = st.sampled_from([0, 1, 0xFF, 0x100, 0xFFFFFF, 1 << 24, 0xFF000000, 1 << 31, 0xFFFFFFFF]) \
    .map(lambda v: IPAddress(v, 4))
pairs = st.tuples(st.one_of(edge_netids, netids), st.one_of(edge_ipv4s, ipv4s))


@st.composite
def two_pairs(draw):
    """Two (netid, ipv4) pairs that often share one component, so collisions would show."""
    a = draw(pairs)
    share = draw(st.sampled_from(("netid", "ipv4", "none")))
    b = draw(pairs)
    b = (a[0] if share == "netid" else b[0], a[1] if share == "ipv4" else b[1])
    return a, b


@given(prefixes(), two_pairs())
def test_different_pairs_never_collide(prefix, two):
    a, b = two
    assume(a != b)
    assert embed(prefix, *a) != embed(prefix, *b)


@given(prefixes(), st.sets(pairs, min_size=2, max_size=40))
def test_many_pairs_under_one_prefix_are_all_distinct(prefix, many):
    addresses = {embed(prefix, netid, ipv4) for netid, ipv4 in many}
    assert len(addresses) == len(many)


# --- `vpcflow address` ---------------------------------------------------------------------------

def vpcflow(*args):
    assert VPCFLOW.exists(), f"console script missing: {VPCFLOW}"
    return subprocess.run([str(VPCFLOW), *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT)


def write_variant(tmp_path, mutate):
    data = yaml.safe_load(SPEC_EXAMPLE.read_text())
    mutate(data)
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_address_of_the_spec_example():
    r = vpcflow("address", SPEC_EXAMPLE, "eni-web2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "10.0.0.12 fd00:5ee0:0:2:0:64:a00:c\n"
    assert "Traceback" not in r.stderr


def test_address_prints_one_line_per_ip(tmp_path):
    ips = ["10.0.0.12", "10.0.0.40", "10.0.0.254"]
    path = write_variant(tmp_path, lambda d: d["interfaces"]["eni-web2"].__setitem__("ips", ips))
    r = vpcflow("address", path, "eni-web2")
    assert r.returncode == 0, r.stderr
    # eni-web2 is on blue (id 100), attached to web2 on host2 (fd00:5ee0:0:2::/64).
    prefix = int(ipaddress.IPv6Address("fd00:5ee0:0:2::"))
    expected = [f"{ip} {ipaddress.IPv6Address(prefix | 100 << 32 | int(ipaddress.IPv4Address(ip)))}" for ip in ips]
    assert r.stdout.splitlines() == expected


def test_address_unknown_interface():
    r = vpcflow("address", SPEC_EXAMPLE, "eni-nosuch")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "eni-nosuch" in r.stderr
    assert "Traceback" not in r.stderr


def test_address_unattached_interface(tmp_path):
    path = write_variant(tmp_path, lambda d: d["interfaces"]["eni-web2"].pop("attach_to"))
    r = vpcflow("address", path, "eni-web2")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "eni-web2" in r.stderr and "not attached" in r.stderr
    assert "Traceback" not in r.stderr
