"""Distributed NAT with real traffic (issue 5): hosts translate into their port blocks, the edge
demultiplexes by (public IP, port) without translating, forwards and elastic IPs serve the outside.

tests/data/nat.yaml: host1 (web1, web3 in blue; red1 in red with web1's very address) and host2
(web2, eip1) have allocated blocks on 198.51.100.10; host3 (full1) a fixed 16-port block on it.
The external host (203.0.113.1) sits behind the edge's uplink.
"""
import contextlib
import json
import os
import re
import subprocess
import textwrap

import pytest
from netaddr import IPAddress
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from tests.conftest import data_file, require_system
from vpcflow.harness.controller import bin_path, wait_for
from vpcflow.flows import nat
from vpcflow.harness.forge import geneve_frame
from vpcflow.topology.model import embed

pytestmark = pytest.mark.nat

PUBLIC = "198.51.100.10"
EIP = "198.51.100.20"
EXT = "203.0.113.1"
ECHO_PEER = "192.0.2.7"  # a second address of the external host: its own learned echo record


@pytest.fixture(scope="module")
def lab():
    require_system()
    from vpcflow.harness.lab import Lab

    with Lab(data_file("nat.yaml"), tag="vfn") as lab:
        ext = lab.external()
        ext.cmd(f"ip addr add {ECHO_PEER}/32 dev eth0")
        lab.logs = {
            ("tcp", 7000): lab.server(ext, 7000, name="ext", log=True),
            ("udp", 7000): lab.server(ext, 7000, proto="udp", name="ext", log=True),
            ("udp", 7001): lab.server(ext, 7001, proto="udp", name="ext", log=True),
            ("tcp", 7100): lab.server(ext, 7100, name="ext", log=True),
            "web2": lab.server(lab.host("web2"), 80, name="web2", log=True),
        }
        lab.server(lab.host("web2"), 5353, proto="udp", name="web2")
        lab.server(lab.host("eip1"), 80, name="eip1")
        yield lab


# --- helpers -------------------------------------------------------------------------------------

def block(lab, owner):
    return next(b for b in lab.dep.nat.blocks if b.owner == owner)


def seen(path):
    """(ip, port) of every peer a server logged, in order."""
    if not os.path.exists(path):
        return []
    return [(line.rsplit(":", 1)[0], int(line.rsplit(":", 1)[1])) for line in open(path).read().split()]


