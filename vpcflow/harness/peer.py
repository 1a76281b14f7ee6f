"""A traffic peer to run inside a test namespace: `python -m vpcflow.harness.peer ...`.

server: answers every TCP connection or UDP datagram with "<name> <payload>", so the client
        knows who answered; with --log it appends each peer address it saw to a file. A TCP
        connection that opens with the line "stream" gets "<name>" back and then an exact echo.
client: sends a payload, checks the echo byte for byte, prints "ok <name>" or "fail <reason>".
        With --late SECONDS it half-closes after sending (its FIN goes first) and the server answers
        that many seconds after the FIN, then closes: the client's last packets (ACKs of the answer and of
        the server's FIN) come long after its own FIN, as they do for a request-then-shutdown
        client, or one in TIME_WAIT answering a retransmitted FIN.
stream: one long TCP connection that keeps exchanging numbered lines and checks every byte,
        for tests of connections that must survive a change; prints a summary when stopped.
        With --reset-when FILE, once FILE exists it asks the server to reset the connection
        (the line "reset": the server closes it with an RST) and ends quietly: its socket, closed
        by the RST, sends nothing more. --source-port and --abort (stopped, it closes with an
        RST): a client that opens its next connection on the same 5-tuple at once.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import struct
import sys
import time

STREAM_HELLO = b"stream\n"
RESET = b"reset\n"  # in a stream: the server closes the connection with an RST
LATE = b"late "  # "late SECONDS\n" then the payload: answer after SECONDS, once the client's FIN came


def _abort(s):
    """Close with an RST, not a FIN (a zero linger)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def serve(args):
    family = socket.AF_INET
    kind = socket.SOCK_STREAM if args.proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args.bind, args.port))
    if kind == socket.SOCK_STREAM:
        s.listen(64)
    if args.ready:
        open(args.ready, "w").close()
    log = open(args.log, "a", buffering=1) if args.log else None
    conns = []
    streaming = set()
    late = {}  # connection -> [seconds to wait after its FIN, what it sent, when to answer or None]
    while True:
        dues = [due for _, _, due in late.values() if due is not None]
        readable, _, _ = select.select([s] + conns, [], [], max(0.0, min(dues) - time.monotonic()) if dues else None)
        for c, (_, data, due) in list(late.items()):
            if due is not None and due <= time.monotonic():
                del late[c]
                c.sendall(args.name.encode() + b" " + data.partition(b"\n")[2])
                c.close()
        for r in readable:
            if r is s and kind == socket.SOCK_DGRAM:
                data, peer = s.recvfrom(65535)
                if log:
                    log.write(f"{peer[0]}:{peer[1]}\n")
                s.sendto(args.name.encode() + b" " + data, peer)
            elif r is s:
                c, peer = s.accept()
                if log:
                    log.write(f"{peer[0]}:{peer[1]}\n")
                conns.append(c)
            else:
                try:
                    data = r.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    conns.remove(r)
                    streaming.discard(r)
                    if r in late:  # the client's FIN: its answer is due some seconds from now
                        late[r][2] = time.monotonic() + late[r][0]
                    else:
                        r.close()
                    continue
                if r in late or data.startswith(LATE):
                    entry = late.setdefault(r, [float(data[len(LATE):].split(b"\n")[0]), b"", None])
                    entry[1] += data
                    continue
                if r in streaming and data == RESET:
                    conns.remove(r)
                    streaming.discard(r)
                    _abort(r)
                elif r in streaming:
                    r.sendall(data)
                elif data.startswith(STREAM_HELLO):
                    streaming.add(r)
                    r.sendall(args.name.encode() + b"\n" + data[len(STREAM_HELLO):])
                else:
                    r.sendall(args.name.encode() + b" " + data)


