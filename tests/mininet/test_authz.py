"""Authorization with real traffic (issue 4): security groups at both ends, stateful, cached."""
import os
import subprocess
import time
import urllib.request

import pytest
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from tests.conftest import data_file, require_system
from vpcflow.flows.authz import rule_name
from vpcflow.harness.controller import bin_path, wait_for
from vpcflow.harness.forge import geneve_frame
from vpcflow.harness.ovs import packet_count
from vpcflow.topology.model import dummy_mac

pytestmark = pytest.mark.authz


@pytest.fixture(scope="module")
def lab():
    require_system()
    from vpcflow.harness.lab import Lab

    with Lab(data_file("authz.yaml"), tag="vfa") as lab:
        for name in ("web1", "web2", "db1", "app1", "bare1", "green1"):
            for port in (80, 5432, 8080, 9000):
                lab.server(lab.host(name), port, name=name)
            lab.server(lab.host(name), 5353, proto="udp", name=name)
            lab.server(lab.host(name), 5354, proto="udp", name=name)
        yield lab


@pytest.mark.parametrize("src, dst, port, proto, expected", [
    ("web1", "10.0.0.12", 80, "tcp", "ok web2"),       # across hosts, port 80 from anywhere
    ("web1", "10.0.0.12", 8080, "tcp", "ok web2"),     # 8000-8999 from group web
    ("web2", "10.0.0.11", 8999, "tcp", "fail"),        # in the range, nobody listens: refused, not dropped
    ("web1", "10.0.0.12", 5353, "udp", "ok web2"),     # udp from group web
    ("app1", "10.0.0.41", 5432, "tcp", "ok db1"),      # group app -> group db
    ("app1", "10.0.0.11", 80, "tcp", "fail"),          # app may only send 5432 to db (egress)
    ("web1", "10.0.0.41", 5432, "tcp", "fail"),        # db takes 5432 from group app only (ingress)
    ("web1", "10.0.0.12", 9000, "tcp", "fail"),        # outside 8000-8999
    ("web1", "10.0.0.12", 5354, "udp", "fail"),        # udp port not allowed
    ("web2", "10.0.0.31", 80, "tcp", "fail"),          # no security group: nothing allowed in
    ("bare1", "10.0.0.11", 80, "tcp", "fail"),         # ... nor out
    ("app1", "10.3.0.10", 5432, "tcp", "ok green1"),   # blue -> green authorized, groups consent
    ("web1", "10.3.0.10", 5432, "tcp", "fail"),        # authorized, but green1 takes 5432 from app only
    ("green1", "10.0.0.12", 80, "tcp", "fail"),        # web2 would take it; no green -> blue authorization
])
def test_allowed_and_denied(lab, src, dst, port, proto, expected):
    got = lab.client(lab.host(src), dst, port, proto, timeout=1.0)
    assert got.startswith(expected), got


def test_an_unauthorized_network_is_stopped_at_both_ends(lab):
    before = lab.drops("host2", "network_denied")
    assert lab.client(lab.host("green1"), "10.0.0.12", 80, "tcp", timeout=0.5).startswith("fail")
    assert lab.drops("host2", "network_denied") > before
    # the same request forged onto the substrate meets host1's check as well
    before = lab.drops("host1", "network_denied")
    lab.inject(lab.substrate, "br0", geneve_frame(lab, "host1", "fd00:5ee0:0:2::1", 300, "10.3.0.10",
                                                  "10.0.0.11", TCP(sport=5555, dport=80, flags="S")))
    wait_for(lambda: lab.drops("host1", "network_denied") > before, 5, "the forged request dropped at host1")


def test_icmp_follows_the_groups(lab):
    assert lab.ping(lab.host("web1"), "10.0.0.12", count=2) == 2   # icmp from group web
    assert lab.ping(lab.host("app1"), "10.0.0.11") == 0           # web takes icmp from web only


