"""An ovs-vswitchd's control socket asked directly (unixctl: JSON-RPC over a unix socket), as
`ovs-appctl -t PATH` does, without a process to start: for a question on the path of a remap,
where milliseconds count. The path is the operator's (`[vpcflow] appctl_targets`)."""
from __future__ import annotations

import json

import eventlet
from eventlet.green import socket


class UnixctlError(OSError):
    pass


def call(path: str, method: str, *params: str, timeout: float = 2.0):
    """The command's result; UnixctlError if the switch cannot be asked or answers an error."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with eventlet.Timeout(timeout, UnixctlError(f"{path}: no answer to {method} within {timeout}s")):
            s.connect(path)
            s.sendall(json.dumps({"method": method, "params": list(params), "id": 0}).encode())
            reply = _read_reply(s)
    except OSError as e:
        raise e if isinstance(e, UnixctlError) else UnixctlError(f"{path}: {e}") from None
    finally:
        s.close()
    if reply.get("error") is not None:
        raise UnixctlError(f"{path}: {method}: {reply['error']}")
    return reply.get("result")


def _read_reply(s) -> dict:
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise UnixctlError("closed before its answer")
        buf += chunk
        try:
            return json.loads(buf)
        except ValueError:
            continue  # not all of it yet
