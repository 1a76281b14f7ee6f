"""The edge's uplink toward the external network.

The edge answers ARP for its uplink address, and learns the gateway's MAC from the gateway's
own ARP packets: a learn action writes the edge_out flow (set destination MAC, output to the
uplink), so the controller never sits in that path. The controller only sends the ARP requests
that make the gateway speak (controller/arp_probe.py).
"""
from __future__ import annotations

from vpcflow.flows.core import Learn, LearnSpec, flow
from vpcflow.flows.matches import arp, arp_reply
from vpcflow.topology.model import Switch

GATEWAY_MAC_HARD_TIMEOUT = 60  # the controller refreshes it well before (ARP_PROBE_INTERVAL)
PRIORITY = 100


def learn_gateway(sw: Switch) -> Learn:
    return Learn("edge_out", PRIORITY, "learned_gateway", f"{sw.name}:gateway",
                 (LearnSpec("load", "eth_src", "eth_dst"),
                  LearnSpec("output", "in_port", n_bits=16)),
                 hard_timeout=GATEWAY_MAC_HARD_TIMEOUT)


def integration_flows(sw: Switch):
    up = sw.uplink
    reply = arp_reply(up.ip, up.mac)
    yield flow("uplink_in", PRIORITY + 20,
               {"in_port": up.port, **arp(arp_op=1, arp_spa=str(up.gateway_ip), arp_tpa=str(up.ip))},
               (learn_gateway(sw),) + reply, feature="edge", obj=f"{sw.name}:gateway-asks")
    yield flow("uplink_in", PRIORITY + 10,
               {"in_port": up.port, **arp(arp_spa=str(up.gateway_ip))},
               (learn_gateway(sw),), feature="edge", obj=f"{sw.name}:gateway-arp")
    yield flow("uplink_in", PRIORITY, {"in_port": up.port, **arp(arp_op=1, arp_tpa=str(up.ip))},
               reply, feature="edge", obj=f"{sw.name}:uplink-arp")