def test_the_sender_drops_what_it_may_not_send(lab):
    # app1 may reach db1 on 5432 only (so ARP resolves it); port 80 stops at host1
    before = lab.drops("host1", "egress_denied")
    with lab.capture(lab.substrate, "br0", "udp port 6081") as frames:
        assert lab.client(lab.host("app1"), "10.0.0.41", 80, "tcp", timeout=0.5).startswith("fail")
    assert lab.drops("host1", "egress_denied") > before
    assert not [f for f in frames if f.haslayer(GENEVE) and f[GENEVE].payload.haslayer(TCP)
                and f[GENEVE].payload[TCP].dport == 80]


def test_the_receiver_drops_what_it_may_not_receive(lab):
    before = lab.drops("host2", "ingress_denied")
    assert lab.client(lab.host("web1"), "10.0.0.41", 5432, "tcp", timeout=0.5).startswith("fail")
    assert lab.drops("host2", "ingress_denied") > before


def test_arp_for_an_unreachable_destination_gets_no_answer(lab):
    bare1 = lab.host("bare1")
    lab.ping(bare1, "10.0.0.11")
    assert "lladdr" not in bare1.cmd("ip neigh show 10.0.0.11")
    web1 = lab.host("web1")
    lab.ping(web1, "10.0.0.12")
    assert "0e:00:0a:00:00:0c" in web1.cmd("ip neigh show 10.0.0.12")


def test_replies_pass_without_a_rule_and_a_lone_reply_is_dropped(lab):
    # web1's groups allow nothing in toward its ephemeral ports: the answers above came back on
    # the connection alone. A reply-looking segment with no connection behind it is dropped.
    both = lambda: lab.drops("host1", "no_connection") + lab.drops("host2", "no_connection")  # noqa: E731
    before = both()
    seen = lab.server(lab.host("web1"), 40000, log=True)
    web2_mac = lab.dep.interfaces["eni-web2"].mac
    ack = Ether(src=web2_mac, dst=dummy_mac("10.0.0.11")) / IP(src="10.0.0.12", dst="10.0.0.11") / \
        TCP(sport=80, dport=40000, flags="A", seq=1000, ack=2000)
    lab.inject(lab.host("web2"), "eth0", bytes(ack), count=3)
    wait_for(lambda: both() >= before + 3, 5, "three lone ACKs dropped")
    assert not (os.path.exists(seen) and open(seen).read())


def test_later_packets_of_a_connection_match_the_cached_verdict(lab):
    rule = rule_name("web", "ingress", 1)  # 8000-8999 from group web
    rule_before = _rule_hits(lab, "host2", rule)
    progress = os.path.join(lab.workdir, "cached-progress")
    stream = lab.peer(lab.host("web1"), "stream", "--host", "10.0.0.12", "--port", "8080",
                      "--progress", progress, "--interval", "0.002")
    wait_for(lambda: os.path.exists(progress) and int(open(progress).read() or 0) >= 50, 10, "50 exchanges")
    stream.terminate()
    out, _ = stream.communicate(timeout=10)
    assert "error=\n" in out or out.strip().endswith("error="), out
    # Open vSwitch folds datapath counters into flow statistics every so often: poll.
    wait_for(lambda: _est_hits(lab, "host2", rule) >= 50, 5, "50 packets on the established flow")
    assert _rule_hits(lab, "host2", rule) - rule_before == 1  # the SYN alone met the rule tables


def _rule_hits(lab, switch, rule):
    return sum(packet_count(line) for line in lab.object_flows(switch, "authz", rule)
               if "ct(commit" in line)


def _est_hits(lab, switch, rule):
    return sum(packet_count(line) for line in lab.object_flows(switch, "authz", rule)
               if "ct_state=+est" in line)