def script(lab, name, text):
    path = os.path.join(lab.workdir, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def run(lab, node, path, *args):
    import sys
    out = node.cmd(f"{sys.executable} {path} {' '.join(str(a) for a in args)}").strip()
    return out.splitlines()[-1] if out else ""


UDP_FROM = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", int(sys.argv[1])))
    s.settimeout(float(sys.argv[4]))
    for _ in range(2):
        s.sendto(b"probe", (sys.argv[2], int(sys.argv[3])))
        try:
            data, _ = s.recvfrom(1000)
            print("ok", data.decode().split()[0])
            break
        except socket.timeout:
            pass
    else:
        print("timeout")
"""


def udp_from(lab, node, sport, host, port, timeout=1.0):
    """A UDP datagram from a fixed source port: "ok NAME" or "timeout"."""
    return run(lab, node, script(lab, "udp_from.py", UDP_FROM), sport, host, port, timeout)


def substrate_link(lab, switch):
    return f"s{lab.switches[switch].index}"


def inner_udp(frames, dport):
    return [f for f in frames if f.haslayer(GENEVE) and f[GENEVE].payload.haslayer(UDP)
            and f[GENEVE].payload[UDP].dport == dport]


# --- outbound: the shared public IP, each host in its block ------------------------------------

@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("instance, host", [("web1", "host1"), ("web3", "host1"), ("red1", "host1"),
                                            ("web2", "host2")])
def test_an_instance_reaches_the_outside_from_the_public_ip_in_its_hosts_block(lab, instance, host, proto):
    assert block(lab, "host1").ip == block(lab, "host2").ip == IPAddress(PUBLIC)  # two hosts, one public IP
    log = lab.logs[(proto, 7000)]
    before = len(seen(log))
    assert lab.client(lab.host(instance), EXT, 7000, proto) == "ok ext"  # the reply came back
    new = seen(log)[before:]
    assert new, "the server saw nobody"
    for ip, port in new:  # the server's side: the public IP, a port of the right host's block
        assert ip == PUBLIC and port in block(lab, host).ports, (ip, port, block(lab, host))


def test_two_tenants_with_one_address_on_one_host_never_mix(lab):
    """web1 (blue) and red1 (red) are both 10.0.0.11 on host1. Different source ports: both go
    out, on different public ports. The very same 5-tuple at once: the second tenant's packet is
    refused (nat_collision), never joined to the first tenant's connection."""
    log = lab.logs[("udp", 7001)]
    assert udp_from(lab, lab.host("web1"), 40123, EXT, 7001) == "ok ext"
    assert udp_from(lab, lab.host("red1"), 40124, EXT, 7001) == "ok ext"
    first, second = seen(log)[-2:]
    assert first != second and first[1] in block(lab, "host1").ports and second[1] in block(lab, "host1").ports
    before, lines = lab.drops("host1", "nat_collision"), len(seen(log))
    assert udp_from(lab, lab.host("red1"), 40123, EXT, 7001, timeout=0.5) == "timeout"
    assert lab.drops("host1", "nat_collision") > before
    assert len(seen(log)) == lines  # nothing of red1's left on blue's connection
    assert udp_from(lab, lab.host("web1"), 40123, EXT, 7001) == "ok ext"  # blue's goes on


# --- inbound: demultiplexed by block, nothing outside a block --------------------------------------

def send_from_outside(lab, port, payload="probe"):
    lab.external().cmd(f"python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                       f".sendto(b'{payload}', ('{PUBLIC}', {port}))\"")


@pytest.mark.parametrize("owner", ["host1", "host2", "host3"])
def test_an_inbound_packet_for_a_block_reaches_its_host_and_no_other(lab, owner):
    port = block(lab, owner).ports.lo + 5
    hosts = ("host1", "host2", "host3")
    before = lab.drops(owner, "nat_no_connection")
    with contextlib.ExitStack() as stack:
        frames = {h: stack.enter_context(lab.capture(lab.substrate, substrate_link(lab, h), "udp port 6081"))
                  for h in hosts}
        send_from_outside(lab, port)
        wait_for(lambda: lab.drops(owner, "nat_no_connection") > before, 5, f"the packet at {owner}")
    for h in hosts:
        got = inner_udp(frames[h], port)
        if h == owner:
            assert len(got) == 1
            outer, inner = got[0][IPv6], got[0][GENEVE].payload
            assert got[0][GENEVE].vni == 0
            assert outer.dst == str(embed(lab.dep.switches[owner].prefix, 0, IPAddress(PUBLIC)))
            assert inner[IP].dst == PUBLIC and inner[UDP].dport == port  # unchanged: no translation
        else:
            assert got == [], h


def test_nothing_outside_a_block_reaches_a_host(lab):
    before = lab.drops("edge1", "nat_no_block")
    with lab.capture(lab.substrate, "br0", "udp port 6081") as frames:
        send_from_outside(lab, 1000)  # reserved
        send_from_outside(lab, 5000)  # in no block
        wait_for(lambda: lab.drops("edge1", "nat_no_block") >= before + 2, 5, "two drops at the edge")
    assert inner_udp(frames, 1000) == [] and inner_udp(frames, 5000) == []


def test_the_edge_takes_translated_packets_only_from_the_host_owning_the_port(lab):
    log = lab.logs[("udp", 7000)]
    # a port of host1's block that no earlier connection of this lab used (its translations
    # take ports anywhere in the block: one of them once took the port this test forges)
    ports = block(lab, "host1").ports
    port = next(p for p in range(ports.lo + 9, ports.hi + 1) if (PUBLIC, p) not in seen(log))
    before = lab.drops("edge1", "nat_outside_block")
    # host2 claims a port of host1's block: dropped at the edge
    lab.inject(lab.substrate, "br0", geneve_frame(lab, "edge1", "fd00:5ee0:0:2::1", 0, PUBLIC, EXT,
                                                  UDP(sport=port, dport=7000) / b"forged"))
    wait_for(lambda: lab.drops("edge1", "nat_outside_block") > before, 5, "the forged packet dropped")
    assert (PUBLIC, port) not in seen(log)
    # the same from host1's prefix leaves by the uplink
    lab.inject(lab.substrate, "br0", geneve_frame(lab, "edge1", "fd00:5ee0:0:1::1", 0, PUBLIC, EXT,
                                                  UDP(sport=port, dport=7000) / b"genuine"))
    wait_for(lambda: (PUBLIC, port) in seen(log), 5, "the genuine packet at the external server")


def test_the_edge_answers_arp_for_public_and_elastic_addresses(lab):
    ext = lab.external()
    ext_mac = ext.cmd("cat /sys/class/net/eth0/address").strip()
    uplink_mac = lab.dep.switches["edge1"].uplink.mac
    with lab.capture(ext, "eth0", "arp") as frames:
        lab.inject(ext, "eth0", [bytes(Ether(src=ext_mac, dst="ff:ff:ff:ff:ff:ff") /
                                       ARP(op=1, hwsrc=ext_mac, psrc=EXT, pdst=ip)) for ip in (PUBLIC, EIP)])
    # the external host answers the edge's own gateway probes now and then: those are not the edge's
    replies = {f[ARP].psrc: f[ARP].hwsrc for f in frames
               if f.haslayer(ARP) and f[ARP].op == 2 and f[ARP].hwsrc != ext_mac}
    assert replies == {PUBLIC: uplink_mac, EIP: uplink_mac}


# --- a full block ------------------------------------------------------------------------------------

HOLD = """
    import json, socket, sys
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    socks = []
    for i in range(n):
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(b"hello%d" % i)
        if not s.recv(100).endswith(b"hello%d" % i):
            break
        socks.append(s)
    try:
        socket.create_connection((host, port), timeout=2)
        extra = "connected"
    except OSError as e:
        extra = type(e).__name__
    ok = 0
    for i, s in enumerate(socks):
        s.sendall(b"again%d" % i)
        ok += s.recv(100).endswith(b"again%d" % i)
    print(json.dumps({"opened": len(socks), "extra": extra, "still_ok": ok}))
"""


def block_metric(lab, name, b, switch):
    """A NAT block gauge from GET /metrics (None when it is not exported)."""
    text = lab.api("GET", "/metrics", token=None)[1]
    m = re.search(rf'^{name}{{block="{re.escape(nat.block_name(b))}",switch="{switch}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


@pytest.mark.ops  # issue 7: NAT block usage is a metric
def test_a_full_block_fails_new_connections_cleanly_and_existing_ones_carry_on(lab):
    """host3 owns 16 ports (61441-61456): 16 connections to one server fill them."""
    ports = block(lab, "host3").ports
    size = ports.hi - ports.lo + 1
    log = lab.logs[("tcp", 7100)]
    before = lab.drops("host3", "nat_block_full")
    out = run(lab, lab.host("full1"), script(lab, "hold.py", HOLD), EXT, 7100, size)
    result = json.loads(out)
    assert result == {"opened": size, "extra": "TimeoutError", "still_ok": size}, out
    assert lab.drops("host3", "nat_block_full") > before  # the refused SYNs, counted
    used = seen(log)
    assert len(used) == size and {ip for ip, _ in used} == {PUBLIC}
    assert sorted(p for _, p in used) == list(range(ports.lo, ports.hi + 1))  # every port, none outside
    # GET /metrics shows the block full, read from host3's conntrack (closed connections keep
    # their ports for a while), and the size of every block
    assert block_metric(lab, "vpcflow_nat_block_ports", block(lab, "host3"), "host3") == size
    assert block_metric(lab, "vpcflow_nat_block_ports_in_use", block(lab, "host3"), "host3") == size
    host2 = block(lab, "host2")
    assert block_metric(lab, "vpcflow_nat_block_ports", host2, "host2") == host2.ports.hi - host2.ports.lo + 1
    assert block_metric(lab, "vpcflow_nat_block_ports_in_use", host2, "host2") < host2.ports.hi - host2.ports.lo + 1
    status = subprocess.run([bin_path("vpcflow"), "status", "--api", f"http://127.0.0.1:{lab.ctl.api_port}",
                             "--token", lab.ctl.token], capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert re.search(rf"^{PUBLIC}\s+{ports.lo}-{ports.hi}\s+host3\s+{size}/{size}$", status.stdout, re.M), status.stdout


# --- inbound services ----------------------------------------------------------------------------------

def test_a_forward_serves_an_external_client(lab):
    ext = lab.external()
    before = len(seen(lab.logs["web2"]))
    assert lab.client(ext, PUBLIC, 8080, "tcp") == "ok web2"
    assert [ip for ip, _ in seen(lab.logs["web2"])[before:]] == [EXT]  # the instance sees the real client
    assert lab.client(ext, PUBLIC, 5353, "udp") == "ok web2"


SINK = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", int(sys.argv[1])))
    open(sys.argv[3], "w").close()
    with open(sys.argv[2], "a", buffering=1) as log:
        while True:
            data, peer = s.recvfrom(100)
            log.write(data.decode() + "\\n")
"""

SPACED = """
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(int(sys.argv[3])):
        s.sendto(b"spaced%d" % i, (sys.argv[1], int(sys.argv[2])))
        time.sleep(0.2)
"""


def sink(lab, node, port):
    """A UDP server that never answers: every datagram of its connections arrives before any reply."""
    import sys
    log, ready = (os.path.join(lab.workdir, f"{kind}-{node.name}-{port}") for kind in ("sink", "sink-ready"))
    proc = node.popen([sys.executable, script(lab, "sink.py", SINK), str(port), log, ready])
    lab.procs.append(proc)  # ended by the lab
    wait_for(lambda: os.path.exists(ready), 10, f"the sink in {node.name}")
    return log


@pytest.mark.parametrize("ip, instance", [(PUBLIC, "web2"), (EIP, "eip1")])
def test_later_packets_of_a_new_inbound_connection_follow_the_first(lab, ip, instance):
    """Until the server answers, later packets of a connection are still +new: they must follow
    the first one's translation, not be taken for strangers (a forward, an elastic IP)."""
    log = sink(lab, lab.host(instance), 6000)
    run(lab, lab.external(), script(lab, "spaced.py", SPACED), ip, 6000, 3)
    wait_for(lambda: len(open(log).read().split()) >= 3, 5, f"three datagrams at {instance}")
    assert open(log).read().split() == ["spaced0", "spaced1", "spaced2"]


def test_an_elastic_ip_serves_an_external_client_and_is_its_instances_source(lab):
    ext = lab.external()
    assert lab.client(ext, EIP, 80, "tcp") == "ok eip1"
    assert lab.ping(ext, EIP, count=2) == 2
    log = lab.logs[("tcp", 7000)]
    before = len(seen(log))
    assert lab.client(lab.host("eip1"), EXT, 7000, "tcp") == "ok ext"
    assert [ip for ip, _ in seen(log)[before:]] == [EIP]


# --- ICMP -------------------------------------------------------------------------------------------

def test_icmp_echo_works_through_the_nat(lab):
    ext = lab.external()
    with lab.capture(ext, "eth0", "icmp") as frames:
        assert lab.ping(lab.host("web1"), EXT, count=3) == 3
        assert lab.ping(lab.host("web2"), ECHO_PEER, count=3) == 3
    requests = [f for f in frames if f.haslayer(ICMP) and f[ICMP].type == 8]
    assert len(requests) == 6 and {f[IP].src for f in requests} == {PUBLIC}


ERROR_PROBE = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", int(sys.argv[1])))
    s.connect((sys.argv[2], int(sys.argv[3])))
    s.settimeout(1.0)
    for _ in range(3):
        s.send(b"anyone?")
        try:
            s.recv(100)
            print("answered")
            break
        except ConnectionRefusedError:
            print("refused")
            break
        except socket.timeout:
            pass
    else:
        print("timeout")
"""


def test_an_icmp_error_reaches_the_instance_translated_back(lab):
    """UDP from web3 to a closed port of the external host: its port unreachable, sent to the
    public address, reaches web3 with the inner header translated back to web3's own."""
    web3, ext = lab.host("web3"), lab.external()
    others = {h: lab.drops(h, "nat_icmp_error_elsewhere") for h in ("host2", "host3")}
    with lab.capture(ext, "eth0", "icmp") as sent, lab.capture(web3, "eth0", "icmp") as got:
        assert run(lab, web3, script(lab, "error_probe.py", ERROR_PROBE), 45123, EXT, 7999) == "refused"
    errors = [f for f in sent if f.haslayer(ICMP) and f[ICMP].type == 3]
    assert errors and errors[0][IPerror].src == PUBLIC and errors[0][UDPerror].sport in block(lab, "host1").ports
    delivered = [f for f in got if f.haslayer(ICMP) and f[ICMP].type == 3]
    assert delivered
    f = delivered[0]
    assert f[IP].dst == "10.0.0.13" and f[IPerror].src == "10.0.0.13" and f[UDPerror].sport == 45123
    # the copies the edge gave the other hosts of the public IP were not theirs
    wait_for(lambda: all(lab.drops(h, "nat_icmp_error_elsewhere") > n for h, n in others.items()), 5,
             "the other hosts to drop their copies")


# --- the controller ----------------------------------------------------------------------------------

def test_a_resync_finds_every_nat_flow_in_place(lab):
    """Open vSwitch reports ct(nat) back byte for byte as sent: a reload changes nothing."""
    status, body = lab.reload()
    assert status == 200, body
    for s in lab.api("GET", "/v1/switches")[1]["switches"]:
        assert (s["last_added"], s["last_deleted"]) == (0, 0), s
