"""NAT block allocation (issue 5): aligned, outside reserved ports, fixed blocks and forwards,
deterministic, stable when hosts or public IPs are added; pool exhaustion is a load problem."""
import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netaddr import IPAddress

from tests.conftest import data_file
from vpcflow.flows.portmask import covers
from vpcflow.topology import nat_alloc
from vpcflow.topology.loader import DeploymentError, load_file, parse
from vpcflow.topology.model import Forward, Nat, NatBlock, PortRange

pytestmark = pytest.mark.nat

IP1, IP2, IP3 = IPAddress("198.51.100.10"), IPAddress("198.51.100.11"), IPAddress("198.51.100.12")


def hosts(n, prefix="host"):
    return [f"{prefix}{i}" for i in range(n)]


def check_blocks(nat: Nat, host_names, blocks):
    """What every allocation must satisfy."""
    fixed = [b for b in nat.blocks if b.fixed]
    assert list(blocks[:len(fixed)]) == fixed  # fixed ones first, as written
    allocated = blocks[len(fixed):]
    fixed_owners = {b.owner for b in fixed}
    assert [b.owner for b in allocated] == [h for h in host_names if h not in fixed_owners]
    size = 1 << nat.block_bits
    for b in allocated:
        assert not b.fixed and b.ip in nat.public_ips
        assert b.ports.hi - b.ports.lo + 1 == size and b.ports.lo % size == 0  # aligned
        assert 1 <= b.ports.lo and b.ports.hi <= 65535
        assert not any(r.overlaps(b.ports) for r in nat.reserved_ports)
        assert not any(f.public_ip == b.ip and f.public_port in b.ports for f in nat.forwards)
        assert len(nat_alloc.value_masks(b)) == 1  # one value/mask at the edge
    for i, a in enumerate(blocks):
        for b in blocks[i + 1:]:
            assert a.ip != b.ip or not a.ports.overlaps(b.ports), (a, b)


nats = st.builds(
    lambda ips, bits, reserved, fixed_lo, fwd_ports: Nat(
        public_ips=tuple(IPAddress(f"198.51.100.{i}") for i in ips),
        reserved_ports=(PortRange(0, 1023),) + tuple(PortRange(p, p + 7) for p in reserved),
        block_bits=bits,
        blocks=tuple(NatBlock(f"fixed{i}", IPAddress(f"198.51.100.{ips[0]}"), PortRange(lo, lo + 99), fixed=True)
                     for i, lo in enumerate(sorted(set(fixed_lo)))
                     if all(abs(lo - o) > 100 for o in sorted(set(fixed_lo)) if o < lo)),
        forwards=tuple(Forward(IPAddress(f"198.51.100.{ips[-1]}"), p, "eni-x", 80, "tcp") for p in fwd_ports)),
    st.lists(st.integers(1, 250), min_size=1, max_size=3, unique=True),
    st.integers(8, 12),
    st.lists(st.integers(1024, 65000), max_size=5),
    st.lists(st.integers(20000, 60000), max_size=3),
    st.lists(st.integers(1024, 65535), max_size=4, unique=True),
)


@settings(max_examples=150, deadline=None)
@given(nats, st.integers(0, 30))
def test_allocation_is_aligned_outside_everything_taken_and_deterministic(nat, n):
    names = hosts(n)
    try:
        blocks = nat_alloc.allocate_blocks(nat, names)
    except nat_alloc.PoolExhausted:
        return
    check_blocks(nat, names, blocks)
    assert nat_alloc.allocate_blocks(copy.deepcopy(nat), list(names)) == blocks


@settings(max_examples=100, deadline=None)
@given(nats, st.integers(0, 20), st.integers(1, 5))
def test_appending_hosts_moves_no_one(nat, n, more):
    try:
        before = nat_alloc.allocate_blocks(nat, hosts(n))
        after = nat_alloc.allocate_blocks(nat, hosts(n) + hosts(more, "new"))
    except nat_alloc.PoolExhausted:
        return
    assert after[:len(before)] == before


@settings(max_examples=100, deadline=None)
@given(nats, st.integers(0, 20))
def test_adding_a_public_ip_moves_no_one(nat, n):
    try:
        before = nat_alloc.allocate_blocks(nat, hosts(n))
    except nat_alloc.PoolExhausted:
        return
    bigger = Nat(nat.public_ips + (IPAddress("198.51.100.254"),), nat.reserved_ports, nat.block_bits,
                 nat.blocks, nat.forwards)
    assert nat_alloc.allocate_blocks(bigger, hosts(n)) == before


