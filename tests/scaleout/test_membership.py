"""The controllers' membership in a real store: joins and removals move Store.membership (the
role generation id), beats bump nothing and wake no intent reader, a removal judged on a stale
beat is refused, and two instances see the same view."""
from __future__ import annotations

import threading

import pytest

from tests.conftest import data_file
from vpcflow.controller.membership import Membership
from vpcflow.harness.controller import wait_for
from vpcflow.store import StoreConflict, StoreReader, StoreWriter, import_deployment
from vpcflow.store.schema import MEMBERSHIP_TABLE

pytestmark = pytest.mark.scaleout


def test_writes_of_the_membership(store_server):
    import_deployment(store_server.remote, data_file("two-hosts.yaml"))
    with StoreWriter(store_server.remote, tables=[MEMBERSHIP_TABLE]) as w, StoreReader(store_server.remote) as reader:
        reader.read()
        joined = w.join("a", "http://127.0.0.1:1")
        assert w.join("b") > joined
        w.idl.run()
        generation = w.generation()
        reader.wait_for(lambda u: u.generation == generation, 5, "the joins")
        for beat in range(1, 4):
            w.beat("a", beat)
        w.idl.run()
        assert w.generation() == generation  # beats bump nothing...
        assert reader.wait(0.3) is None  # ...and wake no intent reader
        with pytest.raises(StoreConflict):
            w.remove_member("a", 1)  # judged on a beat that is not the last one: a lives
        removed = w.remove_member("a", 3)
        assert removed > generation
        with pytest.raises(StoreConflict):
            w.beat("a", 4)  # a's row is gone: it must join again
        w.idl.run()
        meta = list(w.idl.tables["Store"].rows.values())[0]
        assert list(meta.membership) == [removed]
        assert {r.name for r in w.idl.tables[MEMBERSHIP_TABLE].rows.values()} == {"b"}


def test_two_instances_share_one_view_and_a_silent_one_is_removed(store_server):
    import_deployment(store_server.remote, data_file("two-hosts.yaml"))
    a, b = Membership(store_server.remote, "a"), Membership(store_server.remote, "b")
    threads = []
    try:
        for m in (a, b):
            m.join()
            threads.append(threading.Thread(target=m.run, daemon=True))
            threads[-1].start()
        wait_for(lambda: a.view.members == b.view.members == ("a", "b") and a.view.generation == b.view.generation,
                 5, "the same view")
        assert a.view.generation == b.view.generation and a.view.designated and not b.view.designated
        a.stopped = True  # a stops beating without a word, as a SIGKILL would
        wait_for(lambda: b.view.members == ("b",), 5, "a judged dead")
        assert b.view.generation > a.view.generation and b.view.designated
    finally:
        a.stopped = b.stopped = True
        for t in threads:
            t.join(5)
        for m in (a, b):
            m.stop(leave=False)
