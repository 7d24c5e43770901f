#!/usr/bin/env python3
"""WHEP player built on aiortc 1.16, for the end-to-end tests.

    aiortc_play.py URL [--token T] [--min-frames N] [--min-audio N] [--timeout S]
                       [--expect-status CODE] [--ready-file F] [--release-file F] [--keep]
                       [--wait-live S]

POSTs a recvonly audio+video offer to URL, expects 201 + Location and applies the answer (or,
given a WHEP-04 406 counter-offer, answers the server's offer with PATCH application/sdp), then
decodes frames until it has --min-frames video frames and --min-audio audio frames (or
--timeout seconds pass). It prints the counts and the video codec, DELETEs the Location
(expects 200) unless --keep, and prints "RESULT ok" or "RESULT fail: reason".

--expect-status CODE only checks that the POST is answered CODE (e.g. 409 with no
publisher) and that a Retry-After comes with it.
--wait-live S retries the POST while it is answered 409 (no publisher yet), for up to S
seconds, so a player can be started together with its publisher; the wall-clock time of the
first decoded video frame is printed ("check: first video frame at <unix seconds>").
--ready-file F gets "LOCATION <url>" once the frames are in; --release-file F then holds
the session (still receiving) until F exists, for at most --timeout seconds more.
"""

import argparse
import asyncio
import os
import sys
import time
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription


class Fail(Exception):
    pass


def log(msg):
    print(msg, flush=True)


async def count(track, counter, key):
    try:
        while True:
            frame = await track.recv()
            if key == "video":
                counter["width"] = frame.width
            if counter[key] == 0 and key == "video":
                log(f"check: first video frame at {time.time():.3f}")
            counter[key] += 1
    except Exception:
        pass


async def choose_layer(http, args, headers, pc, counter):
    """The WHEP layer extension: POST {"mediaId": <our video mid>, "rid": RID} to its Link."""
    import re
    url = None
    for link in headers.getall("Link", []):
        if "urn:ietf:params:whep:ext:core:layer" in link:
            url = re.search(r"<([^>]+)>", link).group(1)
    if not url:
        raise Fail("--layer, but the session advertises no layer Link")
    mid, in_video = None, False
    for line in pc.localDescription.sdp.splitlines():
        if line.startswith("m="):
            in_video = line.startswith("m=video")
        elif in_video and line.startswith("a=mid:"):
            mid = line[6:].strip()
    async with http.post(url, json={"mediaId": mid, "rid": args.layer}) as r:
        if r.status != 200:
            raise Fail(f"layer choice answered {r.status}: {(await r.text()).strip()}")
    log(f"check: chose layer {args.layer} of m-line {mid}: 200")
    # Frames decoded before the switch do not count.
    counter["video"] = 0
    await asyncio.sleep(1.0)
    counter["video"] = 0


async def run(args):
    headers = {"Content-Type": "application/sdp"}
    if args.token:
        headers["Authorization"] = "Bearer " + args.token
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    counter = {"video": 0, "audio": 0}
    tasks = []

    def on_track(track):
        tasks.append(asyncio.ensure_future(count(track, counter, track.kind)))

    pc.on("track", on_track)

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        live_by = time.monotonic() + args.wait_live
        while True:
            async with http.post(args.url, data=pc.localDescription.sdp, headers=headers) as r:
                status, answer_headers, body = r.status, r.headers, await r.text()
            if status == 409 and time.monotonic() < live_by and not args.expect_status:
                await asyncio.sleep(0.05)
                continue
            break
        if args.expect_status:
            if status != args.expect_status:
                raise Fail(f"POST answered {status}, expected {args.expect_status}: {body.strip()}")
            if status in (409, 503) and "Retry-After" not in answer_headers:
                raise Fail(f"{status} without Retry-After")
            log(f"check: POST answered {status} ({body.strip()}), Retry-After {answer_headers.get('Retry-After')}")
            await pc.close()
            return
        if status == 406 and answer_headers.get("Content-Type", "").startswith("application/sdp"):
            # WHEP-04 counter-offer: the server's own offer, answered with PATCH application/sdp.
            location = urljoin(args.url, answer_headers["Location"])
            await pc.close()
            pc = RTCPeerConnection()
            pc.on("track", on_track)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            patch_headers = {"Content-Type": "application/sdp"}
            if args.token:
                patch_headers["Authorization"] = "Bearer " + args.token
            async with http.patch(location, data=pc.localDescription.sdp, headers=patch_headers) as r:
                if r.status != 204:
                    raise Fail(f"PATCH with the answer to the counter-offer answered {r.status}: {(await r.text()).strip()}")
            log("check: 406 counter-offer with Location, answered by PATCH application/sdp: 204")
        elif status != 201:
            raise Fail(f"POST answered {status}: {body.strip()}")
        else:
            location = urljoin(args.url, answer_headers["Location"])
            log("check: 201 with Location")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        if args.layer:
            await choose_layer(http, args, answer_headers, pc, counter)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if counter["video"] >= args.min_frames and counter["audio"] >= args.min_audio:
                break
            await asyncio.sleep(0.2)
        log(f"check: decoded video frames {counter['video']}, audio frames {counter['audio']} (state {pc.connectionState})")
        if counter["video"] < args.min_frames or counter["audio"] < args.min_audio:
            raise Fail(f"too few frames: video {counter['video']} (want {args.min_frames}), audio {counter['audio']} (want {args.min_audio})")
        width = counter.get("width", 0)
        log(f"check: last decoded video frame {width} pixels wide")
        if args.max_width and width > args.max_width:
            raise Fail(f"video {width} wide, more than --max-width {args.max_width}")
        if args.min_width and width < args.min_width:
            raise Fail(f"video {width} wide, less than --min-width {args.min_width}")
        if args.ready_file:
            with open(args.ready_file, "w") as f:
                f.write(f"LOCATION {location}\n")
        if args.release_file:
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline and not os.path.exists(args.release_file):
                await asyncio.sleep(0.2)
        if not args.keep:
            async with http.delete(location, headers=headers) as r:
                if r.status != 200:
                    raise Fail(f"DELETE answered {r.status}")
            log("check: DELETE 200")
    for t in tasks:
        t.cancel()
    await pc.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--token")
    ap.add_argument("--min-frames", type=int, default=30)
    ap.add_argument("--min-audio", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=15.0)
    ap.add_argument("--expect-status", type=int)
    ap.add_argument("--ready-file")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--release-file")
    ap.add_argument("--layer", help="choose this simulcast rid (WHEP layer extension)")
    ap.add_argument("--max-width", type=int, default=0)
    ap.add_argument("--min-width", type=int, default=0)
    ap.add_argument("--wait-live", type=float, default=0.0,
                    help="retry a 409 (no publisher yet) for up to this many seconds")
    args = ap.parse_args()
    try:
        asyncio.run(run(args))
    except Fail as e:
        log(f"RESULT fail: {e}")
        sys.exit(1)
    except Exception as e:  # any crash is a failed test, with its reason
        log(f"RESULT fail: {type(e).__name__}: {e}")
        sys.exit(1)
    log("RESULT ok")


if __name__ == "__main__":
    main()