@settings(max_examples=100, deadline=None)
@given(nats, st.integers(1, 20), st.integers(1024, 65000))
def test_a_new_fixed_block_or_forward_elsewhere_moves_no_one(nat, n, lo):
    try:
        before = nat_alloc.allocate_blocks(nat, hosts(n))
    except nat_alloc.PoolExhausted:
        return
    ip = nat.public_ips[0]
    new_block = NatBlock("pinned", ip, PortRange(lo, lo + 20), fixed=True)
    if any(b.ip == ip and b.ports.overlaps(new_block.ports) for b in before):
        return
    with_block = Nat(nat.public_ips, nat.reserved_ports, nat.block_bits, nat.blocks + (new_block,), nat.forwards)
    after = nat_alloc.allocate_blocks(with_block, hosts(n))
    assert [b for b in after if b.owner != "pinned"] == list(before)
    with_forward = Nat(nat.public_ips, nat.reserved_ports, nat.block_bits, nat.blocks,
                       nat.forwards + (Forward(ip, lo, "eni-y", 80, "udp"),))
    assert nat_alloc.allocate_blocks(with_forward, hosts(n)) == before


def test_a_host_keeps_its_block_when_another_is_inserted_before_it():
    nat = Nat(public_ips=(IP1,), reserved_ports=(PortRange(0, 1023),), block_bits=8)
    before = {b.owner: b for b in nat_alloc.allocate_blocks(nat, ["hv-a", "hv-b", "hv-c"])}
    after = {b.owner: b for b in nat_alloc.allocate_blocks(nat, ["hv-0", "hv-a", "hv-b", "hv-c"])}
    # hashed positions over 252 free slots: no walk met another here
    assert all(after[h] == before[h] for h in before)


def test_the_pool_fills_its_first_address_first():
    nat = Nat(public_ips=(IP1, IP2), reserved_ports=(PortRange(0, 1023),), block_bits=14)  # 3 blocks per IP
    blocks = nat_alloc.allocate_blocks(nat, hosts(5))
    assert [b.ip for b in blocks] == [IP1, IP1, IP1, IP2, IP2]


def test_hosts_with_a_fixed_block_get_no_other():
    nat = Nat(public_ips=(IP1,), block_bits=8,
              blocks=(NatBlock("host1", IP1, PortRange(4096, 4351), fixed=True),))
    blocks = nat_alloc.allocate_blocks(nat, ["host1", "host2"])
    assert [(b.owner, b.fixed) for b in blocks] == [("host1", True), ("host2", False)]


def test_no_public_ips_no_allocation():
    assert nat_alloc.allocate_blocks(Nat(), ["host1", "host2"]) == ()


def test_exhaustion_names_the_hosts_left_without_a_block():
    nat = Nat(public_ips=(IP1,), reserved_ports=(PortRange(0, 1023),), block_bits=14)  # 3 blocks
    with pytest.raises(nat_alloc.PoolExhausted) as caught:
        nat_alloc.allocate_blocks(nat, hosts(5))
    assert caught.value.unplaced == ["host3", "host4"]
    assert "host3, host4" in str(caught.value) and "3 free" in str(caught.value)


def test_block_bits_16_leaves_nothing_above_reserved_ports():
    nat = Nat(public_ips=(IP1, IP2, IP3), reserved_ports=(PortRange(0, 1023),), block_bits=16)
    with pytest.raises(nat_alloc.PoolExhausted):
        nat_alloc.allocate_blocks(nat, ["host1"])


@given(st.integers(1, 65535), st.integers(0, 300))
def test_value_masks_cover_exactly_a_fixed_block(lo, length):
    hi = min(65535, lo + length)
    pairs = nat_alloc.value_masks(NatBlock("h", IP1, PortRange(lo, hi), fixed=True))
    for port in range(max(0, lo - 300), min(65536, hi + 300)):
        assert covers(pairs, port) == (lo <= port <= hi)


# --- through the loader -----------------------------------------------------------------------

def spec_like(n_hosts: int, block_bits: int):
    data = {
        "version": 1,
        "switches": {f"host{i}": {"role": "host", "dpid": i + 1, "prefix": f"fd00:5ee0:0:{i + 1:x}::/64"}
                     for i in range(n_hosts)},
        "nat": {"public_ips": ["198.51.100.10"], "reserved_ports": ["0-1023"], "block_bits": block_bits},
    }
    return data


