"""The sync difference: only what differs, only flows that are ours."""
import pytest

from vpcflow.controller.sync import Installed, diff, split_by_resolvable
from vpcflow.flows import cookies
from vpcflow.flows.core import Output, flow

pytestmark = pytest.mark.foundation


def f(port="p1", prio=100, reg=1):
    return flow("deliver", prio, {"reg0": reg}, (Output(port),), feature="overlay", obj="eni")


def installed(fl, cookie=None):
    return Installed(fl.key, fl.cookie if cookie is None else cookie, None)


def test_identical_tables_give_no_difference():
    a, b = f(reg=1), f(reg=2)
    d = diff({a.key: a, b.key: b}, [installed(a), installed(b)])
    assert not d and d.unchanged == 2


def test_missing_flows_are_added_and_changed_ones_replaced():
    a, b = f(reg=1), f(reg=2)
    changed = f(port="p9", reg=2)
    d = diff({a.key: a, changed.key: changed}, [installed(b)])
    assert d.add == [a, changed] and d.delete == []


def test_stale_flows_of_ours_are_deleted_foreign_ones_left_alone():
    a = f(reg=1)
    stale = installed(f(reg=7))
    foreign = Installed(f(reg=8).key, 0x1234, None)  # feature 0: not ours
    learned = Installed(f(reg=9).key, cookies.make("learned_gateway", "x"), None)
    d = diff({a.key: a}, [installed(a), stale, foreign, learned])
    assert d.delete == [stale] and d.add == []


def test_flows_naming_absent_ports_wait():
    a, b = f(port="here"), f(port="absent", reg=2)
    keyed, waiting = split_by_resolvable([a, b], lambda fl: None if fl is b else fl.key)
    assert list(keyed.values()) == [a] and waiting == [b]


def test_same_cookie_but_other_instructions_is_replaced():
    a = f(reg=1)
    tampered = Installed(a.key, a.cookie, None, content=b"other")
    d = diff({a.key: a}, [tampered], content=lambda fl: b"mine")
    assert d.add == [a]
    d = diff({a.key: a}, [Installed(a.key, a.cookie, None, content=b"mine")], content=lambda fl: b"mine")
    assert not d
