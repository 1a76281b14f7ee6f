"""The os-ken application: thin event handlers around the compiler and sync.

switch connects (or reconnects, or a port appears) -> sync that bridge:
    read its ports and installed flows, diff against the compiled flows, apply the difference
    in one atomic bundle, confirm with a barrier.
SIGHUP or POST /v1/reload -> re-read the deployment file; a valid one replaces the model and
    every connected bridge is synced; an invalid one changes nothing.
Store mode, several instances (membership.py, roles.py): on connect and at every membership
    view change, each bridge is asked for the role the view gives this instance (MASTER or
    SLAVE, with the view's generation id); only the master syncs, and a new master syncs.
"""
from __future__ import annotations

import logging
import signal
import threading
import time

from vpcflow.controller import api, arp_probe, config, membership, render, unixctl
from vpcflow.controller.framework import (CONF, CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, AppBase, event,
                                          hub, ofp, ofp_event, packet, parser, set_ev_cls)
from vpcflow.controller.state import Controller
from vpcflow.controller.sync import Installed, diff, diff_since, held, split_by_resolvable
from vpcflow.flows import cookies, pipeline
from vpcflow.flows.core import ETH_IPV4, Flow
from vpcflow.flows.follow import NETWORK_MASK, chain_firsts, quiet_name, record_name
from vpcflow.topology.model import EDGE

LOG = logging.getLogger("vpcflow")
config.register(CONF)

REPLY_TIMEOUT = 10.0
REMAP_POLL = 0.5
NAME_MASK = cookies.FEATURE_MASK | cookies.OBJECT_MASK  # what names a learned flow: its cookie's feature and object
BUNDLE_FLAGS = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
# the flow a revalidation nudge deletes: none has it (a cookie of ours no compiled flow carries)
NUDGE_COOKIE = cookies.make("pipeline", "revalidation-nudge")
NUDGE_PRIORITY = 0xFFFF
NUDGE_EVERY = 0.002  # s between revalidation nudges while a revalidator wait is unanswered
NUDGE_XID = 0xFFFFFFFF  # (the switch answers a nudge only with an error: none is expected)


class RequestFailed(Exception):
    pass


class RoleRefused(RequestFailed):
    def __init__(self, error):
        super().__init__(f"role request refused: {_describe(error)}")
        self.stale = (error.type, error.code) == (ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE)


class Pending:
    """A request awaiting the switch (the connection dp): the replies and errors for the xids
    in errors_for."""

    def __init__(self, dp, errors_for=(), ends_on_error: bool = False):
        self.dp = dp
        self.errors_for = set(errors_for)
        self.ends_on_error = ends_on_error  # an error is the answer (else only the reply ends it)
        self.replies = []
        self.errors = []
        self.done = event()  # (not hub.Event: see framework.event)
        self.lost = False  # the connection went before the answer came

    def wait(self, what: str):
        """Until the answer is in; RequestFailed if the connection went or REPLY_TIMEOUT passed."""
        if not self.done.wait(timeout=REPLY_TIMEOUT):
            raise RequestFailed(f"no reply to {what}")
        if self.lost:
            raise RequestFailed(f"the switch disconnected before its reply to {what}")


