"""The store (issue 9, part 1) on a private standalone ovsdb-server: import, export, the reader's
change reports, and a rejected file writing nothing."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vpcflow.store import (StoreError, StoreReader, StoreWriter, export_deployment, import_deployment,
                           read_deployment)
from vpcflow.store.reader import DELETE, INSERT, UPDATE, Change
from vpcflow.store.rows import deployment_from_rows, deployment_rows, file_data, rows_to_data
from vpcflow.store.schema import INTENT_TABLES, NATURAL_KEYS, SCHEMA_VERSION, load_schema_json, natural_key
from vpcflow.topology.loader import DeploymentError, load_file, load_text

pytestmark = pytest.mark.scaleout

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
TOPOLOGY = ROOT / "etc" / "topology.yaml"
DEPLOYMENT_FILES = sorted(DATA.glob("*.yaml")) + [TOPOLOGY]
VPCFLOW = Path(sys.executable).parent / "vpcflow"
WAIT = 10.0


def file_id(path: Path) -> str:
    return path.name


def write_variant(tmp_path, mutate, base=TOPOLOGY, name="variant.yaml") -> Path:
    data = yaml.safe_load(base.read_text())
    mutate(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def contents(reader):
    """Every row the reader had at its last read, but the Store row, by table and natural key."""
    return {table: {natural_key(table, r): r for r in rows}
            for table, rows in reader.rows().items() if table != "Store"}


def vpcflow(*args):
    return subprocess.run([str(VPCFLOW), *map(str, args)], capture_output=True, text=True, timeout=60)


# --- the schema file and the pure conversion ------------------------------------------------------

def test_schema_file_matches_the_code():
    schema = load_schema_json()
    assert schema["name"] == "vpcflow"
    assert schema["version"] == SCHEMA_VERSION
    assert set(schema["tables"]) == set(NATURAL_KEYS)
    for table, columns in NATURAL_KEYS.items():
        assert set(columns) <= set(schema["tables"][table]["columns"]), table
        if columns:  # a natural key is unique in the database itself
            assert list(columns) in schema["tables"][table]["indexes"], table
        # Rows name each other by name: a non-root table would be garbage-collected at once.
        assert schema["tables"][table]["isRoot"] is True, table


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=file_id)
def test_rows_round_trip_without_a_server(path):
    dep = load_file(path)
    rows = deployment_rows(dep)
    assert deployment_from_rows(rows) == dep
    assert load_text(yaml.safe_dump(file_data(dep))) == dep


def test_stored_allocation_is_kept_even_if_the_store_orders_switches_differently():
    dep = load_file(DATA / "nat.yaml")
    allocated = [b for b in dep.nat.blocks if not b.fixed]
    assert allocated, "nat.yaml must have allocated blocks for this test to mean anything"
    rows = deployment_rows(dep)
    rows["Switch"] = [dict(r, position=len(rows["Switch"]) - r["position"]) for r in rows["Switch"]]  # reversed
    assert deployment_from_rows(rows).nat.blocks == dep.nat.blocks


def test_a_host_added_to_the_store_without_a_block_gets_one():
    dep = load_file(DATA / "nat.yaml")
    rows = deployment_rows(dep)
    rows["Switch"].append(dict(rows["Switch"][0], name="host9", position=99, dpid=0x99,
                               prefix="fd00:5ee0:0:99::/64"))
    grown = deployment_from_rows(rows)
    assert grown.nat.blocks[:len(dep.nat.blocks)] == dep.nat.blocks
    assert [b.owner for b in grown.nat.blocks[len(dep.nat.blocks):]] == ["host9"]


def test_rows_with_a_problem_are_reported_with_file_paths():
    rows = deployment_rows(load_file(TOPOLOGY))
    rows["Interface"][0] = dict(rows["Interface"][0], attach_to="nowhere")
    with pytest.raises(DeploymentError) as caught:
        deployment_from_rows(rows)
    name = rows["Interface"][0]["name"]
    assert [(p.path, "nowhere" in p.message) for p in caught.value.problems] == [
        (f"interfaces.{name}.attach_to", True)]


# --- import and export through a real ovsdb-server -------------------------------------------------

@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=file_id)
def test_import_then_export_gives_the_same_deployment(store_server, path):
    dep = load_file(path)
    assert import_deployment(store_server.remote, str(path)) == dep
    assert read_deployment(store_server.remote) == dep
    exported = export_deployment(store_server.remote)
    assert load_text(exported) == dep
    with StoreReader(store_server.remote) as reader:
        update = reader.read()
    assert update.deployment == dep and update.problems == ()
    # The first read reports every row, once, as an insert.
    expected = sorted((table, len(rows)) for table, rows in deployment_rows(dep).items() if rows)
    counted = {}
    for change in update.changes:
        assert change.kind == INSERT
        counted[change.table] = counted.get(change.table, 0) + 1
    assert sorted(counted.items()) == expected


def test_import_replaces_what_was_there(store_server):
    import_deployment(store_server.remote, str(TOPOLOGY))
    import_deployment(store_server.remote, str(DATA / "two-hosts.yaml"))
    assert read_deployment(store_server.remote) == load_file(DATA / "two-hosts.yaml")


def test_an_empty_store_exports_no_deployment_of_ours(store_server):
    dep = load_text(export_deployment(store_server.remote))
    assert not dep.switches and not dep.interfaces


REJECTED = [
    ("duplicate address", lambda d: d["interfaces"]["eni-web2"].update(ips=["10.0.0.11"]),
     "interfaces.eni-web2.ips[0]"),
    ("unknown key", lambda d: d["switches"]["host1"].update(prfix="x"), "switches.host1.prfix"),
    ("unknown instance", lambda d: d["interfaces"]["eni-web1"].update(attach_to="web9"),
     "interfaces.eni-web1.attach_to"),
]


@pytest.mark.parametrize("mutate, path", [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_a_rejected_file_writes_nothing(store_server, tmp_path, mutate, path):
    import_deployment(store_server.remote, str(TOPOLOGY))
    bad = write_variant(tmp_path, mutate)
    with StoreReader(store_server.remote) as reader:
        before = reader.read()
        with pytest.raises(DeploymentError) as caught:
            import_deployment(store_server.remote, str(bad))
        assert path in [p.path for p in caught.value.problems]
        # The same problems `vpcflow check` lists.
        with pytest.raises(DeploymentError) as checked:
            load_file(bad)
        assert caught.value.problems == checked.value.problems
        # The CLI: exit 1, one line per problem, the lines `check` prints.
        cli, check = vpcflow("store", "import", bad, "--db", store_server.remote), vpcflow("check", bad)
        assert cli.returncode == 1 and check.returncode == 1
        assert cli.stderr.splitlines() == check.stderr.splitlines()
        assert len(cli.stderr.splitlines()) == len(caught.value.problems)
        # A sentinel write after the rejected ones: the reader sees it alone, so nothing came before it.
        with StoreWriter(store_server.remote) as writer:
            writer.set_attachment("eni-web2", "spare1")
        after = reader.wait_for(lambda u: u.generation > before.generation, WAIT, "the sentinel write")
    assert after.generation == before.generation + 1
    assert after.changes == (Change("Interface", "eni-web2", UPDATE, ("attach_to",)),)
    # And the store holds what the reader has: the import before, and the sentinel.
    with StoreReader(store_server.remote) as fresh:
        fresh.read()
        assert contents(fresh) == contents(reader)


def test_cli_import_and_export(store_server, tmp_path):
    r = vpcflow("store", "import", TOPOLOGY, "--db", store_server.remote)
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout
    r = vpcflow("store", "export", "--db", store_server.remote)
    assert r.returncode == 0, r.stderr
    assert load_text(r.stdout) == load_file(TOPOLOGY)
    r = vpcflow("store", "export", "--db", f"unix:{tmp_path}/no-such.sock")
    assert r.returncode == 2 and "no-such.sock" in r.stderr and "Traceback" not in r.stderr


# --- the reader's change reports ---------------------------------------------------------------------

def test_an_interface_move_is_one_change(store_server):
    dep = import_deployment(store_server.remote, str(TOPOLOGY))
    with StoreReader(store_server.remote) as reader, StoreWriter(store_server.remote) as writer:
        first = reader.read()
        assert first.deployment == dep and first.rebuilt
        writer.set_attachment("eni-web2", "spare1")
        update = reader.wait(WAIT)
        assert update is not None, "the move never reached the reader"
        assert update.changes == (Change("Interface", "eni-web2", UPDATE, ("attach_to",)),)
        assert update.moved_interfaces() == ("eni-web2",)
        assert update.attachments_only()
        assert not update.rebuilt  # applied to the previous Deployment, no parse of the whole store
        moved = dataclasses.replace(dep.interfaces["eni-web2"], attach_to="spare1")
        assert update.deployment.interfaces["eni-web2"] == moved
        # The shortcut gives what the full build gives.
        assert update.deployment == deployment_from_rows(reader.rows())
        assert update.generation == first.generation + 1
        # Detaching is a move to nowhere.
        writer.set_attachment("eni-web2", None)
        update = reader.wait(WAIT)
        assert update.moved_interfaces() == ("eni-web2",)
        assert update.deployment.interfaces["eni-web2"].attach_to is None
        assert reader.wait(0.3) is None  # nothing else came


def test_reimporting_the_same_file_changes_nothing_a_reader_sees(store_server, tmp_path):
    import_deployment(store_server.remote, str(TOPOLOGY))
    with StoreReader(store_server.remote) as reader:
        first = reader.read()
        import_deployment(store_server.remote, str(TOPOLOGY))  # every row deleted and inserted anew
        same = reader.wait_for(lambda u: u.generation > first.generation, WAIT, "the re-import")
        assert same.changes == () and same.deployment == first.deployment
        moved = write_variant(tmp_path, lambda d: d["interfaces"]["eni-web3"].update(attach_to="spare1"))
        import_deployment(store_server.remote, str(moved))
        update = reader.wait_for(lambda u: u.generation > same.generation, WAIT, "the import")
        assert update.changes == (Change("Interface", "eni-web3", UPDATE, ("attach_to",)),)
        assert update.deployment == load_file(moved)


def test_other_changes_are_named_and_rebuild_the_deployment(store_server, tmp_path):
    import_deployment(store_server.remote, str(TOPOLOGY))

    def edit(d):
        d["security_groups"]["web"]["ingress"][0]["ports"] = "81"
        d["elastic_ips"] = []
        d["interfaces"]["eni-web1"]["ips"] = ["10.0.0.11", "10.0.0.50"]
    changed = write_variant(tmp_path, edit)
    with StoreReader(store_server.remote) as reader:
        reader.read()
        import_deployment(store_server.remote, str(changed))
        update = reader.wait(WAIT)
    assert update.changes == (
        Change("Elastic_IP", "[0]", DELETE, ("interface", "ip", "position")),
        Change("Interface", "eni-web1", UPDATE, ("ips",)),
        Change("Rule", "web/ingress[0]", UPDATE, ("ports",)),
    )
    assert not update.attachments_only() and update.moved_interfaces() == ()
    assert update.rebuilt and update.deployment == load_file(changed)


def test_invalid_store_content_is_reported_and_recovers(store_server):
    dep = import_deployment(store_server.remote, str(TOPOLOGY))
    with StoreReader(store_server.remote) as reader, StoreWriter(store_server.remote) as writer:
        reader.read()
        # A writer that skips the checks: an attachment to an instance that does not exist.
        writer.transact(lambda: [{"op": "update", "table": "Interface", "where": [["name", "==", "eni-web1"]],
                                  "row": {"attach_to": "ghost"}}])
        bad = reader.wait(WAIT)
        assert bad.deployment is None
        assert [p.path for p in bad.problems] == ["interfaces.eni-web1.attach_to"]
        writer.set_attachment("eni-web1", "web1")
        good = reader.wait(WAIT)
        assert good.problems == () and good.deployment == dep


def test_moving_an_unknown_interface_writes_nothing(store_server):
    import_deployment(store_server.remote, str(TOPOLOGY))
    with StoreReader(store_server.remote) as reader, StoreWriter(store_server.remote) as writer:
        before = reader.read()
        with pytest.raises(StoreError, match="no interface 'eni-nope'"):
            writer.set_attachment("eni-nope", "web1")
        writer.set_attachment("eni-web1", "spare1")  # the sentinel
        after = reader.wait_for(lambda u: u.generation > before.generation, WAIT, "the sentinel")
    assert after.generation == before.generation + 1
    assert after.changes == (Change("Interface", "eni-web1", UPDATE, ("attach_to",)),)


REMAP = {"id": "r1-1", "interface": "eni-web2", "ips": ("10.0.0.12",), "network": "blue",
         "old_instance": "web2", "old_switch": "host2", "old_port": "web2", "new_instance": "spare1",
         "follow": True, "state": "draining", "connections": 3, "created": 1700000000.5,
         "elastic_ip": None, "old_interface": None}


def test_remaps_are_runtime_rows_an_import_keeps(store_server):
    import_deployment(store_server.remote, str(TOPOLOGY))
    with StoreReader(store_server.remote) as reader, StoreWriter(store_server.remote) as writer:
        reader.read()
        writer.put_remap(REMAP)
        update = reader.wait(WAIT)
        assert update.changes == (Change("Remap", "r1-1", INSERT, tuple(sorted(REMAP))),)
        assert dict(update.remaps["r1-1"]) == REMAP
        assert update.attachments_only() and not update.rebuilt  # the deployment did not change
        writer.put_remap(dict(REMAP, state="complete", connections=0))  # written twice: replaced
        update = reader.wait(WAIT)
        assert update.changes == (Change("Remap", "r1-1", UPDATE, ("connections", "state")),)
        import_deployment(store_server.remote, str(TOPOLOGY))
        kept = reader.wait(WAIT)
        assert kept.changes == () and set(kept.remaps) == {"r1-1"}
        writer.delete_remap("r1-1")
        assert reader.wait(WAIT).changes == (Change("Remap", "r1-1", DELETE, tuple(sorted(REMAP))),)


def test_every_intent_table_is_written_by_an_import(store_server):
    """The files between them use every table: a table the import forgot would fail here."""
    seen = set()
    for path in DEPLOYMENT_FILES:
        import_deployment(store_server.remote, str(path))
        with StoreReader(store_server.remote) as reader:
            reader.read()
            seen |= {t for t, rows in reader.rows().items() if rows}
    assert set(INTENT_TABLES) <= seen


def test_a_reader_started_later_sees_the_same_deployment(store_server):
    dep = import_deployment(store_server.remote, str(DATA / "nat.yaml"))
    with StoreWriter(store_server.remote) as writer:
        writer.set_attachment("eni-web1", None)
    detached = dataclasses.replace(dep.interfaces["eni-web1"], attach_to=None)
    with StoreReader(store_server.remote) as reader:
        later = reader.read().deployment
    assert dict(later.interfaces) == {**dep.interfaces, "eni-web1": detached}
    assert later.nat == dep.nat  # the allocated blocks too


def test_a_server_with_another_major_schema_version_is_refused(tmp_path):
    from tests.scaleout.conftest import require_ovsdb
    from vpcflow.harness.cluster import StoreServer

    require_ovsdb()
    schema = load_schema_json()
    schema["version"] = "2.0.0"
    path = tmp_path / "v2.ovsschema"
    path.write_text(json.dumps(schema))
    with StoreServer(schema=str(path)) as server:
        with pytest.raises(StoreError, match="schema version 2.0.0"):
            StoreReader(server.remote)
        with pytest.raises(StoreError, match="schema version 2.0.0"):
            import_deployment(server.remote, str(TOPOLOGY))


def test_rows_to_data_can_leave_allocated_blocks_out():
    dep = load_file(DATA / "nat.yaml")
    with_all = rows_to_data(deployment_rows(dep))["nat"]["blocks"]
    fixed_only = rows_to_data(deployment_rows(dep), allocated_blocks=False)["nat"]["blocks"]
    assert len(with_all) == len(dep.nat.blocks) > len(fixed_only) == sum(b.fixed for b in dep.nat.blocks)
