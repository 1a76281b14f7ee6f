"""`vpcflow check`, `vpcflow flows` and `vpcflow status`, run as users run them: the console script."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vpcflow.harness.controller import free_port
from vpcflow.topology.loader import load_file

pytestmark = pytest.mark.foundation

DATA = Path(__file__).resolve().parents[1] / "data"
SPEC_EXAMPLE = DATA / "spec-example.yaml"
TWO_HOSTS = DATA / "two-hosts.yaml"
VPCFLOW = Path(sys.executable).parent / "vpcflow"
TIMEOUT = 60


def vpcflow(*args, env=None):
    assert VPCFLOW.exists(), f"console script missing: {VPCFLOW}"
    return subprocess.run([str(VPCFLOW), *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env)


def write_variant(tmp_path, mutate, name="deployment.yaml"):
    data = yaml.safe_load(SPEC_EXAMPLE.read_text())
    mutate(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def no_traceback(r):
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr


# --- check ---------------------------------------------------------------------------------------

def test_check_accepts_the_spec_example():
    r = vpcflow("check", SPEC_EXAMPLE)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert str(SPEC_EXAMPLE) in r.stdout and "ok" in r.stdout


def _set(path, value):
    """A mutation that sets data[a][b]...[z] = value for a dotted path."""
    def mutate(data):
        *head, last = path.split(".")
        for step in head:
            data = data[step]
        data[last] = value
    return mutate


# (mutation, the path in the file the problem must name)
BROKEN = {
    "bad address": (_set("interfaces.eni-web2.ips", ["10.0.0.999"]), "interfaces.eni-web2.ips[0]"),
    "address outside its network": (_set("interfaces.eni-web2.ips", ["10.0.1.5"]), "interfaces.eni-web2.ips[0]"),
    "unknown key": (_set("interfaces.eni-web2.colour", "red"), "interfaces.eni-web2.colour"),
    "duplicate network id": (_set("networks.red.id", 100), "networks.red.id"),
    "network id over 24 bits": (_set("networks.red.id", 1 << 24), "networks.red.id"),
    "unknown instance": (_set("interfaces.eni-web2.attach_to", "nosuch"), "interfaces.eni-web2.attach_to"),
    "prefix longer than /72": (_set("switches.host2.prefix", "fd00:5ee0:0:2::/80"), "switches.host2.prefix"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_rejects_one_problem_with_its_path(tmp_path, case):
    mutate, where = BROKEN[case]
    path = write_variant(tmp_path, mutate)
    r = vpcflow("check", path)
    assert r.returncode == 1
    no_traceback(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert where in lines[0]
    assert str(path) in lines[0]


def test_check_lists_every_problem_one_line_each(tmp_path):
    cases = ("bad address", "network id over 24 bits", "unknown instance", "prefix longer than /72")

    def mutate(data):
        for case in cases:
            BROKEN[case][0](data)
    path = write_variant(tmp_path, mutate)
    r = vpcflow("check", path)
    assert r.returncode == 1
    no_traceback(r)
    lines = r.stderr.splitlines()
    assert len(lines) == len(cases), r.stderr
    for case in cases:
        where = BROKEN[case][1]
        assert sum(1 for line in lines if where in line) == 1, (where, r.stderr)


def test_check_rejects_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("switches: {host1: [unclosed\n")
    r = vpcflow("check", path)
    assert r.returncode == 1
    no_traceback(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].count(str(path)) == 1, lines[0]
    assert "YAML" in lines[0]


def test_check_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    r = vpcflow("check", path)
    assert r.returncode == 1
    no_traceback(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].count(str(path)) == 1, lines[0]
    assert re.search(r"cannot read|no such file|not found", lines[0], re.I), lines[0]


# --- flows ---------------------------------------------------------------------------------------

def test_flows_are_ofctl_lines_with_cookies():
    r = vpcflow("flows", TWO_HOSTS, "--switch", "host1")
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    lines = r.stdout.splitlines()
    assert lines, "no flows printed"
    for line in lines:
        assert line.startswith("table="), line
        assert re.search(r"(^|,)cookie=0x[0-9a-f]+(,|$)", line), line
        assert re.search(r"(^|,)actions=", line), line


def test_flows_are_deterministic():
    # Two processes: string hashing is randomised per process, so set or dict order would show.
    first = vpcflow("flows", TWO_HOSTS, "--switch", "host1")
    second = vpcflow("flows", TWO_HOSTS, "--switch", "host1")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout
    assert first.stdout == second.stdout


def test_flows_differ_between_switches():
    host1 = vpcflow("flows", TWO_HOSTS, "--switch", "host1")
    host2 = vpcflow("flows", TWO_HOSTS, "--switch", "host2")
    assert host1.returncode == host2.returncode == 0
    assert host1.stdout != host2.stdout
    # host1 carries web1 and web3, host2 web2: each names its own ports.
    assert "in_port=web1" in host1.stdout and "in_port=web1" not in host2.stdout
    assert "in_port=web2" in host2.stdout and "in_port=web2" not in host1.stdout


def test_flows_of_the_underlay_bridge():
    integration = vpcflow("flows", TWO_HOSTS, "--switch", "host1")
    underlay = vpcflow("flows", TWO_HOSTS, "--switch", "host1", "--bridge", "underlay")
    assert integration.returncode == 0, integration.stderr
    assert underlay.returncode == 0, underlay.stderr
    lines = underlay.stdout.splitlines()
    assert len(lines) == 2, underlay.stdout
    assert all(line.startswith("table=") and "cookie=0x" in line for line in lines)
    assert underlay.stdout != integration.stdout
    # The underlay delivers the switch's own substrate traffic (its prefix) to the LOCAL port.
    prefix = load_file(TWO_HOSTS).switches["host1"].prefix
    assert str(prefix.network) in underlay.stdout


def test_flows_unknown_switch():
    r = vpcflow("flows", TWO_HOSTS, "--switch", "host9")
    assert r.returncode == 1
    assert r.stdout == ""
    no_traceback(r)
    assert "host9" in r.stderr
    for name in load_file(TWO_HOSTS).switches:
        assert name in r.stderr


# --- status --------------------------------------------------------------------------------------

def test_status_without_a_controller():
    port = free_port()  # bound then closed: nothing listens on it
    r = vpcflow("status", "--api", f"http://127.0.0.1:{port}", "--token", "t")
    assert r.returncode == 2
    no_traceback(r)
    assert "cannot reach the controller" in r.stderr
    assert str(port) in r.stderr
