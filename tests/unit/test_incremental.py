"""Incremental compile: switches whose inputs did not change keep their flows, and those flows
are exactly what a full compile of the new model gives."""
import dataclasses

import pytest

from bench import generate
from bench.compile import _with_interface, _with_rule
from vpcflow.flows.compiler import Options, compile_switch
from vpcflow.flows.incremental import Compiled
from vpcflow.flows.index import Index
from vpcflow.topology.loader import parse
from vpcflow.topology.model import PortRange

pytestmark = pytest.mark.foundation


@pytest.fixture(scope="module")
def dep():
    return parse(generate.generate(160, 16, 20, 4))


def _changes(dep):
    spare = sorted(n for n in dep.instances if n.startswith("spare"))[-1]
    moved = generate.iface_name(1)
    web, app, _ = generate.group_names(0)
    return {
        "move": _with_interface(dep, moved, attach_to=spare),
        "detach": _with_interface(dep, moved, attach_to=None),
        "groups": _with_interface(dep, moved, security_groups=(app,)),
        "rule": _with_rule(dep, web, "ingress", 0, ports=PortRange(80, 81)),
        "nothing": dep,
    }


@pytest.mark.parametrize("change", ["move", "detach", "groups", "rule", "nothing"])
def test_kept_switches_equal_a_full_compile(dep, change):
    new_dep = _changes(dep)[change]
    before = Compiled(Index(dep))
    for name in dep.switches:  # the controller has compiled every switch once
        before.switch(name)
        before.switch(name, Options(embed_outer_source=frozenset({name})))
    after, changed = before.update(Index(new_dep))
    assert changed is not None and len(changed) < len(dep.switches)
    if change == "nothing":
        assert not changed
    fresh = Index(new_dep)
    for name in new_dep.switches:
        for options in (Options(), Options(embed_outer_source=frozenset({name}))):
            assert after.switch(name, options) == compile_switch(fresh, name, options), (change, name)
    # and the switches said unchanged are really unchanged
    old = Index(dep)
    for name in set(new_dep.switches) - changed:
        assert compile_switch(old, name) == compile_switch(fresh, name)


def test_a_change_every_switch_reads_recompiles_all(dep):
    new_dep = dataclasses.replace(dep, authorizations=dep.authorizations[1:])
    _, changed = Compiled(Index(dep)).update(Index(new_dep))
    assert changed is None


def test_a_followed_move_recompiles_the_old_binding_switch(dep):
    """A move that follows connections: the new model also has the old binding, draining."""
    from vpcflow.flows.follow import Follow

    moved = generate.iface_name(1)
    iface = dep.interfaces[moved]
    old_instance = dep.instances[iface.attach_to]
    new_dep = _changes(dep)["move"]
    follows = (Follow("r1", iface.network, str(iface.ips[0]), old_instance.name, old_instance.switch,
                      old_instance.port, moved),)
    before = Compiled(Index(dep))
    for name in dep.switches:
        before.switch(name)
    after, changed = before.update(Index(new_dep, follows))
    assert changed is not None and old_instance.switch in changed
    fresh = Index(new_dep, follows)
    for name in new_dep.switches:
        assert after.switch(name) == compile_switch(fresh, name), name
    # and when the remap completes, the old binding goes
    done, changed = after.update(Index(new_dep))
    assert old_instance.switch in changed
    fresh = Index(new_dep)
    for name in new_dep.switches:
        assert done.switch(name) == compile_switch(fresh, name), name
