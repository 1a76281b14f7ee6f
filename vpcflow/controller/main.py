"""`vpcflow-controller --config-file etc/vpcflow.conf`: start os-ken with the vpcflow app.

Everything that can be checked before the framework starts is checked here, so that a bad
config, a bad deployment file or a busy port is one clear line and exit status 1.
"""
from __future__ import annotations

import errno
import logging
import socket
import sys

from oslo_config import cfg

APP = "vpcflow.controller.app"
ECHO_INTERVAL = 5.0  # s (Open vSwitch's own inactivity probe toward the controller: 5 s)
ECHO_MISSES = 3
DEFAULT_OFP_PORT = 6653


def _fail(message: str) -> int:
    print(f"vpcflow-controller: {message}", file=sys.stderr)
    return 1


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _check_store(remote: str) -> str:
    """Why the store cannot give this controller its intent ("" if it can)."""
    from vpcflow.controller.store_source import first_deployment
    from vpcflow.store import StoreError
    from vpcflow.topology.loader import DeploymentError

    try:
        dep = first_deployment(remote)
    except StoreError as e:
        return f"store {remote} does not answer: {e}"
    except DeploymentError as e:
        return f"store {remote} holds no valid deployment:\n" + "\n".join(f"  {p}" for p in e.problems)
    if not dep.switches:
        return f"store {remote} holds no deployment: load one with `vpcflow store import FILE --db {remote}`"
    return ""


def main(argv=None) -> int:
    # os-ken's hub runs native threads by default (OSKEN_HUB_TYPE), where this patches nothing;
    # under OSKEN_HUB_TYPE=eventlet, green threads everywhere, before anything opens a socket.
    from os_ken.lib import hub

    hub.patch(thread=False)
    from os_ken.base import app_manager  # noqa: F401  (before os_ken.controller: import order)
    from os_ken.controller import controller  # noqa: F401  (registers ofp_listen_host/port)

    from vpcflow.controller import config
    from vpcflow.controller.framework import CONF as conf
    from vpcflow.topology.loader import DeploymentError, load_file

    config.register(conf)
    # os-ken asks a switch for no echo by default: a switch that went (its ovs-vswitchd killed,
    # its host gone) was reported connected until something was sent to it, which could be
    # never (measured: still connected 10 s after). The first echo sent on a closed connection
    # ends it (within two ECHO_INTERVALs), and a switch that no longer answers is let go after
    # ECHO_MISSES (one busy with a big bundle answers late, not never). [DEFAULT] sets others.
    conf.set_default("echo_request_interval", ECHO_INTERVAL)
    conf.set_default("maximum_unreplied_echo_requests", ECHO_MISSES)
    try:
        conf(args=sys.argv[1:] if argv is None else argv, project="vpcflow", prog="vpcflow-controller")
    except cfg.Error as e:
        return _fail(str(e))
    logging.basicConfig(level=logging.DEBUG if conf.vpcflow.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    v = conf.vpcflow
    if v.store:
        failed = _check_store(v.store)
        if failed:
            return _fail(failed)
    elif not v.topology_file:
        return _fail("[vpcflow] topology_file is not set")
    else:
        try:
            load_file(v.topology_file)
        except DeploymentError as e:
            if [p.path for p in e.problems] == [str(v.topology_file)]:  # the file itself: unreadable, not YAML
                return _fail(f"deployment file {e.problems[0]}")
            return _fail(f"deployment file {v.topology_file} rejected:\n" + "\n".join(f"  {p}" for p in e.problems))
    if conf.ofp_tcp_listen_port is None:
        conf.set_override("ofp_tcp_listen_port", DEFAULT_OFP_PORT)
    for what, host, port in (("OpenFlow", conf.ofp_listen_host or "0.0.0.0", conf.ofp_tcp_listen_port),
                             ("API", v.api_host, v.api_port), ("metrics", v.metrics_host, v.metrics_port)):
        if not port:
            continue
        if not _port_free(host, port):
            return _fail(f"{what} port {host}:{port} is already in use")
    from os_ken.base.app_manager import AppManager

    try:
        AppManager.run_apps([APP])
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
