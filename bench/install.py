"""Install rate: the real controller process syncing one big host bridge of a private
ovs-vswitchd (dummy datapath), against `ovs-ofctl --bundle add-flows` of the same flows.

The controller's figure is its own sync time (`last_sync_seconds`: read ports and flows, diff,
build the flow-mods, one bundle, barrier). After the first sync (which also compiles), each run
restarts ovs-vswitchd: the flows are gone, the bridges and ports stay, the controller reconnects
and installs everything again from its cached compile.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import yaml

from bench import generate
from bench.util import median, now, profile, run_worker, worker_main
from vpcflow.harness.controller import ControllerError, ControllerProcess, bin_path, wait_for
from vpcflow.harness.ovs import OvsInstance

SWITCH = "host0"
KEY = (SWITCH, "integration")


def deployment(smoke: bool) -> dict:
    # Racks of one host: host0 serves a whole 120-interface network (about 15k flows).
    return generate.generate(40, 2, 20, 1) if smoke else generate.generate(240, 2, 120, 1)


def _bridge(path, ovs, controller=None):
    cmd = [bin_path("vpcflow"), "bridge", path, "--switch", SWITCH, "--db", ovs.db, "--datapath-type", "dummy"]
    subprocess.run(cmd + (["--controller", controller] if controller else []), check=True, capture_output=True)
    ovs.wait_bridge_mgmt("br-int")


def _synced_after(ctl, since: float, flows: int, stalls: list):
    try:
        s = ctl.switches()[KEY]
    except OSError:  # the API shares the controller's one thread with compile and sync: it stalls
        stalls.append(1)
        return None
    if s["error"]:
        raise RuntimeError(f"the controller's sync failed: {s['error']}")
    return s if s["in_sync"] and s["last_sync"] and s["last_sync"] > since and s["flows"] == flows else None


def _status(ctl):
    try:
        return ctl.switches().get(KEY, "not known")
    except OSError as e:
        return f"the API did not answer ({e})"


def measure(smoke: bool, runs: int) -> dict:
    wait = 60 if smoke else 300
    work = tempfile.mkdtemp(prefix="vpcflow-vfb-install-")
    path = os.path.join(work, "topology.yaml")
    with open(path, "w") as f:
        yaml.dump(deployment(smoke), f, Dumper=yaml.CSafeDumper)
    ovs = OvsInstance(os.path.join(work, "ovs"), vswitchd_args="--enable-dummy=override")
    ctl = None
    out = {"switch": SWITCH}
    try:
        ovs.start()
        _bridge(path, ovs)
        text = subprocess.run([bin_path("vpcflow"), "flows", path, "--switch", SWITCH], check=True,
                              capture_output=True, text=True).stdout
        flows_file = os.path.join(work, "flows.txt")
        with open(flows_file, "w") as f:
            f.write(text)
        out["flows"] = n = len(text.splitlines())
        ofctl = []
        for _ in range(runs):
            ovs.ofctl("del-flows", "br-int")
            t = now()
            subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows",
                            f"unix:{ovs.dir}/br-int.mgmt", flows_file], check=True, capture_output=True)
            ofctl.append(now() - t)
        out["ofctl"] = ofctl
        if len(ovs.flows("br-int")) != n:
            raise RuntimeError("ovs-ofctl did not install every flow")
        ovs.ofctl("del-flows", "br-int")

        ctl = ControllerProcess(work, path, listen_host="127.0.0.1")
        ctl.start()
        since = time.time()
        _bridge(path, ovs, ctl.ofp_target)
        stalls = []
        try:
            first = wait_for(lambda: _synced_after(ctl, since, n, stalls), wait, "the first sync")
        except ControllerError as e:  # what the switch and the controller said, to tell why
            raise ControllerError(f"{e}; the switch as the controller saw it: {_status(ctl)}; "
                                  f"the controller's log:\n{ctl.output()[-3000:]}") from None
        out["first_sync"] = first["last_sync_seconds"]  # includes compiling the switch
        synced = []
        for _ in range(runs):
            since = time.time()
            ovs.restart_vswitchd()
            synced.append(wait_for(lambda: _synced_after(ctl, since, n, stalls), wait, "a sync after restart")
                          ["last_sync_seconds"])
        out["controller"] = synced
        out["api_stalls"] = len(stalls)
        if len(ovs.flows("br-int")) < n:
            raise RuntimeError("the controller did not install every flow")
    finally:
        if ctl is not None:
            ctl.stop()
        ovs.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def job_render(smoke: bool) -> dict:
    """The controller's Python work per flow-mod, without a switch: key, flow-mod, bundle adds
    (what _sync_once and apply do for a bridge with nothing installed)."""
    from vpcflow.controller import render
    from vpcflow.controller.framework import ofp
    from vpcflow.controller.sync import split_by_resolvable
    from vpcflow.flows.compiler import compile_switch
    from vpcflow.flows.index import Index
    from vpcflow.topology.loader import parse

    dep = parse(deployment(smoke))
    flows = compile_switch(Index(dep), SWITCH).integration
    names = [i.port for i in dep.instances.values() if i.switch == SWITCH] + ["vpc-tun"]
    ports = {name: number for number, name in enumerate(names, 1)}

    def build():
        desired, _ = split_by_resolvable(flows, lambda f: render.desired_key(f, ports))
        msgs = [render.flow_mod(f, ports) for f in desired.values()]
        for _ in render.bundle_adds(1, ofp.ONF_BF_ATOMIC, msgs, 1):
            pass
    t = now()
    build()
    seconds = now() - t
    return {"flows": len(flows), "seconds": seconds, "profile": profile(build, sort="cumulative")}


def section(smoke: bool, runs: int) -> dict:
    out = measure(smoke, runs)
    out["render"] = run_worker("bench.install", "render", 600, smoke=smoke)
    out["ofctl_rate"] = out["flows"] / median(out["ofctl"])
    out["controller_rate"] = out["flows"] / median(out["controller"])
    return out


if __name__ == "__main__":
    worker_main({"render": job_render})
