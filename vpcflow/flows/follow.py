"""Connection following (seed 003): an address moves from VM1 to VM2, VM1's connections stay.

Recording: every TCP or UDP connection toward an attached address is recorded where it enters
the overlay, by a learn action at the sender's switch (the switch that decides where the traffic
goes, before and after a remap): table `followed` gets a flow for the connection's 5-tuple that
loads the id of the binding (the instance that held the address) into reg4. TCP records end one
second after FIN (fin_idle_timeout) and otherwise idle out; UDP records idle out. A FIN or RST
that finds no record writes it with a one-second idle timeout: the switch installs learned flows
a moment after the packet that asked, so a short connection's FIN can pass before the record its
ACK asked for exists; that record would then never see a FIN and hold a remap open for the whole
idle timeout. The FIN's learn comes after the ACK's and leaves the record short-lived.
The sender's FIN or RST also marks the connection ended: on a host in the sender's conntrack
(ct_label), at the edge with a learned marker; after that, no packet of it is recorded as
going on. A client that half-closes and hears its answer seconds later, or one in TIME_WAIT
answering a retransmitted FIN, sends ACKs after its record has gone: recorded as going on, each
would make a record that nothing ends for TCP_IDLE (five minutes), and a remap away from the
binding it names would drain that long. They get the one-second record instead.

The far end's RST ends a record too: a connection reset by the address's holder (its service
stopped, say) has ended, though its client, whose socket the RST closed, sends nothing more
that would end its record, and a drain would count that record for the whole idle timeout. So a
received TCP RST is looked up once more as the connection's other direction (its addresses and
ports swapped through the action stack, then swapped back): the record it finds takes its
one-second FIN timeout (reset_ends). On a host that is where the receiver's conntrack begins
(ingress_acl); at the edge, where an elastic IP's holder sends to the outside (substrate_in).

Routing: table `follow` looks a packet up in `followed` (resubmit) and goes on to `follow_new`:
an unrecorded connection is recorded there under the current binding: TCP at its first packet
after the answer (the sender's conntrack calls it established: an unanswered attempt leaves no
record that would hold a remap open for minutes), UDP at its first packet. A connection's
opening packets before that go where the address lives now, as they would anyway. Then
`route` sends a packet whose reg4 names the old binding of a draining remap to VM1's switch (the
channel is the overlay itself), and everything else to where the address lives now.

The old switch keeps delivering to VM1 and letting VM1 answer from the address while the remap
drains; receivers accept VM1's answers from the old switch's prefix. The controller counts the
recorded connections of the old binding (learned flows, by cookie) and, when none is left,
marks the remap complete and compiles without it: every flow the remap added goes.

Quiet addresses: most addresses are never moved, and most of the time no remap of an address
drains. A host records the connections to such a quiet address with one set of flows per
network (QUIET_PRIORITY), not six per address: their records load QUIET into reg4, which route
does not look at, and carry the network's cookie (quiet_name). Only an address that a draining
remap or a pending cut (Cut) moved has flows of its own, above those, that record under its
holder's binding as described above. A remap's old holder held the address while it was quiet
if the remap is the address's first draining one (chain_firsts): `route` then sends the
address's QUIET records to that binding's route, and its drain also counts them (aggregate
stats filtered by table, network and address: no record is read). A move without following cuts
the address's connections: a pending Cut makes the address record under its holder until
none of its quiet records is left, so that a followed remap soon after does not count (or send
to its old holder) the records of connections it never carried (controller/state.py: not in
store mode).

Elastic IPs (the edge): every connection from the outside to an elastic IP enters at the edge,
so the edge is where it is recorded: `uplink_in` looks it up in `eip_followed` (resubmit) and
goes on to `eip_new`, which records an unrecorded one under the interface that holds the address
(TCP at its first packet with ACK set: the client saw the answer, so an unanswered SYN leaves no
record; UDP at its first packet). `eip_route` sends a packet recorded under the old holder of a
draining remap to the old holder's host, and everything else, and always a TCP SYN without ACK
(a connection that opens), to the host of the interface that holds the address now. The old
host keeps the address's translation for the connections its conntrack knows (flows/nat.py);
a new connection never reaches it. Old and new holder may share a host: there the host's
conntrack alone keeps each connection on its instance, and the edge's records still count them.

Limits: for a moved interface record, VM1 and VM2 must be on different switches (on one switch
the receiver could not tell a followed packet from a new one); ICMP is not followed.
"""
from __future__ import annotations

