"""Compiled flows in a real ovs-vswitchd, through `ovs-ofctl` and through the controller's sync."""
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import data_file
from vpcflow.controller.main import ECHO_INTERVAL
from vpcflow.flows import cookies, pipeline
from vpcflow.harness.controller import ControllerProcess, bin_path, wait_for
from vpcflow.harness.ovs import alive
from vpcflow.topology.loader import load_file
from vpcflow.topology.model import dummy_mac

pytestmark = pytest.mark.foundation

TOPOLOGY = data_file("two-hosts.yaml")


def prepare(ovs, switch, controller=None):
    cmd = [bin_path("vpcflow"), "bridge", TOPOLOGY, "--switch", switch, "--db", ovs.db, "--datapath-type", "dummy"]
    if controller:
        cmd += ["--controller", controller]
    subprocess.run(cmd, check=True, capture_output=True)
    ovs.wait_bridge_mgmt("br-int")


def loaded(ovs, switch="host1"):
    """A bridge prepared for the switch, with its compiled flows added by ovs-ofctl."""
    prepare(ovs, switch)
    text = subprocess.run([bin_path("vpcflow"), "flows", TOPOLOGY, "--switch", switch], check=True,
                          capture_output=True, text=True).stdout
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flows", f"unix:{ovs.dir}/br-int.mgmt", "-"],
                   input=text, check=True, capture_output=True, text=True)


def managed(lines):
    return sorted(line for line in lines if cookies.is_managed(int(line.split("cookie=")[1].split(",")[0], 16)))


def without_counters(lines):
    keep = []
    for line in lines:
        parts = [p for p in line.split(", ") if not p.startswith(("duration=", "n_packets=", "n_bytes="))]
        keep.append(", ".join(parts))
    return sorted(keep)


def test_vpcflow_flows_loads_into_a_bridge_by_port_name(private_ovs):
    prepare(private_ovs, "host1")
    text = subprocess.run([bin_path("vpcflow"), "flows", TOPOLOGY, "--switch", "host1", "--explain"], check=True,
                          capture_output=True, text=True).stdout
    assert "# port_security: port_security eni-web1" in text  # comments name feature and object
    r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flows", f"unix:{private_ovs.dir}/br-int.mgmt", "-"],
                       input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(private_ovs.flows("br-int")) == len([ln for ln in text.splitlines() if not ln.startswith("#")])


@pytest.fixture
def controller(tmp_path):
    ctl = ControllerProcess(str(tmp_path), TOPOLOGY, listen_host="127.0.0.1")
    ctl.start()
    yield ctl
    ctl.stop()


def test_controller_installs_only_the_difference(private_ovs, controller):
    prepare(private_ovs, "host1", controller.ofp_target)
    controller.wait_synced(bridges=[("host1", "integration"), ("host1", "underlay")])
    first = private_ovs.flows("br-int")
    expected = subprocess.run([bin_path("vpcflow"), "flows", TOPOLOGY, "--switch", "host1"], check=True,
                              capture_output=True, text=True).stdout.splitlines()
    assert len(first) == len(expected)

    # Someone else's flow, one stale flow of ours, and one of ours with other actions.
    foreign = "table=5,priority=7,cookie=0x1234,reg5=9,actions=drop"
    stale = f"table=70,priority=5,cookie={hex(cookies.make('overlay', 'gone'))},reg0=999,actions=drop"
    private_ovs.ofctl("add-flow", "br-int", foreign)
    private_ovs.ofctl("add-flow", "br-int", stale)
    web1 = next(line for line in first if "table=10" in line and "nw_src=10.0.0.11" in line)
    match = web1.split("priority=")[1].split(" actions=")[0]
    cookie = web1.split("cookie=")[1].split(",")[0]
    private_ovs.ofctl("add-flow", "br-int", f"table=10,priority={match},cookie={cookie},actions=drop")

    controller.stop()
    controller.start()
    controller.wait_synced(bridges=[("host1", "integration")])
    status = controller.switches()[("host1", "integration")]
    assert (status["last_added"], status["last_deleted"]) == (1, 1)
    after = private_ovs.flows("br-int")
    assert any("cookie=0x1234" in line and "reg5=0x9" in line for line in after)
    assert not any("reg0=0x3e7" in line for line in after)
    assert without_counters(managed(after)) == without_counters(managed(first))

    # A reconnect with nothing changed sends nothing.
    controller.stop()
    controller.start()
    controller.wait_synced(bridges=[("host1", "integration")])
    status = controller.switches()[("host1", "integration")]
    assert (status["last_added"], status["last_deleted"]) == (0, 0)


