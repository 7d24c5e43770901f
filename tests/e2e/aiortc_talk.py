#!/usr/bin/env python3
"""WHIP caller built on aiortc 1.16 that talks to a voice bot and listens to what comes back,
for the end-to-end tests (the bot: tests/e2e/pipecat_echo_bot.py, which echoes).

    aiortc_talk.py URL [--token T] [--data-channel] [--bursts N] [--burst-ms MS] [--gap-ms MS]
                       [--min-frames N] [--min-level DBFS] [--freq HZ] [--tolerance HZ]
                       [--connect-timeout S] [--offer-file F] [--answer-file F]
    aiortc_talk.py --direct-pipecat http://127.0.0.1:7860/api/offer [same options]

Run it with $DEPS/venv/bin/python (aiortc 1.16; pure Python, no numpy needed).

POSTs a sendrecv audio-only offer (plus a data channel m-line with --data-channel) as
application/sdp to URL and expects 201 + Location + an application/sdp answer; with
--direct-pipecat it speaks the Pipecat runner's JSON instead (POST
{"sdp","type":"offer","pc_id":null,"restart_pc":false,"request_data":{}} -> 200
{"sdp","type":"answer","pc_id"}), to compare the bot reached directly with the bot reached
through whipgate. Once connected and once the bot's audio flows back, it sends --bursts bursts
of a --freq Hz sine (48 kHz mono, Opus; -15 dBFS RMS), each --burst-ms long, --gap-ms of
silence apart, and records the audio that comes back. It then finds each burst's onset in what came
back (round trip = onset received - onset sent, as seen by the application: Opus encode, both
ways over the network, the bot's pipeline and both jitter buffers), and measures over the
steady part of the tone the dominant frequency (Goertzel scan, refined by interpolated zero
crossings) and the RMS level in dBFS (0 dBFS = a full-scale square wave). WHIP mode ends with
DELETE on the Location (expects 200); the runner has no DELETE, so --direct-pipecat only closes
the peer connection (the bot's session ends with it).

Passes when the tone comes back within --tolerance Hz of --freq, louder than --min-level, in at
least --min-frames 20 ms frames. Prints one "check: ..." line per verified step, e.g.
    check: answer after 15 ms
    check: round trip 195 ms (bursts 195, 196, 195 ms)
    check: tone back 440.0 Hz at -21.0 dBFS, 202 frames
and last "RESULT ok" or "RESULT fail: reason". Exit status 0 on success. (Against the echo bot
the tone comes back 6 dB down: aiortc's Opus encoder upmixes mono to stereo at -3 dB, here and
in the bot; 160 ms of the round trip are aiortc's audio jitter buffers, 4 packets at each end.)

aioice leaves 127.0.0.1 out of its candidates: run caller and bot where a non-loopback
interface carries an address, e.g. a network namespace with 127.0.0.2 on a veth
(tests/e2e/lib.sh netns_add_veth).
"""

import argparse
import array
import asyncio
import fractions
import math
import os
import statistics
import sys
import time
from urllib.parse import urljoin

import aiohttp
from av import AudioFrame
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

RATE = 48000
FRAME = 960  # 20 ms
BLOCK = 480  # 10 ms analysis blocks
AMPLITUDE = 8192  # a quarter of full scale: -15.05 dBFS RMS


