"""Authorization (seed 004, security groups of seed 002): its tables, egress_acl and ingress_acl.

Until the rules land (issue 4) both tables let everything through.
"""
from __future__ import annotations

from vpcflow.flows.core import Goto, flow
from vpcflow.flows.index import Index
from vpcflow.topology.model import Switch


def integration_flows(ix: Index, sw: Switch):
    yield flow("egress_acl", 1, {}, (Goto("route"),), feature="authz", obj="allow-all")
    yield flow("ingress_acl", 1, {}, (Goto("deliver"),), feature="authz", obj="allow-all")
