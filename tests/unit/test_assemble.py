"""Putting a switch's flows together from its own flows and shared runs."""
import pytest

from vpcflow.flows.assemble import Distinct, Overlaps, Shared, finish, in_order
from vpcflow.flows.core import Conjunction, Goto, flow
from vpcflow.flows.pipeline import PipelineError

pytestmark = pytest.mark.foundation


def route(ip: str, to: str = "dest_lookup", priority: int = 100):
    return flow("route", priority, {"reg0": 1, "eth_type": 0x0800, "ipv4_dst": ip}, (Goto(to),),
                feature="overlay", obj=ip)


def test_runs_are_added_as_they_are_after_the_own_flows():
    run = Shared([route("10.0.0.1"), route("10.0.0.2")])
    flows = finish([route("10.0.0.3"), run])
    assert flows == (route("10.0.0.3"),) + run.flows
    assert all(a is b for a, b in zip(flows[1:], run.flows))  # the run's own objects, not copies


def test_a_run_asked_for_twice_is_added_once():
    run = Shared([route("10.0.0.1")])
    assert finish([run, run]) == run.flows


def test_an_identical_flow_in_two_runs_is_kept_once():
    a, b = Shared([route("10.0.0.1"), route("10.0.0.2")]), Shared([route("10.0.0.2"), route("10.0.0.3")])
    flows = finish([a, b])
    assert sorted(f.obj for f in flows) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_two_different_flows_with_one_match_in_two_runs_are_a_conflict():
    a = Shared([route("10.0.0.1")])
    b = Shared([route("10.0.0.1", to="nat_out")])
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([a, b])
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([route("10.0.0.1", to="nat_out"), a])


def test_counted_runs_find_an_overlap_that_a_change_brings():
    """An edge's runs are counted once, then by the runs a compile replaced (Overlaps): a run
    that comes, overlapping a kept one or an own flow, is still found, and one that goes no
    longer counts."""
    kept, going = Shared([route("10.0.0.1")]), Shared([route("10.0.0.2")])
    counted = Overlaps()
    assert finish([kept, going], counted) == kept.flows + going.flows
    clashing = Shared([route("10.0.0.1", to="nat_out")])
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([kept, clashing], counted)
    same = Shared([route("10.0.0.1"), route("10.0.0.3")])
    assert sorted(f.obj for f in finish([kept, same], counted)) == ["10.0.0.1", "10.0.0.3"]
    assert finish([Shared([route("10.0.0.2")]), same], counted) == finish([Shared([route("10.0.0.2")]), same])
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([route("10.0.0.1", to="nat_out"), kept], counted)  # an own flow against the runs
    assert finish([route("10.0.0.4"), kept], counted) == (route("10.0.0.4"),) + kept.flows


def test_hosts_compiled_one_after_another_are_checked_by_the_runs_that_differ():
    """The hosts of a full compile share one Distinct: a host's runs are checked by those that
    came since the host before (and its own flows), against the ones kept. A clash is found in
    any of them; the runs that went no longer count; after a clash it starts anew."""
    shared, own1 = Shared([route("10.0.0.1"), route("10.0.0.2")]), Shared([route("10.0.0.3")])
    distinct = Distinct()
    flows = finish([route("10.0.0.9"), shared, own1], distinct=distinct)
    assert flows.parts == ((route("10.0.0.9"),), shared, own1)
    # the next host: own1 went (its match is free), another own run came
    own2 = Shared([route("10.0.0.3", to="nat_out")])
    flows = finish([route("10.0.0.9"), shared, own2], distinct=distinct)
    assert flows.parts == ((route("10.0.0.9"),), shared, own2)  # found clear, not finished again
    with pytest.raises(PipelineError, match="two different flows with one match"):  # a run that came
        finish([shared, Shared([route("10.0.0.2", to="nat_out")])], distinct=distinct)
    # (after the clash: anew) an own flow against the kept runs, then a clash among the runs that came
    assert finish([shared, own1], distinct=distinct).parts == ((), shared, own1)
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([route("10.0.0.1", to="nat_out"), shared, own1], distinct=distinct)
    assert finish([shared, own1], distinct=distinct).parts is not None
    with pytest.raises(PipelineError, match="two different flows with one match"):  # an own flow, a run that came
        finish([route("10.0.0.7", to="nat_out"), shared, own1, Shared([route("10.0.0.7")])], distinct=distinct)
    assert finish([shared, own1], distinct=distinct).parts is not None
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([shared, Shared([route("10.0.0.5")]), Shared([route("10.0.0.5", to="nat_out")])], distinct=distinct)
    # an identical flow in a run that came and a kept one: kept once (not a clash)
    again = Shared([route("10.0.0.2"), route("10.0.0.6")])
    assert sorted(f.obj for f in finish([shared, own1], distinct=distinct)) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert sorted(f.obj for f in finish([shared, again], distinct=distinct)) == ["10.0.0.1", "10.0.0.2", "10.0.0.6"]


