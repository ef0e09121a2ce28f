#!/usr/bin/env python3
"""Send mail at a fixed rate over persistent SMTP sessions and report what was achieved.

Message i is due at t0 + i/RATE; a pool of SESSIONS connections (EHLO once, then
MAIL/RCPT/DATA per message, no pipelining) takes due messages in order. Prints one line:
  sent=N elapsed=S achieved=R msg/s late_p99_ms=X accept_p50_ms=Y accept_p99_ms=Z
where "late" is how far behind schedule a message started (the client keeping up) and
"accept" is the time from the start of MAIL FROM to the 250 after the final dot.

usage: paced_source.py HOST PORT --rate 500 --seconds 20 [--sessions 16] [--size 2048]
"""

import argparse
import asyncio
import sys
import time


async def reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if len(line) < 4 or line[3:4] != b"-":
            return line


async def expect(reader, code: bytes, what: str):
    r = await reply(reader)
    if not r.startswith(code):
        raise RuntimeError(f"{what}: {r!r}")


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


async def session(host, port, sid, queue, t0, rate, body, late, accept):
    reader, writer = await asyncio.open_connection(host, port)
    await expect(reader, b"220", "greeting")
    writer.write(b"EHLO paced-%d.bench.test\r\n" % sid)
    await expect(reader, b"250", "EHLO")
    while True:
        i = await queue.get()
        if i is None:
            break
        due = t0 + i / rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        start = time.monotonic()
        late.append(start - due)
        writer.write(b"MAIL FROM:<app@example.com>\r\n")
        await expect(reader, b"250", "MAIL")
        writer.write(b"RCPT TO:<x@dest.test>\r\n")
        await expect(reader, b"250", "RCPT")
        writer.write(b"DATA\r\n")
        await expect(reader, b"354", "DATA")
        writer.write(body)
        await expect(reader, b"250", "final dot")
        accept.append(time.monotonic() - start)
    writer.write(b"QUIT\r\n")
    try:
        await asyncio.wait_for(reply(reader), 2)
    except Exception:
        pass
    writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--size", type=int, default=2048)
    a = ap.parse_args()

    n = int(a.rate * a.seconds)
    line = b"x" * 78 + b"\r\n"
    payload = (line * (a.size // len(line) + 1))[: a.size]
    body = (
        b"From: app@example.com\r\nTo: x@dest.test\r\nSubject: paced\r\n\r\n"
        + payload
        + b"\r\n.\r\n"
    )
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    for _ in range(a.sessions):
        queue.put_nowait(None)
    late, accept = [], []
    t0 = time.monotonic() + 0.2
    await asyncio.gather(
        *(
            session(a.host, a.port, s, queue, t0, a.rate, body, late, accept)
            for s in range(a.sessions)
        )
    )
    elapsed = time.monotonic() - t0
    print(
        f"sent={len(accept)} elapsed={elapsed:.2f} achieved={len(accept) / elapsed:.1f} "
        f"late_p99_ms={1000 * pct(late, 99):.1f} accept_p50_ms={1000 * pct(accept, 50):.2f} "
        f"accept_p99_ms={1000 * pct(accept, 99):.2f}"
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        print(f"paced_source: {e}", file=sys.stderr)
        sys.exit(1)
