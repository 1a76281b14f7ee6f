"""Fixtures of the scale-out tests: private stores (standalone and a three-member Raft cluster)
under temporary folders, every process ended by its PID and every folder removed, pass or fail."""
from __future__ import annotations

import shutil

import pytest


def require_ovsdb():
    missing = [tool for tool in ("ovsdb-server", "ovsdb-tool", "ovs-appctl") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run the tests through `make test`, which installs Open vSwitch")


@pytest.fixture
def store_server():
    require_ovsdb()
    from vpcflow.harness.cluster import StoreServer

    with StoreServer() as server:
        yield server


@pytest.fixture
def store_cluster():
    require_ovsdb()
    from vpcflow.harness.cluster import StoreCluster

    with StoreCluster() as cluster:
        yield cluster
