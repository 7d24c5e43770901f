#!/usr/bin/env node
// Headless Chromium as a WHIP publisher or WHEP player, driving whipgate's own pages
// (/publish/{stream}, /play/{stream}), for the end-to-end tests (tests/e2e/builtin.sh).
//
//   node chromium.mjs publish BASE STREAM [--hold S] [--ready-file F] [--release-file F]
//                                         [--simulcast] [--relay] [--token T] [--timeout S]
//   node chromium.mjs play BASE STREAM [--min-frames N] [--screenshot FILE] [--timeout S]
//                                      [--token T] [--relay] [--expect-viewers]
// --expect-viewers: the page must show, from the stream's WHEP events, that it is live and
// how many watch ("N watching", N >= 1), within 5 s of the first frames.
// --relay: the page gets TURN servers by OPTIONS and sends only through the relay; the
// selected candidate pair must then be a relayed one.
//
// publish: opens BASE/publish/STREAM?autostart=1 (the fake camera and microphone), waits until
// window.publisher.pc is "connected" (--timeout, default 30 s), checks that the outbound-rtp
// packetsSent of audio and video grow, writes "LOCATION <url>" to --ready-file, keeps sending
// until --release-file exists or --hold seconds pass (default 30), then calls
// window.publisher.close(): its DELETE must answer 2xx, and a second DELETE 404.
//
// play: opens BASE/play/STREAM, polls window.player.stats() until framesDecoded >= N (default
// 30, within --timeout, default 30 s), draws <video id="video"> on a canvas and checks the
// painted picture is not black (mean luma and share of non-black pixels) and moves, takes a
// screenshot of the page to --screenshot, then calls window.player.close(): its DELETE must
// answer 2xx, and a second DELETE 404.
//
// pages: the pages' own behaviour, as a user meets it. The publish page is opened at
// BASE's host under another name (localhost for 127.0.0.1: its session URLs then point at
// another origin) and the play page at BASE; Stop must DELETE the session and release the
// camera and microphone (their tracks end), the player must say the stream ended within 2 s of
// the DELETE's answer (both read off the browser's clock), and closing a publishing tab must
// end its session (the stream leaves /api/status).
//
// talk: opens BASE/talk/STREAM?autostart=1 (the fake microphone's beeps go out over a
// two-way WHIP session, e.g. to a voice agent that echoes), waits until the page's peer
// connection is "connected", checks that audio comes back (the inbound-rtp audio's packets
// and energy grow), then hangs up with the page's button: its DELETE must answer 2xx.
//
// Prints one "check: ..." line per verified step; the last line is "RESULT ok" or
// "RESULT fail: reason", exit status 0 or 1. An overall watchdog ends a stuck run.
// playwright-core comes from ${WHIPGATE_TEST_DEPS:-/var/cache/whipgate-test-deps}/playwright
// (scripts/install-test-deps) and drives Debian's /usr/bin/chromium; it downloads nothing.

import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const DEPS = process.env.WHIPGATE_TEST_DEPS || "/var/cache/whipgate-test-deps";
const CHROMIUM = process.env.WHIPGATE_CHROMIUM || "/usr/bin/chromium";
// Flags verified on Debian 12 (shared/real-peers.md). The last three make Chromium gather
// plain loopback-range host candidates instead of .local names.
const FLAGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--autoplay-policy=no-user-gesture-required",
];