import dataclasses
import functools
import zlib

from vpcflow.flows.assemble import Shared
from vpcflow.flows.authz import INGRESS_CONNTRACK
from vpcflow.flows.core import (ETH_IPV4, IPPROTO, Ct, Flow, Goto, Learn, LearnSpec, Load, Resubmit, ct_flags, flow,
                                interned, one_item, swapped)
from vpcflow.flows.index import Index
from vpcflow.flows.matches import cidr, ipv4, network_ipv4
from vpcflow.flows.nat import nat_plan, to_host
from vpcflow.flows.pipeline import REG_BINDING, REG_NETWORK, REG_OPENING, REG_SRC_ZONE
from vpcflow.topology.model import Switch

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x001, 0x002, 0x004, 0x010

TCP_IDLE = 300
TCP_FIN_IDLE = 1
OPENING_IDLE = 10  # a SYN's record: the handshake completes long before, or it is retried
OPENING = "#opening"  # the cookie object of a SYN's record: not counted by a drain
# A SYN's record sits below the records (100): a learn whose flow has the match and priority of
# one present modifies that one and keeps its timeouts, so the connection's real record, made
# at its handshake's ACK, kept the SYN's 10 s and went after 10 s idle (and with it, the binding
# of a followed connection that paused for 10 s). Below, the real record is a flow of its own.
OPENING_PRIORITY = 98
UDP_IDLE = 30


@dataclasses.dataclass(frozen=True)
class Follow:
    """One draining remap, as the compiler needs it: the old binding of an address."""

    remap_id: str
    network: str
    ip: str
    old_instance: str
    old_switch: str
    old_port: str
    old_interface: str  # the record as it was: MAC, security groups
    order: float = 0.0  # when the remap was made (its creation time): which of an address's came first

    kind = "interface"

    @property
    def binding(self) -> int:
        return binding_id(self.old_instance)


@dataclasses.dataclass(frozen=True)
class Cut:
    """An address that moved without following (or whose interface was detached) while it was
    quiet: the connections it had are cut, and their quiet records, which retransmissions may
    keep alive for minutes, must not count toward a later followed remap of it. While a cut is
    pending the address records under its holder's binding, as while a remap drains; it ends
    when none of its quiet records is left (the controller counts them)."""

    remap_id: str  # "cut:<interface>": the interface whose move or detach cut it
    network: str
    ip: str
    order: float  # when
    kind = "cut"


@dataclasses.dataclass(frozen=True)
class ElasticFollow:
    """One draining elastic-IP remap: the interface that held the address."""

    remap_id: str
    ip: str
    old_interface: str
    kind = "elastic_ip"

    @property
    def binding(self) -> int:
        return elastic_binding(self.ip, self.old_interface)


def elastic_binding(ip, interface: str) -> int:
    """reg4 of an edge record: which interface held the elastic IP (the edge sees no instance)."""
    return binding_id(record_name(str(ip), interface))


ENDED_BINDING = 0xFFFFFFFF  # reg4 of the edge's marker of an ended connection: no binding's
QUIET = 0xFFFFFFFE  # reg4 of a host's record made while no remap of its address drained
NETWORK_MASK = 0xFFFFFF  # what a host's record matches of reg0: the network id's 24 bits


def binding_id(instance: str) -> int:
    """The value a record loads into reg4: which instance held the address. Never 0 (no record),
    ENDED_BINDING or QUIET."""
    value = zlib.crc32(instance.encode())
    return value if value not in (0, ENDED_BINDING, QUIET) else 1


def record_name(ip: str, instance: str) -> str:
    """The object of a learned record's cookie: the controller counts a binding's records by it."""
    return f"{ip}@{instance}"


def quiet_name(network: str) -> str:
    """The object of the cookie of a network's quiet records (QUIET): the controller counts an
    address's among them by their match."""
    return f"quiet:{network}"


