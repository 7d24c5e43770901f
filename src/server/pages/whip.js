// whipgate's browser client: WHIP publish and WHEP play against whipgate's public
// endpoints, exactly as any other client would use them (RFC 9725, WHEP).
"use strict";
const whipgate = (() => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function headers(token) {
    const h = { "Content-Type": "application/sdp" };
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  // RFC 9725 4.4: Link: <turn:...>; rel="ice-server"; username=...; credential=...
  function iceServers(response) {
    const servers = [];
    const links = response.headers.get("Link");
    if (!links) return servers;
    for (const link of links.split(/,(?=\s*<)/)) {
      const m = link.match(/<([^>]+)>/);
      if (!m || !/rel="?ice-server"?/.test(link)) continue;
      const server = { urls: m[1] };
      const user = link.match(/username="([^"]*)"/);
      const cred = link.match(/credential="([^"]*)"/);
      if (user) server.username = user[1];
      if (cred) server.credential = cred[1];
      servers.push(server);
    }
    return servers;
  }

  function gathered(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return Promise.race([
      new Promise((r) => pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") r();
      })),
      sleep(ms),
    ]);
  }

  // RFC 9725 4.6: the ICE servers the endpoint offers before the offer is made (a client
  // that puts every candidate in its offer must know its TURN servers first). `relay`
  // sends everything through TURN.
  async function configuration(url, token, relay) {
    const config = { bundlePolicy: "max-bundle" };
    try {
      const response = await fetch(url, {
        method: "OPTIONS", headers: token ? { Authorization: "Bearer " + token } : {},
      });
      const servers = iceServers(response);
      if (servers.length) config.iceServers = servers;
    } catch (_) { /* no ICE servers: host candidates only */ }
    if (relay) config.iceTransportPolicy = "relay";
    return config;
  }

  class Refused extends Error {
    constructor(status, text, retryAfter) {
      super(`${status}: ${text.trim()}`);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  // One offer/answer exchange; returns the session's Location.
  async function exchange(pc, url, token) {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 2000);
    const response = await fetch(url, {
      method: "POST", headers: headers(token), body: pc.localDescription.sdp,
    });
    const counterOffer = response.status === 406 &&
      (response.headers.get("Content-Type") || "").startsWith("application/sdp");
    if (response.status !== 201 && !counterOffer) {
      const retry = parseInt(response.headers.get("Retry-After") || "0", 10);
      throw new Refused(response.status, await response.text(), retry);
    }
    const location = new URL(response.headers.get("Location"), url).href;
    pc.whepEvents = eventsLink(response, url);
    const servers = iceServers(response);
    if (servers.length) pc.setConfiguration({ ...pc.getConfiguration(), iceServers: servers });
    const sdp = await response.text();
    if (!counterOffer) {
      await pc.setRemoteDescription({ type: "answer", sdp });
      return location;
    }
    // WHEP-04: the server refused our offer and made its own; our answer goes by PATCH.
    await pc.setLocalDescription({ type: "rollback" });
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc, 2000);
    const patched = await fetch(location, {
      method: "PATCH",
      headers: { ...headers(token), "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    if (patched.status !== 204) {
      const refused = new Refused(patched.status, await patched.text(), 0);
      await end(location, token);
      throw refused;
    }
    return location;
  }

  // WHEP server-sent events: the session's Link names where to subscribe and which events
  // the server sends; null when it has none.
  const EVENTS_REL = "urn:ietf:params:whep:ext:core:server-sent-events";
  function eventsLink(response, base) {
    for (const link of (response.headers.get("Link") || "").split(/,(?=\s*<)/)) {
      if (!link.includes(EVENTS_REL)) continue;
      const target = link.match(/<([^>]+)>/);
      const names = link.match(/events="([^"]*)"/);
      if (target) {
        return {
          url: new URL(target[1], base).href,
          events: names ? names[1].split(",").map((n) => n.trim()) : [],
        };
      }
    }
    return null;
  }

  // Subscribes to the events this player understands of those advertised; returns the
  // EventSource (the caller closes it when the session ends) or null.
  async function follow(link, token, on) {
    if (!link) return null;
    const known = ["active", "inactive", "viewercount", "reconnect"];
    const wanted = link.events.filter((name) => known.includes(name));
    try {
      const response = await fetch(link.url, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...(token ? { Authorization: "Bearer " + token } : {}) },
        body: JSON.stringify(wanted),
      });
      if (response.status !== 201) return null;
      const source = new EventSource(new URL(response.headers.get("Location"), link.url).href);
      const data = (e) => { try { return JSON.parse(e.data); } catch (_) { return {}; } };
      source.addEventListener("reconnect", (e) => on.reconnect(data(e).url));
      source.addEventListener("viewercount", (e) => on.viewers(data(e).viewercount));
      source.addEventListener("active", () => on.active(true));
      source.addEventListener("inactive", () => on.active(false));
      return source;
    } catch (_) {
      return null;
    }
  }

  // `keepalive` lets the DELETE outlive the page that sends it (a closed tab, a reload).
  async function end(location, token) {
    if (!location) return;
    try {
      await fetch(location, {
        method: "DELETE", keepalive: true,
        headers: token ? { Authorization: "Bearer " + token } : {},
      });
    } catch (_) { /* the page is going away or the network is: nothing to do */ }
  }

  // A session whose page goes away (tab closed, navigated, reloaded) is ended, so that it
  // stops counting against the server's limits at once rather than when it times out.
  function endWithPage(session) {
    const onHide = () => { session.close(); };
    window.addEventListener("pagehide", onHide);
    return () => window.removeEventListener("pagehide", onHide);
  }

  async function publish({ url, token, media, simulcast, relay, onState }) {
    const absolute = new URL(url, location_href()).href;
    const pc = new RTCPeerConnection(await configuration(absolute, token, relay));
    for (const track of media.getTracks()) {
      const init = { direction: "sendonly", streams: [media] };
      if (track.kind === "video" && simulcast) {
        init.sendEncodings = [
          { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000 },
          { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000 },
          { rid: "f", maxBitrate: 1500000 },
        ];
      }
      pc.addTransceiver(track, init);
    }
    pc.onconnectionstatechange = () => onState("publishing: " + pc.connectionState);
    onState("offering");
    let location;
    try {
      location = await exchange(pc, absolute, token);
    } catch (error) {
      pc.close();
      throw error;
    }
    onState("answered");
    let forget = () => {};
    const session = {
      pc, location,
      // DELETE first: closing the peer connection first sends a DTLS close_notify, which
      // can end the session on the server before the DELETE arrives (which then gets 404).
      // The camera and microphone are released too: Stop means stop capturing.
      async close() {
        forget();
        const ending = end(location, token);
        pc.close();
        for (const track of media.getTracks()) track.stop();
        await ending;
      },
    };
    forget = endWithPage(session);
    return session;
  }

  function location_href() { return window.location.href; }

  const STALL_MS = 1000;

  async function packets(pc) {
    let received = 0;
    try {
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp") received += s.packetsReceived || 0;
      });
    } catch (_) { /* closed meanwhile */ }
    return received;
  }

  function play({ url, token, video, relay, onState, onViewers }) {
    let pc = null, location = null, closed = false, events = null, stop = null;
    const current = () => pc;
    async function run() {
      while (!closed) {
        const tok = typeof token === "function" ? token() : token;
        const absolute = new URL(url, location_href()).href;
        pc = new RTCPeerConnection(await configuration(absolute, tok, relay));
        pc.addTransceiver("video", { direction: "recvonly" });
        pc.addTransceiver("audio", { direction: "recvonly" });
        const media = new MediaStream();
        let failed;
        const ended = new Promise((r) => { failed = r; });
        stop = failed;
        // What the stream's events last said (null: nothing yet): they may arrive before ICE
        // connects, and the connection's own states must not hide that the stream is live.
        let live = null, dtlsClosed = false;
        // The server closes DTLS when it ends the session. With the events saying the
        // publisher left too, the stream has ended: said at once rather than after the packet
        // watch below. DTLS closed alone may be a drain, whose reconnect event comes later.
        pc.ontrack = (e) => {
          media.addTrack(e.track); video.srcObject = media;
          const dtls = e.receiver.transport;
          if (dtls) {
            dtls.onstatechange = () => {
              dtlsClosed = ["closed", "failed"].includes(dtls.state);
              if (dtlsClosed && live === false) failed();
            };
          }
        };
        pc.onconnectionstatechange = () => {
          const state = pc.connectionState;
          onState(state === "connected" && live ? "playing: live" : "playing: " + state);
          if (["failed", "closed", "disconnected"].includes(pc.connectionState)) failed();
        };
        // A publisher that leaves stops the media long before ICE notices (seconds): no new
        // packet for STALL_MS after some arrived means the stream ended.
        let lastPackets = 0, lastChange = Date.now();
        const watch = setInterval(async () => {
          const now = await packets(pc);
          if (now > 0 && now === lastPackets && Date.now() - lastChange > STALL_MS) failed();
          if (now !== lastPackets) { lastPackets = now; lastChange = Date.now(); }
        }, 250);
        try {
          onState("offering");
          location = await exchange(pc, absolute, tok);
          let moved = false;
          // The server says where the stream went (a drain, a move between vendors):
          // re-join there at once rather than after the media stalls.
          events = await follow(pc.whepEvents, tok, {
            reconnect: (to) => { if (to) url = to; moved = true; failed(); },
            viewers: (n) => { if (onViewers) onViewers(n); },
            active: (on) => {
              live = on;
              onState(on ? "playing: live" : "waiting for the stream");
              if (!on && dtlsClosed) failed();
            },
          });
          await ended;
          clearInterval(watch);
          if (events) events.close();
          events = null;
          // close() ended the session itself.
          if (closed) return;
          video.srcObject = null;
          if (moved) {
            onState("the stream moved; following it");
            pc.close();
            await end(location, tok);
            location = null;
            continue;
          }
          onState("the stream ended; waiting for it to come back");
        } catch (error) {
          clearInterval(watch);
          if (events) events.close();
          events = null;
          onState(error.status === 409 ? "waiting for the publisher" : "error: " + error.message);
          pc.close();
          await sleep(Math.max(1, error.retryAfter || 2) * 1000);
          continue;
        }
        pc.close();
        await end(location, tok);
        location = null;
        await sleep(1000);
      }
    }
    run();
    const onHide = () => { closed = true; end(location, typeof token === "function" ? token() : token); };
    window.addEventListener("pagehide", onHide);
    return {
      get pc() { return current(); },
      get location() { return location; },
      async stats() {
        let framesDecoded = 0, packetsReceived = 0;
        if (!pc) return { framesDecoded, packetsReceived };
        (await pc.getStats()).forEach((s) => {
          if (s.type === "inbound-rtp") {
            packetsReceived += s.packetsReceived || 0;
            if (s.kind === "video") framesDecoded += s.framesDecoded || 0;
          }
        });
        return { framesDecoded, packetsReceived };
      },
      async close() {
        closed = true;
        window.removeEventListener("pagehide", onHide);
        // Ends the loop's wait (pc.close() fires no state change) and its event stream.
        if (events) events.close();
        if (stop) stop();
        const current = pc;
        await end(location, typeof token === "function" ? token() : token);
        if (current) current.close();
      },
    };
  }

  return { publish, play };
})();

