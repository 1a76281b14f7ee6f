"""The ARP responder (seed 004): the switch answers an instance's ARP request itself.

The answer carries the destination's dummy MAC, and exists only for destinations the instance
may reach: addresses attached in its network, and the network's gateway. Any other request is
dropped and counted (arp_unanswered); no ARP ever leaves the host.
"""
from __future__ import annotations

from vpcflow.flows.base import drop_flow
from vpcflow.flows.core import flow
from vpcflow.flows.index import Index
from vpcflow.flows.matches import arp, arp_reply
from vpcflow.flows.pipeline import REG_NETWORK
from vpcflow.topology.model import Switch, dummy_mac

PRIORITY = 100


def integration_flows(ix: Index, sw: Switch):
    for net in ix.local_networks(sw.name):
        targets = sorted({ep.ip for ep in ix.by_network[net.name]} | {net.gateway_ip})
        for ip in targets:
            yield flow("arp_responder", PRIORITY, {REG_NETWORK: net.id, **arp(arp_op=1, arp_tpa=str(ip))},
                       arp_reply(ip, dummy_mac(ip)), feature="arp", obj=f"{net.name}:{ip}")
    # A request for one's own address (a gratuitous ARP or a duplicate check) gets no answer.
    for ep in ix.by_switch.get(sw.name, ()):
        yield drop_flow("arp_responder", PRIORITY + 10,
                        {REG_NETWORK: ep.network.id, **arp(arp_spa=str(ep.ip), arp_tpa=str(ep.ip))},
                        "arp_own_address")