def chain_firsts(follows) -> dict:
    """(network, ip) -> the first of the draining remaps (Follow) and pending cuts (Cut) of each
    moved address: the one that left it quiet, and so counts its quiet records (a Follow's old
    holder also takes them; a Cut's go where the address lives now)."""
    out = {}
    for f in follows:
        if f.kind in ("interface", "cut"):
            known = out.get((f.network, f.ip))
            if known is None or (f.order, f.remap_id) < (known.order, known.remap_id):
                out[(f.network, f.ip)] = f
    return out


def _learns(table: str, name: str, binding: int, network: bool):
    """The learn actions that record connections under `binding` (reg4), with cookie object
    `name`: (a TCP connection's first SYN, an established one going on, its ending: a FIN or RST,
    a UDP flow). network: the records match the network too (hosts; the edge has only public
    addresses). A SYN's record also sets reg7, so that the handshake's ACK makes the real one,
    and its cookie is not counted by a drain. The parts they share are made once."""
    load = (LearnSpec("load", binding, REG_BINDING, 32),)
    tcp = _record_match("tcp", network) + load
    return (Learn(table, OPENING_PRIORITY, "learned_follow", name + OPENING, tcp + (_OPENING_LOAD,),
                  idle_timeout=OPENING_IDLE, send_flow_rem=True),
            Learn(table, 100, "learned_follow", name, tcp, idle_timeout=TCP_IDLE, fin_idle_timeout=TCP_FIN_IDLE,
                  send_flow_rem=True),
            Learn(table, 100, "learned_follow", name, tcp, idle_timeout=TCP_FIN_IDLE, send_flow_rem=True),
            Learn(table, 100, "learned_follow", name, _record_match("udp", network) + load, idle_timeout=UDP_IDLE,
                  send_flow_rem=True))


def _reopening(table: str, name: str, binding: int) -> Learn:
    """The SYN's record of a connection that reuses an ended one's 5-tuple (at the edge): in
    place of the ended one's marker (ENDED_PRIORITY), so that the handshake's ACK finds it, not
    the marker."""
    return dataclasses.replace(_learns(table, name, binding, False)[0], priority=ENDED_PRIORITY)


@functools.lru_cache(maxsize=None)
def _record_match(proto: str, network: bool) -> tuple:
    """What a record matches: the connection's 5-tuple (and its network): the same specs for
    every record, made once."""
    l4 = {"tcp": ("tcp_src", "tcp_dst"), "udp": ("udp_src", "udp_dst")}[proto]
    specs = [LearnSpec("match", ETH_IPV4, "eth_type", 16), LearnSpec("match", IPPROTO[proto], "ip_proto", 8)]
    if network:
        specs.append(LearnSpec("match", REG_NETWORK, REG_NETWORK, NETWORK_MASK.bit_length()))
    specs += [LearnSpec("match", "ipv4_src", "ipv4_src"), LearnSpec("match", "ipv4_dst", "ipv4_dst"),
              LearnSpec("match", l4[0], l4[0]), LearnSpec("match", l4[1], l4[1])]
    return tuple(specs)


_OPENING_LOAD = LearnSpec("load", 1, REG_OPENING, 32)


@functools.lru_cache(maxsize=None)
def _tcp_matches(established: tuple, opening: tuple, unended: tuple):
    """The TCP part of the records' matches, after the address: (a SYN's, going on, ending).
    Ending is any other packet of the connection (a FIN or RST, or any after its sender's own:
    what going on leaves), matched one priority below going on: one flow, not one per flag. The
    same for every address of a table: made once."""
    return _TCP + opening + _SYN_ONLY, _TCP + established + unended + _GOING_ON, _TCP + established


@functools.lru_cache(maxsize=None)
def _goto(table: str) -> Goto:
    return Goto(table)  # one for every record flow, not one per address


