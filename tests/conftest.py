"""Shared fixtures. Tests that need root, Open vSwitch or Mininet fail with a clear message when
those are missing (`make test` provides them); they never skip silently."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

DATA = os.path.join(os.path.dirname(__file__), "data")


def data_file(name: str) -> str:
    return os.path.join(DATA, name)


@pytest.fixture
def spec_example():
    from vpcflow.topology.loader import load_file

    return load_file(data_file("spec-example.yaml"))


@pytest.fixture
def two_hosts():
    from vpcflow.topology.loader import load_file

    return load_file(data_file("two-hosts.yaml"))


def require_system():
    """Root, OVS and Mininet's mnexec: what the ovs and mininet layers need."""
    missing = [tool for tool in ("ovs-vswitchd", "ovsdb-server", "ovs-ofctl", "mnexec", "ethtool", "tcpdump")
               if shutil.which(tool) is None]
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces, Open vSwitch); run it through `make test`")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run the tests through `make test`, which installs them")


@pytest.fixture
def private_ovs():
    """An Open vSwitch instance of this test alone (dummy datapath: no kernel devices)."""
    require_system()
    from vpcflow.harness.ovs import OvsInstance

    directory = tempfile.mkdtemp(prefix="vpcflow-ovs-")
    ovs = OvsInstance(directory, vswitchd_args="--enable-dummy=override")
    try:
        ovs.start()
        yield ovs
    finally:
        ovs.stop()
        shutil.rmtree(directory, ignore_errors=True)