// <whep-player src="https://gw.example.com/whep/stream" [token="..."] [stats] [relay]>: an
// embeddable WHEP player. It plays muted (so autoplay works), waits for a stream that is not
// live yet, says when it ended and reconnects when it comes back; `stats` shows what it
// receives. Include this script and put the element in a page; whipgate answers CORS itself.
if (typeof customElements !== "undefined" && !customElements.get("whep-player")) {
  class WhepPlayer extends HTMLElement {
    connectedCallback() {
      if (this.player) return;
      // Light DOM, no inline styles: the embedding page styles it (and its CSP may forbid
      // inline styles).
      this.innerHTML =
        '<video autoplay muted playsinline controls></video>' +
        '<p class="whep-state"></p><p class="whep-stats"></p>';
      this.video = this.querySelector("video");
      const stateLine = this.querySelector(".whep-state");
      this.player = whipgate.play({
        url: this.getAttribute("src"),
        token: () => this.getAttribute("token") || "",
        video: this.video,
        relay: this.hasAttribute("relay"),
        onState: (text) => {
          this.state = text;
          stateLine.textContent = text;
          this.dispatchEvent(new CustomEvent("statechange", { detail: text }));
        },
        onViewers: (count) => {
          this.viewers = count;
          this.dispatchEvent(new CustomEvent("viewers", { detail: count }));
        },
      });
      if (this.hasAttribute("stats")) {
        const statsLine = this.querySelector(".whep-stats");
        let last = 0, at = performance.now();
        this.statsTimer = setInterval(async () => {
          const pc = this.player.pc;
          if (!pc) return;
          let bytes = 0, fps = 0, size = "";
          (await pc.getStats()).forEach((s) => {
            if (s.type !== "inbound-rtp") return;
            bytes += s.bytesReceived || 0;
            if (s.kind === "video" && s.frameWidth) {
              fps = s.framesPerSecond || 0;
              size = s.frameWidth + "x" + s.frameHeight;
            }
          });
          const now = performance.now();
          const kbps = bytes >= last ? ((bytes - last) * 8) / (now - at) : 0;
          last = bytes; at = now;
          statsLine.textContent = `receiving ${kbps.toFixed(0)} kbit/s, ${size || "no video"} at ${fps.toFixed(0)} fps`;
        }, 1000);
      }
    }

    disconnectedCallback() {
      clearInterval(this.statsTimer);
      if (this.player) this.player.close();
      this.player = null;
    }

    stats() { return this.player ? this.player.stats() : Promise.resolve({ framesDecoded: 0, packetsReceived: 0 }); }
  }
  customElements.define("whep-player", WhepPlayer);
}