def test_the_loader_holds_fixed_and_allocated_blocks():
    dep = load_file(data_file("nat.yaml"))
    owners = {b.owner: b for b in dep.nat.blocks}
    assert owners["host3"] == NatBlock("host3", IP1, PortRange(61441, 61456), fixed=True)
    assert owners["host1"].ip == owners["host2"].ip == IP1  # the shared public IP
    assert not owners["host1"].fixed and owners["host1"].ports.hi - owners["host1"].ports.lo == 255
    assert nat_alloc.allocate(dep) == dep.nat  # allocating again changes nothing


def test_a_pool_too_small_is_a_load_problem_at_nat():
    parse(spec_like(3, 14))  # 3 blocks of 16384 above port 1023: exactly enough
    with pytest.raises(DeploymentError) as caught:
        parse(spec_like(4, 14))
    assert [p.path for p in caught.value.problems] == ["nat"]
    assert "host3" in caught.value.problems[0].message


def test_a_forward_port_is_never_inside_an_allocated_block():
    data = spec_like(1, 8)
    dep = parse(data)
    block = dep.nat.blocks[0]
    data["networks"] = {"blue": {"id": 1, "entity": "e", "cidr": "10.0.0.0/24"}}
    data["interfaces"] = {"eni-1": {"network": "blue", "ips": ["10.0.0.5"]}}
    data["nat"]["forwards"] = [{"public": f"198.51.100.10:{block.ports.lo + 3}", "interface": "eni-1",
                                "port": 80, "proto": "tcp"}]
    moved = parse(data).nat.blocks[0]
    assert block.ports.lo + 3 not in moved.ports


# --- the spec's example, block sizes, reserved ports, the CLI table ------------------------------

def test_the_spec_example_gets_its_fixed_block_and_an_aligned_one_for_host2():
    dep = load_file(data_file("spec-example.yaml"))
    nat = nat_alloc.allocate(dep)
    host1, host2 = nat.blocks
    assert host1 == NatBlock("host1", IP1, PortRange(4096, 4351), fixed=True)
    assert (host2.owner, host2.fixed, host2.ip) == ("host2", False, IP1)  # the first address first
    assert host2.ports.lo % 256 == 0 and host2.ports.hi - host2.ports.lo == 255
    assert host2.ports.lo >= 1024 and not host2.ports.overlaps(host1.ports)  # reserved 0-1023, 25
    assert nat_alloc.value_masks(host2) == [(host2.ports.lo, 0xFF00)]
    assert nat_alloc.allocate(dep) == nat  # the same file, the same blocks


def test_block_bits_12_gives_aligned_4096_port_blocks():
    nat = Nat(public_ips=(IP1, IP2), reserved_ports=(PortRange(0, 1023),), block_bits=12)
    blocks = nat_alloc.allocate_blocks(nat, hosts(20))
    assert [b.ip for b in blocks] == [IP1] * 15 + [IP2] * 5  # 15 blocks above port 1023 per IP
    for b in blocks:
        assert b.ports.lo % 4096 == 0 and b.ports.hi == b.ports.lo + 4095
        assert nat_alloc.value_masks(b) == [(b.ports.lo, 0xF000)]


def test_a_reserved_port_inside_a_block_keeps_that_whole_block_out_of_the_pool():
    # 16 blocks of 4,096: port 0 rules out 0-4095, the reserved 40000 rules out 36864-40959
    nat = Nat(public_ips=(IP1,), reserved_ports=(PortRange(40000, 40000),), block_bits=12)
    blocks = nat_alloc.allocate_blocks(nat, hosts(14))
    assert sorted(b.ports.lo >> 12 for b in blocks) == [n for n in range(16) if n not in (0, 9)]
    with pytest.raises(nat_alloc.PoolExhausted) as caught:
        nat_alloc.allocate_blocks(nat, hosts(15))
    assert caught.value.unplaced == ["host14"] and "14 free" in str(caught.value)


def test_pool_exhaustion_is_a_value_error():
    assert issubclass(nat_alloc.PoolExhausted, ValueError)
    assert nat_alloc.NatAllocationError is nat_alloc.PoolExhausted


def test_the_nat_table_lists_blocks_forwards_and_elastic_ips():
    rows = nat_alloc.nat_table(load_file(data_file("spec-example.yaml")))
    assert rows[0] == ("198.51.100.10", "4096-4351", "host1", "fixed", "0x1000/0xff00")
    assert rows[1].owner == "host2" and rows[1].kind == "allocated" and rows[1].matches.endswith("/0xff00")
    assert rows[2] == ("198.51.100.10", "8080/tcp", "eni-web1 port 80", "forward", "0x1f90/0xffff")
    assert rows[3] == ("198.51.100.20", "all", "eni-web1", "elastic ip", "-")
    assert rows[0]._asdict()["matches"] == "0x1000/0xff00"