def test_a_hosts_own_runs_are_checked_with_its_own_flows_and_not_kept():
    """Own runs (compiler._own: one host's) are checked against the kept runs, the other own
    runs and the own flows, and are not kept: the next host's own run may take their matches."""
    shared = Shared([route("10.0.0.1"), route("10.0.0.2")])
    distinct = Distinct()
    mine = Shared([route("10.0.0.3")], own=True)
    assert finish([route("10.0.0.9"), shared, mine], distinct=distinct).parts == ((route("10.0.0.9"),), shared, mine)
    theirs = Shared([route("10.0.0.3", to="nat_out")], own=True)  # the next host's: 10.0.0.3 is free
    assert finish([shared, theirs], distinct=distinct).parts == ((), shared, theirs)
    for clash in ([shared, Shared([route("10.0.0.2", to="nat_out")], own=True)],  # against a kept run
                  [shared, mine, Shared([route("10.0.0.3", to="nat_out")], own=True)],  # two own runs
                  [route("10.0.0.3", to="nat_out"), shared, mine]):  # an own run and an own flow
        with pytest.raises(PipelineError, match="two different flows with one match"):
            finish(clash, distinct=distinct)
        assert finish([shared, mine], distinct=distinct).parts is not None  # (anew after a clash)
    # an own run and a run that came (the rack's next network): found in either order
    came = Shared([route("10.0.0.3", to="nat_out"), route("10.0.0.8")])
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([shared, came, mine], distinct=distinct)


def test_runs_taken_as_one_are_added_and_counted_by_their_runs():
    """Runs (a few thousand of an edge's, as a few hundred items) are added as their runs. Counted
    (Overlaps), a Runs that comes in place of one that goes is counted by the runs that differ:
    a clashing run in it is found; the runs of a Runs that went no longer count, also where a
    new Runs holds them with others."""
    from vpcflow.flows.assemble import Runs

    a, b, c = (Shared([route(f"10.0.0.{i}")]) for i in (1, 2, 3))
    first = Runs([a, b])
    counted = Overlaps()
    flows = finish([route("10.0.0.9"), first, c], counted)
    assert list(flows) == [route("10.0.0.9")] + [f for r in (a, b, c) for f in r.flows] and len(flows) == 4
    assert flows.parts[1:] == (a, b, c)  # (in the order they came)
    with pytest.raises(PipelineError, match="two different flows with one match"):  # against a kept run
        finish([Runs([a, b, Shared([route("10.0.0.3", to="nat_out")])]), c], counted)
    with pytest.raises(PipelineError, match="two different flows with one match"):  # within the new Runs
        finish([Runs([a, b, Shared([route("10.0.0.1", to="nat_out")])]), c], counted)
    # b went, with its Runs; a new Runs holds a again: b's match is free (found clear, not by
    # finishing every flow again: parts), a's is still taken
    again = Runs([a, Shared([route("10.0.0.2", to="nat_out")])])
    flows = finish([again, c], counted)
    assert flows.parts is not None and sorted(f.obj for f in flows) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([Runs([a]), Shared([route("10.0.0.1", to="nat_out")]), c], counted)
    assert len(finish([Runs([a]), Runs([b]), c], counted)) == 3


def test_a_recompile_checks_the_runs_it_did_not_have_against_those_it_had():
    """A host recompiled after a change checks only its new runs and own flows against the runs
    its last compile had (those are known not to overlap): a new run that overlaps a kept one, or
    another new one, or an own flow, is still found."""
    kept, going = Shared([route("10.0.0.1"), route("10.0.0.5")]), Shared([route("10.0.0.2")])
    before = finish([kept, going])
    assert before.parts is not None  # (what a recompile reads)
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([kept, Shared([route("10.0.0.5", to="nat_out")])], previous=before)
    new_a, new_b = Shared([route("10.0.0.3")]), Shared([route("10.0.0.3", to="nat_out")])
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([kept, new_a, new_b], previous=before)
    with pytest.raises(PipelineError, match="two different flows with one match"):
        finish([route("10.0.0.1", to="nat_out"), kept], previous=before)
    same = Shared([route("10.0.0.1"), route("10.0.0.4")])  # an identical flow: kept once
    assert sorted(f.obj for f in finish([kept, same], previous=before)) == ["10.0.0.1", "10.0.0.4", "10.0.0.5"]
    clear = finish([kept, new_a], previous=before)
    assert clear.parts is not None and list(clear) == list(kept.flows + new_a.flows)


