"""The controller instances sharing the switches, kept in the store (store mode only).

Each instance has a row in the store's Controller_Instance table ({name, beat, api}) and bumps
its beat every BEAT_INTERVAL through a writer of its own (connected to the cluster leader; a
beat bumps no generation, so the intent readers never hear of it). The same writer's IDL
replicates every member's row: a peer whose beat has not changed for DEAD_AFTER seconds of this
instance's own monotonic clock is dead, and this instance removes its row (only if its beat is
still the one judged: a peer that beat meanwhile stays).

Time during which this instance's own beats do not reach the store (no leader, no connection)
does not count against a peer: after an outage every member has DEAD_AFTER to beat again.

A join or a removal bumps the store generation and sets Store.membership to it. The view is the
member rows and that generation: every instance that has read the same store state has the same
view, and its generation (the OpenFlow role generation id) never goes backwards.
A member whose own row is gone (removed while it was too slow to beat) is no member: it holds no
switch until it has joined again, under a newer generation.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
import time
from typing import Callable, Dict, Optional, Tuple

from vpcflow.controller import roles
from vpcflow.store import StoreConflict, StoreError, StoreWriter
from vpcflow.store.schema import MEMBERSHIP_TABLE, META_TABLE

LOG = logging.getLogger("vpcflow.membership")

BEAT_INTERVAL = 0.5
DEAD_AFTER = 1.5
TICK = 0.1
WRITE_TIMEOUT = 2.0  # a beat or removal not committed in this time failed: the store is out of reach


def default_name(ofp_port: int) -> str:
    return f"{socket.gethostname()}:{ofp_port}"


@dataclasses.dataclass(frozen=True)
class View:
    me: str
    members: Tuple[str, ...]  # the names with a row in the store, sorted
    generation: int  # Store.membership: the generation at which the membership last changed

    def assign(self, switches) -> Dict[str, str]:
        return roles.assign(switches, self.members)

    def masters(self, switch: str, switches) -> bool:
        """Whether this instance is the master of `switch` (one of `switches`)."""
        return self.assign(switches).get(switch) == self.me

    @property
    def designated(self) -> bool:
        """The one member that writes what only one should (a drained remap's completion): the
        lowest name."""
        return bool(self.members) and self.members[0] == self.me


class Membership:
    def __init__(self, remote: str, name: str, api: str = "", on_view: Optional[Callable[[View], None]] = None,
                 clock=time.monotonic, sleep=time.sleep):
        self.remote = remote
        self.name = name
        self.api = api
        self.on_view = on_view
        self.clock = clock
        self.sleep = sleep
        self.view: Optional[View] = None
        self.writer: Optional[StoreWriter] = None
        self.beat = 0
        self.last_beat = float("-inf")
        self.ok_since: Optional[float] = None  # our beats reach the store since then (None: they do not)
        self.seen: Dict[str, Tuple[int, float]] = {}  # member -> (beat, when it last changed, our clock)
        self.stopped = False
        self._failing = ""

    # --- life cycle ---------------------------------------------------------------------------
    def join(self):
        """Connect and join (StoreError if the store cannot be reached); publishes the first view."""
        if self.writer is None:
            self.writer = StoreWriter(self.remote, WRITE_TIMEOUT * 5, tables=[MEMBERSHIP_TABLE])
        generation = self.writer.join(self.name, self.api)
        self.beat, self.last_beat, self.ok_since = 0, self.clock(), self.clock()
        LOG.info("instance %s joined the controllers (membership generation %d)", self.name, generation)
        self.writer.idl.run()
        self.publish()

    def run(self):
        """Forever, in a thread of its own: beat, judge the peers, publish view changes."""
        while not self.stopped:
            try:
                self.tick()
                if self._failing:
                    LOG.info("membership: the store answers again")
                    self._failing = ""
            except StoreError as e:
                self.ok_since = None
                if str(e) != self._failing:
                    LOG.warning("membership: %s", e)
                    self._failing = str(e)
            except Exception:  # the beat must outlive anything
                LOG.exception("membership tick failed")
            self.sleep(TICK)

    def stop(self, leave: bool = True):
        self.stopped = True
        if self.writer is not None:
            if leave:
                try:
                    self.writer.leave(self.name, timeout=WRITE_TIMEOUT)
                except StoreError as e:
                    LOG.warning("leaving the controllers: %s", e)
            self.writer.close()
            self.writer = None

    # --- one round ------------------------------------------------------------------------------
    def tick(self):
        if self.writer is None or self.view is None or self.name not in self.view.members:
            if self.view is not None and self.name not in self.view.members:
                LOG.warning("instance %s is no longer a member (judged dead by a peer): joining again", self.name)
            self.join()
        self.writer.idl.run()
        now = self.clock()
        self.observe(now)
        if now - self.last_beat >= BEAT_INTERVAL:
            self.beat += 1
            try:
                self.writer.beat(self.name, self.beat, timeout=WRITE_TIMEOUT)
            except StoreConflict:
                self.writer.idl.run()
                self.publish()  # our row is gone: no member, holds nothing; joins next round
                return
            self.last_beat = now
            if self.ok_since is None:
                self.ok_since = self.clock()
        self.judge(self.clock())
        self.publish()

    def rows(self) -> Dict[str, int]:
        """{member: beat} as this instance's replica has them."""
        return {row.name: row.beat for row in self.writer.idl.tables[MEMBERSHIP_TABLE].rows.values()}

    def observe(self, now: float):
        rows = self.rows()
        for name, beat in rows.items():
            if name not in self.seen or self.seen[name][0] != beat:
                self.seen[name] = (beat, now)
        for name in [n for n in self.seen if n not in rows]:
            del self.seen[name]

    def judge(self, now: float):
        """Remove the peers whose beat stood still for DEAD_AFTER while ours went through."""
        if self.ok_since is None:
            return
        for name, (beat, since) in sorted(self.seen.items()):
            if name == self.name or now - max(since, self.ok_since) <= DEAD_AFTER:
                continue
            try:
                generation = self.writer.remove_member(name, beat, timeout=WRITE_TIMEOUT)
                LOG.warning("instance %s judged dead (beat %d unchanged for %.1fs): removed, membership "
                            "generation %d", name, beat, now - since, generation)
            except StoreConflict:
                LOG.info("instance %s beat again or was removed by another member", name)
            self.writer.idl.run()
            self.seen.pop(name, None)

    def publish(self):
        meta = list(self.writer.idl.tables[META_TABLE].rows.values())
        membership = list(getattr(meta[0], "membership", []) or []) if meta else []
        view = View(self.name, tuple(sorted(self.rows())), membership[0] if membership else 0)
        if view != self.view:
            self.view = view
            LOG.info("controllers: %s (membership generation %d)%s", ", ".join(view.members) or "none",
                     view.generation, "" if self.name in view.members else f"; {self.name} is not one of them")
            if self.on_view is not None:
                self.on_view(view)
