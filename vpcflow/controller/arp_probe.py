"""The edge's ARP requests toward its gateway.

The edge learns the gateway's MAC in the switch itself (flows/edge.py); the controller only
makes the gateway speak, by sending it an ARP request from the uplink every few seconds.
"""
from __future__ import annotations

import logging

from vpcflow.controller.framework import CONF, arp_pkt, ethernet, hub, packet
from vpcflow.topology.model import EDGE

LOG = logging.getLogger("vpcflow.arp_probe")
BROADCAST = "ff:ff:ff:ff:ff:ff"


def arp_request(uplink) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=BROADCAST, src=uplink.mac, ethertype=0x0806))
    pkt.add_protocol(arp_pkt.arp(opcode=arp_pkt.ARP_REQUEST, src_mac=uplink.mac, src_ip=str(uplink.ip),
                                 dst_mac="00:00:00:00:00:00", dst_ip=str(uplink.gateway_ip)))
    pkt.serialize()
    return bytes(pkt.data)


def probe_once(app):
    for sw in app.ctl.deployment.switches.values():
        if sw.role == EDGE and sw.dpid in app.datapaths:
            app.send_packet(sw.dpid, sw.uplink.port, arp_request(sw.uplink))


def run(app):
    while True:
        try:
            probe_once(app)
        except Exception:  # the probe must outlive a bad moment; say what happened
            LOG.exception("ARP probe toward the gateway failed")
        hub.sleep(CONF.vpcflow.arp_probe_interval)