def test_a_forged_substrate_packet_meets_the_receivers_rules(lab):
    """A packet from host2's prefix with host2's real source, but to a port web1 does not allow:
    it passes the substrate check and is dropped by web1's ingress rules, and counted."""
    seen = lab.server(lab.host("web1"), 7002, proto="udp", log=True)
    frame = geneve_frame(lab, "host1", "fd00:5ee0:0:2::1", 100, "10.0.0.12", "10.0.0.11",
                         UDP(sport=4444, dport=7002) / b"forged")
    before = lab.drops("host1", "ingress_denied")
    lab.inject(lab.substrate, "br0", frame)
    wait_for(lambda: lab.drops("host1", "ingress_denied") > before, 5, "the forged packet dropped by ingress rules")
    assert not (os.path.exists(seen) and open(seen).read())


def test_drops_are_readable_per_reason_from_api_cli_and_metrics(lab):
    assert lab.client(lab.host("web1"), "10.0.0.41", 5432, "tcp", timeout=0.5).startswith("fail")
    wait_for(lambda: lab.api("GET", "/v1/drops")[1]["drops"]["host2"].get("ingress_denied", 0) > 0, 5,
             "ingress_denied counted by the API")
    status = subprocess.run([bin_path("vpcflow"), "status", "--api", f"http://127.0.0.1:{lab.ctl.api_port}",
                             "--token", lab.api_token], capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    host2_line = next(line for line in status.stdout.splitlines() if line.startswith("host2 ") and "=" in line)
    assert "ingress_denied=" in host2_line
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.ctl.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'vpcflow_drops_total{reason="ingress_denied",switch="host2"}' in text
    assert 'vpcflow_switch_connected{bridge="integration",switch="host1"} 1.0' in text


def test_a_rule_added_at_runtime_takes_effect(lab):
    assert lab.client(lab.host("web1"), "10.0.0.12", 9000, "tcp", timeout=0.5).startswith("fail")
    text = open(lab.topology_file).read()
    lab.rewrite(text.replace('      - {proto: tcp, ports: "80", from: "0.0.0.0/0"}\n',
                             '      - {proto: tcp, ports: "80", from: "0.0.0.0/0"}\n'
                             '      - {proto: tcp, ports: "9000", from_group: web}\n'))
    status, body = lab.reload()
    assert status == 200, body
    assert lab.client(lab.host("web1"), "10.0.0.12", 9000, "tcp") == "ok web2"
    lab.rewrite(text)  # back as it was, for the tests after this one
    assert lab.reload()[0] == 200
    assert lab.client(lab.host("web1"), "10.0.0.12", 9000, "tcp", timeout=0.5).startswith("fail")


def test_removing_a_rule_stops_its_connections_and_no_other(lab):
    """Last: it changes the deployment. Two transfers web1 -> web2, on 8080 (allowed by the
    8000-8999 group rule) and on 80 (allowed by the port-80 rule). The first rule goes."""
    prog = {p: os.path.join(lab.workdir, f"progress-{p}") for p in (80, 8080)}
    streams = {p: lab.peer(lab.host("web1"), "stream", "--host", "10.0.0.12", "--port", str(p),
                           "--progress", prog[p], "--timeout", "30") for p in (80, 8080)}
    count = lambda p: int(open(prog[p]).read() or 0) if os.path.exists(prog[p]) else 0  # noqa: E731
    try:
        wait_for(lambda: count(80) > 20 and count(8080) > 20, 10, "both transfers running")
    except Exception:
        for st in streams.values():
            st.terminate()
        raise AssertionError([st.communicate()[0] for st in streams.values()])
    text = open(lab.topology_file).read()
    lab.rewrite(text.replace('      - {proto: tcp, ports: "8000-8999", from_group: web}\n', ""))
    status, body = lab.reload()
    assert status == 200, body
    removed_at = time.monotonic()
    # within a second the 8080 transfer stops moving, while the one on 80 goes on
    wait_for(lambda: _stalled(count, 8080), 3, "the 8080 transfer to stop")
    assert time.monotonic() - removed_at < 1.5
    moving = count(80)
    wait_for(lambda: count(80) > moving + 20, 5, "the port-80 transfer to go on")
    for s in streams.values():
        s.terminate()


def _stalled(count, port, window=0.3):
    a = count(port)
    time.sleep(window)  # a stall is the absence of progress over a window: nothing to poll for
    return count(port) == a
