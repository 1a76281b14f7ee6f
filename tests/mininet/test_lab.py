"""The lab itself (issue 3, item 8): up from a deployment file in seconds, each switch its own
namespace and Open vSwitch, prepared with `vpcflow bridge`; down without a trace."""
import os
import subprocess
import time

import pytest

from tests.conftest import data_file, require_system
from vpcflow.harness.ovs import alive

pytestmark = pytest.mark.overlay


def root_links(tag):
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f": {tag}" in line]


def test_up_in_seconds_and_down_completely():
    require_system()
    from vpcflow.harness.lab import Lab

    started = time.monotonic()
    lab = Lab(data_file("two-hosts.yaml"), tag="vfl")
    try:
        lab.start()
        took = time.monotonic() - started
        assert took < 20, f"took {took:.1f}s"
        pids = [pid for host in lab.switches.values() for pid in host.ovs.pids] + [lab.ctl.proc.pid]
        namespaces = [node.pid for node in list(lab.instances.values()) + [h.node for h in lab.switches.values()]]
        assert all(alive(p) for p in pids + namespaces)
        # each switch has its own OVS with the two bridges `vpcflow bridge` made
        for host in lab.switches.values():
            assert host.ovs.vsctl("list-br").split() == ["br-int", "br-ul"]
        assert len(root_links("vfl")) == len(lab.switches)  # one management link each
        assert lab.ping(lab.host("web1"), "10.0.0.12") == 1
        workdir = lab.workdir
    finally:
        lab.stop()
    assert not any(alive(p) for p in pids + namespaces)
    assert root_links("vfl") == []
    assert not os.path.exists(workdir)