const T0 = Date.now();
const secs = () => ((Date.now() - T0) / 1000).toFixed(1);
const log = (msg) => console.log(msg);
const check = (msg) => log(`check: ${msg} (t=${secs()} s)`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Fail extends Error {}

function usage(msg) {
  if (msg) console.error(`chromium.mjs: ${msg}`);
  console.error("usage: node chromium.mjs publish BASE STREAM [--hold S] [--ready-file F] " +
    "[--release-file F] [--simulcast] [--token T] [--timeout S]\n" +
    "       node chromium.mjs play BASE STREAM [--min-frames N] [--screenshot FILE] " +
    "[--timeout S] [--token T]\n" +
    "       node chromium.mjs follow BASE STREAM --ready-file F --release-file F [--timeout S]");
  process.exit(2);
}

function parseArgs(argv) {
  const [mode, base, stream, ...rest] = argv;
  if (!["publish", "play", "pages", "follow", "talk"].includes(mode) || !base || !stream) usage();
  const opts = { mode, base: base.replace(/\/+$/, ""), stream, hold: 30, minFrames: 30,
    timeout: 30, simulcast: false, relay: false, token: "", readyFile: null, releaseFile: null,
    screenshot: null };
  const valued = { "--hold": "hold", "--ready-file": "readyFile", "--release-file": "releaseFile",
    "--token": "token", "--min-frames": "minFrames", "--screenshot": "screenshot",
    "--timeout": "timeout" };
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a === "--simulcast") { opts.simulcast = true; continue; }
    if (a === "--relay") { opts.relay = true; continue; }
    if (a === "--expect-viewers") { opts.expectViewers = true; continue; }
    const key = valued[a];
    if (!key) usage(`unknown argument ${a}`);
    if (i + 1 >= rest.length) usage(`${a} needs a value`);
    opts[key] = rest[++i];
  }
  for (const k of ["hold", "minFrames", "timeout"]) {
    opts[k] = Number(opts[k]);
    if (!Number.isFinite(opts[k]) || opts[k] < 0) usage(`bad number for ${k}`);
  }
  return opts;
}

async function loadPlaywright() {
  const entry = path.join(DEPS, "playwright/node_modules/playwright-core/index.mjs");
  if (!fs.existsSync(entry)) throw new Fail(`missing ${entry}: run scripts/install-test-deps`);
  return (await import(pathToFileURL(entry).href)).chromium;
}

// Waits for fn() (async, in Node) to return a truthy value; polls every `every` ms.
async function until(fn, ms, every = 200) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= end) return null;
    await sleep(every);
  }
}

// DELETE of `location` seen by the browser (whip.js' close()), then a second one from the
// page, which must find nothing (unless `secondToo` is false: a backend without DELETE of
// its own, such as Pipecat's runner, answers every DELETE here).
async function closeAndCheckDelete(page, location, token, closeExpr, secondToo = true) {
  const seen = page.waitForResponse(
    (r) => r.request().method() === "DELETE" && r.url() === location, { timeout: 10000 });
  seen.catch(() => {});
  await page.evaluate(closeExpr);
  let response;
  try { response = await seen; } catch (_) {
    throw new Fail(`${closeExpr} sent no DELETE to ${location} within 10 s`);
  }
  if (response.status() < 200 || response.status() > 299) {
    throw new Fail(`DELETE ${location} answered ${response.status()}`);
  }
  check(`close() sent DELETE ${location}: ${response.status()}`);
  if (!secondToo) return;
  const again = await page.evaluate(async ([url, tok]) => {
    const r = await fetch(url, { method: "DELETE", headers: tok ? { Authorization: "Bearer " + tok } : {} });
    return r.status;
  }, [location, token]);
  if (again !== 404) throw new Fail(`second DELETE ${location} answered ${again}, expected 404`);
  check("second DELETE 404");
}

// Sum of outbound-rtp packetsSent per kind, from the page's RTCPeerConnection.
const outboundStats = () => window.publisher.pc.getStats().then((report) => {
  const out = { audio: 0, video: 0, frames: 0, rids: [] };
  report.forEach((s) => {
    if (s.type !== "outbound-rtp") return;
    out[s.kind] = (out[s.kind] || 0) + (s.packetsSent || 0);
    if (s.kind === "video") {
      out.frames += s.framesEncoded || 0;
      if (s.rid) out.rids.push(`${s.rid}:${s.frameWidth || 0}x${s.frameHeight || 0}/${s.packetsSent || 0}`);
    }
  });
  return out;
});

