"""Controller options (oslo.config), section [vpcflow]; os-ken's own are in [DEFAULT]."""
from oslo_config import cfg

OPTS = [
    cfg.StrOpt("topology_file", help="the deployment file (YAML) this controller enforces"),
    cfg.StrOpt("state_file", help="where runtime changes (attachments, remaps) persist"),
    cfg.StrOpt("store", help="the intent store instead of topology_file: unix:PATH, tcp:HOST:PORT, or the members "
                             "of a clustered store, comma-separated (tcp:H:P1,tcp:H:P2,tcp:H:P3); runtime changes "
                             "are written there and state_file is not used. Unset: the deployment file"),
    cfg.StrOpt("instance_name", help="store mode: this controller's name among the instances sharing the switches "
                                     "(unique; default HOSTNAME:OFP_PORT)"),
    cfg.StrOpt("api_host", default="127.0.0.1", help="address of the REST API"),
    cfg.PortOpt("api_port", default=8181, help="port of the REST API"),
    cfg.StrOpt("api_token", secret=True, help="bearer token the REST API requires"),
    cfg.StrOpt("metrics_host", default="127.0.0.1", help="address of GET /metrics"),
    cfg.PortOpt("metrics_port", default=9181, help="port of GET /metrics (0: served by the API port only)"),
    cfg.IntOpt("arp_probe_interval", default=10, min=1,
               help="seconds between ARP requests an edge sends to learn its gateway's MAC"),
    cfg.DictOpt("appctl_targets", default={},
                help="switch:path of its ovs-vswitchd control socket, where the controller can reach it "
                     "(e.g. host1:/var/run/openvswitch/ovs-vswitchd.1234.ctl): NAT block usage is read "
                     "from its conntrack (OpenFlow cannot read conntrack)"),
    cfg.BoolOpt("debug", default=False, help="log at debug level"),
]


def register(conf):
    """Register on the framework's registry (framework.CONF); safe to call twice."""
    if "vpcflow" not in conf or "topology_file" not in conf.vpcflow:
        conf.register_opts(OPTS, group="vpcflow")
