#!/usr/bin/env python3
"""Fixed-rate (open-loop) WHIP load for scripts/bench-proxy.

Starts one session cycle -- POST of an SDP offer, then DELETE of the Location that answered
it, on the same keep-alive connection -- every 1/RATE seconds for DURATION seconds, whatever
the previous cycles are doing (open loop: a slow server gets more cycles in flight, not fewer
cycles). Connections come from a keep-alive pool that grows on demand up to --max-conns.

Latency of each request is measured from just before its bytes are written to the moment its
whole response has been parsed (time.perf_counter_ns, from the protocol callback, not after
the awaiting task wakes up). The time from a cycle's scheduled start to the POST being written
(waiting for the scheduler or for a free connection) is reported apart as "start lag".

Loopback only: the target must be an address in 127.0.0.0/8 or ::1. Prints one JSON object.
Standard library only; uses uvloop when it is importable (Debian: python3-uvloop).
"""

import argparse
import asyncio
import gc
import ipaddress
import json
import math
import sys
import time
from array import array
from urllib.parse import urlsplit

try:
    import uvloop  # type: ignore
except ImportError:  # pragma: no cover - optional
    uvloop = None

perf_ns = time.perf_counter_ns


class ProtocolError(Exception):
    pass


class Conn(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection carrying one request at a time."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter = None
        self.t_sent = 0
        self.closed = False
        self.keep_alive = True
        self._head = None  # (status, headers, body_start, content_length | None, chunked)

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data):
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            done = self._parse()
        except ProtocolError as e:
            self.waiter.set_exception(e)
            self.transport.close()
            return
        if done is not None:
            status, headers, body = done
            self.waiter.set_result((status, headers, body, perf_ns() - self.t_sent))

    def _parse(self):
        buf = self.buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    raise ProtocolError("response head too long")
                return None
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise ProtocolError(f"bad status line {lines[0]!r}")
            status = int(parts[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            clen = None if chunked else int(headers.get("content-length", "0"))
            if headers.get("connection", "").lower() == "close":
                self.keep_alive = False
            self._head = (status, headers, end + 4, clen, chunked)
        status, headers, start, clen, chunked = self._head
        if not chunked:
            if len(buf) - start < clen:
                return None
            body = bytes(buf[start : start + clen])
            del buf[: start + clen]
        else:
            body = bytearray()
            pos = start
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                if size == 0:
                    # No trailers expected: "0\r\n\r\n".
                    if len(buf) < eol + 4:
                        return None
                    del buf[: eol + 4]
                    break
                if len(buf) < eol + 2 + size + 2:
                    return None
                body += buf[eol + 2 : eol + 2 + size]
                pos = eol + 2 + size + 2
            body = bytes(body)
        self._head = None
        return status, headers, body

    async def request(self, data, timeout):
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.t_sent = perf_ns()
        self.transport.write(data)
        try:
            return await asyncio.wait_for(self.waiter, timeout)
        finally:
            self.waiter = None


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def summary(values_ns):
    v = sorted(values_ns)
    us = lambda x: None if x is None else round(x / 1000.0, 1)  # noqa: E731
    return {
        "count": len(v),
        "p50_us": us(percentile(v, 50)),
        "p90_us": us(percentile(v, 90)),
        "p99_us": us(percentile(v, 99)),
        "p999_us": us(percentile(v, 99.9)),
        "max_us": us(v[-1] if v else None),
        "mean_us": us(sum(v) / len(v) if v else None),
    }


async def run(args):
    url = urlsplit(args.url)
    host, port = url.hostname, url.port or 80
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"fixed_rate: refusing non-loopback target {host}")
    netloc = f"{host}:{port}"
    offer = open(args.offer, "rb").read()
    post = (
        f"POST {url.path or '/'} HTTP/1.1\r\nHost: {netloc}\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(offer)}\r\n\r\n"
    ).encode() + offer
    loop = asyncio.get_running_loop()

    idle = []
    n_conns = 0
    conn_waiters = []
    lat_post, lat_delete, lag = array("q"), array("q"), array("q")
    statuses = {}
    errors = {}
    cycles_ok = 0
    first_error = None

    def note_error(kind, detail):
        nonlocal first_error
        errors[kind] = errors.get(kind, 0) + 1
        if first_error is None:
            first_error = f"{kind}: {detail}"

    async def open_conn():
        # Counts the connection as soon as it is being opened, so the pool never exceeds
        # --max-conns; a failed open gives its slot back.
        nonlocal n_conns
        n_conns += 1
        try:
            _, proto = await loop.create_connection(Conn, host, port)
        except BaseException:
            n_conns -= 1
            raise
        return proto

    async def acquire():
        nonlocal n_conns
        while True:
            while idle:
                c = idle.pop()
                if not c.closed:
                    return c
                n_conns -= 1
            if n_conns < args.max_conns:
                return await open_conn()
            fut = loop.create_future()
            conn_waiters.append(fut)
            c = await fut
            if c is not None:
                return c
            # None: a connection was dropped, so there is a free slot now; loop to open one.

    def release(c):
        nonlocal n_conns
        if c.closed or not c.keep_alive:
            if not c.closed:
                c.transport.close()
                c.closed = True
            n_conns -= 1
            c = None
        while conn_waiters:
            w = conn_waiters.pop(0)
            if w.done():
                continue
            w.set_result(c)
            return
        if c is not None:
            idle.append(c)

    async def cycle(t_sched_ns):
        nonlocal cycles_ok
        c = None
        try:
            c = await acquire()
            lag.append(perf_ns() - t_sched_ns)
            status, headers, _body, dt = await c.request(post, args.timeout)
            statuses[status] = statuses.get(status, 0) + 1
            lat_post.append(dt)
            if status != 201:
                note_error("post_status", status)
                return
            loc = headers.get("location")
            if not loc:
                note_error("no_location", "201 without Location")
                return
            parts = urlsplit(loc)
            if parts.netloc and parts.netloc != netloc:
                note_error("foreign_location", loc)
                return
            path = parts.path + (("?" + parts.query) if parts.query else "")
            delete = f"DELETE {path} HTTP/1.1\r\nHost: {netloc}\r\n\r\n".encode()
            if c.closed or not c.keep_alive:
                release(c)
                c = None
                c = await acquire()
            status, _h, _b, dt = await c.request(delete, args.timeout)
            statuses[status] = statuses.get(status, 0) + 1
            lat_delete.append(dt)
            if status != 200:
                note_error("delete_status", status)
                return
            cycles_ok += 1
        except asyncio.TimeoutError:
            note_error("timeout", f"no answer within {args.timeout}s")
            if c is not None:
                c.transport.close()
                c.closed = True
        except Exception as e:  # connection refused/reset, protocol errors
            note_error(type(e).__name__, e)
            if c is not None and c.transport is not None:
                c.transport.close()
                c.closed = True
        finally:
            if c is not None:
                release(c)

    # Warm the pool so that the first cycles do not pay for connecting.
    for _ in range(min(args.prewarm, args.max_conns)):
        idle.append(await open_conn())

    interval_ns = int(1e9 / args.rate)
    total = int(args.rate * args.duration)
    tasks = set()
    t0 = perf_ns() + 5_000_000
    i = 0
    while i < total:
        now = perf_ns()
        while i < total and t0 + i * interval_ns <= now:
            t = loop.create_task(cycle(t0 + i * interval_ns))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, (t0 + i * interval_ns - perf_ns()) / 1e9))
    t_sched_end = perf_ns()
    if tasks:
        await asyncio.wait(list(tasks), timeout=args.timeout * 2 + 1)
    t_end = perf_ns()
    for c in idle:
        c.transport.close()
    elapsed = (t_sched_end - t0) / 1e9
    requests = len(lat_post) + len(lat_delete)
    non2xx = sum(n for s, n in statuses.items() if not 200 <= s < 300)
    return {
        "tool": "fixed_rate.py" + (" (uvloop)" if uvloop else " (asyncio)"),
        "target_rate": args.rate,
        "scheduled_cycles": total,
        "cycles_ok": cycles_ok,
        "requests": requests,
        "elapsed_s": round(elapsed, 3),
        "drain_s": round((t_end - t_sched_end) / 1e9, 3),
        "cycles_per_s": round(cycles_ok / elapsed, 1) if elapsed > 0 else 0,
        "requests_per_s": round(requests / elapsed, 1) if elapsed > 0 else 0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "non2xx": non2xx,
        "errors": errors,
        "first_error": first_error,
        "connections": n_conns,
        "latency_all": summary(list(lat_post) + list(lat_delete)),
        "latency_post": summary(lat_post),
        "latency_delete": summary(lat_delete),
        "start_lag": summary(lag),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="WHIP endpoint, e.g. http://127.0.0.1:18080/whip/bench")
    p.add_argument("--offer", required=True, help="SDP offer file to POST")
    p.add_argument("--rate", type=float, default=500.0, help="session cycles started per second")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of scheduled load")
    p.add_argument("--max-conns", type=int, default=64)
    p.add_argument("--prewarm", type=int, default=8, help="connections opened before the run")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    args = p.parse_args()
    if uvloop is not None:
        uvloop.install()
    # No cyclic-GC pauses inside the measured window (the run allocates a few MB at most).
    gc.collect()
    gc.disable()
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