def _recording(table: str, record_table: str, next_table: str, head: tuple, current, bindings,
               established: tuple, opening: tuple, unended: tuple, end, network: bool, obj: str,
               priority: int = 100):
    """The flows that record connections in `table`, at priority (and the handshakes completing
    under a binding, above it).

    head: the table's match for the address (items, interned), or for a network's quiet
    addresses; current: (cookie object, binding) of the records made now; bindings: every
    (cookie object, binding) a record may carry (now and while remaps drain); established,
    opening: what else (items) a handshake's later packets and its SYN must match (the sender's
    conntrack state on a host; nothing at the edge); unended: what a packet must also match to
    be recorded as going on: its sender has not sent FIN or RST (_HOST_UNENDED; at the edge, a
    packet after it finds the marker instead, and is not recorded); end: the actions that mark a connection ended and
    take the packet on to next_table (_HOST_END, _EDGE_END).

    Their matches are built from parts made once (_tcp_matches), the current binding's learn
    actions once for its records and its handshakes'.
    """
    name, binding = current
    # (the rest of the matches is made once, the module's, or is the address's own: its binding)
    unrecorded = head + _UNRECORDED
    syn, going_on, ending = _tcp_matches(established, opening, unended)
    mark, goto = Load(binding, REG_BINDING, 0, 32), _goto(next_table)
    first, going, ended, udp = _learns(record_table, name, binding, network)
    # A SYN leaves a short record: the handshake's ACK, which may come after a remap, then goes
    # where the SYN went, and makes the real one there. An unanswered SYN's record idles out
    # and is not counted by a drain.
    yield Flow(table, priority, unrecorded + syn, (first, mark, goto), "follow", obj)
    yield Flow(table, priority, unrecorded + going_on, (going, mark, goto), "follow", obj)
    # a FIN that passes before the record its ACK asked for is installed: the record goes soon;
    # so does one of a packet after its sender's FIN (what the unended going on leaves)
    yield Flow(table, priority - 1, unrecorded + ending, (ended, mark) + end, "follow", obj)
    for old_name, old_binding in bindings:
        # (an old holder's: the two it needs of its four, rarely made: while a remap drains)
        held_going, held_ended = (going, ended) if (old_name, old_binding) == current else \
            _learns(record_table, old_name, old_binding, network)[1:3]
        opened = head + ((REG_BINDING, old_binding),) + _OPENED
        yield Flow(table, priority + 10, opened + going_on, (held_going, goto), "follow", obj)
        yield Flow(table, priority + 10 - 1, opened + ending, (held_ended,) + end, "follow", obj)
    yield Flow(table, priority, unrecorded + _UDP, (udp, mark, goto), "follow", obj)


_UNRECORDED = ((REG_BINDING, 0),)
_QUIET_RECORD = ((REG_BINDING, QUIET),)
QUIET_PRIORITY = 90  # a network's quiet records: below the flows of an address a remap moved
QUIET_ROUTE = 120  # above every route of an address (overlay: 100, 105 local, 110 and 115 old bindings)
_OPENED = ((REG_OPENING, 1),)
_TCP = (("ip_proto", IPPROTO["tcp"]),)
_UDP = (("ip_proto", IPPROTO["udp"]),)
_SYN_ONLY = (("tcp_flags", (TCP_SYN, TCP_SYN | TCP_ACK)),)
_GOING_ON = (("tcp_flags", (TCP_ACK, TCP_ACK | TCP_FIN | TCP_RST)),)
# what a host's records match of the sender's conntrack state: TCP is recorded once
# established (the sender's conntrack saw the answer), a SYN when new
_HOST_ESTABLISHED = (("ct_state", ct_flags("+trk+est")),)
_HOST_OPENING = (("ct_state", ct_flags("+trk+new")),)
# A connection whose sender has sent FIN or RST is marked ended; its later packets are not
# recorded as going on. On a host, in the sender's conntrack (ct_label bit ENDED, in the sending
# interface's zone). The edge has no conntrack for elastic IPs: there the FIN or RST leaves a
# marker in eip_followed, below the records and above a SYN's record, which loads ENDED_BINDING
# into reg4: a packet that finds it (once its record went) is not recorded again and goes where
# the address lives now, but for a SYN: a new connection on the same 5-tuple, whose record
# takes the marker's place (eip_flows). A drain does not count markers.
ENDED_BIT = 0
ENDED = 1 << ENDED_BIT
_HOST_UNENDED = (("ct_label", (0, ENDED)),)
_HOST_END = (Ct(REG_SRC_ZONE, "route", commit=True, label_bit=ENDED_BIT),)
ENDED_PRIORITY = 99
ENDED_IDLE = 60  # Linux's TIME_WAIT: the ACKs a retransmitted FIN asks for come within it
ENDED_RECORD = "#ended"  # the cookie object of the edge's markers
_EDGE_END = (Learn("eip_followed", ENDED_PRIORITY, "learned_follow", ENDED_RECORD,
                   _record_match("tcp", False) + (LearnSpec("load", ENDED_BINDING, REG_BINDING, 32),),
                   idle_timeout=ENDED_IDLE),
             _goto("eip_route"))


