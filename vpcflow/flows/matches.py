"""Small builders for the matches and action sequences that several features share."""
from __future__ import annotations

import functools

from netaddr import IPAddress, IPNetwork

from vpcflow.flows.core import ETH_ARP, ETH_IPV4, Load, Move, Output, SetField, interned
from vpcflow.flows.pipeline import REG_NETWORK
from vpcflow.topology.model import DUMMY_MAC_HIGH16

NETWORK_BITS = 24


def load_network(netid: int) -> Load:
    """Registers start at zero for every packet, so flows can match reg0=netid exactly."""
    return Load(netid, REG_NETWORK, 0, NETWORK_BITS)


@functools.lru_cache(maxsize=1 << 16)  # a few networks and prefixes, asked for every flow on them
def cidr(net: IPNetwork):
    """A masked match value; a /32 (or /128) is an exact match."""
    if net.prefixlen == (32 if net.version == 4 else 128):
        return str(net.network)
    return (str(net.network), str(net.netmask))


@functools.lru_cache(maxsize=1 << 16)
def network_ipv4(netid: int) -> tuple:
    """The match items {reg0: netid, eth_type: IPv4}, interned once per network: the head of the
    per-address flows of the network, which add the address's own item (Endpoint.dst_match).
    Tuples put together, not a dict per flow: flow() interns every item of a dict match, and
    that look-up in a dict of millions of items was most of what such a flow cost."""
    return interned(((REG_NETWORK, netid), ("eth_type", ETH_IPV4)))


def ipv4(**fields):
    out = {"eth_type": ETH_IPV4}
    out.update(fields)
    return out


def arp(**fields):
    out = {"eth_type": ETH_ARP}
    out.update(fields)
    return out


def arp_reply(ip: IPAddress, mac: str):
    """Turn an ARP request into the reply for `ip` at `mac`, sent back where it came from."""
    return (
        Move("eth_src", "eth_dst"),
        SetField("eth_src", mac),
        Load(2, "arp_op"),
        Move("arp_sha", "arp_tha"),
        Move("arp_spa", "arp_tpa"),
        SetField("arp_sha", mac),
        SetField("arp_spa", str(ip)),
        Output("IN_PORT"),
    )


def dummy_source_mac():
    """eth_src = the dummy MAC of ip_src, computed in the switch (see model.dummy_mac)."""
    return _DUMMY_SOURCE_MAC


_DUMMY_SOURCE_MAC = (  # the same for every interface: made once
    Move("ipv4_src", "eth_src", 32, 0, 0),
    Load(DUMMY_MAC_HIGH16, "eth_src", 32, 16),
)


def embedded_address_actions(field: str, prefix: IPNetwork, netid: int, ip_field: str):
    """Compute embed(prefix, netid, <ip_field of the packet>) into a 128-bit field in the switch.

    NXAST_REG_LOAD carries at most 64 bits, so the prefix goes in two loads.
    """
    value = int(prefix.network)
    return (
        Load(value >> 64, field, 64, 64),
        Load((value >> 56) & 0xFF, field, 56, 8),
        Load(netid, field, 32, 24),
        Move(ip_field, field, 32, 0, 0),
    )

