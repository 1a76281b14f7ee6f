"""The one place that imports the OpenFlow framework: os-ken, or Ryu where a working one exists.

os-ken is the maintained continuation of Ryu with the same API under another package name
(`OSKenApp` for `RyuApp`). Import app_manager before controller: the other order is circular.
"""
import threading

try:
    from os_ken import cfg as _cfg
    from os_ken.base import app_manager
    from os_ken.controller import dpset, ofp_event  # noqa: F401  (dpset: for apps that want it)
    from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
    from os_ken.lib import hub
    from os_ken.lib.packet import arp as arp_pkt, ethernet, packet
    from os_ken.ofproto import nicira_ext, ofproto_common, ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

    AppBase = app_manager.OSKenApp
    FRAMEWORK = "os_ken"
except ImportError:  # pragma: no cover - only where Ryu is installed instead
    from ryu import cfg as _cfg
    from ryu.base import app_manager
    from ryu.controller import dpset, ofp_event  # noqa: F401
    from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
    from ryu.lib import hub
    from ryu.lib.packet import arp as arp_pkt, ethernet, packet
    from ryu.ofproto import nicira_ext, ofproto_common, ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

    AppBase = app_manager.RyuApp
    FRAMEWORK = "ryu"


def event():
    """An event for the controller's threads: os-ken's hub.Event is not one under its default
    native threads (OSKEN_HUB_TYPE). There its wait ignores the timeout (measured: wait(timeout=
    0.1) returned after the 2 s it took to be set), so a switch that never answered held its
    sync for good; and a set() between a waiter's check and its wait is lost (set replaces the
    event it waits on), which would hold a runtime change's phases for good. Under eventlet's
    cooperative threads neither happens: hub.Event there."""
    if getattr(hub, "HUB_TYPE", "eventlet") == "native":
        return threading.Event()
    return hub.Event()


# The framework's own option registry (not oslo.config's global one): its options and ours.
CONF = _cfg.CONF

__all__ = ["CONF", "app_manager", "ofp_event", "CONFIG_DISPATCHER", "DEAD_DISPATCHER", "MAIN_DISPATCHER", "set_ev_cls",
           "hub", "arp_pkt", "ethernet", "packet", "nicira_ext", "ofproto_common", "ofp", "parser", "AppBase",
           "FRAMEWORK", "event"]