def test_a_port_that_appears_later_gets_its_flows(private_ovs, controller):
    prepare(private_ovs, "host1", controller.ofp_target)
    controller.wait_synced(bridges=[("host1", "integration")])
    before = len(private_ovs.flows("br-int", "in_port=web3"))
    assert before > 0
    private_ovs.vsctl("del-port", "br-int", "web3")
    # The port is gone: its flows wait for it (OVS removed the ones that named it).
    wait_for(lambda: controller.switches()[("host1", "integration")]["waiting_for_ports"] > 0, 10,
             "flows naming web3 to wait for the port")
    private_ovs.vsctl("add-port", "br-int", "web3")
    controller.wait_synced(bridges=[("host1", "integration")])
    assert len(private_ovs.flows("br-int", "in_port=web3")) == before > 0


def test_ofproto_trace_answers_arp_with_a_dummy_mac(private_ovs):
    loaded(private_ovs)
    mac = load_file(TOPOLOGY).interfaces["eni-web1"].mac
    base = f"in_port=web1,dl_src={mac},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,arp_sha={mac},arp_spa=10.0.0.11"
    out = private_ovs.appctl("ofproto/trace", "br-int", base + ",arp_tpa=10.0.0.13")
    # the reply as the switch computed it: from the asked address, at its dummy MAC, back to the asker
    final = dict(item.split("=", 1) for item in
                 next(line for line in out.splitlines() if line.startswith("Final flow:"))[11:].strip().split(",")
                 if "=" in item)
    assert final["dl_src"] == final["arp_sha"] == "0e:00:0a:00:00:0d", out
    assert final["dl_dst"] == final["arp_tha"] == mac
    assert (final["arp_op"], final["arp_spa"], final["arp_tpa"]) == ("2", "10.0.0.13", "10.0.0.11")
    assert "Datapath actions: drop" not in out
    unknown = private_ovs.appctl("ofproto/trace", "br-int", base + ",arp_tpa=10.0.0.99")
    assert "Datapath actions: drop" in unknown
    spoofed = private_ovs.appctl("ofproto/trace", "br-int",
                                 "in_port=web1,dl_src=02:00:00:00:00:99,ip,nw_src=10.0.0.11,nw_dst=10.0.0.13")
    assert "Datapath actions: drop" in spoofed



def _openflow_session(path):
    """A bare OpenFlow 1.3 connection to a bridge's management socket, after the hellos."""
    import socket
    import struct

    from vpcflow.controller.framework import ofp

    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(struct.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_HELLO, 8, 1))

    def read():
        """(type, xid) of the switch's next message."""
        head = b""
        while len(head) < 8:
            head += s.recv(8 - len(head))
        _, msg_type, length, xid = struct.unpack("!BBHI", head)
        body = b""
        while len(body) < length - 8:
            body += s.recv(length - 8 - len(body))
        return msg_type, xid

    assert read()[0] == ofp.OFPT_HELLO
    return s, read


def test_a_refused_bundle_add_is_answered_with_its_own_xid(private_ovs):
    """The controller packs bundle adds itself (render.bundle_adds) and finds a refused one by
    the xid the switch's error carries: Open vSwitch must take the packed adds and name the right one."""
    from vpcflow.controller import render
    from vpcflow.controller.framework import ofp, parser

    class Datapath:
        ofproto, ofproto_parser, id = ofp, parser, 1

    prepare(private_ovs, "host1")
    dp = Datapath()
    good = [render.message(parser.OFPFlowMod(dp, table_id=5, priority=10 + i, match=parser.OFPMatch(reg0=i),
                                             instructions=[])) for i in range(3000)]
    # goto_table must go forward: refused when the switch checks the add
    bad = render.message(parser.OFPFlowMod(dp, table_id=5, priority=9, match=parser.OFPMatch(reg0=1),
                                           instructions=[parser.OFPInstructionGotoTable(2)]))
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED

    def ctrl(xid, kind):
        m = parser.ONFBundleCtrlMsg(dp, 7, kind, flags, [])
        m.set_xid(xid)
        m.serialize()
        return bytes(m.buf)

    def barrier(xid):
        m = parser.OFPBarrierRequest(dp)
        m.set_xid(xid)
        m.serialize()
        return bytes(m.buf)

    def exchange(*buffers, until):
        for buf in buffers:
            s.sendall(buf)
        answers = []
        while True:
            msg_type, xid = read()
            if msg_type == ofp.OFPT_BARRIER_REPLY and xid == until:
                return answers
            answers.append((msg_type, xid))

    s, read = _openflow_session(f"{private_ovs.dir}/br-int.mgmt")
    with s:
        first = ofp.MAX_XID - 1000  # across the largest xid, as a long-running controller gets there
        msgs = good[:2000] + [bad] + good[2000:]
        answers = exchange(ctrl(1, ofp.ONF_BCT_OPEN_REQUEST), *render.bundle_adds(7, flags, msgs, first), barrier(2),
                           until=2)
        assert [xid for t, xid in answers if t == ofp.OFPT_ERROR] == [(first + 2000) & ofp.MAX_XID]
        exchange(ctrl(3, ofp.ONF_BCT_DISCARD_REQUEST), barrier(4), until=4)

        answers = exchange(ctrl(5, ofp.ONF_BCT_OPEN_REQUEST), *render.bundle_adds(7, flags, good, first), barrier(6),
                           until=6)
        answers += exchange(ctrl(8, ofp.ONF_BCT_COMMIT_REQUEST), barrier(9), until=9)
        assert not [a for a in answers if a[0] == ofp.OFPT_ERROR]
    assert len(private_ovs.flows("br-int", "table=5")) == len(good)


