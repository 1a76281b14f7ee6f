"""A followed move's make-before-break phases in a real ovs-vswitchd: at every step, a new
connection is recorded under the binding of where it is sent.

The controller applies a runtime change to a host in three commits (app._apply_diff, with the
parts sync.Diff gives): the new matches that steer nothing, then the changes (with the new and
deleted flows of the tables that steer), then the other deletes. A client sends its SYN under
the flows of one step and its handshake's ACK, a moment later, under those of a later one: the
ACK follows the record the SYN left. So the binding a SYN is recorded under must send the ACK,
at every later step, to where the SYN went. Traced here with `ofproto/trace` over the flows of
each step, loaded into a bridge: the record the SYN's trace shows is added as the switch would
have learned it (a trace learns nothing).

The failure this guards against, found in bench.remap: an interface moved back from a spare on
the client's host to its instance on another host. The new record flows were committed first,
while the local route still sent to the spare: a SYN was answered by the spare and recorded
under the instance, its ACK and data went to the instance, and the stranded connection held the
drain for minutes.
"""
import re
import subprocess

import pytest

from tests.conftest import data_file
from vpcflow.controller import records
from vpcflow.controller.sync import Installed, diff
from vpcflow.flows import follow, ofctl
from vpcflow.flows.compiler import compile_deployment
from vpcflow.flows.pipeline import table_id
from vpcflow.harness.controller import bin_path
from vpcflow.topology.loader import load_file

pytestmark = pytest.mark.follow

TOPOLOGY = data_file("two-hosts.yaml")  # web1 (10.0.0.11) and spare1 on host1; web2 on host2
CLIENT_PORT = 40000


def _key(f):
    return (table_id(f.table),) + f.key[1:]


def steps(before, after):
    """The host's flows at each step of the change from `before` to `after`, as the controller
    commits them (sync.Diff.phases, as a host's sync takes them: deletes last): before, after
    the first commit, after the second, after the last."""
    installed = [Installed(_key(f), f.cookie, f, ofctl.flow_text(f)) for f in before]
    first, deletes, changes, last_deletes = diff({_key(f): f for f in after}, installed,
                                                 ofctl.flow_text).phases(deletes_last=True)
    state = {_key(f): f for f in before}
    out = [list(state.values())]
    state.update({_key(f): f for f in first})
    out.append(list(state.values()))
    state.update({_key(f): f for f in changes})
    for i in deletes:
        del state[i.key]
    out.append(list(state.values()))
    for i in last_deletes:
        del state[i.key]
    out.append(list(state.values()))
    assert sorted(map(ofctl.flow_text, out[-1])) == sorted(map(ofctl.flow_text, after))
    return out


def load(ovs, flows, extra=()):
    text = ofctl.render(flows) + "".join(line + "\n" for line in extra)
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "--bundle", "replace-flows", f"unix:{ovs.dir}/br-int.mgmt", "-"],
                   input=text, check=True, capture_output=True, text=True)


def trace(ovs, dep, flags: int, ct: str) -> str:
    web1 = dep.interfaces["eni-web1"]
    packet = (f"in_port=web1,tcp,dl_src={web1.mac},dl_dst=0e:00:0a:00:00:0c,nw_src=10.0.0.11,nw_dst=10.0.0.12,"
              f"tp_src={CLIENT_PORT},tp_dst=7100,tcp_flags={flags:#x}")
    # (the conntrack state after each recirculation: the sender's zone's lookup and commit, and
    # where delivered here, the receiver's)
    return ovs.appctl("ofproto/trace", "br-int", packet, *(["--ct-next", ct] * 4))


def where(text: str) -> str:
    """Where a trace sent the packet: through the tunnel to host2, or delivered on this host."""
    assert text.strip().splitlines()[-1] != "Datapath actions: drop", text
    if "set_field:fd00:5ee0:0:2:" in text:
        return "host2"
    assert re.search(r"^70\. .*\n(\s+.*\n)*?\s+output:", text, re.M), text
    return "here"


def recorded_binding(text: str) -> int:
    """The binding the SYN's record loads (the learn action's), as the trace shows it."""
    loads = re.findall(r"learn\(table=38,[^\n]*?load:(0x[0-9a-f]+)->NXM_NX_REG4\[\]", text)
    assert len(loads) == 1, text
    return int(loads[0], 16)


def opening_record(binding: int) -> str:
    return (f"table=38,priority={follow.OPENING_PRIORITY},tcp,reg0=0x64/0xffffff,nw_src=10.0.0.11,nw_dst=10.0.0.12,"
            f"tp_src={CLIENT_PORT},tp_dst=7100,actions=load:{binding:#x}->NXM_NX_REG4[],load:0x1->NXM_NX_REG7[]")


@pytest.fixture
def bridge(private_ovs):
    subprocess.run([bin_path("vpcflow"), "bridge", TOPOLOGY, "--switch", "host1", "--db", private_ovs.db,
                    "--datapath-type", "dummy"], check=True, capture_output=True)
    private_ovs.wait_bridge_mgmt("br-int")
    return private_ovs


@pytest.mark.parametrize("start, moved_to, ends", [("spare1", "web2", ("here", "host2")),
                                                  ("web2", "spare1", ("host2", "here"))])
def test_a_connection_opened_at_any_step_of_a_followed_move_is_recorded_where_it_went(bridge, start, moved_to, ends):
    """eni-web2 (10.0.0.12), quiet where it is, moved with its connections followed; the client
    web1 is on host1 with spare1. A SYN at each step goes somewhere; its ACK, at that step and
    every later one, goes there too. Before the move, connections go to the old place; after
    it, to the new one."""
    base = load_file(TOPOLOGY)
    if start != "web2":
        base, _ = records.attach(base, "eni-web2", {"instance": start, "requester": "acme"}, "r0")
    after, remap = records.attach(base, "eni-web2", {"instance": moved_to, "requester": "acme",
                                                     "follow_connections": True}, "r1")
    follows = [follow.Follow(remap.id, remap.network, ip, remap.old_instance, remap.old_switch, remap.old_port,
                             remap.interface) for ip in remap.ips]
    flows = steps(compile_deployment(base)["host1"].bridge("integration"),
                  compile_deployment(after, follows=follows)["host1"].bridge("integration"))
    went = []
    for i, state in enumerate(flows):
        load(bridge, state)
        syn = trace(bridge, after, follow.TCP_SYN, "trk,new")
        binding, place = recorded_binding(syn), where(syn)
        went.append(place)
        for later in flows[i:]:
            load(bridge, later, [opening_record(binding)])
            ack = trace(bridge, after, follow.TCP_ACK, "trk,est")
            assert where(ack) == place, (f"a SYN at step {i} went {place}, recorded under {binding:#x}; its ACK at "
                                         f"step {flows.index(later)} went {where(ack)}")
    assert (went[0], went[-1]) == ends
