"""Membership judged on this instance's own clock, against a fake store writer: a peer whose beat
stands still for DEAD_AFTER is removed; time during which this instance's own beats fail does not
count against anyone; a member whose row is gone holds nothing and joins again."""
from types import SimpleNamespace

import pytest

from vpcflow.controller import membership
from vpcflow.controller.membership import DEAD_AFTER, Membership, View
from vpcflow.store import StoreConflict, StoreError

pytestmark = pytest.mark.scaleout


class FakeWriter:
    def __init__(self):
        self.members = {}  # name -> beat
        self.generation = 1
        self.membership = 0
        self.down = False
        self.removed = []
        self.idl = SimpleNamespace(run=lambda: None, tables={})
        self._refresh()

    def _refresh(self):
        self.idl.tables = {
            "Controller_Instance": SimpleNamespace(rows={i: SimpleNamespace(name=n, beat=b)
                                                         for i, (n, b) in enumerate(sorted(self.members.items()))}),
            "Store": SimpleNamespace(rows={0: SimpleNamespace(generation=self.generation,
                                                              membership=[self.membership])})}

    def _change_membership(self):
        self.generation += 1
        self.membership = self.generation
        self._refresh()
        return self.generation

    def join(self, name, api=""):
        if self.down:
            raise StoreError("down")
        self.members[name] = 0
        return self._change_membership()

    def beat(self, name, beat, timeout=None):
        if self.down:
            raise StoreError("down")
        if name not in self.members:
            raise StoreConflict("gone")
        self.members[name] = beat
        self._refresh()

    def remove_member(self, name, beat, timeout=None):
        if self.down:
            raise StoreError("down")
        if self.members.get(name) != beat:
            raise StoreConflict("beat again")
        del self.members[name]
        self.removed.append(name)
        return self._change_membership()


@pytest.fixture
def world(monkeypatch):
    clock = [100.0]
    writer = FakeWriter()
    monkeypatch.setattr(membership, "StoreWriter", lambda *a, **k: writer)
    views = []
    m = Membership("unix:/nowhere", "b", on_view=views.append, clock=lambda: clock[0])
    return SimpleNamespace(clock=clock, writer=writer, m=m, views=views)


def advance(world, seconds, step=0.1):
    end = world.clock[0] + seconds
    while world.clock[0] < end - 1e-9:
        world.clock[0] += step
        try:
            world.m.tick()
        except StoreError:
            world.m.ok_since = None  # as run() does


def test_a_silent_peer_is_removed_after_dead_after_and_the_view_moves_on(world):
    world.writer.members["a"] = 7
    world.m.join()
    assert world.m.view == View("b", ("a", "b"), world.writer.membership)
    first = world.m.view.generation
    advance(world, DEAD_AFTER - 0.2)
    assert world.writer.removed == []
    advance(world, 0.5)
    assert world.writer.removed == ["a"]
    assert world.m.view.members == ("b",) and world.m.view.generation > first
    assert world.m.view.designated and world.m.view.assign(["host1", "host2"]) == {"host1": "b", "host2": "b"}


def test_a_peer_that_beats_stays(world):
    world.writer.members["a"] = 0
    world.m.join()
    for _ in range(20):
        world.writer.members["a"] += 1
        world.writer._refresh()
        advance(world, 0.4)
    assert world.writer.removed == [] and world.m.view.members == ("a", "b")


def test_time_without_the_store_does_not_count_against_peers(world):
    world.writer.members["a"] = 0
    world.m.join()
    world.writer.down = True
    advance(world, 5 * DEAD_AFTER)  # nobody's beats got through: nobody is judged
    world.writer.down = False
    advance(world, DEAD_AFTER - 0.3)
    assert world.writer.removed == []  # every member gets DEAD_AFTER to beat again
    advance(world, 0.8)
    assert world.writer.removed == ["a"]  # a did not


def test_a_member_whose_row_is_gone_holds_nothing_and_joins_again(world):
    world.m.join()
    before = world.m.view.generation
    del world.writer.members["b"]  # removed by a peer that judged it dead
    world.writer._change_membership()
    advance(world, 0.6)
    assert "b" not in world.views[-2].members  # stepped down first
    assert world.m.view.members == ("b",) and world.m.view.generation > before + 1