class VpcflowApp(AppBase):
    OFP_VERSIONS = [ofp.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ctl = Controller.from_config(CONF.vpcflow)
        self.appctl_targets = dict(CONF.vpcflow.appctl_targets or {})
        self.datapaths = {}  # dpid -> os-ken Datapath
        self.pending = {}  # (connection, xid) -> Pending (each connection numbers its own xids)
        self.sync_guard = threading.Lock()
        self.sync_running = set()
        self.sync_again = set()  # dpids whose running sync is to run again (see sync)
        self.sync_ended = {}  # dpid -> event, set while no sync of it runs
        self.phased_lock = hub.Semaphore(1)  # one runtime change's phases at a time
        self.phased_queued = False  # a phased run waits to start: a later change needs no other
        self.claim_running = set()
        self.claim_again = set()
        # dpid -> what the last complete sync left on the bridge (InstalledCache): a model change
        # is then diffed against it, without dumping the bridge. Dropped on reconnect, on a port
        # change, on a role change and on any failure, so that the next sync reads the switch again.
        self.installed = {}
        self.membership = self._join() if self.ctl.store is not None else None
        hub.spawn(api.serve, self.ctl, CONF.vpcflow, self)
        hub.spawn(arp_probe.run, self)
        hub.spawn(self.watch_remaps)
        if self.ctl.store is not None:
            hub.spawn(self.follow_store)
        signal.signal(signal.SIGHUP, lambda *_: hub.spawn(self.reload))
        LOG.info("vpcflow: %d switches in %s", len(self.ctl.deployment.switches), CONF.vpcflow.topology_file)

    # --- connection life cycle -------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def on_features(self, ev):
        dp = ev.msg.datapath
        where = self.ctl.locate(dp.id)
        if where is None:
            LOG.warning("datapath %016x is not in the deployment file: ignored", dp.id)
            return
        LOG.info("switch %s bridge %s connected (datapath %016x)", where[0], where[1], dp.id)
        # Packet-ins are not used for forwarding; keep the whole packet for the few that come.
        dp.send_msg(parser.OFPSetConfig(dp, ofp.OFPC_FRAG_NORMAL, 0xFFFF))

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def on_state_change(self, ev):
        dp = ev.datapath
        if dp.id is None or self.ctl.locate(dp.id) is None:
            return
        self.installed.pop(dp.id, None)
        if ev.state == MAIN_DISPATCHER:
            before = self.datapaths.get(dp.id)
            if before is not None and before is not dp:  # the switch is back: its old connection is gone
                self._connection_lost(before)
            self.datapaths[dp.id] = dp
            if self.membership is None:
                self.ctl.connected(dp.id)
                hub.spawn(self.sync, dp.id)
            else:  # a role first: the master syncs
                self.ctl.connected(dp.id, role="")
                hub.spawn(self.claim, dp.id)
        else:
            self._connection_lost(dp)
            if self.datapaths.get(dp.id) is dp:
                del self.datapaths[dp.id]
                self.ctl.disconnected(dp.id)
                LOG.info("switch %s bridge %s disconnected", *self.ctl.locate(dp.id))

    def _connection_lost(self, dp):
        """What waits for this connection's answers fails now, not at REPLY_TIMEOUT: its sync
        ends, and the one the switch's return starts need not wait for it. Called when the
        connection ends, and when the switch connects again: under os-ken's native threads, the
        end of a connection whose switch went is reported only once something is sent on it
        (its next echo request, seconds later)."""
        for p in list(self.pending.values()):
            if p.dp is dp:
                p.lost = True
                p.done.set()

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def on_port_status(self, ev):
        # A port came or went: flows naming it become installable (or must go).
        self.installed.pop(ev.msg.datapath.id, None)
        hub.spawn(self.sync, ev.msg.datapath.id)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def on_packet_in(self, ev):
        """No flow sends packets here: whatever comes is counted and looked at, never trusted."""
        self.ctl.packet_in(ev.msg.datapath.id, describe_packet(ev.msg.data))

    # --- replies, matched to their request by xid ---------------------------------------------
    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPAggregateStatsReply,
                 ofp_event.EventOFPPortDescStatsReply, ofp_event.EventOFPDescStatsReply], MAIN_DISPATCHER)
    def on_multipart_reply(self, ev):
        p = self.pending.get((ev.msg.datapath, ev.msg.xid))
        if p is None:
            return
        p.replies.append(ev.msg)
        if not ev.msg.flags & ofp.OFPMPF_REPLY_MORE:
            p.done.set()

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    def on_role_reply(self, ev):
        p = self.pending.get((ev.msg.datapath, ev.msg.xid))
        if p is not None:
            p.replies.append(ev.msg)
            p.done.set()

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def on_barrier(self, ev):
        p = self.pending.get((ev.msg.datapath, ev.msg.xid))
        if p is not None:
            p.done.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def on_error(self, ev):
        msg = ev.msg
        where = self.ctl.locate(msg.datapath.id) or ("?", "?")
        for p in list(self.pending.values()):
            if p.dp is msg.datapath and msg.xid in p.errors_for:
                p.errors.append(msg)
                if p.ends_on_error:
                    p.done.set()
                return
        LOG.error("switch %s bridge %s: OpenFlow error %s xid=%s", where[0], where[1], _describe(msg), msg.xid)

    def request(self, dp, msg):
        """Send a multipart request and wait for all of its replies."""
        return self._ask(dp, msg).replies

    def _ask(self, dp, msg, ends_on_error: bool = False) -> Pending:
        """Send one request and wait until its replies are in (or, with ends_on_error, the
        switch's error): the Pending that gathered them."""
        dp.set_xid(msg)
        p = Pending(dp, {msg.xid}, ends_on_error)
        self.pending[dp, msg.xid] = p
        try:
            dp.send_msg(msg)
            p.wait(type(msg).__name__)
            return p
        finally:
            del self.pending[dp, msg.xid]

    def _exchange(self, dp, msgs, bundle=None):
        """Send messages, then (given (bundle id, flags, flow-mods)) that bundle's adds, then a
        barrier; return the errors the switch answered any of them with."""
        for m in msgs:
            dp.set_xid(m)
        adds = bundle[2] if bundle else ()
        first = dp.xid + 1  # the adds take the next xids, one each (render.bundle_adds)
        dp.xid = (dp.xid + len(adds)) & ofp.MAX_XID
        barrier = parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        xids = [m.xid for m in msgs] + [(first + i) & ofp.MAX_XID for i in range(len(adds))] + [barrier.xid]
        p = Pending(dp, xids)
        self.pending[dp, barrier.xid] = p
        try:
            for m in msgs:
                dp.send_msg(m)
            if adds:
                for buf in render.bundle_adds(*bundle, first):
                    dp.send(buf)
            dp.send_msg(barrier)
            p.wait("a barrier")
        finally:
            del self.pending[dp, barrier.xid]
        return p.errors

    def apply(self, dp, msgs):
        """Apply flow-mods ((type, body) each, see render.message) as one atomic bundle; raise,
        with nothing changed, if any is refused."""
        self.commit(dp, self.prepare(dp, msgs))

    def prepare(self, dp, msgs) -> int:
        """Open a bundle with the flow-mods in it, uncommitted: its id. Raise, with the bundle
        discarded, if any is refused: the switch checks each message when it is added to the
        bundle and leaves a refused one out, so a bundle is committed only once every add was
        accepted."""
        bundle_id = dp.xid & 0xFFFFFFFF
        errors = self._exchange(dp, [_bundle_ctrl(dp, bundle_id, ofp.ONF_BCT_OPEN_REQUEST)],
                                (bundle_id, BUNDLE_FLAGS, msgs))
        if errors:
            self._exchange(dp, [_bundle_ctrl(dp, bundle_id, ofp.ONF_BCT_DISCARD_REQUEST)])
            raise RequestFailed(f"switch refused {len(errors)} of {len(msgs)} flow-mods: " + _describe(errors[0]))
        return bundle_id

    def commit(self, dp, bundle_id: int):
        errors = self._exchange(dp, [_bundle_ctrl(dp, bundle_id, ofp.ONF_BCT_COMMIT_REQUEST)])
        if errors:
            raise RequestFailed("switch refused the bundle commit: " + _describe(errors[0]))

    # --- sync ----------------------------------------------------------------------------------
    def sync(self, dpid, phased=None, break_after=None, model=None):
        """Bring one bridge to its desired flows. phased: apply a runtime change make-before-break
        (_apply_diff), calling phased(new) once the first bundle is committed; what it returns
        (None, or a function) is called once the second bundle is prepared, and only its commit
        waits for that: a wait that outlasts Open vSwitch's bundle idle timeout (10 s) fails the
        sync, leaving the first bundle's flows in place. break_after (phased only): the deletes
        go in a third bundle, once break_after(), called after the second commit, returns.
        model (a Controller.model_in_force()): sync to it rather than to the one in force now.

        Asked while the bridge syncs: a plain sync runs once more after it (in one bundle, however
        many asked); a phased one waits for it to end and then runs with its own steps (folded
        into the other, its run's other switches would wait for steps never taken, or see them
        taken without its deletes held back)."""
        # (syncs run in threads of their own: what is running, and what is asked of it, changes
        # under sync_guard, each check with the change it decides)
        with self.sync_guard:
            ended = self.sync_ended.setdefault(dpid, event())
            if dpid in self.sync_running and phased is None:
                self.sync_again.add(dpid)
                return
        while True:
            with self.sync_guard:
                if dpid not in self.sync_running:
                    self.sync_running.add(dpid)
                    ended.clear()
                    break
            ended.wait()
        finished = False
        try:
            while not finished:
                self._sync_once(dpid, phased, break_after, model)
                with self.sync_guard:
                    finished = dpid not in self.sync_again
                    if finished:  # (a sync asked from now on starts anew)
                        self.sync_running.discard(dpid)
                        ended.set()
                    self.sync_again.discard(dpid)
                phased = break_after = model = None
        finally:
            if not finished:
                with self.sync_guard:
                    self.sync_running.discard(dpid)
                    ended.set()

    def _sync_once(self, dpid, phased=None, break_after=None, model=None):
        dp = self.datapaths.get(dpid)
        if dp is None or not self.programs(dpid):
            return
        name, bridge = self.ctl.locate(dpid)
        started = time.monotonic()
        cache = self.installed.pop(dpid, None)
        try:
            generation = self.ctl.unchanged_since(name, cache.generation, model) if cache is not None else None
            if generation is not None:
                # no change since the last sync touched this switch: the bridge has what it should
                cache.generation = generation
                self.installed[dpid] = cache
                self.ctl.synced(dpid, generation, version=cache.version, ports=cache.ports,
                                installed=len(cache.held.desired), added=0, deleted=0, waiting=0,
                                seconds=time.monotonic() - started, features=cache.held.features)
                return
            if cache is not None:  # the bridge holds what the last sync left: no need to read it
                version, ports = cache.version, cache.ports
            else:
                version, ports, installed = self._read_bridge(dp)
            generation, flows = self.ctl.desired(name, bridge, version, model)
            key, content = (lambda f: render.desired_key(f, ports)), (lambda f: render.desired_content(f, ports))
            if cache is not None:  # compared by what changed since (sync.diff_since)
                d, now, waiting = diff_since(cache.held, flows, key, content)
            else:
                desired, waiting = split_by_resolvable(flows, key)
                d, now = diff(desired, installed, content), held(desired, flows)
            self._apply_diff(dp, d, ports, phased, break_after)
            if not waiting:
                self.installed[dpid] = InstalledCache(generation, version, ports, now)
            self.ctl.synced(dpid, generation, version=version, ports=ports, installed=len(now.desired),
                            added=len(d.add), deleted=len(d.delete), waiting=len(waiting),
                            seconds=time.monotonic() - started, features=now.features)
            if bridge == pipeline.INTEGRATION and self.ctl.deployment.switches[name].role == EDGE:
                hub.spawn(arp_probe.probe_once, self)  # learn the gateway now, not at the next tick
            LOG.info("switch %s bridge %s synced: %d added, %d deleted, %d unchanged, %d waiting for ports",
                     name, bridge, len(d.add), len(d.delete), d.unchanged, len(waiting))
        except (RequestFailed, render.UnresolvedPort) as e:
            self.ctl.sync_failed(dpid, str(e))
            LOG.error("switch %s bridge %s: sync failed: %s", name, bridge, e)
        except Exception as e:  # a bug must not leave the bridge unsynced without a word
            self.ctl.sync_failed(dpid, f"{type(e).__name__}: {e}")
            LOG.exception("switch %s bridge %s: sync failed", name, bridge)

    def _apply_diff(self, dp, d, ports, phased=None, break_after=None):
        """The diff in one bundle; phased (make-before-break), in two (sync.Diff.phases): first
        the flows of matches new to the bridge (a remap's: the edge accepting the new holder's
        answers, the new holder's switch ready to deliver; not those of the tables that steer,
        where a new match can move traffic), then, once what phased(whether there were any)
        returned has returned in turn, the changes of installed flows (where the traffic goes)
        and the deletes. Open vSwitch revalidates its datapath flows after a commit,
        asynchronously: in one bundle, a datapath flow made before it (one that dropped the new
        holder's late packets while it held no address) can still drop the first answers the
        change sends its way; with the new matches committed first, the revalidators have caught
        up by the time traffic moves. With break_after, the deletes come last, in a third
        bundle, once break_after() has returned (a host: once the edges have moved the traffic,
        so that the old holder of an elastic IP takes new connections until then), but for
        those of the tables that steer: they go with the changes."""
        def deletes(installed):
            return [render.message(render.delete_strict(dp, i.key[0], i.key[1], _switch_match(i.match, ports),
                                                         i.cookie)) for i in installed]

        if phased is None:
            changes = deletes(d.delete) + [render.flow_mod(f, ports) for f in d.add]
        else:
            first, now, then, last = d.phases(deletes_last=break_after is not None)
            new = [render.flow_mod(f, ports) for f in first]
            if new:
                self.apply(dp, new)
            wait = phased(bool(new))  # what waits for the new matches starts now, the rest overlaps it
            changes = deletes(now) + [render.flow_mod(f, ports) for f in then]
            prepared = self.prepare(dp, changes) if changes else None
            if wait is not None:
                wait()  # only the commit is left to wait for
            if prepared is not None:
                self.commit(dp, prepared)
            if break_after is not None:
                break_after()
                if last:
                    self.apply(dp, deletes(last))
            return
        if changes:
            self.apply(dp, changes)

    def _read_bridge(self, dp):
        """(OVS version, port numbers by name, installed flows) as the switch reports them."""
        desc = self.request(dp, parser.OFPDescStatsRequest(dp, 0))[0].body
        ports = {}
        for reply in self.request(dp, parser.OFPPortDescStatsRequest(dp, 0)):
            for port in reply.body:
                ports[port.name.decode() if isinstance(port.name, bytes) else port.name] = port.port_no
        installed = []
        for reply in self.request(dp, parser.OFPFlowStatsRequest(dp, table_id=ofp.OFPTT_ALL)):
            for st in reply.body:
                installed.append(Installed((st.table_id, st.priority, render.match_key(st.match)),
                                           st.cookie, st.match, render.installed_content(st)))
        return _sw_version(desc), ports, installed

    def sync_all(self, phased: bool = False):
        """phased: a runtime change (API, a remap's completion), applied make-before-break; a
        reload is one bundle per bridge. Runtime changes' runs go one at a time (each takes its
        phases across all switches, to the model in force when it began), and one waiting to
        start also brings in the changes made meanwhile."""
        if not phased:
            hub.spawn(self._synced_then_released)
        elif not self.phased_queued:
            self.phased_queued = True
            hub.spawn(self._phased_run)

    def _synced_then_released(self, phased: bool = False, model=None):
        try:
            self._sync_receivers_first(phased, model)
        finally:
            self.ctl.release_retired()  # what the change replaced, freed once no switch waits on it

    def _phased_run(self):
        with self.phased_lock:
            self.phased_queued = False  # this run has begun: a change from now on needs one more
            self._synced_then_released(True, self.ctl.model_in_force())

    def _sync_receivers_first(self, phased: bool = False, model=None):
        """Every bridge, hosts before edges: the edge is the one sender of everything that comes
        from outside, so it switches to a new destination (an elastic IP's new holder) only once
        that destination's host is ready for it. Hosts among themselves sync at once (a reload).

        Phased (make-before-break): the edges add their new matches (which move no traffic);
        the hosts add theirs (an interface's new home ready to deliver, an elastic IP's new
        holder ready to translate), and only once every host has, and its revalidators have
        caught up with them, make their changes (where senders send); then the edges make
        theirs, and only then do the hosts delete what is gone (an elastic IP's old holder takes
        the new connections the edge still sends it until the edge has moved them). The hosts'
        work is the time the edges' revalidators get to bring their datapath flows up to the new
        matches (and where the edge's control socket is known, the edge's changes also wait for
        that). model: what every switch syncs to (phased; Controller.model_in_force)."""
        dpids = list(self.datapaths)
        is_edge = {dpid: self.ctl.deployment.switches[self.ctl.locate(dpid)[0]].role == EDGE
                   for dpid in dpids if self.ctl.locate(dpid)}
        # integration bridges first: an underlay bridge's flows do not change with a runtime change
        dpids.sort(key=lambda d: (self.ctl.locate(d) or ("", ""))[1] != pipeline.INTEGRATION)
        hosts = [d for d in dpids if not is_edge.get(d, False)]
        edges = [d for d in dpids if is_edge.get(d, False)]
        if not phased:
            hub.joinall([hub.spawn(self.sync, d) for d in hosts])
            hub.joinall([hub.spawn(self.sync, d) for d in edges])
            return
        hosts_done = event()

        def edge_sync(dpid, added):
            def between(new: bool):
                revalidated = hub.spawn(self.revalidated, dpid) if new else None
                added.set()

                def wait():
                    hosts_done.wait()
                    if revalidated is not None:
                        revalidated.wait()
                return wait

            try:
                self.sync(dpid, between, model=model)
            finally:
                added.set()  # also when it had nothing to do, or failed

        added = [event() for _ in edges]
        edge_syncs = [hub.spawn(edge_sync, d, a) for d, a in zip(edges, added)]
        for a in added:
            a.wait()
        hosts_added = [event() for _ in hosts]
        hosts_changed = [event() for _ in hosts]
        edges_done = event()

        def host_sync(dpid, added, changed):
            def between(new: bool):
                # added: once its revalidators have caught up with its new matches too. A host
                # is sent the first connections by other hosts, or by itself (an interface moved
                # to a host where its clients are): traced, the new holder's SYN-ACK met a
                # datapath flow that dropped what its port sent while it held no address, and
                # the client's attempt was lost.
                def revalidated():
                    try:
                        if new:
                            self.revalidated(dpid)
                    finally:
                        added.set()
                hub.spawn(revalidated)
                return lambda: [a.wait() for a in hosts_added]

            def break_after():
                changed.set()
                edges_done.wait()

            try:
                self.sync(dpid, between, break_after, model)
            finally:
                added.set()  # also when it had nothing to do, or failed
                changed.set()

        host_syncs = [hub.spawn(host_sync, d, a, c) for d, a, c in zip(hosts, hosts_added, hosts_changed)]
        try:
            for c in hosts_changed:
                c.wait()
            hosts_done.set()
            hub.joinall(edge_syncs)
        finally:
            hosts_done.set()
            edges_done.set()
        hub.joinall(host_syncs)

    def revalidated(self, dpid):
        """Wait until the switch's revalidators have been through all its datapath flows once
        since now, where its control socket is known.

        `revalidator/wait` answers at the end of the round in progress, and a round takes the
        flow tables' version once, when it begins: the flows it went through before a commit
        are not looked at again in it. An edge that records connections (learn) changes its
        tables with nearly every new connection, so a round is nearly always in progress: one
        wait let the remap's first connection meet a datapath flow that still dropped the new
        holder's answers (traced: the SYN-ACK dropped at the edge, the client's attempt lost).
        The second wait, asked once the first is answered, ends with a round that began after it.

        A quiet switch starts a round only every 500 ms (other_config:max-revalidator), or when
        its tables change: a round that the commit started may end before a wait is asked, and
        the wait then lasts until the next timed one (measured: a remap on a quiet edge took 0.5
        to 1 s to program, against ~20 ms on an edge busy with new connections). So while each
        wait is unanswered, the switch is nudged (_nudge_revalidators) into starting rounds. The
        waits mean what they meant: a round that ends a wait still began after it was asked."""
        name, bridge = self.ctl.locate(dpid)
        target = self.appctl_targets.get(name)
        if target is None or bridge != pipeline.INTEGRATION:
            return
        dp = self.datapaths.get(dpid)
        try:
            for _ in range(2):
                answered = event()
                if dp is not None:
                    hub.spawn(self._nudge_revalidators, dp, answered)
                try:
                    unixctl.call(target, "revalidator/wait")
                finally:
                    answered.set()
        except unixctl.UnixctlError as e:
            LOG.warning("switch %s: waiting for its revalidators failed: %s", name, e)

    def _nudge_revalidators(self, dp, answered):
        """Have the switch's revalidators start a round, every NUDGE_EVERY until `answered` is
        set (the first a moment after the wait was sent: the switch has it when the round ends):
        any flow-mod the switch accepts changes its tables' version, which starts one. This one
        deletes a flow that is never installed (strictly, and a cookie of ours that no flow has):
        it changes nothing. Sent without a barrier, under an xid of its own: nothing waits for
        it, and it takes no xid from the sync that may be preparing its bundle meanwhile. Built
        once: each nudge sends the same bytes."""
        nudge = render.delete_strict(dp, pipeline.table_id("classify"), NUDGE_PRIORITY, parser.OFPMatch(),
                                     NUDGE_COOKIE)
        nudge.set_xid(NUDGE_XID)
        nudge.serialize()
        while not answered.wait(timeout=NUDGE_EVERY):
            dp.send(nudge.buf)

    # --- changes -------------------------------------------------------------------------------
    def reload(self):
        """Re-read the deployment file. Returns the problems (empty when applied)."""
        problems = self.ctl.reload()
        if problems:
            LOG.error("reload of %s rejected, nothing changed:\n%s", CONF.vpcflow.topology_file,
                      "\n".join(f"  {p}" for p in problems))
        else:
            LOG.info("reloaded %s", CONF.vpcflow.topology_file)
            self.sync_all()
        return problems

    def follow_store(self):
        """Store mode: every change in the store (this instance's API writes included) is put in
        force here, and every connected bridge synced to it."""
        while True:
            try:
                for update in self.ctl.store.updates():
                    switches = set(self.ctl.deployment.switches)
                    if self.ctl.store_update(update):
                        if self.membership is not None and set(self.ctl.deployment.switches) != switches:
                            self.claim_all()  # the switches to share changed
                        self.sync_all()
            except Exception:  # the reader must outlive a bad update or a lost connection
                LOG.exception("following the store %s failed; reading again", self.ctl.store.remote)
                hub.sleep(1.0)

    # --- roles (store mode) -----------------------------------------------------------------------
    def _join(self):
        """Join the controller instances sharing the switches; None (this instance alone, no role
        requests, as in file mode) where the store's schema predates membership (1.1.0)."""
        from vpcflow.store import StoreError
        from vpcflow.store.client import fetch_schema
        from vpcflow.store.schema import MEMBERSHIP_TABLE

        v, remote = CONF.vpcflow, self.ctl.store.remote
        try:
            if MEMBERSHIP_TABLE not in fetch_schema(remote)["tables"]:
                LOG.warning("store %s has no %s table (schema before 1.2.0): this instance programs every "
                            "switch alone; run one controller only", remote, MEMBERSHIP_TABLE)
                return None
        except StoreError as e:
            LOG.warning("store %s: %s; joining the controllers when it answers", remote, e)
        m = membership.Membership(remote, v.instance_name or membership.default_name(CONF.ofp_tcp_listen_port),
                                  f"http://{v.api_host}:{v.api_port}", on_view=lambda view: hub.spawn(self.claim_all),
                                  sleep=hub.sleep)
        try:
            m.join()
        except StoreError as e:  # run() joins when the store answers; until then this instance holds nothing
            LOG.warning("joining the controllers in %s failed: %s", remote, e)
        hub.spawn(m.run)
        return m

    def programs(self, dpid) -> bool:
        """Whether this instance may send flow-mods and packet-outs to the bridge: in file mode
        always (the one controller, role "equal"); in store mode as its master only."""
        b = self.ctl.bridges.get(dpid)
        return b is not None and b.role in ("equal", "master")

    def designated(self) -> bool:
        """Whether this instance writes what only one instance must (a drained remap's completion)."""
        return self.membership is None or (self.membership.view is not None and self.membership.view.designated)

    def membership_status(self) -> dict:
        if self.membership is None:
            return {}
        view = self.membership.view
        return {"instance": self.membership.name, "members": list(view.members) if view else [],
                "membership_generation": view.generation if view else None}

    def claim_all(self):
        for dpid in list(self.datapaths):
            hub.spawn(self.claim, dpid)

    def claim(self, dpid):
        """Ask the bridge for the role the membership view gives this instance; again if asked
        while running (the view changed). A bridge this instance newly masters is synced."""
        if dpid in self.claim_running:
            self.claim_again.add(dpid)
            return
        self.claim_running.add(dpid)
        try:
            while True:
                self.claim_again.discard(dpid)
                self._claim_once(dpid)
                if dpid not in self.claim_again:
                    break
        finally:
            self.claim_running.discard(dpid)

    def _claim_once(self, dpid):
        dp, view, where = self.datapaths.get(dpid), self.membership.view, self.ctl.locate(dpid)
        if dp is None or view is None or where is None:
            return
        master = view.masters(where[0], self.ctl.deployment.switches)
        was = self.ctl.bridges[dpid].role
        try:
            reply = self.role_request(dp, ofp.OFPCR_ROLE_MASTER if master else ofp.OFPCR_ROLE_SLAVE,
                                      view.generation)
        except RoleRefused as e:
            # STALE: another instance asked with a newer membership generation. Step down; the
            # next view this instance reads (newer) asks again.
            self.ctl.set_role(dpid, "slave")
            log = LOG.warning if e.stale else LOG.error
            log("switch %s bridge %s: %s (generation %d): not programming it until the next membership view",
                where[0], where[1], e, view.generation)
            return
        except RequestFailed as e:
            self.ctl.set_role(dpid, "")
            LOG.error("switch %s bridge %s: %s", where[0], where[1], e)
            return
        role = {ofp.OFPCR_ROLE_MASTER: "master", ofp.OFPCR_ROLE_SLAVE: "slave",
                ofp.OFPCR_ROLE_EQUAL: "equal"}.get(reply.role, "")
        self.ctl.set_role(dpid, role)
        if role != was:
            # another master may have changed the bridge meanwhile: the next sync reads it again
            self.installed.pop(dpid, None)
            LOG.info("switch %s bridge %s: %s (membership generation %d)", where[0], where[1], role, view.generation)
        if role == "master" and was != "master":
            self.sync(dpid)

    def role_request(self, dp, role, generation):
        """OFPRoleRequest; the switch's reply (RoleRefused if it answers with an error)."""
        p = self._ask(dp, parser.OFPRoleRequest(dp, role, generation), ends_on_error=True)
        if p.errors:
            raise RoleRefused(p.errors[0])
        return p.replies[0]

    def count_flows(self, cookie: int, mask: int, table: str = None, **match) -> int:
        """Flows with this cookie (under mask) on every connected integration bridge, in one
        table and at least as specific as match if given. Aggregate stats: the switch counts
        them, the controller parses no flow (a drain's records are thousands, and parsing them
        held up the syncs of a remap)."""
        total = 0
        table_id = ofp.OFPTT_ALL if table is None else pipeline.table_id(table)
        for dpid, dp in list(self.datapaths.items()):
            if self.ctl.locate(dpid)[1] != pipeline.INTEGRATION:
                continue
            req = parser.OFPAggregateStatsRequest(dp, 0, table_id, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask,
                                                  parser.OFPMatch(**match))
            total += sum(reply.body.flow_count for reply in self.request(dp, req))
        return total

    def watch_remaps(self):
        """A draining remap is complete when its old binding has no recorded connection left
        anywhere (learned flows idle out, or go one second after FIN). Polled, so that a restarted
        controller picks up where it was: the records stay in the switches."""
        while True:
            hub.sleep(REMAP_POLL)
            try:
                self._count_drains()
            except Exception:  # a bug here must not end every drain's counting for good
                LOG.exception("counting the draining remaps' connections failed; trying again")

    def _count_drains(self):
        """One round of watch_remaps: count each draining remap's recorded connections."""
        firsts = chain_firsts(self.ctl.follows())
        for (network, ip), f in firsts.items():
            if f.kind != "cut":
                continue
            # (counted on the switches in view: a cut that ends early only lets a later followed
            # remap count a stale record, while a drain that ends early cuts what it carries)
            try:
                left = self.quiet_records(network, ip)
            except RequestFailed as e:
                LOG.error("%s: counting the records of the connections cut at %s failed: %s", ip, f.remap_id, e)
                continue
            if self.ctl.cut_progress(network, ip, left):
                LOG.info("%s: the connections cut at %s have no record left", ip, f.remap_id)
                self.sync_all(phased=True)
        if not self.ctl.all_integration_connected():
            return  # the records live in the switches: count only with all of them in view
        first_ids = {key: f.remap_id for key, f in firsts.items()}
        for r in self.ctl.draining():
            try:
                left = sum(self.followed_connections(r, ip, first_ids.get((r.network, ip)) == r.id) for ip in r.ips)
            except RequestFailed as e:
                LOG.error("remap %s: counting followed connections failed: %s", r.id, e)
                continue
            if self.ctl.remap_progress(r.id, left, complete=self.designated()):
                LOG.info("remap %s complete: %s's last followed connection is gone", r.id, r.holder)
                self.sync_all(phased=True)

    def followed_connections(self, r, ip: str, first: bool) -> int:
        """The connections to ip recorded under the remap's old holder; for the first draining
        remap of a moved interface's address, also those recorded while the address was quiet
        (the network's quiet records, by their match: table followed, network and address; a
        record matches reg0's low 24 bits, and a filter may not be more specific than what it
        counts)."""
        count = self.count_flows(cookies.make("learned_follow", record_name(ip, r.holder)), NAME_MASK)
        if first:  # (never an elastic IP's remap: chain_firsts knows interface remaps and cuts)
            count += self.quiet_records(r.network, ip)
        return count

    def quiet_records(self, network: str, ip: str) -> int:
        """The records to ip among its network's quiet ones, on every switch."""
        net = self.ctl.deployment.networks.get(network)
        if net is None:
            return 0
        return self.count_flows(cookies.make("learned_follow", quiet_name(network)), NAME_MASK, "followed",
                                eth_type=ETH_IPV4, reg0=(net.id, NETWORK_MASK), ipv4_dst=ip)

    def drop_counters(self):
        """{switch: {reason: packets}} from the counted drop flows of every connected switch."""
        out = {}
        for dpid, dp in list(self.datapaths.items()):
            name, bridge = self.ctl.locate(dpid)
            if bridge != pipeline.INTEGRATION:
                continue
            req = parser.OFPFlowStatsRequest(dp, table_id=ofp.OFPTT_ALL, cookie=cookies.make("drop", ""),
                                             cookie_mask=cookies.FEATURE_MASK)
            counts = out.setdefault(name, {})
            try:
                for reply in self.request(dp, req):
                    for st in reply.body:
                        obj = self.ctl.name_of(st.cookie)[1] or "unknown"
                        reason = obj.split(":", 1)[-1]
                        counts[reason] = counts.get(reason, 0) + st.packet_count
            except RequestFailed as e:
                LOG.error("switch %s: reading drop counters failed: %s", name, e)
        return out

    def send_packet(self, dpid, port_name, data):
        """Packet-out of raw bytes on a named port (used by the edge's ARP probe)."""
        dp = self.datapaths.get(dpid)
        port = self.ctl.port_number(dpid, port_name)
        if dp is None or port is None or not self.programs(dpid):
            return False
        dp.send_msg(parser.OFPPacketOut(dp, ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER,
                                        [parser.OFPActionOutput(port)], data))
        return True


