#!/usr/bin/env python3
"""A publisher and a player that follow a stream when ops move it (aiortc 1.16), for the
drain test of tests/e2e/builtin.sh.

    aiortc_follow.py publish URL --stop-file F [--ready-file F] [--log-sessions F]
    aiortc_follow.py play URL --stop-file F [--ready-file F] [--min-reconnects N]
                          [--min-frames-after N] [--max-gap S]

publish: POSTs a WHIP offer (synthetic video and a tone) and sends until --stop-file exists.
When the server ends the session (the connection closes or fails), it POSTs again to the same
URL at once, as OBS does when its output drops; a refused POST is retried every 200 ms. Each
connected session is a line "check: session N connected at T (Location L)".

play: POSTs a WHEP offer (retrying 409 while nothing is live), subscribes to the session's
server-sent events (the Link rel urn:ietf:params:whep:ext:core:server-sent-events) and, on
`reconnect` (or when its connection closes), ends the old session and re-joins at the event's
url. It decodes frames throughout and reports the longest time without a video frame
("check: longest gap without video frames S s"), how many reconnects it made and the frames
after the last one. Fails unless it reconnected at least --min-reconnects times, decoded
--min-frames-after frames after the last one, and no gap was longer than --max-gap.

Both print "RESULT ok" or "RESULT fail: reason" last.
"""

import argparse
import asyncio
import os
import re
import sys
import time
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aiortc_publish import GradientTrack, ToneTrack  # noqa: E402

EVENTS_REL = "urn:ietf:params:whep:ext:core:server-sent-events"