def host_flows(ix: Index, sw: Switch):
    for net in ix.local_networks(sw.name):
        # the same on every switch that serves the network: made once
        key = ("follow", net.name)
        yield ix.cached(key, lambda: Shared(_network_flows(ix, net), like=ix.replaced_value(key)))
    yield from _recorded_ends("follow_new", {"ct_state": ct_flags("+trk+est"), "ct_label": (0, ENDED)}, _HOST_END)
    yield flow("follow_new", 1, {}, (Goto("route"),), feature="follow", obj="not-recorded")
    # a received RST ends the record of the connection's other direction (authz's conntrack then)
    yield flow("ingress_acl", 110, RESET, reset_ends("followed") + INGRESS_CONNTRACK, feature="follow",
               obj="reset-by-peer")


def _tcp_with(flag: int, match=None) -> dict:
    """The match of a TCP packet with this flag set (and match)."""
    return {**ipv4(ip_proto=IPPROTO["tcp"]), **(match or {}), "tcp_flags": (flag, flag)}


RESET = _tcp_with(TCP_RST)


def reset_ends(table: str) -> tuple:
    """The actions that look a received RST up in `table` as its connection's other direction
    (the record there takes its FIN timeout: fin_timeout acts on a RST as on a FIN), and give
    the packet back its own addresses and ports."""
    swaps = swapped("ipv4_src", "ipv4_dst") + swapped("tcp_src", "tcp_dst")
    return swaps + (Resubmit(table),) + swaps


def _recorded_ends(table: str, match: dict, end: tuple):
    """A recorded connection's FIN or RST, marked ended (an unrecorded one's is marked by its
    address's flows, `end` of _recording)."""
    for flag in (TCP_FIN, TCP_RST):
        yield flow(table, 50, _tcp_with(flag, match), end, feature="follow", obj="ended")


def _network_flows(ix: Index, net):
    yield flow("follow", 1, {REG_NETWORK: net.id}, (Resubmit("followed"), Goto("follow_new")),
               feature="follow", obj=f"{net.name}:lookup")
    head = network_ipv4(net.id)
    # Every address of the network that no draining remap moved: one set of flows, whose records
    # carry QUIET (route sends them where the address lives). Only toward the network's own
    # addresses, as before: what goes out through the NAT or to an authorized network is not
    # followed, and a record for each such connection would only cost the switch.
    quiet = (quiet_name(net.name), QUIET)
    yield from _recording("follow_new", "followed", "route", interned(head + (("ipv4_dst", cidr(net.cidr)),)), quiet,
                          [quiet], _HOST_ESTABLISHED, _HOST_OPENING, _HOST_UNENDED, _HOST_END, network=True,
                          obj=f"{net.name}:quiet", priority=QUIET_PRIORITY)
    old = {}  # ip text -> the (record name, binding) pairs its draining remaps left
    for ep in ix.by_network[net.name]:
        if ep.binding is not None:
            old.setdefault(ep.ip_text, []).append((record_name(ep.ip_text, ep.interface.attach_to), ep.binding))
    firsts = {ip: f for (network, ip), f in chain_firsts(ix.follows).items() if network == net.name}
    for ip in firsts:
        old.setdefault(ip, [])  # (a pending cut leaves no old binding)
    if not old:
        return
    # An address a draining remap or a pending cut moved: its own flows, above those, record
    # under its holder's binding, which the remap's drain counts (and a later remap's).
    held = set()
    for ep in ix.by_network[net.name]:
        if ep.binding is None and ep.ip_text in old:
            held.add(ep.ip_text)
            current = (record_name(ep.ip_text, ep.interface.attach_to), binding_id(ep.interface.attach_to))
            yield from _recording("follow_new", "followed", "route", ep.own_dst_match, current,
                                  [current] + old[ep.ip_text], _HOST_ESTABLISHED, _HOST_OPENING, _HOST_UNENDED,
                                  _HOST_END, network=True, obj=ep.interface.name)
    for ip in sorted(old.keys() - held):  # held by no interface now (detached): nothing is recorded
        yield Flow("follow_new", 100, head + one_item("ipv4_dst", ip) + _UNRECORDED, (_goto("route"),), "follow",
                   f"{ip}:unheld")
    # The quiet records of an address a followed remap moved go where it lived when they were
    # made: to the old holder of its first draining remap, by that binding's route
    # (overlay.followed_route). A cut's go where the address lives now, as any packet.
    for ip, f in sorted(firsts.items()):
        if f.kind == "interface":
            yield Flow("route", QUIET_ROUTE, head + one_item("ipv4_dst", ip) + _QUIET_RECORD,
                       (Load(f.binding, REG_BINDING, 0, 32), Resubmit("route")), "follow", f"remap:{f.remap_id}")