// The selected candidate pair's local candidate is a TURN relay.
async function checkRelayed(page, pcExpr) {
  const pair = await until(() => page.evaluate(async (expr) => {
    const pc = eval(expr);
    if (!pc) return null;
    const stats = await pc.getStats();
    let selected = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) selected = stats.get(s.selectedCandidatePairId);
    });
    if (!selected) return null;
    const local = stats.get(selected.localCandidateId);
    const remote = stats.get(selected.remoteCandidateId);
    return local ? { local: local.candidateType, relayProtocol: local.relayProtocol || "",
      address: `${local.address}:${local.port}`, remote: remote ? `${remote.address}:${remote.port}` : "?" } : null;
  }, pcExpr), 10000, 300);
  if (!pair) throw new Fail("no selected candidate pair");
  if (pair.local !== "relay") throw new Fail(`selected pair is not relayed: ${JSON.stringify(pair)}`);
  check(`media goes through the TURN relay ${pair.address} (${pair.relayProtocol}) to ${pair.remote}`);
}

async function publish(page, o) {
  const q = new URLSearchParams({ autostart: "1" });
  if (o.simulcast) q.set("simulcast", "1");
  if (o.relay) q.set("relay", "1");
  if (o.token) q.set("token", o.token);
  const url = `${o.base}/publish/${encodeURIComponent(o.stream)}?${q}`;
  const resp = await page.goto(url, { waitUntil: "load", timeout: 15000 });
  if (!resp || resp.status() !== 200) throw new Fail(`GET ${url}: ${resp ? resp.status() : "no response"}`);
  check(`page ${url} loaded`);

  const connected = await until(() => page.evaluate(() =>
    window.publisher?.pc?.connectionState === "connected"), o.timeout * 1000);
  if (!connected) {
    const st = await page.evaluate(() => [window.publishState, window.publisher?.pc?.connectionState]);
    throw new Fail(`not connected within ${o.timeout} s (publishState ${JSON.stringify(st[0])}, ` +
      `connectionState ${st[1]})`);
  }
  const location = await page.evaluate(() => window.publisher.location);
  if (!/^https?:\/\//.test(location || "")) throw new Fail(`bad Location ${JSON.stringify(location)}`);
  check(`peer connection connected, Location ${location}`);
  if (o.relay) await checkRelayed(page, "window.publisher.pc");

  const a = await page.evaluate(outboundStats);
  const grown = await until(async () => {
    const b = await page.evaluate(outboundStats);
    return b.audio > a.audio && b.video > a.video && b.video > 10 ? b : null;
  }, 10000, 500);
  if (!grown) {
    const b = await page.evaluate(outboundStats);
    throw new Fail(`outbound packets do not grow: ${JSON.stringify(a)} -> ${JSON.stringify(b)}`);
  }
  check(`sending: packetsSent audio ${a.audio}->${grown.audio}, video ${a.video}->${grown.video}` +
    (grown.rids.length ? `, simulcast ${grown.rids.join(" ")}` : ""));
  // Chromium starts simulcast with the low layers and adds "f" as its bandwidth estimate grows.
  const sending = grown.rids.filter((r) => !r.endsWith("/0"));
  if (o.simulcast && sending.length < 2) {
    throw new Fail(`--simulcast but ${sending.length} video encodings send: ${grown.rids.join(" ")}`);
  }

  if (o.readyFile) {
    fs.writeFileSync(o.readyFile + ".tmp", `LOCATION ${location}\n`);
    fs.renameSync(o.readyFile + ".tmp", o.readyFile);
  }

  const holdEnd = Date.now() + o.hold * 1000;
  let why = `held ${o.hold} s`;
  while (Date.now() < holdEnd) {
    if (o.releaseFile && fs.existsSync(o.releaseFile)) { why = "released"; break; }
    const state = await page.evaluate(() => window.publisher?.pc?.connectionState);
    if (state !== "connected") throw new Fail(`connection went ${state} while publishing`);
    await sleep(200);
  }
  const end = await page.evaluate(outboundStats);
  check(`${why}: sent audio ${end.audio} video ${end.video} packets, ${end.frames} video frames encoded`);

  await closeAndCheckDelete(page, location, o.token, "window.publisher.close()");
}

async function play(page, o) {
  const q = new URLSearchParams();
  if (o.token) q.set("token", o.token);
  if (o.relay) q.set("relay", "1");
  const url = `${o.base}/play/${encodeURIComponent(o.stream)}` + (q.size ? `?${q}` : "");
  const resp = await page.goto(url, { waitUntil: "load", timeout: 15000 });
  if (!resp || resp.status() !== 200) throw new Fail(`GET ${url}: ${resp ? resp.status() : "no response"}`);
  check(`page ${url} loaded`);

  let last = { framesDecoded: 0, packetsReceived: 0 };
  let firstFrame = null;
  const got = await until(async () => {
    last = await page.evaluate(() => window.player.stats());
    if (!firstFrame && last.framesDecoded > 0) firstFrame = secs();
    return last.framesDecoded >= o.minFrames;
  }, o.timeout * 1000, 250);
  if (!got) {
    const st = await page.evaluate(() => [window.playState, window.player?.pc?.connectionState]);
    throw new Fail(`${last.framesDecoded}/${o.minFrames} frames decoded within ${o.timeout} s ` +
      `(${last.packetsReceived} packets; playState ${JSON.stringify(st[0])}, connectionState ${st[1]})`);
  }
  const location = await page.evaluate(() => window.player.location);
  check(`decoded ${last.framesDecoded} frames, ${last.packetsReceived} packets received ` +
    `(first frame at t=${firstFrame} s), Location ${location}`);
  if (o.relay) await checkRelayed(page, "window.player.pc");
  if (o.expectViewers) {
    const shown = () => page.evaluate(() => [window.playState,
      document.getElementById("viewers")?.textContent || ""]);
    const live = await until(async () => {
      const [state, viewers] = await shown();
      return state === "playing: live" && /^[1-9][0-9]* watching$/.test(viewers);
    }, 5000, 100);
    const [state, viewers] = await shown();
    if (!live) throw new Fail(`the page does not show the events: state ${JSON.stringify(state)}, viewers ${JSON.stringify(viewers)}`);
    check(`the page shows "${state}" and "${viewers}" from the stream's events`);
  }

  // What the <video> element paints: draw it on a canvas and measure.
  const ready = await until(() => page.evaluate(() => {
    const v = document.getElementById("video");
    return v && v.videoWidth > 0 && v.readyState >= 2 && !v.paused;
  }), 5000);
  if (!ready) {
    const v = await page.evaluate(() => {
      const e = document.getElementById("video");
      return e && { w: e.videoWidth, h: e.videoHeight, readyState: e.readyState, paused: e.paused };
    });
    throw new Fail(`<video> is not playing: ${JSON.stringify(v)}`);
  }
  const measure = () => page.evaluate(() => {
    const v = document.getElementById("video");
    const c = document.createElement("canvas");
    c.width = v.videoWidth; c.height = v.videoHeight;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(v, 0, 0, c.width, c.height);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let sum = 0, lit = 0;
    const luma = new Float32Array(d.length / 4);
    for (let i = 0, p = 0; i < d.length; i += 4, p++) {
      const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      luma[p] = y; sum += y; if (y > 24) lit++;
    }
    return { w: c.width, h: c.height, mean: sum / luma.length, lit: lit / luma.length,
      luma: Array.from(luma.filter((_, i) => i % 7 === 0)) };
  });
  const p1 = await measure();
  if (!(p1.mean > 20 && p1.lit > 0.2)) {
    throw new Fail(`picture is black: ${p1.w}x${p1.h} mean luma ${p1.mean.toFixed(1)}, ` +
      `${(p1.lit * 100).toFixed(1)}% of pixels above 24`);
  }
  check(`picture ${p1.w}x${p1.h} not black: mean luma ${p1.mean.toFixed(1)}, ` +
    `${(p1.lit * 100).toFixed(1)}% of pixels above 24`);
  await sleep(700);
  const p2 = await measure();
  let diff = 0;
  if (p2.luma.length === p1.luma.length) {
    for (let i = 0; i < p1.luma.length; i++) diff += Math.abs(p1.luma[i] - p2.luma[i]);
    diff /= p1.luma.length;
  } else {
    diff = Infinity; // resolution changed (simulcast layer switch): it moves
  }
  if (!(diff > 0)) throw new Fail("picture does not move: two draws 0.7 s apart are identical");
  check(`picture moves: mean luma difference ${diff.toFixed(2)} over 0.7 s`);

  if (o.screenshot) {
    fs.mkdirSync(path.dirname(path.resolve(o.screenshot)), { recursive: true });
    await page.screenshot({ path: o.screenshot });
    check(`screenshot ${o.screenshot}`);
  }

  if (!location) throw new Fail("window.player.location is empty");
  await closeAndCheckDelete(page, location, o.token, "window.player.close()");
}

async function pages(context, o) {
  const other = o.base.replace("//127.0.0.1", "//localhost");
  if (other === o.base) throw new Fail(`pages needs a BASE on 127.0.0.1, not ${o.base}`);
  const publisher = await context.newPage();
  const url = `${other}/publish/${encodeURIComponent(o.stream)}?autostart=1`;
  const resp = await publisher.goto(url, { waitUntil: "load", timeout: 15000 });
  if (!resp || resp.status() !== 200) throw new Fail(`GET ${url}: ${resp ? resp.status() : "no response"}`);
  const connected = await until(() => publisher.evaluate(() =>
    window.publisher?.pc?.connectionState === "connected"), o.timeout * 1000);
  if (!connected) throw new Fail(`publish page at ${other} never connected: ${await publisher.evaluate(() => window.publishState)}`);
  const location = await publisher.evaluate(() => window.publisher.location);
  check(`publish page at ${other} connected; its session is ${location}`);
  const whipField = await publisher.evaluate(() => document.getElementById("whip-url").value);
  if (whipField !== `${other}/whip/${encodeURIComponent(o.stream)}`) {
    throw new Fail(`the page shows WHIP server ${JSON.stringify(whipField)} for OBS`);
  }
  const stats = await until(() => publisher.evaluate(() =>
    /sending [1-9][0-9]* kbit\/s, \d+x\d+ at [1-9][0-9]* fps/.test(window.publishStats || "") && window.publishStats), 5000, 250);
  if (!stats) throw new Fail(`no live send stats: ${JSON.stringify(await publisher.evaluate(() => window.publishStats))}`);
  check(`the page shows the WHIP URL for OBS and live stats: ${stats}`);

  const player = await context.newPage();
  await player.goto(`${o.base}/play/${encodeURIComponent(o.stream)}`, { waitUntil: "load", timeout: 15000 });
  const playing = await until(async () =>
    (await player.evaluate(() => window.player.stats())).framesDecoded >= 10, o.timeout * 1000, 250);
  if (!playing) throw new Fail(`the player decoded no frames: ${await player.evaluate(() => window.playState)}`);
  check("the play page decodes the stream");

  // The element as a web developer embeds it: a page of another origin, the script and one tag.
  const embed = await context.newPage();
  await embed.setContent(`<!doctype html><script src="${o.base}/pages/whip.js"></script>` +
    `<whep-player src="${o.base}/whep/${encodeURIComponent(o.stream)}" stats></whep-player>`,
    { waitUntil: "load", timeout: 15000 });
  const embedded = await until(async () => embed.evaluate(async () => {
    const el = document.querySelector("whep-player");
    if (!el || !el.player) return null;
    const st = await el.stats();
    const line = el.querySelector(".whep-stats").textContent;
    return st.framesDecoded >= 10 && /receiving [1-9][0-9]* kbit\/s/.test(line) ? line : null;
  }), o.timeout * 1000, 250);
  if (!embedded) throw new Fail("an embedded <whep-player> on another origin decoded nothing");
  check(`an embedded <whep-player> on another origin plays: ${embedded}`);
  await embed.close();

  // Stop: the DELETE (to the other origin) succeeds, the capture ends.
  await publisher.evaluate(() => { window.capturedTracks = document.getElementById("preview").srcObject.getTracks(); });
  // The player's own clock stamps the moment its state says the stream ended, so that what
  // is timed is the gateway, the SFU and the page, not this script's polls on a busy machine.
  await player.evaluate(() => {
    let state = window.playState;
    window.endedAt = null;
    Object.defineProperty(window, "playState", {
      configurable: true,
      get: () => state,
      set: (value) => {
        state = value;
        if (window.endedAt === null && /ended/.test(value || "")) window.endedAt = Date.now();
      },
    });
  });
  const deleted = publisher.waitForResponse(
    (r) => r.request().method() === "DELETE" && r.url() === location, { timeout: 10000 });
  deleted.catch(() => {});
  const stoppedAt = Date.now();
  await publisher.click("#stop");
  let answer;
  try { answer = await deleted; } catch (_) { throw new Fail("Stop sent no DELETE (blocked by the page's CSP?)"); }
  if (answer.status() !== 200) throw new Fail(`Stop's DELETE answered ${answer.status()}`);
  // When the browser had the DELETE's answer (its head: the answer has no body); the
  // session is over on the server from then.
  const timing = answer.request().timing();
  const answeredAt = timing.responseStart >= 0 ? timing.startTime + timing.responseStart : Date.now();
  check(`Stop sent DELETE ${location}: 200, from a page at ${other}, answered ${((answeredAt - stoppedAt) / 1000).toFixed(1)} s after Stop`);
  const released = await until(() => publisher.evaluate(() =>
    window.capturedTracks.every((t) => t.readyState === "ended")), 2000, 100);
  if (!released) throw new Fail("Stop left the camera or microphone capturing");
  check("Stop ended the camera and microphone tracks");

  const endedAt = await until(() => player.evaluate(() => window.endedAt), 10000, 100);
  if (!endedAt) {
    throw new Fail(`the player still says ${JSON.stringify(await player.evaluate(() => window.playState))} ${((Date.now() - stoppedAt) / 1000).toFixed(1)} s after Stop`);
  }
  const after = (endedAt - answeredAt) / 1000;
  if (after > 2) {
    throw new Fail(`the player said the stream ended ${after.toFixed(1)} s after the DELETE was answered (${((endedAt - stoppedAt) / 1000).toFixed(1)} s after Stop)`);
  }
  check(`the player said the stream ended ${after.toFixed(1)} s after the DELETE was answered (${((endedAt - stoppedAt) / 1000).toFixed(1)} s after Stop)`);

  // Start again, then close the tab: its session ends with it.
  await publisher.click("#start");
  const again = await until(() => publisher.evaluate(() =>
    window.publisher?.pc?.connectionState === "connected"), o.timeout * 1000);
  if (!again) throw new Fail("Start after Stop never connected");
  const listed = async () => (await (await fetch(`${o.base}/api/status`)).json())
    .streams.some((s) => s.stream === o.stream);
  if (!(await listed())) throw new Fail("the restarted stream is not in /api/status");
  await publisher.close({ runBeforeUnload: true });
  const gone = await until(async () => !(await listed()), 3000, 100);
  if (!gone) throw new Fail("closing the publishing tab left its session live");
  check("closing the publishing tab ended its session");
  await player.close();
}

// The play page through a move: plays, writes --ready-file once frames flow, then keeps
// sampling the decoded frame count every 100 ms until --release-file exists. Passes when the
// page followed a `reconnect` event (its state said "the stream moved"), joined a new session
// and decoded frames there; prints the longest time without a new decoded frame.
async function follow(page, o) {
  const url = `${o.base}/play/${encodeURIComponent(o.stream)}`;
  const resp = await page.goto(url, { waitUntil: "load", timeout: 15000 });
  if (!resp || resp.status() !== 200) throw new Fail(`GET ${url}: ${resp ? resp.status() : "no response"}`);
  await page.evaluate(() => {
    window.stateLog = [];
    document.querySelector("whep-player").addEventListener("statechange", (e) => window.stateLog.push(e.detail));
  });
  const sample = () => page.evaluate(async () => ({
    location: window.player.location, frames: (await window.player.stats()).framesDecoded,
  }));
  const first = await until(async () => (await sample()).frames >= o.minFrames, o.timeout * 1000, 100);
  if (!first) throw new Fail(`no ${o.minFrames} frames within ${o.timeout} s`);
  const joined = await sample();
  check(`playing ${joined.location}`);
  fs.writeFileSync(o.readyFile, "PLAYING\n");
  let last = joined, lastProgress = Date.now(), longest = 0, afterMove = 0;
  const end = Date.now() + (o.timeout + 30) * 1000;
  while (!fs.existsSync(o.releaseFile) && Date.now() < end) {
    await sleep(100);
    const now = await sample();
    const moved = now.location && now.location !== last.location;
    const progressed = moved ? now.frames > 0 : now.frames > last.frames;
    if (progressed) {
      longest = Math.max(longest, (Date.now() - lastProgress) / 1000);
      lastProgress = Date.now();
      last = now;
    } else if (now.location !== last.location && now.location) {
      last = { location: now.location, frames: 0 };
    }
    if (last.location !== joined.location) afterMove = last.frames;
    if (afterMove >= o.minFrames && !fs.existsSync(o.readyFile + ".moved")) {
      fs.writeFileSync(o.readyFile + ".moved", "MOVED\n");
    }
  }
  const states = await page.evaluate(() => window.stateLog);
  check(`states: ${[...new Set(states)].join(" | ")}`);
  check(`longest gap without decoded frames ${longest.toFixed(2)} s`);
  if (!states.includes("the stream moved; following it")) throw new Fail("the page never followed a reconnect event");
  if (last.location === joined.location) throw new Fail("the page is still on its first session");
  if (afterMove < o.minFrames) throw new Fail(`${afterMove} frames after the move (want ${o.minFrames})`);
  check(`decoded ${afterMove} frames on the new session ${last.location}`);
  await page.evaluate(() => window.player.close());
}

async function talk(page, o) {
  await page.goto(`${o.base}/talk/${encodeURIComponent(o.stream)}?autostart=1`);
  const connected = await until(() => page.evaluate(() => window.talkState === "connected"), o.timeout * 1000);
  if (!connected) {
    throw new Fail(`the talk page did not connect within ${o.timeout} s: ${await page.evaluate(() => window.talkState)}`);
  }
  check("the talk page is connected");
  const heard = () => page.evaluate(async () => {
    const pc = window.talk.pc();
    if (!pc) return null;
    let packets = 0, energy = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        packets += s.packetsReceived || 0; energy += s.totalAudioEnergy || 0;
      }
    });
    return { packets, energy };
  });
  const first = await until(async () => { const h = await heard(); return h && h.packets > 0 ? h : null; }, 10000);
  if (!first) throw new Fail("no audio came back");
  const later = await until(async () => {
    const h = await heard();
    return h && h.packets >= first.packets + 100 && h.energy > first.energy ? h : null;
  }, 15000);
  if (!later) throw new Fail(`the agent's audio did not keep coming: ${JSON.stringify(await heard())}`);
  check(`audio back: ${later.packets} packets, energy ${later.energy.toFixed(4)}`);
  const location = await page.evaluate(() => window.talk.session());
  await closeAndCheckDelete(page, location, o.token, "window.talk.stop()", false);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const budget = o.mode === "publish" ? o.timeout + o.hold + 40 : o.timeout * 3 + 40;
  const watchdog = setTimeout(() => {
    log(`RESULT fail: overall timeout (${budget} s)`);
    process.exit(1); // playwright kills the browser on exit
  }, budget * 1000);

  let browser;
  try {
    const chromium = await loadPlaywright();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS,
      timeout: 30000 });
    check(`launched ${CHROMIUM} ${browser.version()}`);
    const context = await browser.newContext({ viewport: { width: 800, height: 700 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => log(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") log(`page console: ${m.text()} (${m.location().url || "?"})`);
    });
    if (o.mode === "publish") await publish(page, o);
    else if (o.mode === "play") await play(page, o);
    else if (o.mode === "follow") await follow(page, o);
    else if (o.mode === "talk") await talk(page, o);
    else await pages(context, o);
    await browser.close().catch(() => {});
    log("RESULT ok");
    clearTimeout(watchdog);
    process.exit(0);
  } catch (e) {
    log(`RESULT fail: ${e instanceof Fail ? e.message : (e && e.stack ? e.stack.split("\n")[0] : e)}`);
    if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
    clearTimeout(watchdog);
    process.exit(1);
  }
}

main();