def test_a_recompile_checks_only_the_keys_a_remade_run_did_not_have():
    """A run remade after a change (Shared.reuse) is checked by the keys the run it replaces did
    not have, against everything else and against that one's: a new key that clashes with a kept
    run, with another remade run's old flows, or with an own flow is still found; a remade run
    whose keys stay is clear."""
    def remade(previous, flows):
        run = Shared(flows)
        run.reuse(previous)
        return run

    kept, a, b = Shared([route("10.0.0.1")]), Shared([route("10.0.0.2")]), Shared([route("10.0.0.3")])
    before = finish([route("10.0.0.9"), kept, a, b])
    assert before.parts is not None
    moved = remade(a, [route("10.0.0.2", to="nat_out"), route("10.0.0.4")])  # an action changed, one key new
    assert moved.remade[3] == (hash(route("10.0.0.4").key),)
    clear = finish([route("10.0.0.9"), kept, moved, b], previous=before)
    assert clear.parts is not None and sorted(f.obj for f in clear) == ["10.0.0.1", "10.0.0.2", "10.0.0.3",
                                                                         "10.0.0.4", "10.0.0.9"]
    with pytest.raises(PipelineError, match="two different flows with one match"):  # a kept run's
        finish([kept, remade(a, [route("10.0.0.2"), route("10.0.0.1", to="nat_out")]), b], previous=before)
    with pytest.raises(PipelineError, match="two different flows with one match"):  # another remade one's old
        finish([kept, remade(a, [route("10.0.0.2"), route("10.0.0.3", to="nat_out")]),
                remade(b, [route("10.0.0.3"), route("10.0.0.5")])], previous=before)
    with pytest.raises(PipelineError, match="two different flows with one match"):  # a new own flow's
        finish([route("10.0.0.2", to="nat_out"), kept, remade(a, [route("10.0.0.2")]), b], previous=before)
    with pytest.raises(PipelineError, match="two different flows with one match"):  # the run it replaces, kept too
        finish([kept, a, remade(a, [route("10.0.0.2", to="nat_out")]), b], previous=before)
    with pytest.raises(PipelineError, match="two different flows with one match"):  # an old own flow's
        finish([route("10.0.0.9"), kept, remade(a, [route("10.0.0.2"), route("10.0.0.9", to="nat_out")]), b],
               previous=before)


def test_a_run_made_like_another_has_the_keys_a_fresh_one_has():
    """A run made again from most of the flow objects of the run it replaces takes their key
    hashes from it (Shared like=): the same as hashing them anew, also where the run it
    replaces dropped a flow made twice; reuse() then keeps those objects and names the new."""
    a, b, c, d = (route(f"10.0.0.{i}") for i in (1, 2, 3, 4))
    before = Shared([a, b, route("10.0.0.2"), c])  # (b's equal made twice: one flow)
    flows = [route("10.0.0.5"), c, a, d]
    remade = Shared(flows, like=before)
    assert list(remade.keys) == list(Shared(flows).keys)
    remade.reuse(before)
    assert remade.flows[1] is c and remade.flows[2] is a
    assert set(remade.remade[1]) == {route("10.0.0.5"), d} and remade.remade[2] == (b,)


def test_a_few_hashes_are_found_among_arrays_only_where_they_are_items():
    import array

    from vpcflow.flows.assemble import _any_among

    items = array.array("q", [0x1122334455667788, -5, 7])
    assert _any_among([-5], [array.array("q"), items])
    assert not _any_among([8], [items])
    # the bytes of a hash that straddle two items are not one of them
    straddling = array.array("q")
    straddling.frombytes(items.tobytes()[4:12])
    assert not _any_among([straddling[0]], [items])
    assert _any_among([straddling[0]], [items, straddling])
    many = list(range(100, 140))  # (many: by a set)
    assert not _any_among(many, [items]) and _any_among(many + [7], [items])


def test_one_match_in_several_conjunctions_is_one_flow_with_all_of_them():
    def clause(conj_id):
        return flow("ingress_rules", 90, {"reg2": 7, "eth_type": 0x0800, "ipv4_src": "10.0.0.1"},
                    (Conjunction(conj_id, 2, 2),), feature="authz", obj="r")
    (merged,) = finish([clause(5), clause(3)])
    assert merged.actions == (Conjunction(3, 2, 2), Conjunction(5, 2, 2))
    (in_a_run,) = Shared([clause(5), clause(3)]).flows  # so in a run too
    assert in_a_run.actions == (Conjunction(3, 2, 2), Conjunction(5, 2, 2))


def test_a_run_keeps_a_flow_made_twice_once_and_refuses_a_conflict():
    run = Shared([route("10.0.0.1"), route("10.0.0.2"), route("10.0.0.1")])
    assert [f.obj for f in run.flows] == ["10.0.0.1", "10.0.0.2"] and len(run.keys) == 2
    with pytest.raises(PipelineError, match="two different flows with one match"):
        Shared([route("10.0.0.1"), route("10.0.0.1", to="nat_out")])


def test_a_run_is_checked_against_the_pipeline_when_made():
    with pytest.raises(PipelineError):
        Shared([flow("route", 100, {"arp_tpa": "10.0.0.1"}, (Goto("dest_lookup"),), feature="overlay", obj="x")])


def test_in_order_sorts_by_table_then_priority():
    low, high = route("10.0.0.1", priority=100), route("10.0.0.2", priority=105)
    first = flow("classify", 100, {"in_port": "web1"}, (Goto("port_security"),), feature="pipeline", obj="p")
    assert in_order([low, high, first]) == (first, high, low)
