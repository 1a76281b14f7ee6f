"""Interface-record changes, checked before they reach the model (issue 6)."""
import pytest

from tests.conftest import data_file
from vpcflow.controller import records
from vpcflow.topology.loader import load_file

pytestmark = pytest.mark.follow


def move(dep, instance, follow=True, draining=()):
    return records.attach(dep, "eni-web2", {"instance": instance, "requester": "acme", "follow_connections": follow},
                          "r1", draining)


def test_a_followed_move_makes_a_draining_remap_of_the_old_binding():
    dep = load_file(data_file("two-hosts.yaml"))
    new, remap = move(dep, "spare1")
    assert new.interfaces["eni-web2"].attach_to == "spare1" and dep.interfaces["eni-web2"].attach_to == "web2"
    assert (remap.old_instance, remap.old_switch, remap.new_instance, remap.state) == ("web2", "host2", "spare1", "draining")


def test_a_move_onto_a_switch_where_an_old_binding_still_drains_is_refused():
    dep = load_file(data_file("two-hosts.yaml"))
    moved, remap = move(dep, "spare1")
    # back to host2 while web2 (host2) still drains: two holders of 10.0.0.12 on one switch
    with pytest.raises(records.RecordError) as e:
        move(moved, "red2", draining=[remap])
    assert e.value.status == 409 and "still drains" in e.value.message


def test_without_following_the_remap_is_complete_at_once():
    dep = load_file(data_file("two-hosts.yaml"))
    _, remap = move(dep, "spare1", follow=False)
    assert remap.state == "complete"
