#!/usr/bin/env python3
"""Bring a deployment file up by hand and get a shell-like prompt to look around.

    sudo .venv/bin/python mininet/vpcflow_lab.py etc/topology.yaml

Each switch of the file becomes a namespace with its own Open vSwitch; each instance a Mininet
host. Type a command to run it in a node (`web1 ping -c1 10.0.0.12`, `host1 ip -6 route`), or
`flows host1` for its flows; an empty line or EOF tears everything down.
"""
import sys

from vpcflow.harness.lab import Lab


def main(path: str) -> int:
    with Lab(path, tag="vman") as lab:
        nodes = {**lab.instances, **{n: h.node for n, h in lab.switches.items()},
                 **{f"x{e}": h for e, h in lab.externals.items()}}
        print(f"up: {', '.join(sorted(nodes))}; controller log {lab.ctl.log}")
        for line in sys.stdin:
            words = line.split()
            if not words:
                break
            if words[0] == "flows" and len(words) == 2 and words[1] in lab.switches:
                print("\n".join(lab.switches[words[1]].flows()))
            elif words[0] in nodes:
                print(nodes[words[0]].cmd(" ".join(words[1:])))
            else:
                print(f"unknown node {words[0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "etc/topology.yaml"))
