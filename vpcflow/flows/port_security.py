"""Port security: an instance sends only from its interface's MAC and addresses.

What passes gets the network id, the interface's conntrack zone and its class in registers; everything else
from an instance port is dropped and counted as spoofed_source (the table's miss).
"""
from __future__ import annotations

from vpcflow.flows.arp import asker_class
from vpcflow.flows.core import Goto, Load, flow
from vpcflow.flows.index import Index
from vpcflow.flows.matches import arp, ipv4, load_network
from vpcflow.flows.pipeline import REG_SRC_CLASS, REG_SRC_ZONE
from vpcflow.topology.model import Switch

PRIORITY = 100


def integration_flows(ix: Index, sw: Switch):
    ports = set()
    zones = ix.zones(sw.name)
    for iface, port in ix.local_interfaces(sw.name):
        net = ix.dep.networks[iface.network]
        ports.add(port)
        obj = iface.name
        mark = (load_network(net.id), Load(zones[iface.name], REG_SRC_ZONE, 0, 16))
        # its class: which destinations an ARP request may resolve; for IP, its security groups
        sending = mark + (Load(ix.group_class(iface.security_groups), REG_SRC_CLASS), Goto("egress_acl"))
        for ip in iface.ips:
            text = str(ip)
            yield flow("port_security", PRIORITY,
                       {"in_port": port, "eth_src": iface.mac, **arp(arp_op=1, arp_spa=text, arp_sha=iface.mac)},
                       mark + (Load(asker_class(ix, iface.name, text), REG_SRC_CLASS), Goto("arp_responder")),
                       feature="port_security", obj=obj)
            if iface.source_dest_check:
                yield flow("port_security", PRIORITY, {"in_port": port, "eth_src": iface.mac, **ipv4(ipv4_src=text)},
                           sending, feature="port_security", obj=obj)
        if not iface.source_dest_check:
            # An appliance (router, NAT instance) may send from any address, still from its own MAC.
            yield flow("port_security", PRIORITY - 10, {"in_port": port, "eth_src": iface.mac, **ipv4()},
                       sending, feature="port_security", obj=obj)
    for port in sorted(ports):
        yield flow("classify", 100, {"in_port": port}, (Goto("port_security"),),
                   feature="port_security", obj=f"port:{port}")
