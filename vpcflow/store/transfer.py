"""Deployment files in and out of the store: `vpcflow store import` and `vpcflow store export`."""
from __future__ import annotations

from vpcflow.store import client, rows
from vpcflow.store.reader import StoreReader
from vpcflow.topology.loader import DeploymentError, load_file, load_text
from vpcflow.topology.model import Deployment


def import_deployment(remote: str, path: str, timeout: float = client.TIMEOUT) -> Deployment:
    """Validate the file with the loader (DeploymentError, nothing written, if it has problems),
    then replace the store's whole deployment with it in one transaction. Runtime state
    (remaps) stays. Returns the Deployment written."""
    dep = load_file(path)
    write_deployment(remote, dep, str(path), timeout)
    return dep


def write_deployment(remote: str, dep: Deployment, source: str = "", timeout: float = client.TIMEOUT) -> int:
    """Replace the store's deployment with a validated one, in one transaction; the generation."""
    with client.StoreWriter(remote, timeout) as writer:
        return writer.replace_intent(rows.deployment_rows(dep), source=source)


def read_deployment(remote: str, timeout: float = client.TIMEOUT) -> Deployment:
    """The store's Deployment as the leader has it; DeploymentError if its content is invalid."""
    with StoreReader(remote, leader_only=True, timeout=timeout) as reader:
        update = reader.read()
    if update.deployment is None:
        raise DeploymentError(update.problems, f"store {remote}")
    return update.deployment


def export_text(dep: Deployment) -> str:
    """A deployment file (YAML) that loads to `dep`. When loading the fixed blocks alone would
    allocate the others differently (a host was added to the store before others), the allocated
    blocks are written as fixed ones, so no host's NAT block moves; the file says so."""
    text = rows.to_yaml(rows.file_data(dep))
    if load_text(text).nat.blocks == dep.nat.blocks:
        return text
    pinned = rows.to_yaml(rows.rows_to_data(rows.deployment_rows(dep), allocated_blocks=True))
    return ("# NAT blocks the store allocated are written as fixed blocks: allocated again from this\n"
            "# file alone, some would move.\n" + pinned)


def export_deployment(remote: str, timeout: float = client.TIMEOUT) -> str:
    return export_text(read_deployment(remote, timeout))