class Fail(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def stopped(args):
    return os.path.exists(args.stop_file)


def write_ready(path, text):
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(text + "\n")
        os.rename(path + ".tmp", path)


async def publish(args):
    headers = {"Content-Type": "application/sdp"}
    sessions = 0
    location = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while not stopped(args):
            pc = RTCPeerConnection()
            closed = asyncio.Event()
            connected = asyncio.Event()

            @pc.on("connectionstatechange")
            async def on_state(pc=pc, closed=closed, connected=connected):
                if pc.connectionState == "connected":
                    connected.set()
                elif pc.connectionState in ("failed", "closed"):
                    closed.set()

            pc.addTransceiver(ToneTrack(), direction="sendonly")
            pc.addTransceiver(GradientTrack(), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(args.url, data=pc.localDescription.sdp, headers=headers) as r:
                status, body = r.status, await r.text()
                raw_location = r.headers.get("Location")
            if status != 201:
                log("check: POST answered %d (%s); retrying" % (status, body.strip()[:120]))
                await pc.close()
                await asyncio.sleep(0.2)
                continue
            location = urljoin(args.url, raw_location)
            log("check: session %d answered at %.3f" % (sessions + 1, time.time()))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
            try:
                await asyncio.wait_for(connected.wait(), 10)
            except asyncio.TimeoutError:
                await pc.close()
                raise Fail("session %d did not connect (state %s)" % (sessions + 1, pc.connectionState))
            sessions += 1
            log("check: session %d connected at %.3f (Location %s)" % (sessions, time.time(), location[:60]))
            write_ready(args.ready_file, "SESSIONS %d" % sessions)
            while not stopped(args) and not closed.is_set():
                await asyncio.sleep(0.05)
            if closed.is_set() and not stopped(args):
                log("check: session %d ended by the server at %.3f; publishing again" % (sessions, time.time()))
                location = None
            await pc.close()
        if location:
            async with http.delete(location) as r:
                log("check: DELETE %d" % r.status)
    log("check: %d sessions" % sessions)


class Player:
    def __init__(self, args, http):
        self.args, self.http = args, http
        self.frames = 0
        self.frames_since_reconnect = 0
        self.last_frame = None
        self.longest_gap = 0.0
        self.reconnects = 0
        self.move_to = None  # a reconnect URL, set by the event reader
        self.pc = None
        self.location = None
        self.tasks = []

    async def count(self, track):
        try:
            while True:
                await track.recv()
                now = time.monotonic()
                if self.last_frame is not None:
                    self.longest_gap = max(self.longest_gap, now - self.last_frame)
                self.last_frame = now
                self.frames += 1
                self.frames_since_reconnect += 1
                if self.frames == 30:
                    log("check: 30 video frames at %.3f" % time.time())
        except Exception:
            pass

    async def join(self, url):
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            if track.kind == "video":
                self.tasks.append(asyncio.ensure_future(self.count(track)))

        await pc.setLocalDescription(await pc.createOffer())
        deadline = time.monotonic() + 20
        while True:
            async with self.http.post(url, data=pc.localDescription.sdp,
                                      headers={"Content-Type": "application/sdp"}) as r:
                status, body = r.status, await r.text()
                headers = r.headers
            if status == 409 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                continue
            break
        if status != 201:
            raise Fail("WHEP POST to %s answered %d: %s" % (url, status, body.strip()[:120]))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        self.pc, self.location = pc, urljoin(url, headers["Location"])
        events, offered = None, []
        for link in headers.getall("Link", []):
            if EVENTS_REL in link:
                events = re.search(r"<([^>]+)>", link).group(1)
                listed = re.search(r'events="([^"]*)"', link)
                offered = [e for e in (listed.group(1) if listed else "").split(",") if e]
        if not events or "reconnect" not in offered:
            raise Fail("the WHEP session advertises no events Link with reconnect")
        # Every event offered: each one's first occurrence is logged ("check: event NAME").
        async with self.http.post(events, json=offered) as r:
            if r.status != 201:
                raise Fail("events POST answered %d" % r.status)
            stream_url = urljoin(events, r.headers["Location"])
        self.tasks.append(asyncio.ensure_future(self.read_events(stream_url, pc)))
        log("check: joined %s at %.3f" % (url, time.time()))

    async def read_events(self, stream_url, pc):
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
            async with self.http.get(stream_url, timeout=timeout) as r:
                name = None
                seen = set()
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:") and name != "reconnect" and name not in seen:
                        seen.add(name)
                        log("check: event %s %s" % (name, line[5:].strip()[:100]))
                    elif line.startswith("data:") and name == "reconnect" and self.pc is pc:
                        m = re.search(r'"url"\s*:\s*"([^"]+)"', line)
                        self.move_to = m.group(1) if m else self.args.url
                        log("check: reconnect event at %.3f -> %s" % (time.time(), self.move_to))
        except Exception as e:  # noqa: BLE001
            log("events: %s" % e)

    async def run(self):
        await self.join(self.args.url)
        ready_written = False
        while not stopped(self.args):
            closed = self.pc.connectionState in ("failed", "closed")
            if closed and not self.move_to:
                # The server may be telling where the stream went: give its event a moment.
                waited = time.monotonic() + 1.0
                while not self.move_to and time.monotonic() < waited:
                    await asyncio.sleep(0.02)
                if not self.move_to:
                    log("check: connection %s without a reconnect event; re-joining" % self.pc.connectionState)
            if self.move_to or closed:
                target = self.move_to or self.args.url
                self.move_to = None
                old, old_location = self.pc, self.location
                await old.close()
                async with self.http.delete(old_location) as r:
                    pass
                self.reconnects += 1
                self.frames_since_reconnect = 0
                await self.join(target)
            if (not ready_written and self.frames_since_reconnect >= 30
                    and self.reconnects >= self.args.min_reconnects):
                write_ready(self.args.ready_file, "FRAMES %d" % self.frames)
                ready_written = True
            await asyncio.sleep(0.05)
        log("check: longest gap without video frames %.2f s" % self.longest_gap)
        log("check: %d reconnects, %d video frames, %d after the last"
            % (self.reconnects, self.frames, self.frames_since_reconnect))
        async with self.http.delete(self.location) as r:
            log("check: DELETE %d" % r.status)
        for t in self.tasks:
            t.cancel()
        await self.pc.close()
        if self.reconnects < self.args.min_reconnects:
            raise Fail("reconnected %d times (want %d)" % (self.reconnects, self.args.min_reconnects))
        if self.frames_since_reconnect < self.args.min_frames_after:
            raise Fail("%d frames after the last reconnect (want %d)"
                       % (self.frames_since_reconnect, self.args.min_frames_after))
        if self.longest_gap > self.args.max_gap:
            raise Fail("%.2f s without frames (at most %.1f allowed)" % (self.longest_gap, self.args.max_gap))


async def play(args):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        await Player(args, http).run()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["publish", "play"])
    ap.add_argument("url")
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--ready-file")
    ap.add_argument("--min-reconnects", type=int, default=1)
    ap.add_argument("--min-frames-after", type=int, default=30)
    ap.add_argument("--max-gap", type=float, default=15.0)
    args = ap.parse_args()
    try:
        asyncio.run(publish(args) if args.mode == "publish" else play(args))
    except Fail as e:
        log("RESULT fail: %s" % e)
        return 1
    except Exception as e:  # noqa: BLE001
        log("RESULT fail: %s: %s" % (type(e).__name__, e))
        return 1
    log("RESULT ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
