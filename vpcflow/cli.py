"""`vpcflow`: the operator's command line.

Offline commands read a deployment file (check, flows, address, nat, bridge); the others are
clients of a running controller's REST API (status, reload, attach, remap) or of a live bridge
(trace). Exit status: 0 done, 1 the input was rejected, 2 usage or environment error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

from netaddr import AddrFormatError

from vpcflow.topology.loader import DeploymentError, load_file
from vpcflow.topology.model import embed


def _load(path):
    try:
        return load_file(path)
    except DeploymentError as e:
        for p in e.problems:
            # A whole-file problem (unreadable, invalid YAML) already names the file as its path.
            print(str(p) if p.path == str(path) else f"{path}: {p}", file=sys.stderr)
        raise SystemExit(1)


def cmd_check(args):
    dep = _load(args.file)
    n_if = sum(1 for _ in dep.attached_interfaces())
    print(f"{args.file}: ok ({len(dep.switches)} switches, {len(dep.networks)} networks, "
          f"{len(dep.interfaces)} interfaces, {n_if} attached)")
    return 0


def cmd_flows(args):
    from vpcflow.flows import pipeline
    from vpcflow.flows.compiler import Options, compile_deployment
    from vpcflow.flows.ofctl import render

    dep, _ = _switch(args)
    options = Options(embed_outer_source=frozenset({args.switch}) if args.embed_outer_source else frozenset())
    flows = compile_deployment(dep, options)[args.switch]
    which = pipeline.UNDERLAY if args.bridge == "underlay" else pipeline.INTEGRATION
    sys.stdout.write(render(flows.bridge(which), explain=args.explain))
    return 0


def cmd_address(args):
    dep = _load(args.file)
    iface = dep.interfaces.get(args.interface)
    if iface is None:
        print(f"no interface {args.interface!r} in {args.file}", file=sys.stderr)
        return 1
    if iface.attach_to is None:
        print(f"interface {args.interface} is not attached: it has no substrate address", file=sys.stderr)
        return 1
    sw = dep.switches[dep.instances[iface.attach_to].switch]
    net = dep.networks[iface.network]
    for ip in iface.ips:
        print(f"{ip} {embed(sw.prefix, net.id, ip)}")
    return 0


def cmd_nat(args):
    from vpcflow.topology.nat_alloc import nat_table

    dep = _load(args.file)
    rows = nat_table(dep)
    if not rows:
        print(f"{args.file}: no NAT (no nat.public_ips, forwards or elastic_ips)")
        return 0
    print_table(("public ip", "ports", "owner", "kind", "edge matches (value/mask)"), rows)
    return 0


def print_table(header, rows):
    """Columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header] + list(rows)) for i in range(len(header))]
    for r in [header] + list(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def _switch(args):
    """(deployment, switch) named by --switch in the file, or exit 1 naming what exists."""
    dep = _load(args.file)
    sw = dep.switches.get(args.switch)
    if sw is None:
        print(f"no switch {args.switch!r} in {args.file} (switches: {', '.join(dep.switches)})", file=sys.stderr)
        raise SystemExit(1)
    return dep, sw


def cmd_bridge(args):
    from vpcflow import ovsdb

    dep, sw = _switch(args)
    if args.max_idle is not None and args.max_idle < 0:
        print(f"vpcflow bridge: --max-idle {args.max_idle}: a time in milliseconds, 0 or more", file=sys.stderr)
        return 2
    try:
        result = ovsdb.ensure_bridges(ovsdb.bridge_specs(dep, sw), args.controller, args.db, args.datapath_type,
                                      in_band=args.in_band,
                                      max_idle_ms=ovsdb.MAX_IDLE_MS if args.max_idle is None else args.max_idle or None)
    except ovsdb.OvsdbError as e:
        print(f"vpcflow bridge: {e}", file=sys.stderr)
        return 2
    for name, what in result.items():
        print(f"{name}: {what}")
    return 0


def cmd_trace(args):
    from vpcflow import trace

    dep, sw = _switch(args)
    try:
        if args.no_conntrack or "--ct-next" in args.ovs_args:  # the caller says how conntrack answers
            raw, notes = trace.run_trace(sw.bridge, args.flow, args.target, args.ovs_args), []
        else:
            raw, notes = trace.live_trace(sw.bridge, args.flow, args.target, args.ovs_args)
    except trace.TraceError as e:
        print(f"vpcflow trace: {e}", file=sys.stderr)
        return 2
    print("\n".join(trace.explain(raw, dep, args.switch, notes)))
    return 0


def _api(args, method, path, body=None):
    url = f"{args.api.rstrip('/')}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if args.token:
        req.add_header("Authorization", f"Bearer {args.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except urllib.error.URLError as e:
        print(f"cannot reach the controller at {url}: {e.reason}", file=sys.stderr)
        raise SystemExit(2)


def cmd_status(args):
    status, body = _api(args, "GET", "/v1/switches")
    if status != 200:
        print(f"error {status}: {body.get('error')}", file=sys.stderr)
        return 1
    print(f"model generation {body['generation']}")
    if "instance" in body:  # store mode: several instances share the switches
        print(f"instance {body['instance']} of {', '.join(body['members']) or 'none'} "
              f"(membership generation {body['membership_generation']})")
    print(f"{'switch':12} {'bridge':12} {'dpid':18} {'conn':5} {'role':7} {'sync':5} {'flows':>6}  error")
    for s in body["switches"]:
        print(f"{s['switch']:12} {s['bridge']:12} {s['dpid']:18} {'yes' if s['connected'] else 'no':5} "
              f"{s.get('role') or '-':7} {'yes' if s['in_sync'] else 'no':5} {s['flows']:>6}  {s['error']}")
    status, body = _api(args, "GET", "/v1/drops")
    if status == 200:
        print("\ndrops (packets)")
        for switch, reasons in sorted(body["drops"].items()):
            counted = ", ".join(f"{r}={n}" for r, n in sorted(reasons.items()) if n)
            print(f"{switch:12} {counted or 'none'}")
    status, body = _api(args, "GET", "/v1/nat")
    if status == 200 and body["blocks"]:
        print("\nNAT blocks")
        print_table(["ip", "ports", "switch", "in use"],
                    [[b["ip"], b["ports"], b["switch"],
                      "?" if b["in_use"] is None else f"{b['in_use']}/{b['size']}"] for b in body["blocks"]])
    status, body = _api(args, "GET", "/v1/remaps")
    remaps = body.get("remaps", []) if status == 200 else []
    if remaps:
        print("\nremaps")
        _print_remaps(remaps)
    return 0


def cmd_reload(args):
    status, body = _api(args, "POST", "/v1/reload", {})
    if status != 200:
        print(f"error {status}: {body.get('error')}", file=sys.stderr)
        return 1
    print(f"reloaded: model generation {body['generation']}")
    return 0


def cmd_attach(args):
    body = {"instance": args.instance, "requester": args.requester, "follow_connections": args.follow}
    return _report(*_api(args, "POST", f"/v1/interfaces/{args.interface}/attach", body))


def cmd_remap(args):
    body = {"interface": args.interface, "follow_connections": args.follow}
    if args.requester:
        body["requester"] = args.requester
    status, reply = _api(args, "POST", f"/v1/elastic-ips/{args.elastic_ip}/remap", body)
    code = _report(status, reply)
    if code == 0 and reply.get("remap"):
        r = reply["remap"]
        print(f"remap {r['id']}: {r['elastic_ip']} {r['from_interface']} -> {r['interface']}, {r['state']}")
    return code


def cmd_remaps(args):
    path = f"/v1/remaps/{args.id}" if args.id else "/v1/remaps"
    status, body = _api(args, "GET", path)
    if status != 200:
        print(f"error {status}: {body.get('error')}", file=sys.stderr)
        return 1
    _print_remaps(body["remaps"] if not args.id else [body])
    return 0


def _print_remaps(remaps):
    print_table(["remap", "address", "from", "to", "state", "followed"],
                [[r["id"], r.get("elastic_ip") or r["interface"], r["from"], r["to"], r["state"], r["connections"]]
                 for r in remaps])


def cmd_detach(args):
    return _report(*_api(args, "POST", f"/v1/interfaces/{args.interface}/detach", {"requester": args.requester}))


def _report(status, body) -> int:
    if status != 200:
        print(f"error {status}: {body.get('error')}", file=sys.stderr)
        return 1
    print(f"done: model generation {body['generation']}")
    return 0


def cmd_store_import(args):
    """Validate the file as `check` does (nothing written on a problem), then replace the store's
    deployment with it in one transaction."""
    from vpcflow import store

    dep = _load(args.file)
    try:
        generation = store.write_deployment(args.db, dep, os.path.abspath(args.file))
    except store.StoreError as e:
        print(f"vpcflow store import: {e}", file=sys.stderr)
        return 2
    print(f"{args.file}: imported into {args.db} (generation {generation}: {len(dep.switches)} switches, "
          f"{len(dep.networks)} networks, {len(dep.interfaces)} interfaces)")
    return 0


def cmd_store_export(args):
    """The store's deployment as a deployment file, on stdout."""
    from vpcflow import store
    from vpcflow.topology.loader import DeploymentError

    try:
        sys.stdout.write(store.export_deployment(args.db))
    except store.StoreError as e:
        print(f"vpcflow store export: {e}", file=sys.stderr)
        return 2
    except DeploymentError as e:  # the store holds what no file could say: one line per problem
        for p in e.problems:
            print(f"{e.source}: {p}", file=sys.stderr)
        return 1
    return 0


def parser():
    p = argparse.ArgumentParser(prog="vpcflow", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="validate a deployment file")
    c.add_argument("file")
    c.set_defaults(func=cmd_check)

    c = sub.add_parser("flows", help="print a switch's flows in ovs-ofctl add-flows syntax")
    c.add_argument("file")
    c.add_argument("--switch", required=True)
    c.add_argument("--bridge", choices=("integration", "underlay"), default="integration")
    c.add_argument("--explain", action="store_true",
                   help="a comment line (ignored by ovs-ofctl) naming the feature and object of each flow")
    c.add_argument("--embed-outer-source", action="store_true",
                   help="compile for an OVS that honours tun_ipv6_src (3.1.5+, 3.3.1+, 3.4+)")
    c.set_defaults(func=cmd_flows)

    c = sub.add_parser("address", help="print the embedded substrate address of each of an interface's IPs")
    c.add_argument("file")
    c.add_argument("interface")
    c.set_defaults(func=cmd_address)

    c = sub.add_parser("nat", help="print the NAT blocks (fixed and allocated), forwards and elastic IPs")
    c.add_argument("file")
    c.set_defaults(func=cmd_nat)

    c = sub.add_parser("bridge", help="create or update a switch's bridges through OVSDB")
    c.add_argument("file")
    c.add_argument("--switch", required=True)
    c.add_argument("--db", default=os.environ.get("VPCFLOW_OVSDB", "unix:/var/run/openvswitch/db.sock"))
    c.add_argument("--controller", action="append", default=[],
                   help="OpenFlow controller target, e.g. tcp:127.0.0.1:6653 (repeatable)")
    c.add_argument("--datapath-type", default="netdev")
    c.add_argument("--in-band", action="store_true",
                   help="reach the controller in band, through these bridges (default: out of band, "
                        "over a management network; in-band control costs the data path)")
    c.add_argument("--max-idle", type=int, metavar="MS",
                   help="how long Open vSwitch keeps an idle datapath flow (other_config:max-idle; default "
                        "1000: vpcflow's connection records change the tables often, and each change "
                        "revalidates every datapath flow; 0 leaves the setting as it is)")
    c.set_defaults(func=cmd_bridge)

    c = sub.add_parser("trace", help="explain a packet through the live pipeline of a switch (ofproto/trace)")
    c.add_argument("--switch", required=True)
    c.add_argument("--file", default=os.environ.get("VPCFLOW_TOPOLOGY", "etc/topology.yaml"),
                   help="the deployment file, to name each flow (env VPCFLOW_TOPOLOGY)")
    c.add_argument("--target", help="ovs-vswitchd control socket (default: the system's)")
    c.add_argument("--no-conntrack", action="store_true",
                   help="do not look conntrack steps up in the switch's conntrack (OVS then assumes +trk+new)")
    c.add_argument("flow", help="the packet, in ovs-ofctl flow syntax, e.g. in_port=web1,icmp,...")
    c.add_argument("ovs_args", nargs="*", help="passed to ofproto/trace, e.g. --ct-next trk,est")
    c.set_defaults(func=cmd_trace)

    c = sub.add_parser("attach", help="attach (or move) an interface record to an instance")
    c.add_argument("interface")
    c.add_argument("--instance", required=True)
    c.add_argument("--requester", required=True, help="the entity asking (must be an attacher)")
    c.add_argument("--follow", action="store_true", help="keep existing connections on the old instance")
    c.set_defaults(func=cmd_attach)
    c = sub.add_parser("remap", help="point an elastic IP at another interface")
    c.add_argument("elastic_ip")
    c.add_argument("--interface", required=True)
    c.add_argument("--requester", help="the entity asking (must be an attacher of the interface)")
    c.add_argument("--follow", action="store_true", help="keep existing connections on the old interface")
    c.set_defaults(func=cmd_remap)
    c = sub.add_parser("remaps", help="the remaps: draining (with the connections still followed) or complete")
    c.add_argument("id", nargs="?")
    c.set_defaults(func=cmd_remaps)
    c = sub.add_parser("detach", help="detach an interface record: delivery to its instance stops")
    c.add_argument("interface")
    c.add_argument("--requester", required=True)
    c.set_defaults(func=cmd_detach)

    for name, func, text in (("status", cmd_status, "the controller's switches at a glance"),
                             ("reload", cmd_reload, "make the controller re-read its deployment file")):
        c = sub.add_parser(name, help=text)
        c.set_defaults(func=func)
    for c in sub.choices.values():
        c.add_argument("--api", default=os.environ.get("VPCFLOW_API", "http://127.0.0.1:8181"),
                       help="the controller's REST API (env VPCFLOW_API)")
        c.add_argument("--token", default=os.environ.get("VPCFLOW_TOKEN"),
                       help="the API token (env VPCFLOW_TOKEN)")

    # The store (OVSDB, standalone or clustered) is no REST client: added after --api/--token.
    c = sub.add_parser("store", help="the deployment in a (clustered) OVSDB store: import, export")
    store_sub = c.add_subparsers(dest="store_command", required=True)
    db_help = "the store: unix:PATH or tcp:H:P[,tcp:H:P,...] for a cluster (env VPCFLOW_STORE)"
    for name, func, text in (("import", cmd_store_import, "validate a deployment file and replace the store's with it"),
                             ("export", cmd_store_export, "print the store's deployment as a deployment file")):
        s = store_sub.add_parser(name, help=text)
        if name == "import":
            s.add_argument("file")
        s.add_argument("--db", default=os.environ.get("VPCFLOW_STORE"), required="VPCFLOW_STORE" not in os.environ,
                       help=db_help)
        s.set_defaults(func=func)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (AddrFormatError, ValueError) as e:
        print(f"vpcflow {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

