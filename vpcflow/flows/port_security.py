"""Port security: an instance sends only from its interface's MAC and addresses.

What passes gets the network id, the interface's conntrack zone and its class in registers; everything else
from an instance port is dropped and counted as spoofed_source (the table's miss).
"""
from __future__ import annotations

from vpcflow.flows.arp import asker_class
from vpcflow.flows.core import ETH_ARP, ETH_IPV4, Flow, Goto, loads, one_item
from vpcflow.flows.index import Index
from vpcflow.flows.matches import load_network
from vpcflow.flows.pipeline import REG_SRC_CLASS, REG_SRC_ZONE
from vpcflow.topology.model import Network, Switch

PRIORITY = 100
# the same for every interface: made once (a host has hundreds of interfaces, 100k in all)
_TO_ARP, _TO_EGRESS, _TO_PORT_SECURITY = Goto("arp_responder"), Goto("egress_acl"), (Goto("port_security"),)


def network_flows(ix: Index, sw: Switch, net: Network):
    """The checks of the switch's interfaces in one network (a run of their own: a move of an
    interface remakes its network's, not the switch's). Matches as tuples: an interface's own
    items (its port, its MAC) are made once and shared by its flows without being kept for
    sharing (core.interned): no other flow has them, and 300k of them in that dict cost more to
    put there than they saved. The items other flows have too (an address, eth_type) are
    interned (an address's through core.one_item)."""
    zones, classes = ix.zones(sw.name), ix.group_classes()
    zone_loads, class_loads = loads(REG_SRC_ZONE, 0, 16), loads(REG_SRC_CLASS)
    network = load_network(net.id)
    for iface, port in ix.local_interfaces(sw.name):
        if iface.network != net.name:
            continue
        own = (("in_port", port), ("eth_src", iface.mac))
        # (the parts of its matches: made once)
        asking, sender, from_it = own + _ARP_REQUEST, (("arp_sha", iface.mac),), own + _IPV4
        obj = iface.name
        mark = (network, zone_loads[zones[iface.name]])
        # its class: which destinations an ARP request may resolve; for IP, its security groups
        sending = mark + (class_loads[classes[iface.security_groups]], _TO_EGRESS)
        # (an address each: its text and items made once; an old binding's interface may have
        # been detached since its remap began: then its endpoints are its old bindings alone)
        for ep in ix.by_interface.get(iface.name) or ix.old_bindings_of(iface.name):
            text = ep.ip_text
            # {in_port, eth_src, **arp(arp_op=1, arp_spa=text, arp_sha=mac)}
            yield Flow("port_security", PRIORITY, asking + one_item("arp_spa", text) + sender,
                       mark + (class_loads[asker_class(ix, iface.name, text)], _TO_ARP), "port_security", obj)
            if iface.source_dest_check:
                # {in_port, eth_src, **ipv4(ipv4_src=text)}
                yield Flow("port_security", PRIORITY, from_it + ep.src_match, sending, "port_security", obj)
        if not iface.source_dest_check:
            # An appliance (router, NAT instance) may send from any address, still from its own MAC.
            yield Flow("port_security", PRIORITY - 10, from_it, sending, "port_security", obj)


def switch_flows(ix: Index, sw: Switch):
    """What enters from an instance port goes to port security (a port may carry interfaces
    of several networks)."""
    for port in sorted({port for _, port in ix.local_interfaces(sw.name)}):
        yield Flow("classify", 100, (("in_port", port),), _TO_PORT_SECURITY, "port_security", f"port:{port}")


_ARP_REQUEST = (("eth_type", ETH_ARP), ("arp_op", 1))
_IPV4 = (("eth_type", ETH_IPV4),)
