#!/usr/bin/env python3
"""WHIP publisher built on aiortc 1.16, for the end-to-end tests (tests/e2e/janus.sh).

    aiortc_publish.py URL [--token T] [--ready-file F] [--release-file F] [--hold S]
                          [--expect-absolute PREFIX] [--local-candidate] [--state-file F]
                          [--offer-file F] [--answer-file F] [--expect-video-codec NAME] [--relay]
                          [--obs]

Creates a peer connection with a synthetic video track (moving gradient, VP8/H264 as the
server picks) and a synthetic audio track (a tone), gathers all candidates (aiortc does not
trickle), POSTs the offer to URL, checks 201 + Location (absolute and starting with PREFIX
when --expect-absolute is given) + a quoted ETag, applies the answer and waits until the
connection is "connected". It then writes "LOCATION <url>" to --ready-file and keeps sending
until --release-file exists (or --hold seconds pass), sends DELETE to the Location
(expects 200), and DELETE again (expects 404).

--local-candidate adds a `.local` (mDNS) host candidate to the real offer before POSTing it
(RFC 9725 4.3.2: a WHIP endpoint must accept such an offer).

--obs behaves as OBS 30+ does: its offer carries no candidate at all (they are removed before
the POST), it never trickles and never restarts ICE, so only a complete answer (with the
server's candidates) lets it connect.

--offer-file / --answer-file save the SDP POSTed and the one received. --expect-video-codec NAME
checks that the answer's video m-line puts NAME first (the codec aiortc then encodes) and, once
sending, that aiortc's video encoder is the one for NAME.

Prints one "check: ..." line per verified step; the last line is "RESULT ok" or
"RESULT fail: reason". Exit status 0 on success.
"""

import argparse
import asyncio
import fractions
import math
import os
import re
import sys
import time
from urllib.parse import urljoin

import aiohttp
from av import AudioFrame, VideoFrame
from aiortc import (RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection,
                    RTCSessionDescription)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

W, H = 320, 240


class Fail(Exception):
    pass


def log(msg):
    print(msg, flush=True)


