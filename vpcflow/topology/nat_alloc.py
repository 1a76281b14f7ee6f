"""NAT port blocks (issue 5): the fixed blocks as written, then one aligned block per host switch.

Pool. Each public IP is cut into aligned blocks of 2**block_bits ports ("port compression": 8 bits
give 256 ports, 12 give 4,096). A block is free when it holds no reserved port, not port 0, no port
of a fixed block and no forwarded port on the same IP. Every host switch that owns no fixed block
gets one free block; interfaces only have the fixed blocks the file gives them. No public IPs means
NAT is not configured: nothing is allocated.

Placement. Hosts are placed in the order given (the file's switch order). A host takes the first
public IP, in the order listed, that still has a free block; on it, it starts at a block number
hashed from its name and walks up (wrapping) to the first free block. So the pool fills its first
address first, and a host's block depends only on the pool and the hosts before it.

What stays put. The same file gives the same blocks. Moreover no host moves when
* a host is appended after the others (the hosts before it are placed exactly as before);
* a public IP is appended (it is only reached once the earlier ones are full);
* a fixed block, reserved port or forward is added on ports no allocated block holds (no walk
  crossed a block that stayed free, so none changes).
A host inserted before others, or one removed, moves a later host only if the walks meet: the
newcomer lands on (or the removed host frees) a block on that host's walk. With few hosts for the
pool that is rare, but it cannot be ruled out: an allocation computed from the file alone that never
moved anyone would have to give each host a block depending on its own name only, and two names
can hash to the same block. When the pool has fewer free blocks than hosts, allocation fails with
PoolExhausted naming the hosts left without one, rather than moving or dropping anyone silently.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import NamedTuple, Optional, Sequence

from vpcflow.flows.portmask import range_to_masks
from vpcflow.topology.model import HOST, Deployment, Nat, NatBlock, PortRange

PORTS = 1 << 16


class PoolExhausted(ValueError):
    """Some host switches get no block; the loader reports it as a problem at `nat`."""

    def __init__(self, unplaced: list[str], free: int, size: int):
        self.unplaced = unplaced
        super().__init__(f"no free NAT block for {', '.join(unplaced)}: the pool holds {free} free "
                         f"blocks of {size} ports (public IPs less port 0, reserved ports, fixed "
                         f"blocks and forwards)")


NatAllocationError = PoolExhausted  # the name issue 5's plan used


class NatRow(NamedTuple):
    """A line of `vpcflow nat FILE`."""
    ip: str
    ports: str
    owner: str
    kind: str  # fixed, allocated, forward or elastic ip
    matches: str  # the edge's tp value/mask matches


def allocate_blocks(nat: Nat, hosts: Sequence[str]) -> tuple[NatBlock, ...]:
    """nat's fixed blocks as written, then one allocated block for each host (in the given order)
    that owns no fixed block."""
    fixed = tuple(block for block in nat.blocks if block.fixed)
    owners = {block.owner for block in fixed}
    wanting = [host for host in hosts if host not in owners]
    if not nat.public_ips or not wanting:
        return fixed
    pool = _Pool(nat, fixed)
    placed = {host: pool.take(host) for host in wanting}
    unplaced = [host for host, block in placed.items() if block is None]
    if unplaced:
        raise PoolExhausted(unplaced, pool.free_at_start, pool.size)
    return fixed + tuple(placed[host] for host in wanting)


def allocate(dep: Deployment) -> Nat:
    """dep.nat with every block: fixed ones as written, then one per host switch in file order.
    Allocated blocks already in dep.nat are recomputed, so allocating twice changes nothing."""
    hosts = [switch.name for switch in dep.switches.values() if switch.role == HOST]
    return dataclasses.replace(dep.nat, blocks=allocate_blocks(dep.nat, hosts))


def value_masks(block: NatBlock) -> list[tuple[int, int]]:
    """The fewest tp_src/tp_dst (value, mask) matches for the block: one for an aligned block."""
    return range_to_masks(block.ports.lo, block.ports.hi)


def nat_table(dep: Deployment) -> list[NatRow]:
    """Rows for `vpcflow nat FILE`: blocks (fixed first), then forwards, then elastic IPs."""
    nat = allocate(dep)
    rows = [NatRow(str(b.ip), f"{b.ports.lo}-{b.ports.hi}", b.owner, "fixed" if b.fixed else "allocated",
                   " ".join(f"{value:#06x}/{mask:#06x}" for value, mask in value_masks(b)))
            for b in nat.blocks]
    rows += [NatRow(str(f.public_ip), f"{f.public_port}/{f.proto}", f"{f.interface} port {f.port}",
                    "forward", f"{f.public_port:#06x}/0xffff")
             for f in nat.forwards]
    rows += [NatRow(str(e.ip), "all", e.interface, "elastic ip", "-") for e in dep.elastic_ips]
    return rows


class _Pool:
    """The free blocks of every public IP, taken one host at a time."""

    def __init__(self, nat: Nat, fixed: tuple[NatBlock, ...]):
        self.ips = nat.public_ips
        self.bits = nat.block_bits
        self.size = 1 << self.bits
        self.per_ip = PORTS >> self.bits
        self.unusable = [self._unusable(ip, nat, fixed) for ip in self.ips]
        self.free = [self.per_ip - len(numbers) for numbers in self.unusable]
        self.free_at_start = sum(self.free)

    def _unusable(self, ip, nat: Nat, fixed) -> set[int]:
        """Block numbers on this IP that hold port 0, a reserved port, a fixed block or a forward."""
        held = [PortRange(0, 0), *nat.reserved_ports, *(b.ports for b in fixed if b.ip == ip),
                *(PortRange(f.public_port, f.public_port) for f in nat.forwards if f.public_ip == ip)]
        return {n for ports in held for n in range(ports.lo >> self.bits, (ports.hi >> self.bits) + 1)}

    def take(self, host: str) -> Optional[NatBlock]:
        """The host's block: on the first IP with room, the first free one from its hashed start."""
        index = next((i for i, free in enumerate(self.free) if free), None)
        if index is None:
            return None
        start = _hash(host) % self.per_ip
        number = next(n % self.per_ip for n in range(start, start + self.per_ip)
                      if n % self.per_ip not in self.unusable[index])
        self.unusable[index].add(number)
        self.free[index] -= 1
        lo = number << self.bits
        return NatBlock(owner=host, ip=self.ips[index], ports=PortRange(lo, lo + self.size - 1))


def _hash(name: str) -> int:
    """A stable 64-bit hash of the name (Python's own hash() changes between runs)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")
