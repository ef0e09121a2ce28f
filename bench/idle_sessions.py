#!/usr/bin/env python3
"""Open N SMTP sessions to HOST:PORT, each reads the greeting, sends EHLO, reads the reply, and
then idles (with --mid-data BYTES: also MAIL, RCPT, DATA and that many bytes of message body,
without the final dot, so each session holds a message part-way through DATA). Prints "ready N"
once all are established, then holds them until stdin is closed
(or --hold seconds pass). Connections are spread over several loopback source addresses
(127.0.0.1 .. 127.0.0.K) so a per-client-address cap does not refuse them.

usage: idle_sessions.py HOST PORT N [--per-source 100] [--hold SECONDS] [--mid-data BYTES]
"""

import argparse
import selectors
import socket
import sys
import time


def read_reply(sock: socket.socket, buf: bytearray) -> bytes:
    """Read one complete (possibly multi-line) SMTP reply."""
    while True:
        while b"\r\n" in buf:
            line, _, rest = bytes(buf).partition(b"\r\n")
            buf[:] = rest
            if len(line) < 4 or line[3:4] == b" ":
                return line
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--per-source", type=int, default=100)
    ap.add_argument("--hold", type=float, default=0.0)
    ap.add_argument("--mid-data", type=int, default=0)
    a = ap.parse_args()

    socks = []
    t0 = time.monotonic()
    for i in range(a.n):
        src = f"127.0.0.{1 + i // a.per_source}"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.settimeout(30)
        s.connect((a.host, a.port))
        buf = bytearray()
        greet = read_reply(s, buf)
        if not greet.startswith(b"220"):
            print(f"session {i}: greeting {greet!r}", file=sys.stderr)
            return 1
        s.sendall(b"EHLO idle-%d.bench.test\r\n" % i)
        ehlo = read_reply(s, buf)
        if not ehlo.startswith(b"250"):
            print(f"session {i}: EHLO reply {ehlo!r}", file=sys.stderr)
            return 1
        if a.mid_data > 0:
            for cmd, want in ((b"MAIL FROM:<app@example.com>", b"250"),
                              (b"RCPT TO:<x@dest.test>", b"250"), (b"DATA", b"354")):
                s.sendall(cmd + b"\r\n")
                r = read_reply(s, buf)
                if not r.startswith(want):
                    print(f"session {i}: {cmd!r} -> {r!r}", file=sys.stderr)
                    return 1
            line = b"From: app@example.com\r\nTo: x@dest.test\r\nSubject: mid-data\r\n\r\n"
            body = line + b"x" * 76 + b"\r\n"
            body = (body * (a.mid_data // len(body) + 1))[: a.mid_data]
            s.sendall(body)
        socks.append(s)
    print(f"ready {len(socks)} {time.monotonic() - t0:.2f}s", flush=True)

    # Hold: wait for stdin EOF (or the hold time); any server-side close is an error.
    sel = selectors.DefaultSelector()
    try:  # stdin may be /dev/null, which epoll refuses; then only --hold ends the wait
        sel.register(sys.stdin, selectors.EVENT_READ)
    except (PermissionError, ValueError, OSError):
        pass
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + a.hold if a.hold > 0 else None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        events = sel.select(timeout)
        if not events:
            break
        for key, _ in events:
            if key.fileobj is sys.stdin:
                if not sys.stdin.readline():
                    return 0
            else:
                data = key.fileobj.recv(4096)
                print(f"server spoke to an idle session: {data!r}", file=sys.stderr)
                return 1
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