def test_the_controller_is_reached_out_of_band_unless_asked(private_ovs):
    """`vpcflow bridge` sets connection_mode=out-of-band: no hidden in-band flows, which on the
    userspace datapath the forwarding thread would refresh for every bridge. --in-band brings
    them back (a switch that reaches its controller through these bridges); a later run
    without it takes them away again."""
    def hidden_in_band_flows():
        return [ln for ln in private_ovs.appctl("bridge/dump-flows", "br-ul").splitlines() if "priority=180000" in ln]

    def modes():
        return private_ovs.vsctl("--columns=connection_mode", "--bare", "list", "controller").split()

    target = "tcp:127.0.0.1:6653"  # no controller listens: the hidden flows come with the record
    for flags, mode in (((), "out-of-band"), (("--in-band",), "in-band"), ((), "out-of-band")):
        subprocess.run([bin_path("vpcflow"), "bridge", TOPOLOGY, "--switch", "host1", "--db", private_ovs.db,
                        "--datapath-type", "dummy", "--controller", target, *flags], check=True, capture_output=True)
        private_ovs.wait_bridge_mgmt("br-ul")
        assert set(modes()) == {mode}
        if mode == "in-band":
            wait_for(lambda: hidden_in_band_flows(), 10, "the in-band flows")
        else:
            wait_for(lambda: not hidden_in_band_flows(), 10, "no in-band flows")


def test_bridge_keeps_idle_datapath_flows_one_second(private_ovs):
    """`vpcflow bridge` sets other_config:max-idle to 1000 ms (Open vSwitch's default is 10 s):
    a datapath flow a packet made goes once idle for about a second. --max-idle chooses another
    value, 0 leaves the setting alone, and a negative one is refused with nothing changed."""
    def bridge(*flags):
        return subprocess.run([bin_path("vpcflow"), "bridge", TOPOLOGY, "--switch", "host1", "--db", private_ovs.db,
                               "--datapath-type", "dummy", *flags], capture_output=True, text=True)

    def max_idle():
        return private_ovs.vsctl("get", "Open_vSwitch", ".", "other_config").strip()

    def datapath_flows():
        return [ln for ln in private_ovs.appctl("dpctl/dump-flows").splitlines() if "eth_type(0x0800)" in ln]

    assert bridge().returncode == 0
    assert max_idle() == '{max-idle="1000"}'
    private_ovs.appctl("netdev-dummy/receive", "br-int",
                       "in_port(1),eth(src=50:54:00:00:00:01,dst=50:54:00:00:00:02),eth_type(0x0800),"
                       "ipv4(src=10.0.0.1,dst=10.0.0.2,proto=6,tos=0,ttl=64,frag=no),tcp(src=1,dst=2)")
    assert datapath_flows(), "the packet made no datapath flow"
    wait_for(lambda: not datapath_flows(), 5, "the idle datapath flow to go")  # the default keeps it 10 s

    assert "max-idle: set to 20000 ms" in bridge("--max-idle", "20000").stdout
    assert max_idle() == '{max-idle="20000"}'
    assert "max-idle" not in bridge("--max-idle", "0").stdout
    refused = bridge("--max-idle", "-5")
    assert refused.returncode == 2 and "--max-idle -5" in refused.stderr
    assert max_idle() == '{max-idle="20000"}'