class InstalledCache:
    """The flows a complete sync left on a bridge (sync.Held), with the port numbers they were
    encoded with."""

    def __init__(self, generation, version, ports, held):
        self.generation, self.version, self.ports, self.held = generation, version, dict(ports), held


def _bundle_ctrl(dp, bundle_id: int, kind: int):
    return parser.ONFBundleCtrlMsg(dp, bundle_id, kind, BUNDLE_FLAGS, [])


def _switch_match(match, ports):
    """An installed flow's match for a strict delete: the switch's own, or a cached flow's, encoded."""
    return render._match(match, ports) if isinstance(match, Flow) else match


def describe_packet(data) -> str:
    """A short, safe description of raw packet bytes: it must not fail on any input."""
    try:
        pkt = packet.Packet(bytes(data or b""))
        return "/".join(getattr(p, "protocol_name", type(p).__name__) for p in pkt.protocols or ())[:200]
    except Exception as e:  # os-ken's parsers raise many kinds on garbage: none may stop the app
        return f"unparsable ({type(e).__name__})"


def _describe(err) -> str:
    """An OpenFlow error as its type and code names, e.g. OFPET_BAD_ACTION/OFPBAC_BAD_SET_LEN."""
    types = {v: k for k, v in vars(ofp).items() if k.startswith("OFPET_")}
    tname = types.get(err.type, str(err.type))
    prefix = {"OFPET_BAD_ACTION": "OFPBAC_", "OFPET_BAD_MATCH": "OFPBMC_", "OFPET_FLOW_MOD_FAILED": "OFPFMFC_",
              "OFPET_BAD_INSTRUCTION": "OFPBIC_", "OFPET_BAD_REQUEST": "OFPBRC_"}.get(tname)
    codes = {v: k for k, v in vars(ofp).items() if prefix and k.startswith(prefix)}
    return f"{tname}/{codes.get(err.code, err.code)}"


def _sw_version(desc) -> str:
    sw = desc.sw_desc
    return sw.decode() if isinstance(sw, bytes) else sw
