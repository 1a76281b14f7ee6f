"""Port security: an instance sends only from its interface's MAC and addresses.

What passes gets the network id, the interface's conntrack zone and its class in registers; everything else
from an instance port is dropped and counted as spoofed_source (the table's miss).
"""
from __future__ import annotations

import socket

from vpcflow.flows.arp import asker_class
from vpcflow.flows.core import ETH_ARP, ETH_IPV4, Goto, Load, flow
from vpcflow.flows.index import Index
from vpcflow.flows.matches import ipv4, load_network
from vpcflow.flows.pipeline import REG_SRC_CLASS, REG_SRC_ZONE
from vpcflow.topology.model import Switch

PRIORITY = 100
# the same for every interface: made once (a host has hundreds of interfaces, 100k in all)
_TO_ARP, _TO_EGRESS, _TO_PORT_SECURITY = Goto("arp_responder"), Goto("egress_acl"), Goto("port_security")


def _text(ip) -> str:
    """str(ip), as Endpoint.ip_text makes it: without netaddr's slow formatting."""
    if ip.version == 4:
        return socket.inet_ntoa(int(ip).to_bytes(4, "big"))
    return str(ip)


def integration_flows(ix: Index, sw: Switch):
    ports = set()
    zones = ix.zones(sw.name)
    for iface, port in ix.local_interfaces(sw.name):
        net = ix.dep.networks[iface.network]
        ports.add(port)
        obj = iface.name
        mark = (load_network(net.id), Load(zones[iface.name], REG_SRC_ZONE, 0, 16))
        # its class: which destinations an ARP request may resolve; for IP, its security groups
        sending = mark + (Load(ix.group_class(iface.security_groups), REG_SRC_CLASS), _TO_EGRESS)
        for ip in iface.ips:
            text = _text(ip)
            # arp() and ipv4() written out: the same items in the same order, without a call and
            # a dict merged per flow
            yield flow("port_security", PRIORITY,
                       {"in_port": port, "eth_src": iface.mac, "eth_type": ETH_ARP, "arp_op": 1, "arp_spa": text,
                        "arp_sha": iface.mac},
                       mark + (Load(asker_class(ix, iface.name, text), REG_SRC_CLASS), _TO_ARP),
                       feature="port_security", obj=obj)
            if iface.source_dest_check:
                yield flow("port_security", PRIORITY,
                           {"in_port": port, "eth_src": iface.mac, "eth_type": ETH_IPV4, "ipv4_src": text},
                           sending, feature="port_security", obj=obj)
        if not iface.source_dest_check:
            # An appliance (router, NAT instance) may send from any address, still from its own MAC.
            yield flow("port_security", PRIORITY - 10, {"in_port": port, "eth_src": iface.mac, **ipv4()},
                       sending, feature="port_security", obj=obj)
    for port in sorted(ports):
        yield flow("classify", 100, {"in_port": port}, (_TO_PORT_SECURITY,),
                   feature="port_security", obj=f"port:{port}")