class GradientTrack(VideoStreamTrack):
    """320x240 frames of a horizontally moving luminance gradient (30 fps)."""

    def __init__(self):
        super().__init__()
        self.planes = []
        for shift in range(0, 256, 8):
            row = bytes(((x * 256) // W + shift) & 255 for x in range(W))
            self.planes.append(row * H)
        self.chroma = bytes([128]) * ((W // 2) * (H // 2))
        self.n = 0
        self.frames = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=W, height=H, format="yuv420p")
        frame.planes[0].update(self.planes[self.n % len(self.planes)])
        frame.planes[1].update(self.chroma)
        frame.planes[2].update(self.chroma)
        frame.pts = pts
        frame.time_base = time_base
        self.n += 1
        self.frames += 1
        return frame


class ToneTrack(AudioStreamTrack):
    """A 440 Hz tone, 48 kHz mono, 20 ms frames."""

    RATE = 48000
    SAMPLES = 960

    def __init__(self):
        super().__init__()
        one_second = bytearray()
        for i in range(self.RATE):
            v = int(8000 * math.sin(2 * math.pi * 440 * i / self.RATE))
            one_second += v.to_bytes(2, "little", signed=True)
        self.pcm = bytes(one_second)
        self.ts = None
        self.start = 0.0

    async def recv(self):
        if self.ts is None:
            self.start = time.time()
            self.ts = 0
        else:
            self.ts += self.SAMPLES
            wait = self.start + self.ts / self.RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        off = (self.ts % self.RATE) * 2
        chunk = self.pcm[off:off + self.SAMPLES * 2]
        if len(chunk) < self.SAMPLES * 2:
            chunk += self.pcm[: self.SAMPLES * 2 - len(chunk)]
        frame.planes[0].update(chunk)
        frame.pts = self.ts
        frame.sample_rate = self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


def video_codecs(sdp):
    """[(n, [codec names in m-line order])] for the n-th video m-line of sdp, n = 0, 1, ..."""
    out, names, current = [], {}, None
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            current = None
            fields = line[2:].split()
            if fields and fields[0] == "video":
                current = (len(out), fields[3:])
                out.append(current)
        elif current and line.startswith("a=rtpmap:"):
            pt, _, rest = line[len("a=rtpmap:"):].partition(" ")
            names[(current[0], pt)] = rest.split("/")[0]
    return [(i, [names.get((i, pt), pt) for pt in pts]) for i, pts in out]


def write_file(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def add_local_candidate(sdp):
    """Add a .local host candidate to every media section that has candidates."""
    out, media_idx = [], -1
    lines = sdp.split("\r\n")
    added = 0
    for line in lines:
        if line.startswith("m="):
            media_idx += 1
        if line.startswith("a=end-of-candidates") and media_idx >= 0:
            out.append(
                "a=candidate:9%d 1 udp 2122260223 "
                "3f1c9b2e-5d7a-4c1e-9f0a-%012d.local 5%04d typ host" % (media_idx, media_idx, media_idx)
            )
            added += 1
        out.append(line)
    if added == 0:  # no end-of-candidates: put it after the first candidate
        out2, done = [], False
        for line in out:
            out2.append(line)
            if not done and line.startswith("a=candidate:"):
                out2.append("a=candidate:90 1 udp 2122260223 "
                            "3f1c9b2e-5d7a-4c1e-9f0a-000000000000.local 50000 typ host")
                done = True
        out, added = out2, int(done)
    if added == 0:
        raise Fail("offer has no candidate to put a .local one beside")
    return "\r\n".join(out)


async def outbound_packets(pc):
    res = {}
    stats = await pc.getStats()
    for s in stats.values():
        if s.type == "outbound-rtp":
            res[s.kind] = res.get(s.kind, 0) + s.packetsSent
    return res


async def relay_configuration(args):
    """RFC 9725 4.6: ask the endpoint for its ICE servers (OPTIONS) and use only TURN."""
    headers = {}
    if args.token:
        headers["Authorization"] = "Bearer " + args.token
    async with aiohttp.ClientSession() as http:
        async with http.options(args.url, headers=headers) as r:
            links = r.headers.getall("Link", [])
    servers = []
    for link in ",".join(links).split(","):
        m = re.search(r"<([^>]+)>", link)
        if not m or "ice-server" not in link:
            continue
        user = re.search(r'username="([^"]*)"', link)
        cred = re.search(r'credential="([^"]*)"', link)
        servers.append(RTCIceServer(urls=m.group(1), username=user and user.group(1),
                                    credential=cred and cred.group(1)))
    if not any(s.urls.startswith("turn:") and s.username for s in servers):
        raise Fail("OPTIONS gave no TURN server with credentials: %r" % links)
    log("check: OPTIONS gave TURN %s with username %s" % (servers[0].urls, servers[0].username))
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)


async def run(args):
    pc = RTCPeerConnection(await relay_configuration(args) if args.relay else None)
    video, audio = GradientTrack(), ToneTrack()
    state = {"connected": asyncio.Event(), "failed": asyncio.Event()}

    @pc.on("connectionstatechange")
    async def on_state():
        log("pc: connection state %s" % pc.connectionState)
        if args.state_file:
            with open(args.state_file, "a") as f:
                f.write(pc.connectionState + "\n")
        if pc.connectionState == "connected":
            state["connected"].set()
        elif pc.connectionState in ("failed", "closed"):
            state["failed"].set()

    pc.addTransceiver(audio, direction="sendonly")
    pc.addTransceiver(video, direction="sendonly")
    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)  # aiortc gathers every candidate here
    sdp = pc.localDescription.sdp
    if args.relay:
        kinds = set(re.findall(r"a=candidate:\S+ \d+ \S+ \d+ \S+ \d+ typ (\w+)", sdp))
        if kinds != {"relay"}:
            raise Fail("relay-only offer has candidates of types %s" % sorted(kinds))
        log("check: offer carries relay candidates only")
    if args.obs:
        sdp = "".join(l for l in sdp.splitlines(keepends=True)
                      if not l.startswith(("a=candidate:", "a=end-of-candidates")))
        log("check: offer without candidates, as OBS sends it")
    if args.local_candidate:
        sdp = add_local_candidate(sdp)
        log("check: offer carries a .local candidate (%d bytes)" % len(sdp))
    log("check: offer video codecs %s" % [c for _, c in video_codecs(sdp)])
    if args.offer_file:
        write_file(args.offer_file, sdp)

    headers = {"Content-Type": "application/sdp"}
    if args.token:
        headers["Authorization"] = "Bearer " + args.token
    timeout = aiohttp.ClientTimeout(total=15)
    location = None
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(args.url, data=sdp.encode(), headers=headers,
                                 allow_redirects=False) as r:
                body = await r.text()
                if r.status != 201:
                    raise Fail("POST answered %d: %s" % (r.status, body.strip()[:300]))
                raw_location = r.headers.get("Location")
                etag = r.headers.get("ETag")
                ctype = r.headers.get("Content-Type", "")
            log("check: POST 201, Location %s, ETag %s" % (raw_location, etag))
            if not raw_location:
                raise Fail("201 without Location")
            if args.expect_absolute:
                if not raw_location.startswith(args.expect_absolute):
                    raise Fail("Location %r does not start with %r" % (raw_location, args.expect_absolute))
                if "?" in raw_location:
                    raise Fail("Location %r has a query string" % raw_location)
            location = urljoin(args.url, raw_location)
            if not etag or not (etag.startswith('"') and etag.endswith('"') and len(etag) > 2):
                raise Fail("ETag missing or not quoted: %r" % etag)
            if not ctype.split(";")[0].strip() == "application/sdp":
                raise Fail("answer Content-Type is %r" % ctype)
            if "v=0" not in body or "a=candidate" not in body:
                raise Fail("answer is not a full SDP with candidates")

            if args.answer_file:
                write_file(args.answer_file, body)
            answered = video_codecs(body)
            log("check: answer video codecs %s" % [c for _, c in answered])
            if args.expect_video_codec:
                want = args.expect_video_codec.lower()
                if not answered or not answered[0][1] or answered[0][1][0].lower() != want:
                    raise Fail("answer does not pick %s for video: %s"
                               % (args.expect_video_codec, answered))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
            try:
                await asyncio.wait_for(state["connected"].wait(), args.connect_timeout)
            except asyncio.TimeoutError:
                raise Fail("not connected after %ss (state %s)" % (args.connect_timeout, pc.connectionState))
            log("check: peer connection connected")
            if args.ready_file:
                tmp = args.ready_file + ".tmp"
                with open(tmp, "w") as f:
                    f.write("LOCATION %s\n" % location)
                os.rename(tmp, args.ready_file)

            # Keep sending until released (or for --hold seconds).
            deadline = time.monotonic() + args.hold
            while time.monotonic() < deadline:
                if args.release_file and os.path.exists(args.release_file):
                    break
                if state["failed"].is_set():
                    raise Fail("connection went %s while sending" % pc.connectionState)
                await asyncio.sleep(0.1)
            if args.expect_video_codec:
                want = args.expect_video_codec.lower()
                for t in pc.getTransceivers():
                    if t.kind != "video":
                        continue
                    codecs = getattr(t, "_codecs", None) or []
                    mime = codecs[0].mimeType if codecs else "?"
                    # aiortc 1.16 keeps the encoder it built from the negotiated codec here.
                    encoder = getattr(t.sender, "_RTCRtpSender__encoder", None)
                    enc_name = type(encoder).__name__ if encoder is not None else "?"
                    log("check: video sent as %s by %s" % (mime, enc_name))
                    if mime.lower() != "video/" + want:
                        raise Fail("aiortc negotiated %s, not %s" % (mime, args.expect_video_codec))
                    if encoder is not None and not enc_name.lower().startswith(want):
                        raise Fail("aiortc encodes video with %s, not %s" % (enc_name, args.expect_video_codec))
            pkts = await outbound_packets(pc)
            log("check: sent %s packets, %d video frames" % (pkts, video.frames))
            if pkts.get("audio", 0) == 0 or pkts.get("video", 0) == 0:
                raise Fail("nothing sent: %s" % pkts)

            async with http.delete(location, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise Fail("DELETE %s answered %d (want 200)" % (location, r.status))
            log("check: DELETE 200")
            location = None
            async with http.delete(urljoin(args.url, raw_location), headers=headers) as r:
                await r.read()
                if r.status != 404:
                    raise Fail("second DELETE answered %d (want 404)" % r.status)
            log("check: second DELETE 404")
    finally:
        if location:  # best effort cleanup after a failure
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
                    async with http.delete(location, headers=headers) as r:
                        log("cleanup: DELETE %s -> %d" % (location, r.status))
            except Exception as e:  # noqa: BLE001
                log("cleanup: DELETE failed: %s" % e)
        await pc.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--token")
    ap.add_argument("--ready-file")
    ap.add_argument("--release-file")
    ap.add_argument("--state-file")
    ap.add_argument("--hold", type=float, default=6.0, help="max seconds to send (default 6)")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--expect-absolute", metavar="PREFIX")
    ap.add_argument("--local-candidate", action="store_true")
    ap.add_argument("--obs", action="store_true",
                    help="offer without candidates and never trickle, as OBS 30+ does")
    ap.add_argument("--relay", action="store_true",
                    help="get TURN servers by OPTIONS and send through the relay only")
    ap.add_argument("--offer-file", help="save the offer POSTed here")
    ap.add_argument("--answer-file", help="save the answer received here")
    ap.add_argument("--expect-video-codec", metavar="NAME",
                    help="fail unless video is negotiated and encoded as NAME (e.g. H264)")
    args = ap.parse_args()
    try:
        asyncio.run(run(args))
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