class Fail(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def dbfs(rms):
    return 20 * math.log10(rms / 32768) if rms > 0 else -200.0


def rms_of(samples):
    if not samples:
        return 0.0
    return math.sqrt(sum(x * x for x in samples) / len(samples))


class BurstTrack(AudioStreamTrack):
    """48 kHz mono, 20 ms frames: silence, and a sine during the scheduled bursts.

    bursts is a list of (first sample, end sample) on this track's own sample clock; a
    burst's first frame records the monotonic time at which aiortc took it (to be encoded)."""

    def __init__(self, freq):
        super().__init__()
        self.sine = array.array("h", (int(AMPLITUDE * math.sin(2 * math.pi * freq * i / RATE))
                                      for i in range(RATE)))
        self.silence = bytes(FRAME * 2)
        self.ts = None
        self.start = 0.0
        self.bursts = []
        self.sent_onsets = {}  # burst start sample -> monotonic time the frame was taken

    def next_sample(self):
        return 0 if self.ts is None else self.ts + FRAME

    async def recv(self):
        if self.ts is None:
            self.start = time.monotonic()
            self.ts = 0
        else:
            self.ts += FRAME
            wait = self.start + self.ts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        ts = self.ts
        pcm = None
        for b0, b1 in self.bursts:
            if b0 <= ts < b1:
                if ts == b0:
                    self.sent_onsets[b0] = time.monotonic()
                off = ts % RATE
                chunk = self.sine[off:off + FRAME]
                if len(chunk) < FRAME:
                    chunk = chunk + self.sine[:FRAME - len(chunk)]
                pcm = chunk.tobytes()
                break
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm or self.silence)
        frame.pts = ts
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class Recorder:
    """Keeps the first channel of every frame received, with the monotonic time it came."""

    def __init__(self):
        self.samples = array.array("h")
        self.frames = []  # (index of first sample, arrival time)
        self.rates = set()
        self.layouts = set()
        self.first = asyncio.Event()
        self.bad_format = None

    async def run(self, track):
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if frame.format.name != "s16" or frame.format.is_planar:
                    self.bad_format = frame.format.name  # aiortc's Opus decoder gives s16
                    continue
                ch = len(frame.layout.channels)
                data = array.array("h")
                data.frombytes(bytes(frame.planes[0])[: frame.samples * ch * 2])
                self.rates.add(frame.sample_rate)
                self.layouts.add(frame.layout.name)
                self.frames.append((len(self.samples), now))
                self.samples.extend(data[::ch] if ch > 1 else data)
                self.first.set()
        except Exception:
            pass  # the track ended

    def time_of(self, index):
        """Monotonic time of sample index: its frame's arrival + its offset in the frame."""
        lo, hi = 0, len(self.frames) - 1
        while lo < hi:  # last frame whose first sample <= index
            mid = (lo + hi + 1) // 2
            if self.frames[mid][0] <= index:
                lo = mid
            else:
                hi = mid - 1
        first, arrived = self.frames[lo]
        return arrived + (index - first) / RATE

    def index_at(self, t):
        """Index of the first sample of the first frame that arrived at or after t."""
        for first, arrived in self.frames:
            if arrived >= t:
                return first
        return len(self.samples)


def goertzel_power(samples, freq):
    w = 2 * math.pi * freq / RATE
    coeff = 2 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant_coarse(samples):
    """Loudest frequency of 60..4000 Hz in 20 Hz steps over a 50 ms window."""
    window = samples[:2400]
    best, best_p = 0.0, -1.0
    for f in range(60, 4001, 20):
        p = goertzel_power(window, f)
        if p > best_p:
            best, best_p = float(f), p
    return best


def zero_crossing_freq(samples):
    """Frequency from rising zero crossings, interpolated between samples; None if too few.
    A crossing counts only after the signal has been below -10% of its peak, so that noise
    near zero (a concealed packet, codec artefacts) adds no crossings."""
    peak = max((abs(x) for x in samples), default=0)
    armed_below = -0.1 * peak
    crossings, armed = [], False
    for i in range(1, len(samples)):
        a, b = samples[i - 1], samples[i]
        if a < armed_below:
            armed = True
        if armed and a < 0 <= b:
            crossings.append(i - 1 + (-a) / (b - a))
            armed = False
    if len(crossings) < 3:
        return None, 0.0
    span = (crossings[-1] - crossings[0]) / RATE
    return (len(crossings) - 1) / span, span


