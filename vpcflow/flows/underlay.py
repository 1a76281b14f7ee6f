"""The underlay bridge: the switch's end of the substrate.

Open vSwitch pops a tunnel only for an address configured on the underlay's internal port, not
for a prefix. Packets for any embedded address of this switch's prefix are therefore readdressed
to the switch's own substrate address before they reach that port (STACK.md, way (b)); the
integration bridge then sees the network id in the VNI and the IPv4 destination inside.
Everything else (neighbour discovery, the switch's own traffic) is plain L2.
"""
from __future__ import annotations

from vpcflow.flows.core import ETH_IPV6, IPPROTO, Output, SetField, flow
from vpcflow.flows.matches import cidr
from vpcflow.topology.model import Switch

GENEVE_PORT = 6081


def underlay_flows(sw: Switch):
    yield flow("underlay", 100,
               {"in_port": sw.underlay_port, "eth_type": ETH_IPV6, "ip_proto": IPPROTO["udp"],
                "ipv6_dst": cidr(sw.prefix), "udp_dst": GENEVE_PORT},
               (SetField("ipv6_dst", str(sw.substrate_address)), Output("LOCAL")),
               feature="underlay", obj=f"{sw.name}:decap")
    yield flow("underlay", 0, {}, (Output("NORMAL"),), feature="underlay", obj=f"{sw.name}:normal")