def test_a_connection_is_recorded_by_the_flag_of_its_packet(private_ovs):
    """Connection following's records, as the switch takes them (flows/follow.py): an established
    connection's packet that finds no record writes one under the destination's binding, long
    for a packet going on (ACK), short for what ends it (a FIN or a RST: one flow below)."""
    loaded(private_ovs)
    mac = load_file(TOPOLOGY).interfaces["eni-web1"].mac
    to_web2 = (f"in_port=web1,dl_src={mac},dl_dst={dummy_mac('10.0.0.12')},tcp,nw_src=10.0.0.11,nw_dst=10.0.0.12,"
               "tp_src=40000,tp_dst=80")

    def record(flags):
        out = private_ovs.appctl("ofproto/trace", "br-int", f"{to_web2},tcp_flags={flags}",
                                 "--ct-next", "trk,est", "--ct-next", "trk,est")
        learns = [line for line in out.splitlines() if f"learn(table={pipeline.table_id('followed')}," in line]
        assert len(learns) == 1, out
        return learns[0]
    ack, fin, rst = 0x010, 0x001, 0x004
    going_on = record(hex(ack))
    assert "idle_timeout=300" in going_on and "fin_idle_timeout=1" in going_on, going_on
    for ending in (ack | fin, rst, ack | rst):
        short = record(hex(ending))
        assert "idle_timeout=1," in short and "fin_idle_timeout" not in short, (ending, short)


def test_a_switch_that_goes_mid_sync_is_synced_as_soon_as_it_is_back(private_ovs, controller):
    """ovs-vswitchd goes away while the controller waits for its answer (here: stopped, a change
    asked of it, then killed), and comes back without its flows. The sync that waited fails as
    the connection goes, not after REPLY_TIMEOUT (10 s): the bridge's next sync, which waits
    for it to end, syncs the switch as soon as it is back. (Before, under os-ken's native
    threads, the waiting sync never ended, and the switch never got its flows again.)"""
    prepare(private_ovs, "host1", controller.ofp_target)
    controller.wait_synced(bridges=[("host1", "integration")])
    expected = len(private_ovs.flows("br-int"))
    vswitchd = private_ovs.pids[-1]
    os.kill(vswitchd, signal.SIGSTOP)
    try:
        status, body = controller.api("POST", "/v1/interfaces/eni-web1/attach",
                                      {"instance": "spare1", "requester": "acme"})
        assert status == 200, body
        # the change's sync has sent its bundle, and waits for the answer: bytes the stopped
        # switch has not read from the controller's connection (more than an echo request's)
        wait_for(lambda: _unread_from(controller) > 64, 10, "the change's bundle at the stopped switch")
    finally:
        os.kill(vswitchd, signal.SIGKILL)
    wait_for(lambda: not alive(vswitchd), 5, "ovs-vswitchd gone")
    private_ovs.pids.remove(vswitchd)
    private_ovs.start_vswitchd()
    back = time.monotonic()
    controller.wait_synced(bridges=[("host1", "integration")], timeout=20)
    assert time.monotonic() - back < 5
    # with the change in them: eni-web1's checks are on spare1's port now
    flows = private_ovs.flows("br-int")
    assert len(flows) == controller.switches()[("host1", "integration")]["flows"] > expected // 2
    mac, port = (load_file(TOPOLOGY).interfaces["eni-web1"].mac,
                 {name: private_ovs.vsctl("get", "Interface", name, "ofport").strip() for name in ("web1", "spare1")})
    assert {line.split("in_port=")[1].split(",")[0] for line in flows if f"dl_src={mac}" in line} == {port["spare1"]}


def _unread_from(controller) -> int:
    """Bytes waiting in the switch's end of its connections to the controller (`ss`: Recv-Q)."""
    port = controller.ofp_target.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"], check=True,
                         capture_output=True, text=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if line.strip())


def test_a_switch_that_goes_is_reported_disconnected(private_ovs, controller):
    """ovs-vswitchd killed: the API and the metrics say so within two echo intervals (the
    controller's echo requests find the connection closed). os-ken sends none by default, and
    the switch was reported connected for good."""
    prepare(private_ovs, "host1", controller.ofp_target)
    controller.wait_synced(bridges=[("host1", "integration")])
    vswitchd = private_ovs.pids[-1]
    os.kill(vswitchd, signal.SIGKILL)
    wait_for(lambda: not alive(vswitchd), 5, "ovs-vswitchd gone")
    private_ovs.pids.remove(vswitchd)
    wait_for(lambda: not any(s["connected"] for (name, _), s in controller.switches().items() if name == "host1"),
             2 * ECHO_INTERVAL + 3, "host1's bridges reported disconnected")
