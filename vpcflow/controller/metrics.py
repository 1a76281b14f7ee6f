"""GET /metrics: the controller's state in Prometheus text format.

Gauges are filled from the Controller at each scrape (a private registry, so nothing global
leaks between instances).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST as CONTENT_TYPE

from vpcflow.controller import nat_usage

__all__ = ["render", "CONTENT_TYPE"]


def render(ctl, app) -> bytes:
    reg = CollectorRegistry()
    connected = Gauge("vpcflow_switch_connected", "bridge connected to this controller", ["switch", "bridge"],
                      registry=reg)
    master = Gauge("vpcflow_switch_programmed", "this controller programs the bridge (its master, or the only "
                   "controller)", ["switch", "bridge"], registry=reg)
    flows = Gauge("vpcflow_flows_installed", "flows this controller manages on the bridge", ["switch", "bridge"],
                  registry=reg)
    sync = Gauge("vpcflow_last_sync_seconds", "duration of the last sync", ["switch", "bridge"], registry=reg)
    by_feature = Gauge("vpcflow_flows_by_feature", "flows this controller manages, by feature",
                       ["switch", "bridge", "feature"], registry=reg)
    packet_ins = Gauge("vpcflow_packet_ins_total", "packet-ins received (no flow asks for any)",
                       ["switch", "bridge"], registry=reg)
    generation = Gauge("vpcflow_model_generation", "deployment model generation in force", registry=reg)
    drops = Gauge("vpcflow_drops_total", "packets dropped, by switch and reason (a drop flow's counter)",
                  ["switch", "reason"], registry=reg)
    for switch, reasons in app.drop_counters().items():
        for reason, packets in reasons.items():
            drops.labels(switch, reason).set(packets)
    remaps = Gauge("vpcflow_remaps", "remaps by state", ["state"], registry=reg)
    followed = Gauge("vpcflow_remap_followed_connections", "connections a draining remap still follows",
                     ["remap"], registry=reg)
    for state in ("draining", "complete"):
        remaps.labels(state).set(sum(1 for r in ctl.remaps.values() if r.state == state))
    for r in ctl.draining():
        followed.labels(r.id).set(r.connections)
    nat_block_metrics(ctl, getattr(app, "appctl_targets", {}), reg)
    status = ctl.status()
    generation.set(status["generation"])
    for s in status["switches"]:
        labels = (s["switch"], s["bridge"])
        connected.labels(*labels).set(1 if s["connected"] else 0)
        master.labels(*labels).set(1 if s["connected"] and s["role"] in ("master", "equal") else 0)
        flows.labels(*labels).set(s["flows"])
        sync.labels(*labels).set(s["last_sync_seconds"])
        packet_ins.labels(*labels).set(s["packet_ins"])
        for feature, count in s["flows_by_feature"].items():
            by_feature.labels(*labels, feature).set(count)
    return generate_latest(reg)


def nat_block_metrics(ctl, targets, reg) -> None:
    """Each block's size, and the ports its host's conntrack holds where the switch's control
    socket is known (appctl_targets)."""
    size = Gauge("vpcflow_nat_block_ports", "ports in a NAT block", ["block", "switch"], registry=reg)
    used = Gauge("vpcflow_nat_block_ports_in_use", "ports of a NAT block its host's conntrack holds "
                 "(switches with an appctl target only)", ["block", "switch"], registry=reg)
    for b in nat_usage.block_usage(ctl, targets):
        size.labels(b["block"], b["switch"]).set(b["size"])
        if b["in_use"] is not None:
            used.labels(b["block"], b["switch"]).set(b["in_use"])