def analyse(rec, track, args):
    """(frequency, level dBFS, tone frames, [round trip s per burst])."""
    samples = rec.samples
    onset_rms = 32768 * 10 ** (args.onset_level / 20)
    onset_amp = onset_rms * math.sqrt(2)
    round_trips, runs = [], []
    for b0, b1 in track.bursts:
        sent = track.sent_onsets.get(b0)
        if sent is None:
            continue
        # The first 10 ms block (5 ms steps) loud enough, among frames that came after the
        # burst was sent; then the first sample in it that reaches the onset amplitude.
        i = rec.index_at(sent)
        end_search = rec.index_at(sent + args.gap_ms / 1000 + (b1 - b0) / RATE)
        onset = None
        while i + BLOCK <= min(end_search, len(samples)):
            if rms_of(samples[i:i + BLOCK]) >= onset_rms:
                j = max(0, i - BLOCK // 2)
                while j < i + BLOCK and abs(samples[j]) < onset_amp:
                    j += 1
                onset = j
                break
            i += BLOCK // 2
        if onset is None:
            continue
        round_trips.append(rec.time_of(onset) - sent)
        # Steady part: from 100 ms after the onset to 50 ms before the burst's end.
        s0 = onset + RATE // 10
        s1 = onset + (b1 - b0) - RATE // 20
        if s1 - s0 >= FRAME * 5 and s1 <= len(samples):
            runs.append(samples[s0:s1])
    if not runs:
        return None, None, 0, round_trips
    total = sum(len(r) for r in runs)
    level = dbfs(math.sqrt(sum(x * x for r in runs for x in r) / total))
    coarse = dominant_coarse(runs[0])
    # One burst's glitch (a lost packet concealed) must not move the answer: the median of
    # the bursts' own frequencies.
    per_burst = sorted(f for f, _ in map(zero_crossing_freq, runs) if f is not None)
    fine = per_burst[len(per_burst) // 2] if per_burst else None
    # A clean tone: the crossings agree with the loudest Goertzel bin; else report the bin.
    freq = fine if fine is not None and abs(fine - coarse) <= 30 else coarse
    return freq, level, total // FRAME, round_trips


async def signal_whip(http, args, sdp, timings):
    headers = {"Content-Type": "application/sdp"}
    if args.token:
        headers["Authorization"] = "Bearer " + args.token
    t0 = time.monotonic()
    async with http.post(args.url, data=sdp.encode(), headers=headers, allow_redirects=False) as r:
        body = await r.text()
        timings["answer"] = time.monotonic() - t0
        if r.status != 201:
            raise Fail("POST answered %d: %s" % (r.status, body.strip()[:300]))
        raw_location = r.headers.get("Location")
        ctype = r.headers.get("Content-Type", "")
    if not raw_location:
        raise Fail("201 without Location")
    if ctype.split(";")[0].strip() != "application/sdp":
        raise Fail("answer Content-Type is %r" % ctype)
    log("check: POST 201, Location %s" % raw_location)
    return body, urljoin(args.url, raw_location), headers


async def signal_pipecat(http, args, sdp, timings):
    offer = {"sdp": sdp, "type": "offer", "pc_id": None, "restart_pc": False, "request_data": {}}
    t0 = time.monotonic()
    async with http.post(args.direct_pipecat, json=offer) as r:
        text = await r.text()
        timings["answer"] = time.monotonic() - t0
        if r.status != 200:
            raise Fail("POST answered %d: %s" % (r.status, text.strip()[:300]))
        try:
            answer = await r.json(content_type=None)
        except ValueError:
            raise Fail("answer is not JSON: %s" % text.strip()[:300])
    if answer.get("type") != "answer" or not answer.get("sdp"):
        raise Fail("unexpected answer JSON: %s" % text.strip()[:300])
    log("check: POST 200 (Pipecat JSON), pc_id %s" % answer.get("pc_id"))
    return answer["sdp"], None, None


def audio_direction(sdp):
    in_audio = False
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            in_audio = line.startswith("m=audio")
        elif in_audio and line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            return line[2:]
    return "sendrecv" if in_audio else None


def write_file(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


async def run(args):
    pc = RTCPeerConnection()
    track = BurstTrack(args.freq)
    rec = Recorder()
    tasks = []
    state = {"connected": asyncio.Event(), "failed": asyncio.Event()}

    @pc.on("connectionstatechange")
    async def on_state():
        log("pc: connection state %s" % pc.connectionState)
        if pc.connectionState == "connected":
            state["connected"].set()
        elif pc.connectionState in ("failed", "closed"):
            state["failed"].set()

    @pc.on("track")
    def on_track(t):
        if t.kind == "audio":
            tasks.append(asyncio.ensure_future(rec.run(t)))

    pc.addTransceiver(track, direction="sendrecv")  # audio first: Pipecat takes m-line 0
    channel = None
    if args.data_channel:
        channel = pc.createDataChannel("chat")
        channel_open = asyncio.Event()
        channel.on("open", channel_open.set)
    await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
    sdp = pc.localDescription.sdp
    if args.offer_file:
        write_file(args.offer_file, sdp)

    timings = {}
    location, headers = None, None
    timeout = aiohttp.ClientTimeout(total=15)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            if args.direct_pipecat:
                answer, location, headers = await signal_pipecat(http, args, sdp, timings)
            else:
                answer, location, headers = await signal_whip(http, args, sdp, timings)
            log("check: answer after %d ms" % round(timings["answer"] * 1000))
            if args.answer_file:
                write_file(args.answer_file, answer)
            if "v=0" not in answer or "a=candidate" not in answer:
                raise Fail("answer is not a full SDP with candidates")
            direction = audio_direction(answer)
            log("check: answer audio %s%s" % (direction, ", with a data channel m-line"
                                              if "m=application" in answer else ""))
            if direction != "sendrecv":
                raise Fail("answer's audio is %s, so nothing can come back" % direction)
            if args.data_channel and "m=application" not in answer:
                raise Fail("answer has no data channel m-line")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            try:
                await asyncio.wait_for(state["connected"].wait(), args.connect_timeout)
            except asyncio.TimeoutError:
                raise Fail("not connected after %ss (state %s)"
                           % (args.connect_timeout, pc.connectionState))
            log("check: peer connection connected")
            if channel is not None:
                try:
                    await asyncio.wait_for(channel_open.wait(), args.connect_timeout)
                except asyncio.TimeoutError:
                    raise Fail("data channel not open after %ss" % args.connect_timeout)
                log("check: data channel open")

            # Wait until the bot's audio flows back (its pipeline sends silence once it runs),
            # then a little longer, so the first burst's onset is not lost to the start-up.
            try:
                await asyncio.wait_for(rec.first.wait(), args.connect_timeout)
            except asyncio.TimeoutError:
                raise Fail("no audio came back within %ss of connecting" % args.connect_timeout)
            await asyncio.sleep(0.5)
            burst, gap = args.burst_ms * RATE // 1000, args.gap_ms * RATE // 1000
            burst -= burst % FRAME
            gap -= gap % FRAME
            start = track.next_sample() + FRAME * 2
            track.bursts = [(start + k * (burst + gap), start + k * (burst + gap) + burst)
                            for k in range(args.bursts)]
            end_t = time.monotonic() + (track.bursts[-1][1] - track.next_sample()) / RATE + 1.0
            while time.monotonic() < end_t:
                if state["failed"].is_set():
                    raise Fail("connection went %s while talking" % pc.connectionState)
                await asyncio.sleep(0.1)

            log("check: received %d audio frames (%s Hz, %s)"
                % (len(rec.frames), "/".join(map(str, sorted(rec.rates))) or "-",
                   "/".join(sorted(rec.layouts)) or "-"))
            freq, level, frames, round_trips = analyse(rec, track, args)
            if rec.bad_format:
                raise Fail("received audio frames in %s, expected packed s16" % rec.bad_format)
            if round_trips:
                log("check: round trip %d ms (bursts %s ms)"
                    % (round(statistics.median(round_trips) * 1000),
                       ", ".join(str(round(x * 1000)) for x in round_trips)))
            else:
                log("check: round trip not measured (no burst onset came back)")
            if freq is None:
                raise Fail("the tone did not come back (no burst above %s dBFS)" % args.onset_level)
            log("check: tone back %.1f Hz at %.1f dBFS, %d frames" % (freq, level, frames))
            if abs(freq - args.freq) > args.tolerance:
                raise Fail("tone came back at %.1f Hz, not %s +- %s Hz"
                           % (freq, args.freq, args.tolerance))
            if level < args.min_level:
                raise Fail("tone came back at %.1f dBFS, below %s dBFS" % (level, args.min_level))
            if frames < args.min_frames:
                raise Fail("only %d frames of tone came back (want %d)" % (frames, args.min_frames))

            if location:
                async with http.delete(location, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise Fail("DELETE %s answered %d (want 200)" % (location, r.status))
                log("check: DELETE 200")
                location = None
    finally:
        if location:  # best effort cleanup after a failure
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
                    async with http.delete(location, headers=headers) as r:
                        log("cleanup: DELETE %s -> %d" % (location, r.status))
            except Exception as e:  # noqa: BLE001
                log("cleanup: DELETE failed: %s" % e)
        for t in tasks:
            t.cancel()
        await pc.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", nargs="?", help="WHIP endpoint URL")
    ap.add_argument("--direct-pipecat", metavar="URL",
                    help="speak the Pipecat runner's JSON to URL (.../api/offer) instead of WHIP")
    ap.add_argument("--token")
    ap.add_argument("--data-channel", action="store_true",
                    help="add a data channel m-line (after the audio one)")
    ap.add_argument("--freq", type=float, default=440.0)
    ap.add_argument("--tolerance", type=float, default=5.0, help="Hz (default 5)")
    ap.add_argument("--min-level", type=float, default=-40.0, help="dBFS (default -40)")
    ap.add_argument("--onset-level", type=float, default=-35.0,
                    help="dBFS RMS over 10 ms that marks a burst's onset (default -35)")
    ap.add_argument("--min-frames", type=int, default=100,
                    help="20 ms frames of steady tone wanted back (default 100)")
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--burst-ms", type=int, default=1500)
    ap.add_argument("--gap-ms", type=int, default=600,
                    help="silence before each burst; must exceed the round trip (default 600)")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--offer-file", help="save the offer sent here")
    ap.add_argument("--answer-file", help="save the answer received here")
    args = ap.parse_args()
    if bool(args.url) == bool(args.direct_pipecat):
        ap.error("give either a WHIP URL or --direct-pipecat URL")
    if args.direct_pipecat and args.token:
        ap.error("--token is for WHIP")
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
