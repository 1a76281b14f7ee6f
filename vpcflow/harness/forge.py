"""Substrate packets built by hand, as a forger (or a test of the receiving check) would send them."""
from __future__ import annotations

from netaddr import IPAddress

from vpcflow.topology.model import dummy_mac, embed

GENEVE_PORT = 6081
TEB = 0x6558  # Geneve payload: an Ethernet frame


def underlay_mac(lab, switch: str) -> str:
    sw = lab.dep.switches[switch]
    return lab.switches[switch].sh(f"cat /sys/class/net/{sw.underlay_bridge}/address").strip()


def geneve_frame(lab, to_switch: str, outer_src: str, vni: int, inner_src: str, inner_dst: str, l4) -> bytes:
    """A Geneve packet on the substrate for `inner_dst` on `to_switch`, claiming to come from
    `outer_src`. Its Ethernet source is that of the switch owning outer_src when there is one:
    Open vSwitch learns a tunnel peer's MAC from packets it receives, and a made-up MAC would
    leave the receiver unable to reach the real peer afterwards."""
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    dst = lab.dep.switches[to_switch]
    owner = next((s.name for s in lab.dep.switches.values() if IPAddress(outer_src) in s.prefix), None)
    src_mac = underlay_mac(lab, owner) if owner else "02:5e:00:00:00:66"
    inner = Ether(src=dummy_mac(inner_src), dst="02:00:00:00:00:01") / IP(src=inner_src, dst=inner_dst) / l4
    return bytes(Ether(src=src_mac, dst=underlay_mac(lab, to_switch))
                 / IPv6(src=outer_src, dst=str(embed(dst.prefix, vni, IPAddress(inner_dst))))
                 / UDP(sport=40000, dport=GENEVE_PORT) / GENEVE(vni=vni, proto=TEB) / inner)
