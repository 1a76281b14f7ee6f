"""The pipeline's plumbing: where each port's packets start, and a counted drop at every table's end."""
from __future__ import annotations

from vpcflow.flows import pipeline
from vpcflow.flows.core import Goto, flow
from vpcflow.flows.index import Index
from vpcflow.topology.model import EDGE, TUNNEL_PORT, Switch

# ("followed" holds learned records only: a lookup there that finds none is no drop)
HOST_TABLES = ("classify", "port_security", "arp_responder", "egress_acl", "egress_rules", "network_acl",
               "follow", "follow_new", "route",
               "nat_out", "nat_snat", "to_edge", "substrate_in", "nat_in", "nat_accept", "dest_lookup",
               "ingress_acl", "ingress_rules", "network_acl_in", "deliver")
EDGE_TABLES = ("classify", "substrate_in", "uplink_in", "nat_icmp", "edge_out")

TABLE_MISS = 0


def tables_of(sw: Switch):
    return EDGE_TABLES if sw.role == EDGE else HOST_TABLES


def drop_flow(table: str, priority: int, match, reason: str):
    """A drop counted under its reason: the flow's packet counter is the drop counter."""
    return flow(table, priority, match, (), feature="drop", obj=drop_object(reason))


def drop_object(reason: str) -> str:
    """The object of a drop flow's cookie: its reason (feature "drop")."""
    return f"drop:{reason}"


def integration_flows(ix: Index, sw: Switch):
    for name in tables_of(sw):
        yield drop_flow(name, TABLE_MISS, {}, pipeline.table(name).miss)
    yield flow("classify", 100, {"in_port": TUNNEL_PORT}, (Goto("substrate_in"),),
               feature="pipeline", obj="tunnel")
    if sw.role == EDGE:
        yield flow("classify", 100, {"in_port": sw.uplink.port}, (Goto("uplink_in"),),
                   feature="pipeline", obj="uplink")
