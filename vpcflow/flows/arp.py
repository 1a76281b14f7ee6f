"""The ARP responder (seed 004): the switch answers an instance's ARP request itself.

The answer carries the destination's dummy MAC, and exists only for destinations the instance
may reach: addresses of its network that its security groups and theirs let it talk to (either
way: a server must resolve its clients to answer them), and the network's gateway when its rules
concern addresses outside the network. Any other request is dropped and counted
(arp_unanswered); no ARP ever leaves the host.
"""
from __future__ import annotations

from vpcflow.flows.base import drop_flow
from vpcflow.flows.core import flow
from vpcflow.flows.index import Index
from vpcflow.flows.matches import arp, arp_reply
from vpcflow.flows.authz import may_send, talks_outside
from vpcflow.flows.pipeline import REG_NETWORK, REG_SRC_ZONE
from vpcflow.topology.model import Switch, dummy_mac

PRIORITY = 100


def integration_flows(ix: Index, sw: Switch):
    zones = ix.zones(sw.name)
    for src in ix.by_switch.get(sw.name, ()):
        net = src.network
        targets = {dst.ip for dst in ix.by_network[net.name]
                   if dst.ip != src.ip and (may_send(ix, src, dst) or may_send(ix, dst, src))}
        if talks_outside(ix, src.interface, net.cidr):
            targets.add(net.gateway_ip)
        for ip in sorted(targets):
            yield flow("arp_responder", PRIORITY,
                       {REG_SRC_ZONE: zones[src.interface.name], **arp(arp_op=1, arp_spa=str(src.ip), arp_tpa=str(ip))},
                       arp_reply(ip, dummy_mac(ip)), feature="arp", obj=f"{src.interface.name}->{ip}")
    # A request for one's own address (a gratuitous ARP or a duplicate check) gets no answer.
    for ep in ix.by_switch.get(sw.name, ()):
        yield drop_flow("arp_responder", PRIORITY + 10,
                        {REG_NETWORK: ep.network.id, **arp(arp_spa=str(ep.ip), arp_tpa=str(ep.ip))},
                        "arp_own_address")
