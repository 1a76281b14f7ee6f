"""An ovs-vswitchd's control socket asked directly (unixctl: JSON-RPC over a unix socket), as
`ovs-appctl -t PATH` does, without a process to start: for a question on the path of a remap,
where milliseconds count. The path is the operator's (`[vpcflow] appctl_targets`)."""
from __future__ import annotations

import json
import socket
import time


class UnixctlError(OSError):
    pass


def call(path: str, method: str, *params: str, timeout: float = 2.0):
    """The command's result; UnixctlError if the switch cannot be asked or answers an error."""
    # (a blocking socket: the caller's own thread waits; green where os-ken's hub is eventlet
    # and main() patched the standard library)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        _within(s, deadline)
        s.connect(path)
        _within(s, deadline)
        s.sendall(json.dumps({"method": method, "params": list(params), "id": 0}).encode())
        reply = _read_reply(s, deadline)
    except socket.timeout:
        raise UnixctlError(f"{path}: no answer to {method} within {timeout}s") from None
    except OSError as e:
        raise e if isinstance(e, UnixctlError) else UnixctlError(f"{path}: {e}") from None
    finally:
        s.close()
    if reply.get("error") is not None:
        raise UnixctlError(f"{path}: {method}: {reply['error']}")
    return reply.get("result")


def _within(s, deadline: float):
    """What is left of the call's time, for the socket's next step: the whole call, from connect
    to the answer's last byte, within one timeout."""
    s.settimeout(max(deadline - time.monotonic(), 0.001))


def _read_reply(s, deadline: float) -> dict:
    buf = b""
    while True:
        _within(s, deadline)
        chunk = s.recv(65536)
        if not chunk:
            raise UnixctlError("closed before its answer")
        buf += chunk
        try:
            return json.loads(buf)
        except ValueError:
            continue  # not all of it yet