def client(args):
    payload = os.urandom(8).hex().encode()
    try:
        if args.proto == "tcp":
            s = socket.create_connection((args.host, args.port), timeout=args.timeout)
            if args.late is not None:
                s.sendall(LATE + f"{args.late}\n".encode() + payload)
                s.shutdown(socket.SHUT_WR)
            else:
                s.sendall(payload)
            data = b""
            while not data.endswith(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(args.timeout)
            for _ in range(args.tries):  # UDP may lose the first datagram to neighbour discovery
                s.sendto(payload, (args.host, args.port))
                try:
                    data, _ = s.recvfrom(65535)
                    break
                except socket.timeout:
                    data = b""
    except OSError as e:
        print(f"fail {type(e).__name__}: {e}")
        return 1
    name, _, echoed = data.partition(b" ")
    if echoed != payload:
        print(f"fail bad echo {data[:60]!r}")
        return 1
    print(f"ok {name.decode()}")
    return 0


def _line(s, buf: bytes, closed: str):
    """(the next line without its newline, what came after it), reading from s as needed."""
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(closed)
        buf += chunk
    line, rest = buf.split(b"\n", 1)
    return line, rest


def stream(args):
    """Exchange numbered lines until SIGTERM (or a reset asked for); then print: server, sent,
    received, whether reset, error."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sent = received = 0
    error = server = ""
    reset = False
    try:
        s = socket.socket()
        if args.source_port:  # (a client that reuses its 5-tuple, as one behind a NAT may)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", args.source_port))
        s.settimeout(args.timeout)
        s.connect((args.host, args.port))
        s.sendall(STREAM_HELLO)
        name, buf = _line(s, b"", "closed by peer before it said its name")
        server = name.decode()
        if args.progress:
            with open(args.progress + ".server", "w") as f:
                f.write(server)
        while not stop:
            if args.reset_when and os.path.exists(args.reset_when):
                s.sendall(RESET)
                try:
                    got = s.recv(100)
                except ConnectionResetError:
                    reset = True
                    break
                raise ValueError(f"answered {got[:20]!r} instead of a reset" if got else "closed without a reset")
            line = f"{sent:08d} {'x' * 56}\n".encode()
            s.sendall(line)
            sent += 1
            got, buf = _line(s, buf, "closed by peer")
            if got + b"\n" != line:
                raise ValueError(f"byte mismatch at line {received}: {got[:20]!r}")
            received += 1
            if args.progress:
                with open(args.progress, "w") as f:
                    f.write(str(received))
            time.sleep(args.interval)
        if args.abort:  # (the 5-tuple is free at once)
            _abort(s)
        else:
            s.close()
    except (OSError, ValueError, ConnectionError) as e:
        error = f"{type(e).__name__}: {e}"
    print(f"server={server} sent={sent} received={received} reset={'yes' if reset else 'no'} error={error}")
    sys.stdout.flush()
    return 0 if not error else 1


def main(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("server")
    sv.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    sv.add_argument("--bind", default="0.0.0.0")
    sv.add_argument("--port", type=int, required=True)
    sv.add_argument("--name", required=True)
    sv.add_argument("--log")
    sv.add_argument("--ready", help="file created once listening")
    cl = sub.add_parser("client")
    cl.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    cl.add_argument("--host", required=True)
    cl.add_argument("--port", type=int, required=True)
    cl.add_argument("--timeout", type=float, default=2.0)
    cl.add_argument("--tries", type=int, default=3)
    cl.add_argument("--late", type=float, help="TCP: half-close, and have the server answer this much later")
    st = sub.add_parser("stream")
    st.add_argument("--host", required=True)
    st.add_argument("--port", type=int, required=True)
    st.add_argument("--timeout", type=float, default=5.0)
    st.add_argument("--interval", type=float, default=0.01)
    st.add_argument("--progress", help="file that holds the count of lines echoed so far")
    st.add_argument("--reset-when", help="once this file exists, have the server reset the connection")
    st.add_argument("--source-port", type=int, help="connect from this port")
    st.add_argument("--abort", action="store_true", help="when stopped, close with an RST rather than a FIN")
    args = p.parse_args(argv)
    return {"server": serve, "client": client, "stream": stream}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
