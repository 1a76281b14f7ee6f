"""Port security: an instance sends only from its interface's MAC and addresses.

What passes gets the network id in the network register; everything else from an instance port
is dropped and counted as spoofed_source (the table's miss).
"""
from __future__ import annotations

from vpcflow.flows.core import Goto, flow
from vpcflow.flows.index import Index
from vpcflow.flows.matches import arp, ipv4, load_network
from vpcflow.topology.model import Switch

PRIORITY = 100


def integration_flows(ix: Index, sw: Switch):
    ports = set()
    for iface, port in ix.local_interfaces(sw.name):
        net = ix.dep.networks[iface.network]
        ports.add(port)
        obj = iface.name
        for ip in iface.ips:
            yield flow("port_security", PRIORITY,
                       {"in_port": port, "eth_src": iface.mac, **arp(arp_op=1, arp_spa=str(ip), arp_sha=iface.mac)},
                       (load_network(net.id), Goto("arp_responder")), feature="port_security", obj=obj)
            if iface.source_dest_check:
                yield flow("port_security", PRIORITY,
                           {"in_port": port, "eth_src": iface.mac, **ipv4(ipv4_src=str(ip))},
                           (load_network(net.id), Goto("egress_acl")), feature="port_security", obj=obj)
        if not iface.source_dest_check:
            # An appliance (router, NAT instance) may send from any address, still from its own MAC.
            yield flow("port_security", PRIORITY - 10, {"in_port": port, "eth_src": iface.mac, **ipv4()},
                       (load_network(net.id), Goto("egress_acl")), feature="port_security", obj=obj)
    for port in sorted(ports):
        yield flow("classify", 100, {"in_port": port}, (Goto("port_security"),),
                   feature="port_security", obj=f"port:{port}")
