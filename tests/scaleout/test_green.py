"""StoreReader inside the controller's world: os-ken's hub threads. os-ken 4.2 runs native threads
unless OSKEN_HUB_TYPE=eventlet, where everything is green and monkey-patched. Under both, a reader
waiting for changes must let the other threads run, and still see a change."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vpcflow.store import import_deployment

pytestmark = pytest.mark.scaleout

TOPOLOGY = Path(__file__).resolve().parents[2] / "etc" / "topology.yaml"

# Run in its own process: monkey-patching must not leak into the test session.
SCRIPT = r"""
import json, os, sys, time
from os_ken.lib import hub
hub.patch(thread=False)  # as vpcflow-controller does (a no-op for the native hub)
from vpcflow.store import StoreReader, StoreWriter

remote = sys.argv[1]
ticks = [0]
seen = []

def ticker():
    while True:
        ticks[0] += 1
        hub.sleep(0.01)

def follow():
    with StoreReader(remote) as reader:
        for update in reader.updates(idle=0.5):
            seen.append(list(update.moved_interfaces()))

hub.spawn(ticker)
hub.spawn(follow)
deadline = time.monotonic() + 10
while not seen and time.monotonic() < deadline:  # the first read: the whole store
    hub.sleep(0.05)
before = ticks[0]
hub.sleep(1.0)  # the reader blocks waiting for a change all this second
idle_ticks = ticks[0] - before
with StoreWriter(remote) as writer:
    writer.set_attachment("eni-web2", "spare1")
while ["eni-web2"] not in seen and time.monotonic() < deadline:
    hub.sleep(0.05)
print(json.dumps({"idle_ticks": idle_ticks, "seen": seen}), flush=True)
os._exit(0)  # the reader's and the ticker's green threads run forever
"""


@pytest.mark.parametrize("hub_type", ["native", "eventlet"])
def test_a_waiting_reader_lets_other_threads_run(store_server, hub_type):
    import_deployment(store_server.remote, str(TOPOLOGY))
    env = dict(os.environ, OSKEN_HUB_TYPE=hub_type)
    r = subprocess.run([sys.executable, "-c", SCRIPT, store_server.remote], capture_output=True, text=True,
                       timeout=30, cwd=str(TOPOLOGY.parents[1]), env=env)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    # 10 ms ticks for one second: about 100 if the wait yields, about none if it blocks the process.
    assert result["idle_ticks"] >= 50, result
    assert result["seen"][0] == [] and ["eni-web2"] in result["seen"], result
