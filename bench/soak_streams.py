#!/usr/bin/env python3
"""SSE stream churn for bench/soak.sh: opens GET event streams through mcp-edge (HTTP/1.1 over
TLS) and abandons them, for a bounded time, from one loopback source address.

Three kinds of stream, started at --rate per second (the first two alternating) plus --readers
that stay open:

  close   reads for 0.5-3 s, then goes away without a word: half of them with a TCP reset
          (SO_LINGER 0), half with a FIN but no TLS close_notify.
  stall   asks the backend for a fast stream (--stall-query, ~8 MB/s), reads the head and one
          chunk, then stops reading with a small receive buffer and holds the connection for
          --hold seconds: the socket buffers fill within a second, the proxy's writes block,
          and sse.client_write_timeout must cut it. Then it reads again for up to 5 s: end of
          file or a reset means the proxy closed it ("reaped"); data still flowing means it
          did not ("not_reaped"); a complete chunked body means the stream ended on its own
          before the proxy noticed (e.g. the backend died) ("ended").
  reader  reads until the response ends (max_stream_lifetime, a backend killed) and opens a
          new one; how each ended is counted (lifetime = ended with a `retry:` field).

Counters go to --stats as JSON every 2 s and at the end. Loopback only; every stream is closed
when --duration is over.
"""
import argparse
import asyncio
import json
import os
import random
import socket
import ssl
import struct
import time

TERMINATOR = b"\r\n0\r\n\r\n"  # end of a chunked HTTP/1.1 body


class Stats(dict):
    def inc(self, key, n=1):
        self[key] = self.get(key, 0) + n


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/mcp")
    p.add_argument("--source", default="127.0.0.2", help="local address to connect from")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--rate", type=float, default=10.0, help="close/stall streams started per second")
    p.add_argument("--readers", type=int, default=4)
    p.add_argument("--hold", type=float, default=20.0, help="seconds a stalled stream is held")
    p.add_argument("--stall-query", default="every_ms=2&pad=16384",
                   help="query for stalled streams (bench/static_backend.rs reads it)")
    p.add_argument("--stats", required=True)
    return p.parse_args()


async def open_stream(args, ctx, stats, rcvbuf=None, query=None):
    """Connects, sends the GET, reads the head. Returns (sock, reader, writer, status, rest)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((args.source, 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (args.host, args.port)), 5)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=ctx, server_hostname="localhost"), 10
        )
    except Exception as e:  # noqa: BLE001 - counted, not fatal
        sock.close()
        stats.inc("connect_error")
        stats.inc("connect_error_" + type(e).__name__)
        return None
    writer.write(
        f"GET {args.path}{'?' + query if query else ''} HTTP/1.1\r\nHost: localhost:{args.port}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
    except Exception as e:  # noqa: BLE001
        stats.inc("head_error")
        stats.inc("head_error_" + type(e).__name__)
        writer.transport.abort()
        return None
    stats.inc("opened")
    stats.inc(f"status_{status}")
    if status != 200:
        writer.transport.abort()
        return None
    return sock, reader, writer


async def close_stream(args, ctx, stats, n):
    s = await open_stream(args, ctx, stats)
    if not s:
        return
    sock, reader, writer = s
    deadline = time.monotonic() + random.uniform(0.5, 3.0)
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except asyncio.TimeoutError:
                break
            if not data:
                stats.inc("close_eof_early")
                break
            stats.inc("bytes", len(data))
    except (ConnectionError, ssl.SSLError):
        stats.inc("close_reset_early")
    if n % 2:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stats.inc("close_rst")
    else:
        stats.inc("close_fin")
    writer.transport.abort()


async def stall_stream(args, ctx, stats):
    s = await open_stream(args, ctx, stats, rcvbuf=4096, query=args.stall_query)
    if not s:
        return
    sock, reader, writer = s
    try:
        first = await asyncio.wait_for(reader.read(4096), 10)
        stats.inc("bytes", len(first))
        stats.inc("stall_started")
        await asyncio.sleep(args.hold)  # not reading: buffers fill, the proxy's writes block
        tail, drained = b"", 0
        deadline = time.monotonic() + 5
        result = "not_reaped"
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except asyncio.TimeoutError:
                # Silent without an end: the proxy neither closed nor sends (an idle
                # connection after a complete answer would be "ended" instead).
                result = "silent"
                break
            if not data:
                result = "reaped"
                break
            drained += len(data)
            tail = (tail + data)[-16:]
            if tail.endswith(TERMINATOR):
                result = "ended"
                break
        stats.inc("stall_" + result)
        stats.inc("stall_drained_bytes", drained)
    except (ConnectionError, ssl.SSLError):
        stats.inc("stall_reaped")
    except asyncio.TimeoutError:
        stats.inc("stall_no_first_chunk")
    finally:
        writer.transport.abort()


async def reader_stream(args, ctx, stats, stop):
    while time.monotonic() < stop:
        s = await open_stream(args, ctx, stats)
        if not s:
            await asyncio.sleep(0.5)
            continue
        sock, reader, writer = s
        tail, saw_retry, how = b"", False, "eof"
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), 30)
                if not data:
                    break
                stats.inc("bytes", len(data))
                # A lifetime end carries `retry: 1000`; our backend never sends retry:.
                saw_retry = saw_retry or b"\nretry:" in (tail + data)
                tail = (tail + data)[-16:]
                if tail.endswith(TERMINATOR):
                    how = "lifetime" if saw_retry else "ended"
                    break
        except asyncio.TimeoutError:
            how = "silent_30s"
        except (ConnectionError, ssl.SSLError):
            how = "reset"
        stats.inc("reader_" + how)
        writer.transport.abort()
        await asyncio.sleep(0.2)


def write_stats(path, stats):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(sorted(stats.items())), f)
    os.replace(tmp, path)


async def main():
    args = parse_args()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the demo's dev PKI; loopback only
    stats = Stats()
    start = time.monotonic()
    stop = start + args.duration
    tasks = set()

    def spawn(coro):
        t = asyncio.ensure_future(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    for _ in range(args.readers):
        spawn(reader_stream(args, ctx, stats, stop))
    n, last_write = 0, 0.0
    while (now := time.monotonic()) < stop:
        spawn(close_stream(args, ctx, stats, n // 2) if n % 2 == 0 else stall_stream(args, ctx, stats))
        n += 1
        stats["in_progress"] = len(tasks)
        if now - last_write >= 2:
            write_stats(args.stats, stats)
            last_write = now
        await asyncio.sleep(random.expovariate(args.rate))
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stats["in_progress"] = 0
    stats["started"] = n
    write_stats(args.stats, stats)


if __name__ == "__main__":
    asyncio.run(main())