# --- elastic IPs, at the edge ---------------------------------------------------------------------

def edge_flows(ix: Index, sw: Switch):
    """The edge's share of following that is not an elastic IP's own (nat.edge_flows runs those
    with eip_flows)."""
    if ix.edge is None or ix.edge.name != sw.name or sw.uplink is None:
        return
    yield from _recorded_ends("eip_new", {}, _EDGE_END)
    yield flow("eip_new", 1, {}, (Goto("eip_route"),), feature="follow", obj="not-recorded")


def eip_flows(ix: Index, sw: Switch, eip):
    """Following for one elastic IP whose interface is attached (on the edge that carries NAT)."""
    if sw.uplink is None:
        return
    holders = nat_plan(ix).primary
    draining = [f for f in ix.elastic_follows if f.ip == str(eip.ip) and f.old_interface in holders]
    ep = holders[eip.interface]
    uplink_port = sw.uplink.port
    ip, obj = str(eip.ip), f"eip:{eip.ip}"
    dst = ipv4(ipv4_dst=ip)
    yield flow("uplink_in", 100, {"in_port": uplink_port, **dst}, (Resubmit("eip_followed"), Goto("eip_new")),
               feature="follow", obj=obj)
    current = (record_name(ip, eip.interface), elastic_binding(ip, eip.interface))
    old = [(record_name(ip, f.old_interface), f.binding) for f in draining]
    head = interned(tuple(dst.items()))
    yield from _recording("eip_new", "eip_followed", "eip_route", head, current, [current] + old,
                          (), (), (), _EDGE_END, network=False, obj=obj)
    # A client that opens a connection on the 5-tuple of one that ended within ENDED_IDLE (one
    # behind a NAT may) finds its marker: the SYN turns the marker into its own SYN's record (a
    # learn of the marker's match and priority modifies it), or the connection, whose packets
    # keep the marker alive, would never be recorded, and a remap would cut it.
    name, binding = current
    yield Flow("eip_new", 100, head + ((REG_BINDING, ENDED_BINDING),) + _TCP + _SYN_ONLY,
               (_reopening("eip_followed", name, binding), Load(binding, REG_BINDING, 0, 32), _goto("eip_route")),
               "follow", obj)
    here = to_host(ep.switch, eip.ip)
    yield flow("eip_route", 100, dst, here, feature="follow", obj=obj)
    # a connection that opens goes to the new holder, whatever an old record says
    yield flow("eip_route", 300, {**dst, "ip_proto": IPPROTO["tcp"], "tcp_flags": (TCP_SYN, TCP_SYN | TCP_ACK)},
               here, feature="follow", obj=obj)
    for f in draining:
        yield flow("eip_route", 200, {**dst, REG_BINDING: f.binding}, to_host(holders[f.old_interface].switch, eip.ip),
                   feature="follow", obj=f"remap:{f.remap_id}")
