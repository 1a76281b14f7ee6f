"""The edge's wait for its revalidators before a remap moves traffic (app.revalidated)."""
import json
import os
import socket
import tempfile
import threading
import types

import pytest

pytestmark = pytest.mark.foundation


def fake_vswitchd(path, calls):
    """A control socket that answers every request and notes its method, in order."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                request = json.loads(conn.recv(65536))
                calls.append(request["method"])
                conn.sendall(json.dumps({"result": "", "error": None, "id": request["id"]}).encode())

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_the_edge_waits_for_a_revalidation_round_that_began_after_the_commit():
    """A round in progress when the new matches were committed ends the first wait without
    having looked at the flows it went through before: a second wait ends with a round that
    began after the commit."""
    from vpcflow.controller.app import VpcflowApp
    from vpcflow.flows import pipeline

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ovs-vswitchd.ctl")
        calls = []
        srv = fake_vswitchd(path, calls)
        try:
            app = types.SimpleNamespace(appctl_targets={"edge1": path},
                                        ctl=types.SimpleNamespace(locate=lambda dpid: ("edge1", pipeline.INTEGRATION)))
            VpcflowApp.revalidated(app, 0xE1)
            assert calls == ["revalidator/wait", "revalidator/wait"]
            app.ctl.locate = lambda dpid: ("edge1", pipeline.UNDERLAY)  # the underlay bridge: not waited for
            VpcflowApp.revalidated(app, 0xE1)
            assert len(calls) == 2
        finally:
            srv.close()
