#!/usr/bin/env python3
"""Contract fakes of the vendors whipgate's backend adapters talk to (tests/e2e/vendors.sh).

    vendor_fakes.py [--origin URL] [--base-port N] [secrets and knobs below]
    vendor_fakes.py --self-test

One process, stdlib + aiohttp only. Every fake checks what its vendor checks (JWT, SigV4,
bearers, content types, body fields) with hand-written hmac/hashlib code, so a bug shared
with whipgate's Rust crates cannot hide, and answers in the vendor's documented shapes
(/work/shared/vendor-contracts.md sections 2-5 and 10). None of them carries media: each
WHIP/WHEP endpoint forwards the offer to the ORIGIN, a whipgate whose built-in SFU serves
{origin}/whip/{stream} and {origin}/whep/{stream} (201 + answer + absolute Location), and
forwards PATCH and DELETE to the Location the origin gave. Media flows client <-> origin SFU.

Ports (base = --base-port, default 7300), all on 127.0.0.1; those reached as "localhost"
(the vendors whose media host differs from the API host) also on ::1 when it exists:

    base+1   LiveKit server        POST /whip/v1, PATCH|DELETE /whip/v1/{id},
                                   POST /twirp/livekit.Ingress/{CreateIngress,DeleteIngress,ListIngress}
    base+2   LiveKit ingress       POST /w (Bearer <stream_key>, prefix optional) or /w/{key},
                                   PATCH|DELETE /w/{key}/{resource}
    base+3   IVS API               POST /CreateParticipantToken, POST /DisconnectParticipant (SigV4)
    base+4   IVS global WHIP       POST / -> 307 (--ivs-redirects times in all) -> regional
    base+5   IVS regional WHIP     reached as http://localhost:base+5/{stage id}; /resource/{id}
    base+6   Cloudflare API        /client/v4/accounts/{account}/stream/live_inputs[/{uid}]
    base+7   Cloudflare media      POST /{secret}/webRTC/publish, POST /{uid}/webRTC/play, sessions
    base+8   Millicast director    POST /api/whip/{stream}, POST /api/whep/{account}/{stream}
    base+9   Millicast media       reached as http://localhost:base+9/api/{whip,whep}/{id}
    base+10  webhook provisioner   POST (any path), X-Whipgate-Signature: sha256=<hex>
    base+11  WHIP server           POST /whip/{stream}, /whep/{stream}; /resource/{id}

Secrets come from options, each with an environment fallback (FAKE_<OPTION>, e.g.
FAKE_LIVEKIT_SECRET for --livekit-secret); the defaults are the fixtures of
vendor-contracts.md so a bare run works:

    --livekit-key APIxxxx  --livekit-secret ...          HS256 key pair (iss = key)
    --ivs-access-key  --ivs-secret-key  [--ivs-session-token]   SigV4 credentials; with a
                                   session token every signed call must carry it
    --ivs-region us-east-1  --ivs-stage-arn arn:aws:ivs:...:stage/...
    --ivs-stream live-ivs          origin stream of the stage's first live participant (the
                                   next concurrent ones get live-ivs-2, -3, ...: IVS does not
                                   know whipgate's stream names, only the stage)
    --ivs-redirects 2              307 hops before the regional host (>= 1)
    --cf-account  --cf-token       account id in the path, API token
    --cf-rate-limit 0  --cf-rate-window 300   > N API calls per window -> 429 (0: off)
    --millicast-account k9Mwad  --millicast-publish-token ...
    [--millicast-subscribe-token]  WHEP needs it as Bearer when set
    [--millicast-stream-regex .*]  stream names the publish token allows
    --webhook-secret ...           HMAC-SHA256 key of X-Whipgate-Signature

Every port answers GET /_fake/state with its vendor's record (JSON):

    {"vendor", "seq": last event number, "calls": {op: requests seen},
     "errors": [{"seq", "op", "status", "reason"}],            every refusal, with its status
     "history": [{"seq", "time", "op", ...}],                  every accepted operation
     ... vendor tables: participants, ingresses, inputs, sessions, events (see each class)}

"seq" is shared by all fakes, so a test takes it before acting and keeps the later entries.
The process prints one line per request (secrets redacted) and "READY" once all ports listen.
--self-test checks the JWT, SigV4 and HMAC code against the fixtures of vendor-contracts.md.
"""

import argparse
import asyncio
import base64
import collections
import datetime
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
import zlib
from urllib.parse import parse_qsl, quote, urljoin

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
GO_TEXT = "text/plain; charset=utf-8"  # what Go's http.Error and sniffing produce
SEQ = itertools.count(1)
LAST_SEQ = [0]
REDACT = set()  # every secret this process knows or minted: never printed


def log(msg):
    for s in sorted(REDACT, key=len, reverse=True):
        if s:
            msg = msg.replace(s, "<redacted>")
    print(msg, flush=True)


def rand_id(prefix="", n=12):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def respond(status, body=b"", content_type=None, headers=None):
    h = CIMultiDict(headers or {})
    if content_type:
        h["Content-Type"] = content_type
    if isinstance(body, str):
        body = body.encode()
    return web.Response(status=status, body=body, headers=h)


def json_body(obj):
    return json.dumps(obj, separators=(",", ":"))


def bearer(request):
    """The token of `Authorization: Bearer <t>` (exact prefix), else None."""
    value = request.headers.get("Authorization")
    if value and value.startswith("Bearer "):
        return value[len("Bearer "):]
    return None


def ice_ufrag(sdp_text):
    m = re.search(r"^a=ice-ufrag:(\S+)", sdp_text, re.M)
    return m.group(1) if m else None


class Reply(Exception):
    """Raised by a handler to answer with this response (refusals, mostly)."""

    def __init__(self, response):
        super().__init__(response.status)
        self.response = response


# ================================================================== checks

class CheckError(Exception):
    """A credential check failed; args[0] is the reason, `kind` a vendor error name."""

    def __init__(self, reason, kind=None):
        super().__init__(reason)
        self.kind = kind


def b64url_decode(segment):
    # JWT segments are unpadded base64url (RFC 7515 2): '=' or '+/' mean a broken encoder.
    if not re.fullmatch(r"[A-Za-z0-9_-]*", segment):
        raise CheckError("segment is not unpadded base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_hs256(token, secret_for, now, leeway=60):
    """Verify a LiveKit access token as protocol/auth does: HS256 only, secret looked up by
    iss, exp required, 60 s leeway. Returns (header, claims); raises CheckError(reason,
    kind) with kind "api_key" (unknown iss), "parse" (not a JWT) or "verify"."""
    parts = token.split(".")
    if len(parts) != 3:
        raise CheckError("token is not three dot-separated segments", "parse")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, CheckError) as e:
        raise CheckError("token does not decode: %s" % e, "parse")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise CheckError("token header or payload is not a JSON object", "parse")
    secret = secret_for(claims.get("iss"))
    if secret is None:
        raise CheckError("invalid API key: %s" % claims.get("iss"), "api_key")
    if header.get("alg") != "HS256":
        raise CheckError("unexpected signature algorithm %r" % header.get("alg"), "verify")
    expected = hmac.new(secret.encode(), (parts[0] + "." + parts[1]).encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise CheckError("go-jose/go-jose: error in cryptographic primitive", "verify")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise CheckError("go-jose/go-jose/jwt: validation failed, no claim 'exp'", "verify")
    if now > exp + leeway:
        raise CheckError("go-jose/go-jose/jwt: validation failed, token is expired (exp)", "verify")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and now < nbf - leeway:
        raise CheckError("go-jose/go-jose/jwt: validation failed, token not valid yet (nbf)", "verify")
    return header, claims


AMZ_DATE = "%Y%m%dT%H%M%SZ"


def sigv4_verify(method, raw_path, query, headers, body, credentials, region, service, now,
                 session_token=None, max_skew=300):
    """Recompute an AWS SigV4 header signature from what arrived on the wire.

    headers: a case-insensitive multidict; credentials: {access key id: secret}.
    Returns what was verified; raises CheckError(message, AWS error type)."""
    auth = headers.get("Authorization")
    if not auth:
        raise CheckError("Missing Authentication Token", "MissingAuthenticationTokenException")
    m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*"
                     r"Signature=([0-9a-f]{64})", auth.strip())
    if not m:
        raise CheckError("Authorization header requires 'Credential', 'SignedHeaders' and "
                         "'Signature' parameters (AWS4-HMAC-SHA256)", "IncompleteSignatureException")
    credential, signed, signature = m.groups()
    scope_parts = credential.split("/")
    if len(scope_parts) != 5 or scope_parts[4] != "aws4_request":
        raise CheckError("Credential should be <key>/<date>/<region>/<service>/aws4_request, got '%s'"
                         % "/".join(scope_parts[1:]), "IncompleteSignatureException")
    akid, day, scope_region, scope_service, _ = scope_parts
    if akid not in credentials:
        raise CheckError("The security token included in the request is invalid.",
                         "UnrecognizedClientException")
    signed_list = signed.split(";")
    if signed_list != sorted(signed_list) or any(h != h.lower() for h in signed_list):
        raise CheckError("SignedHeaders must be lowercase and sorted: %s" % signed, "InvalidSignatureException")
    if "host" not in signed_list:
        raise CheckError("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
                         "InvalidSignatureException")
    amz_date = headers.get("X-Amz-Date")
    if not amz_date:
        raise CheckError("Authorization header requires existence of either a 'X-Amz-Date' or "
                         "a 'Date' header.", "IncompleteSignatureException")
    if "x-amz-date" not in signed_list:
        raise CheckError("'X-Amz-Date' is present but not a SignedHeader", "InvalidSignatureException")
    try:
        when = datetime.datetime.strptime(amz_date, AMZ_DATE).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise CheckError("X-Amz-Date %r is not yyyymmddThhmmssZ" % amz_date, "IncompleteSignatureException")
    skew = now - when.timestamp()
    if abs(skew) > max_skew:
        raise CheckError("Signature expired: %s is now earlier than %s (%s - 5 min.)" % (
            amz_date, time.strftime(AMZ_DATE, time.gmtime(now - max_skew)),
            time.strftime(AMZ_DATE, time.gmtime(now))) if skew > 0 else
            "Signature not yet current: %s is still later than %s (%s + 5 min.)" % (
                amz_date, time.strftime(AMZ_DATE, time.gmtime(now + max_skew)),
                time.strftime(AMZ_DATE, time.gmtime(now))), "InvalidSignatureException")
    if day != amz_date[:8]:
        raise CheckError("Date in Credential scope does not match YYYYMMDD from ISO-8601 version "
                         "of date from HTTP: '%s' != '%s'" % (day, amz_date[:8]), "InvalidSignatureException")
    if scope_region != region:
        raise CheckError("Credential should be scoped to a valid region, not '%s'." % scope_region,
                         "InvalidSignatureException")
    if scope_service != service:
        raise CheckError("Credential should be scoped to correct service: '%s'." % service,
                         "InvalidSignatureException")
    token = headers.get("X-Amz-Security-Token")
    if session_token is not None and token != session_token:
        raise CheckError("The security token included in the request is invalid.", "UnrecognizedClientException")
    body_hash = hashlib.sha256(body).hexdigest()
    claimed_hash = headers.get("X-Amz-Content-Sha256")
    if claimed_hash is not None and claimed_hash != body_hash:
        raise CheckError("The provided 'x-amz-content-sha256' header does not match what was computed.",
                         "InvalidSignatureException")

    canonical_headers = ""
    for name in signed_list:
        values = headers.getall(name, [])
        if not values:
            raise CheckError("signed header %r is not in the request" % name, "InvalidSignatureException")
        canonical_headers += "%s:%s\n" % (name, ",".join(" ".join(v.split()) for v in values))
    # Non-S3 services encode each path segment once more than it arrived (double encoding).
    canonical_path = "/".join(quote(seg, safe="-_.~") for seg in (raw_path or "/").split("/"))
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                   for k, v in parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join("%s=%s" % kv for kv in pairs)
    canonical = "\n".join([method, canonical_path, canonical_query, canonical_headers, signed, body_hash])
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + credentials[akid]).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise CheckError("The request signature we calculated does not match the signature you "
                         "provided. Check your AWS Secret Access Key and signing method.",
                         "InvalidSignatureException")
    return {"access_key": akid, "scope": scope, "signed_headers": signed_list,
            "session_token": token is not None,
            "session_token_signed": "x-amz-security-token" in signed_list,
            "skew_seconds": round(skew, 1)}


def webhook_signature(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ================================================================== origin

class Leg:
    """One session on the origin: where to send PATCH and DELETE."""

    def __init__(self, kind, stream, location, etag):
        self.kind, self.stream, self.location, self.etag = kind, stream, location, etag
        self.live = True


class Origin:
    """The real media server behind every fake (a whipgate with its built-in SFU)."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.http = None

    async def start(self):
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def close(self):
        if self.http:
            await self.http.close()

    async def create(self, kind, stream, offer):
        """POST the offer to {origin}/{kind}/{stream}: (status, headers, body, Leg or None).
        status 0 means the origin could not be reached."""
        url = "%s/%s/%s" % (self.base, kind, quote(stream, safe=""))
        try:
            async with self.http.post(url, data=offer, headers={"Content-Type": SDP},
                                      allow_redirects=False) as r:
                body = await r.read()
                if r.status == 201 and r.headers.get("Location"):
                    leg = Leg(kind, stream, urljoin(url, r.headers["Location"]), r.headers.get("ETag"))
                    return r.status, r.headers, body, leg
                return r.status, r.headers, body, None
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return 0, {}, str(e).encode(), None

    async def patch(self, leg, body, content_type, restart):
        """Forward a PATCH: the origin's own ETag for trickle, `*` for an ICE restart (the
        client's If-Match names the vendor's ETag, which the origin never issued)."""
        headers = {"Content-Type": content_type}
        if restart:
            headers["If-Match"] = "*"
        elif leg.etag:
            headers["If-Match"] = leg.etag
        try:
            async with self.http.patch(leg.location, data=body, headers=headers) as r:
                answer = await r.read()
                if r.status == 200 and r.headers.get("ETag"):
                    leg.etag = r.headers["ETag"]
                return r.status, r.headers, answer
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return 0, {}, str(e).encode()

    async def delete(self, leg):
        """DELETE the origin session once; the status (0: unreachable, None: already gone)."""
        if not leg or not leg.live:
            return None
        leg.live = False
        try:
            async with self.http.delete(leg.location) as r:
                await r.read()
                return r.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return 0


# ================================================================== common fake

class Fake:
    """Request counting, history, refusals and the /_fake/state endpoint of one vendor."""

    name = "?"

    def __init__(self, cfg, origin):
        self.cfg, self.origin = cfg, origin
        self.calls = collections.Counter()
        self.errors = []
        self.history = []

    def call(self, op):
        self.calls[op] += 1

    def record(self, op, **fields):
        seq = next(SEQ)
        LAST_SEQ[0] = seq
        entry = {"seq": seq, "time": round(time.time(), 3), "op": op}
        entry.update(fields)
        self.history.append(entry)
        return entry

    def fail(self, op, status, reason, response):
        """Note a refusal and return it as a Reply to raise."""
        self.note_error(op, status, reason)
        log("%s %s refused %d: %s" % (self.name, op, status, reason))
        return Reply(response)

    def note_error(self, op, status, reason):
        seq = next(SEQ)
        LAST_SEQ[0] = seq
        self.errors.append({"seq": seq, "op": op, "status": status, "reason": reason})

    def tables(self):
        return {}

    def state(self):
        out = {"vendor": self.name, "seq": LAST_SEQ[0], "calls": dict(self.calls),
               "errors": self.errors, "history": self.history}
        out.update(self.tables())
        return out

    async def handle_state(self, request):
        return web.json_response(self.state(), dumps=lambda o: json.dumps(o, indent=1, default=str))

    @web.middleware
    async def middleware(self, request, handler):
        try:
            response = await handler(request)
        except Reply as r:
            response = r.response
        except web.HTTPException as e:  # aiohttp's own 404/405/413 for unknown routes etc.
            if e.status >= 400:
                self.note_error("http", e.status, "%s %s: %s" % (request.method, request.path, e.reason))
            log("%s %s %s -> %d" % (self.name, request.method, request.path_qs, e.status))
            raise
        if request.path != "/_fake/state":
            log("%s %s %s -> %d" % (self.name, request.method, request.path_qs, response.status))
        return response

    def app(self, routes, max_body=1024 * 1024):
        app = web.Application(middlewares=[self.middleware], client_max_size=max_body)
        app.router.add_get("/_fake/state", self.handle_state)
        app.add_routes(routes)
        return app

    def apps(self):
        """[(port offset, aiohttp app, also on ::1)]"""
        raise NotImplementedError


def rows(table):
    """A table's records without their origin Leg (internal, not JSON)."""
    return [{k: v for k, v in r.items() if k != "leg"} for r in table.values()]


def origin_refusal(status, body):
    return "origin answered %s: %s" % (status or "nothing", body.decode(errors="replace").strip()[:200])


# ================================================================== LiveKit

class LiveKit(Fake):
    """livekit-server's native WHIP (/whip/v1, participant JWT) and the Ingress service
    (Twirp CreateIngress/DeleteIngress + the ingress WHIP endpoint on its own port).

    Tables: participants [{participant_id, identity, room, live, replaced_by, claims}],
    ingresses [IngressInfo + deleted], ingress_sessions [{resource_id, ingress_id, live}]."""

    name = "livekit"
    TWIRP_STATUS = {"unauthenticated": 401, "permission_denied": 403, "invalid_argument": 400,
                    "malformed": 400, "not_found": 404, "already_exists": 409, "bad_route": 404,
                    "resource_exhausted": 429, "failed_precondition": 412, "unimplemented": 501,
                    "unavailable": 503, "internal": 500}
    INPUTS = {0: "RTMP_INPUT", 1: "WHIP_INPUT", 2: "URL_INPUT"}

    def __init__(self, cfg, origin):
        super().__init__(cfg, origin)
        self.participants = {}
        self.ingresses = {}
        self.sessions = {}

    def apps(self):
        server = self.app([
            web.options("/whip/v1", self.whip_options),
            web.get("/whip/v1", self.no_content),
            web.get("/whip/v1/{pid}", self.no_content),
            web.post("/whip/v1", self.whip_create),
            web.patch("/whip/v1/{pid}", self.whip_patch),
            web.delete("/whip/v1/{pid}", self.whip_delete),
            web.post("/twirp/livekit.Ingress/{method}", self.twirp),
        ])
        ingress = self.app([
            web.post("/{app}", self.ingress_create),
            web.post("/{app}/{key}", self.ingress_create),
            web.patch("/{app}/{key}/{rid}", self.ingress_patch),
            web.delete("/{app}/{key}/{rid}", self.ingress_delete),
        ])
        return [(1, server, False), (2, ingress, False)]

    def tables(self):
        return {"participants": rows(self.participants), "ingresses": rows(self.ingresses),
                "ingress_sessions": rows(self.sessions)}

    # ------------------------------------------------------------ auth (APIKeyAuthMiddleware)
    def authenticate(self, request, op):
        """Grants of the request's token, None without one; a refusal as Go's http.Error
        (401 text/plain) like livekit-server's middleware, which echoes a bad token."""
        header = request.headers.get("Authorization")
        if header:
            if not header.startswith("Bearer "):
                raise self.fail(op, 401, "Authorization without the exact 'Bearer ' prefix",
                                respond(401, "invalid authorization header. Must start with Bearer \n", GO_TEXT))
            token, source = header[len("Bearer "):], "header"
        else:
            token, source = request.query.get("access_token", ""), "query"
        if not token:
            return None, None
        try:
            _, claims = verify_hs256(token, lambda iss: self.cfg.livekit_secret if iss == self.cfg.livekit_key else None,
                                     time.time())
        except CheckError as e:
            if e.kind == "parse":
                msg = "invalid authorization token"
            elif e.kind == "api_key":
                msg = str(e)
            else:
                msg = "invalid token: %s, error: %s" % (token, e)
            raise self.fail(op, 401, "token refused: %s" % e, respond(401, msg + "\n", GO_TEXT))
        claims["_source"] = source
        return claims, token

    def ensure_join(self, claims, op, content_type):
        """EnsureJoinPermission: (room, identity) or a 401 in WHIPService.handleError's shape."""
        def refuse(status, msg):
            return self.fail(op, status, msg, respond(status, json_body({"error": msg}) + "\n", content_type))
        video = (claims or {}).get("video")
        if not isinstance(video, dict):
            raise refuse(401, "permissions denied")
        if video.get("roomJoin") is not True:
            raise refuse(401, "permissions denied")
        room = video.get("room") or ""
        if not room:
            raise refuse(401, "room name cannot be empty")
        identity = claims.get("sub") or ""
        if not identity:
            raise refuse(400 if op == "whip.create" else 401, "participant identity cannot be empty")
        return room, identity

    @staticmethod
    def summary(claims):
        now = time.time()
        out = {k: v for k, v in claims.items() if k != "_source"}
        out["exp_in"] = round(claims["exp"] - now, 1)
        out["auth_source"] = claims.get("_source")
        return out

    # ------------------------------------------------------------ /whip/v1
    async def whip_options(self, request):
        return respond(200, headers={"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "*",
                                     "Access-Control-Allow-Methods": "PATCH, OPTIONS, GET, POST, DELETE",
                                     "Access-Control-Expose-Headers": "*"})

    async def no_content(self, request):
        return respond(204)

    async def whip_create(self, request):
        op = "whip.create"
        self.call(op)
        ctype = request.headers.get("Content-Type")
        if ctype != SDP:  # compared exactly: "application/sdp; charset=utf-8" fails too
            raise self.fail(op, 400, "Content-Type %r" % ctype,
                            respond(400, json_body({"error": "unsupported content-type: %s" % (ctype or "")}) + "\n", GO_TEXT))
        claims, _ = self.authenticate(request, op)
        room, identity = self.ensure_join(claims, op, SDP)
        video = claims["video"]
        if video.get("canPublish") is not True:
            # livekit-server lets such a participant join and drops its tracks; a publish
            # that can never carry media is refused here so that the test sees why.
            msg = "permissions denied"
            raise self.fail(op, 401, "video.canPublish is not true",
                            respond(401, json_body({"error": msg}) + "\n", SDP))
        offer = await request.read()
        if not offer:
            raise self.fail(op, 400, "empty body", respond(400, json_body({"error": "body does not have SDP offer"}) + "\n", SDP))
        if not offer.startswith(b"v=0"):
            raise self.fail(op, 400, "not an SDP offer",
                            respond(400, json_body({"error": "malformed SDP offer: SDP: invalid syntax"}) + "\n", SDP))
        # A second live participant with the same identity in the room replaces the first
        # (livekit-server's duplicate-identity rule): whipgate must make identities unique.
        pid = rand_id("PA_")
        for other in self.participants.values():
            if other["live"] and other["room"] == room and other["identity"] == identity:
                other["live"], other["replaced_by"] = False, pid
                await self.origin.delete(other["leg"])
        status, _, body, leg = await self.origin.create("whip", room, offer)
        if leg is None:
            msg = origin_refusal(status, body)
            raise self.fail(op, 503, msg, respond(503, json_body({"error": msg}) + "\n", SDP))
        answer = body.decode(errors="replace")
        etag = ice_ufrag(answer) or rand_id(n=8)
        summary = self.summary(claims)
        self.participants[pid] = {"participant_id": pid, "identity": identity, "room": room, "live": True,
                                  "replaced_by": None, "etag": etag, "claims": summary, "leg": leg}
        self.record(op, participant_id=pid, identity=identity, room=room, claims=summary,
                    request_id=request.headers.get("X-Request-Id"))
        return respond(201, body, SDP, {"Location": "/whip/v1/%s" % pid, "ETag": etag})

    def live_participant(self, pid, room, identity):
        p = self.participants.get(pid)
        if p and p["live"] and p["room"] == room and p["identity"] == identity:
            return p
        return None

    async def whip_patch(self, request):
        op = "whip.patch"
        self.call(op)
        ctype = request.headers.get("Content-Type")
        if ctype != SDPFRAG:
            raise self.fail(op, 400, "Content-Type %r" % ctype,
                            respond(400, json_body({"error": "unsupported content-type: %s" % (ctype or "")}) + "\n", GO_TEXT))
        if_match = request.headers.get("If-Match")
        if not if_match:
            raise self.fail(op, 428, "no If-Match", respond(428, json_body({"error": "missing entity tag"}) + "\n", SDPFRAG))
        claims, _ = self.authenticate(request, op)
        room, identity = self.ensure_join(claims, op, SDPFRAG)
        pid = request.match_info["pid"]
        fragment = await request.read()
        p = self.live_participant(pid, room, identity)
        if p is None:
            # The RPC goes to the participant topic of (room, identity): another participant's
            # token, or a gone one, finds nobody.
            raise self.fail(op, 404, "no live participant %s for identity %s in room %s" % (pid, identity, room),
                            respond(404, json_body({"error": "participant not found"}) + "\n", SDPFRAG))
        restart = if_match == "*"
        status, _, body = await self.origin.patch(p["leg"], fragment, SDPFRAG, restart)
        self.record(op, participant_id=pid, mode="restart" if restart else "trickle", if_match=if_match,
                    origin_status=status)
        if restart:
            if status != 200:
                raise self.fail(op, 500, origin_refusal(status, body),
                                respond(500, json_body({"error": "ICE restart failed"}) + "\n", SDPFRAG))
            p["etag"] = ice_ufrag(body.decode(errors="replace")) or rand_id(n=8)
            return respond(200, body, SDPFRAG, {"ETag": p["etag"]})
        if status not in (200, 204):
            raise self.fail(op, 500, origin_refusal(status, body),
                            respond(500, json_body({"error": "ICE trickle failed"}) + "\n", SDPFRAG))
        return respond(204)

    async def whip_delete(self, request):
        op = "whip.delete"
        self.call(op)
        claims, _ = self.authenticate(request, op)
        room, identity = self.ensure_join(claims, op, GO_TEXT)
        pid = request.match_info["pid"]
        p = self.live_participant(pid, room, identity)
        if p is None:
            known = self.participants.get(pid)
            why = "unknown participant" if known is None else (
                "participant gone" if not known["live"] else
                "token is for identity %s room %s, participant is %s in %s" % (identity, room, known["identity"], known["room"]))
            raise self.fail(op, 404, "DELETE %s: %s" % (pid, why),
                            respond(404, json_body({"error": "participant not found"}) + "\n", GO_TEXT))
        p["live"] = False
        origin_status = await self.origin.delete(p["leg"])
        self.record(op, participant_id=pid, identity=identity, room=room, matched=True,
                    claims=self.summary(claims), origin_status=origin_status)
        return respond(200)

    # ------------------------------------------------------------ Twirp Ingress API
    def twirp_error(self, op, code, msg):
        status = self.TWIRP_STATUS[code]
        return self.fail(op, status, "%s: %s" % (code, msg),
                         respond(status, json_body({"code": code, "msg": msg}), "application/json"))

    @staticmethod
    def field(body, snake, default=None):
        """protojson accepts the proto name and the JSON (lowerCamel) name."""
        if snake in body:
            return body[snake]
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), snake)
        return body.get(camel, default)

    async def twirp(self, request):
        method = request.match_info["method"]
        op = "twirp.%s" % method
        self.call(op)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype != "application/json":
            # Twirp answers an unsupported content type as a bad route; protobuf bodies are
            # valid for LiveKit but this fake speaks the JSON form only.
            raise self.twirp_error(op, "bad_route", 'unexpected Content-Type: "%s"' % ctype)
        claims, _ = self.authenticate(request, op)
        if not (isinstance((claims or {}).get("video"), dict) and claims["video"].get("ingressAdmin") is True):
            raise self.twirp_error(op, "unauthenticated", "permissions denied")
        try:
            body = json.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as e:
            raise self.twirp_error(op, "malformed", "the json request could not be decoded: %s" % e)
        handler = {"CreateIngress": self.create_ingress, "DeleteIngress": self.delete_ingress,
                   "ListIngress": self.list_ingress}.get(method)
        if handler is None:
            if method == "UpdateIngress":
                raise self.twirp_error(op, "unimplemented", "UpdateIngress is not faked")
            raise self.twirp_error(op, "bad_route", "no handler for path \"/twirp/livekit.Ingress/%s\"" % method)
        return await handler(op, body, self.summary(claims))

    async def create_ingress(self, op, body, claims):
        input_type = self.field(body, "input_type", 0)
        input_type = self.INPUTS.get(input_type, input_type)
        if input_type != "WHIP_INPUT":
            raise self.twirp_error(op, "invalid_argument",
                                   "this fake serves input_type WHIP_INPUT only, got %s" % input_type)
        room = self.field(body, "room_name", "")
        identity = self.field(body, "participant_identity", "")
        if not room:
            raise self.twirp_error(op, "invalid_argument", "missing room name")
        if not identity:
            raise self.twirp_error(op, "invalid_argument", "missing participant identity")
        transcoding = self.field(body, "enable_transcoding")
        if transcoding is None:
            transcoding = not self.field(body, "bypass_transcoding", True)
        info = {
            "ingress_id": rand_id("IN_"), "name": self.field(body, "name", ""),
            "stream_key": rand_id(n=12), "url": "http://127.0.0.1:%d/w" % (self.cfg.base_port + 2),
            "input_type": "WHIP_INPUT", "bypass_transcoding": not transcoding,
            "enable_transcoding": bool(transcoding),
            "audio": self.field(body, "audio"), "video": self.field(body, "video"),
            "room_name": room, "participant_identity": identity,
            "participant_name": self.field(body, "participant_name", ""),
            "participant_metadata": self.field(body, "participant_metadata", ""),
            "reusable": True, "state": self.ingress_state("ENDPOINT_INACTIVE"), "enabled": True,
        }
        REDACT.add(info["stream_key"])
        self.ingresses[info["ingress_id"]] = dict(info, deleted=False)
        self.record(op, ingress_id=info["ingress_id"], name=info["name"], room_name=room,
                    participant_identity=identity, input_type=input_type, claims=claims)
        return respond(200, json_body(info), "application/json")

    @staticmethod
    def ingress_state(status, started="0", ended="0", resource=""):
        return {"status": status, "error": "", "video": None, "audio": None, "room_id": "",
                "started_at": started, "ended_at": ended, "updated_at": str(time.time_ns()),
                "resource_id": resource, "tracks": []}

    async def delete_ingress(self, op, body, claims):
        iid = self.field(body, "ingress_id", "")
        info = self.ingresses.get(iid)
        if info is None or info["deleted"]:
            raise self.twirp_error(op, "not_found", "ingress does not exist")
        # A publishing ingress is stopped first; whipgate should have ended its session.
        stopped = False
        for s in self.sessions.values():
            if s["ingress_id"] == iid and s["live"]:
                s["live"], stopped = False, True
                await self.origin.delete(s["leg"])
        info["deleted"] = True
        info["state"] = self.ingress_state("ENDPOINT_INACTIVE", info["state"]["started_at"],
                                           str(time.time_ns()), info["state"]["resource_id"])
        self.record(op, ingress_id=iid, stopped_live_session=stopped, claims=claims)
        return respond(200, json_body({k: v for k, v in info.items() if k != "deleted"}), "application/json")

    async def list_ingress(self, op, body, claims):
        room, iid = self.field(body, "room_name", ""), self.field(body, "ingress_id", "")
        items = [{k: v for k, v in i.items() if k != "deleted"} for i in self.ingresses.values()
                 if not i["deleted"] and (not room or i["room_name"] == room) and (not iid or i["ingress_id"] == iid)]
        self.record(op, room_name=room, ingress_id=iid, count=len(items))
        return respond(200, json_body({"items": items}), "application/json")

    # ------------------------------------------------------------ ingress WHIP endpoint
    async def ingress_create(self, request):
        op = "ingress.create"
        self.call(op)
        if request.match_info["app"] != "w":
            raise self.fail(op, 404, "unknown app %s" % request.match_info["app"], respond(404, "404 page not found\n", GO_TEXT))
        key, form = request.match_info.get("key"), "path"
        if key is None:
            value = request.headers.get("Authorization", "")
            # The ingress trims an optional "Bearer " (some encoders send the bare key).
            key, form = (value[len("Bearer "):], "bearer") if value.startswith("Bearer ") else (value, "bare")
        info = next((i for i in self.ingresses.values() if i["stream_key"] == key and key), None)
        if info is None or info["deleted"]:
            raise self.fail(op, 404, "no ingress for the stream key (%s)" % form, respond(404, "ingress not found\n", GO_TEXT))
        if any(s["ingress_id"] == info["ingress_id"] and s["live"] for s in self.sessions.values()):
            raise self.fail(op, 409, "ingress %s already publishing" % info["ingress_id"],
                            respond(409, "ingress already publishing\n", GO_TEXT))
        offer = await request.read()
        if not offer.startswith(b"v=0"):
            raise self.fail(op, 400, "not an SDP offer", respond(400, "invalid SDP offer\n", GO_TEXT))
        status, _, body, leg = await self.origin.create("whip", info["room_name"], offer)
        if leg is None:
            raise self.fail(op, 500, origin_refusal(status, body), respond(500))
        rid = rand_id("WH_")
        self.sessions[rid] = {"resource_id": rid, "ingress_id": info["ingress_id"], "live": True, "leg": leg}
        info["state"] = self.ingress_state("ENDPOINT_PUBLISHING", str(time.time_ns()), "0", rid)
        self.record(op, ingress_id=info["ingress_id"], resource_id=rid, auth_form=form, room=info["room_name"])
        return respond(201, body, SDP, {
            "Location": "/w/%s/%s" % (key, rid), "ETag": "%08x" % zlib.crc32(offer),
            "Access-Control-Expose-Headers": "Location", "Access-Control-Allow-Headers": "*"})

    def ingress_session(self, request, op):
        s = self.sessions.get(request.match_info["rid"])
        info = s and self.ingresses.get(s["ingress_id"])
        if not s or not s["live"] or info["stream_key"] != request.match_info["key"] or request.match_info["app"] != "w":
            raise self.fail(op, 404, "no live ingress session at this path", respond(404, "session not found\n", GO_TEXT))
        return s, info

    async def ingress_patch(self, request):
        op = "ingress.patch"
        self.call(op)
        s, _ = self.ingress_session(request, op)
        if request.headers.get("If-Match") != "*":
            # livekit/ingress#236: only ICE restarts are implemented.
            raise self.fail(op, 405, "trickle PATCH (If-Match %r)" % request.headers.get("If-Match"),
                            respond(405, "trickle not supported\n", GO_TEXT))
        status, _, body = await self.origin.patch(s["leg"], await request.read(), SDPFRAG, True)
        self.record(op, resource_id=s["resource_id"], origin_status=status)
        if status != 200:
            raise self.fail(op, 500, origin_refusal(status, body), respond(500))
        return respond(200, body, SDPFRAG, {"ETag": "%08x" % zlib.crc32(body)})

    async def ingress_delete(self, request):
        op = "ingress.delete"
        self.call(op)
        s, info = self.ingress_session(request, op)
        s["live"] = False
        origin_status = await self.origin.delete(s["leg"])
        info["state"] = self.ingress_state("ENDPOINT_INACTIVE", info["state"]["started_at"],
                                           str(time.time_ns()), s["resource_id"])
        self.record(op, ingress_id=s["ingress_id"], resource_id=s["resource_id"], origin_status=origin_status)
        return respond(200)


# ================================================================== Amazon IVS

class Ivs(Fake):
    """IVS real-time: the SigV4 rest-json API (CreateParticipantToken, DisconnectParticipant)
    and the WHIP host: a global endpoint that 307s (several times) to a regional one on
    host `localhost`, which checks the participant token again and wants H.264.

    Tables: participants [{participantId, userId, ..., disconnected, origin_stream}],
    resources [{resource_id, participantId, live, origin_stream}]."""

    name = "ivs"
    ARN = re.compile(r"arn:aws:ivs:[a-z0-9-]+:[0-9]+:stage/[a-zA-Z0-9-]+")

    def __init__(self, cfg, origin):
        super().__init__(cfg, origin)
        self.participants = {}
        self.by_token = {}
        self.resources = {}
        self.hops = collections.defaultdict(list)  # token -> redirects served since its last POST
        self.stage_id = cfg.ivs_stage_arn.rsplit("/", 1)[-1]

    def apps(self):
        api = self.app([web.post("/{op}", self.api)])
        glob = self.app([web.route("*", "/{tail:.*}", self.global_whip)])
        regional = self.app([
            web.post("/{stage}", self.regional_create),
            web.patch("/resource/{rid}", self.regional_patch),
            web.delete("/resource/{rid}", self.regional_delete),
        ])
        return [(3, api, False), (4, glob, True), (5, regional, True)]

    def tables(self):
        return {"participants": rows(self.participants), "resources": rows(self.resources)}

    # ------------------------------------------------------------ API
    def aws_error(self, op, status, kind, message, field="exceptionMessage"):
        # Auth failures come from the AWS front end ({"message"}); modelled IVS errors carry
        # "exceptionMessage" (botocore ivs-realtime model).
        return self.fail(op, status, "%s: %s" % (kind, message), respond(
            status, json_body({field: message}), "application/json",
            {"x-amzn-ErrorType": kind, "x-amzn-RequestId": rand_id(n=8) + "-" + rand_id(n=4)}))

    async def api(self, request):
        op = request.match_info["op"]
        self.call(op)
        if op not in ("CreateParticipantToken", "DisconnectParticipant"):
            raise self.aws_error(op, 404, "UnknownOperationException", "unknown operation %s" % op, "message")
        body = await request.read()
        try:
            sig = sigv4_verify(request.method, request.raw_path.split("?")[0], request.query_string,
                               request.headers, body, {self.cfg.ivs_access_key: self.cfg.ivs_secret_key},
                               self.cfg.ivs_region, "ivs", time.time(), self.cfg.ivs_session_token)
        except CheckError as e:
            raise self.aws_error(op, 403, e.kind, str(e), "message")
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as e:
            raise self.aws_error(op, 400, "ValidationException", "request body is not a JSON object: %s" % e)
        arn = data.get("stageArn")
        if not isinstance(arn, str) or not 1 <= len(arn) <= 128 or not self.ARN.fullmatch(arn):
            raise self.aws_error(op, 400, "ValidationException",
                                 "1 validation error detected: Value at 'stageArn' failed to satisfy constraint: "
                                 "Member must satisfy regular expression pattern: %s" % self.ARN.pattern)
        if arn != self.cfg.ivs_stage_arn:
            raise self.aws_error(op, 404, "ResourceNotFoundException", "Stage not found: %s" % arn)
        if op == "CreateParticipantToken":
            return await self.create_token(op, data, sig)
        return await self.disconnect(op, data, sig)

    async def create_token(self, op, data, sig):
        caps = data.get("capabilities")
        if caps != ["PUBLISH"]:
            # IVS accepts SUBSCRIBE (and defaults to both when absent); whipgate's contract
            # is a publish-only token, so anything else is refused here.
            raise self.aws_error(op, 400, "ValidationException",
                                 "capabilities must be [\"PUBLISH\"] for whipgate, got %s" % json.dumps(caps))
        duration = data.get("duration", 720)
        if not isinstance(duration, int) or isinstance(duration, bool) or not 1 <= duration <= 20160:
            raise self.aws_error(op, 400, "ValidationException",
                                 "Value at 'duration' failed to satisfy constraint: Member must have value between 1 and 20160")
        user = data.get("userId", "")
        if not isinstance(user, str) or len(user) > 128:
            raise self.aws_error(op, 400, "ValidationException",
                                 "Value at 'userId' failed to satisfy constraint: Member must have length less than or equal to 128")
        attributes = data.get("attributes", {})
        if (not isinstance(attributes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())
                or len(json_body(attributes)) > 1024):
            raise self.aws_error(op, 400, "ValidationException", "attributes must be a string map of at most 1 KB")
        pid = rand_id(n=12)
        token = secrets.token_urlsafe(96)  # opaque: AWS says not to parse it
        REDACT.add(token)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + duration * 60))
        p = {"participantId": pid, "token": token, "userId": user, "attributes": attributes,
             "duration": duration, "capabilities": caps, "expirationTime": expires}
        self.participants[pid] = dict(p, disconnected=False, reason=None, origin_stream=None)
        self.by_token[token] = pid
        self.record(op, participantId=pid, userId=user, duration=duration, capabilities=caps,
                    attributes=attributes, sigv4=sig)
        return respond(200, json_body({"participantToken": p}), "application/json")

    async def disconnect(self, op, data, sig):
        pid = data.get("participantId")
        if not isinstance(pid, str) or not pid:
            raise self.aws_error(op, 400, "ValidationException", "Value at 'participantId' must not be null")
        reason = data.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 128):
            raise self.aws_error(op, 400, "ValidationException", "Value at 'reason' must be at most 128 characters")
        p = self.participants.get(pid)
        if p is None:
            raise self.aws_error(op, 404, "ResourceNotFoundException", "Participant not found: %s" % pid)
        stopped = False
        for r in self.resources.values():
            if r["participantId"] == pid and r["live"]:
                r["live"], stopped = False, True
                await self.origin.delete(r["leg"])
        p["disconnected"], p["reason"] = True, reason
        self.record(op, participantId=pid, reason=reason, stopped_live_session=stopped, sigv4=sig)
        return respond(200, "{}", "application/json")

    # ------------------------------------------------------------ WHIP host
    def token_check(self, request, op):
        """(token, participant) for a usable Bearer participant token, else a 401."""
        token = bearer(request)
        pid = self.by_token.get(token) if token else None
        p = self.participants.get(pid) if pid else None
        if p is None:
            why = "no Authorization" if "Authorization" not in request.headers else "unknown participant token"
            raise self.fail(op, 401, why, respond(401, "Unauthorized\n", "text/plain"))
        if p["disconnected"] or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > p["expirationTime"]:
            raise self.fail(op, 401, "participant %s disconnected or token expired" % pid,
                            respond(401, "Unauthorized\n", "text/plain"))
        return token, p

    async def global_whip(self, request):
        op = "whip.global"
        self.call(op)
        if request.method != "POST":
            # A DELETE/PATCH here means a Location was resolved against the first URL
            # instead of the one after the redirects.
            raise self.fail(op, 404, "%s %s on the global host" % (request.method, request.path),
                            respond(404, "Not Found\n", "text/plain"))
        m = re.fullmatch(r"/_hop/(\d+)", request.path)
        hop = int(m.group(1)) if m else 0
        token, _ = self.token_check(request, op)
        body = await request.read()
        if not body:
            raise self.fail(op, 400, "redirected POST without its body", respond(400, "Bad Request\n", "text/plain"))
        if hop + 1 < self.cfg.ivs_redirects:
            target = "http://localhost:%d/_hop/%d" % (self.cfg.base_port + 4, hop + 1)
        else:
            target = "http://localhost:%d/%s" % (self.cfg.base_port + 5, self.stage_id)
        self.hops[token].append({"hop": hop, "host": request.host, "authorization": True, "body_bytes": len(body)})
        self.record("whip.redirect", hop=hop, host=request.host, to=target, body_bytes=len(body))
        return respond(307, headers={"Location": target, "Cache-Control": "no-store"})

    def free_stream(self):
        busy = {r["origin_stream"] for r in self.resources.values() if r["live"]}
        for n in itertools.count(1):
            name = self.cfg.ivs_stream if n == 1 else "%s-%d" % (self.cfg.ivs_stream, n)
            if name not in busy:
                return name

    async def regional_create(self, request):
        op = "whip.create"
        self.call(op)
        if request.match_info["stage"] != self.stage_id:
            raise self.fail(op, 404, "unknown stage path %s" % request.path, respond(404, "Not Found\n", "text/plain"))
        token, p = self.token_check(request, op)
        hops = self.hops.pop(token, [])
        if "PUBLISH" not in p["capabilities"]:
            raise self.fail(op, 403, "token cannot publish", respond(403, "Forbidden\n", "text/plain"))
        if any(r["participantId"] == p["participantId"] and r["live"] for r in self.resources.values()):
            raise self.fail(op, 409, "participant %s already publishing" % p["participantId"],
                            respond(409, "Conflict\n", "text/plain"))
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != SDP:
            raise self.fail(op, 400, "Content-Type %r" % ctype, respond(400, "Bad Request\n", "text/plain"))
        offer = await request.read()
        if not re.search(rb"^a=rtpmap:\d+ H264/90000", offer, re.M | re.I):
            raise self.fail(op, 400, "offer without an H.264 video codec",
                            respond(400, "an H.264 video track is required\n", "text/plain"))
        stream = self.free_stream()
        status, _, body, leg = await self.origin.create("whip", stream, offer)
        if leg is None:
            raise self.fail(op, 500, origin_refusal(status, body), respond(500, "Internal Server Error\n", "text/plain"))
        rid = rand_id(n=16)
        self.resources[rid] = {"resource_id": rid, "participantId": p["participantId"], "live": True,
                               "origin_stream": stream, "leg": leg}
        p["origin_stream"] = stream
        self.record(op, participantId=p["participantId"], resource_id=rid, host=request.host,
                    redirects_followed=len(hops), hops=hops, origin_stream=stream)
        # Relative: it must be resolved against this (final) URL, not the global one.
        return respond(201, body, SDP, {"Location": "/resource/%s" % rid})

    def resource_check(self, request, op):
        r = self.resources.get(request.match_info["rid"])
        if r is None or not r["live"]:
            raise self.fail(op, 404, "no live resource %s" % request.match_info["rid"], respond(404, "Not Found\n", "text/plain"))
        token = bearer(request)
        if token is None or self.by_token.get(token) != r["participantId"]:
            raise self.fail(op, 401, "Bearer is not the participant's token (%s)" %
                            ("absent" if token is None else "other"), respond(401, "Unauthorized\n", "text/plain"))
        return r

    async def regional_patch(self, request):
        op = "whip.patch"
        self.call(op)
        r = self.resource_check(request, op)
        restart = request.headers.get("If-Match") == "*"
        status, headers, body = await self.origin.patch(r["leg"], await request.read(), SDPFRAG, restart)
        self.record(op, resource_id=r["resource_id"], origin_status=status)
        return respond(status or 502, body, headers.get("Content-Type") if body else None)

    async def regional_delete(self, request):
        op = "whip.delete"
        self.call(op)
        r = self.resource_check(request, op)
        r["live"] = False
        origin_status = await self.origin.delete(r["leg"])
        self.record(op, resource_id=r["resource_id"], participantId=r["participantId"], host=request.host,
                    origin_status=origin_status)
        return respond(200)


# ================================================================== Cloudflare Stream

class Cloudflare(Fake):
    """Stream live inputs (API v4 with its envelope) and the media host whose WHIP URL
    carries the input's secret and whose WHEP URL carries its uid.

    Tables: inputs [{uid, name, secret, webRTC, webRTCPlayback, deleted, publishes, plays}],
    sessions [{session_id, uid, kind, live, authorization_sent}]."""

    name = "cloudflare"

    def __init__(self, cfg, origin):
        super().__init__(cfg, origin)
        self.inputs = {}
        self.sessions = {}
        self.window = collections.deque()

    def apps(self):
        base = "/client/v4/accounts/{account}/stream/live_inputs"
        api = self.app([
            web.post(base, self.api), web.get(base, self.api),
            web.get(base + "/{uid}", self.api), web.put(base + "/{uid}", self.api),
            web.delete(base + "/{uid}", self.api),
        ])
        media = self.app([
            web.post("/{id}/webRTC/{leg}", self.media_create),
            web.patch("/{id}/webRTC/{leg}/{sid}", self.media_patch),
            web.delete("/{id}/webRTC/{leg}/{sid}", self.media_delete),
        ])
        return [(6, api, False), (7, media, False)]

    def tables(self):
        return {"inputs": rows(self.inputs), "sessions": rows(self.sessions)}

    # ------------------------------------------------------------ API
    @staticmethod
    def envelope(result, success=True, errors=(), status=200, headers=None):
        return respond(status, json_body({"success": success, "errors": list(errors), "messages": [],
                                          "result": result}), "application/json", headers)

    def cf_error(self, op, status, code, message, headers=None):
        return self.fail(op, status, "%d %s" % (code, message),
                         self.envelope(None, False, [{"code": code, "message": message}], status, headers))

    def full(self, i):
        host = "http://127.0.0.1:%d" % (self.cfg.base_port + 7)
        out = {k: i[k] for k in ("uid", "created", "modified", "meta", "recording", "enabled",
                                 "deleteRecordingAfterDays", "defaultCreator")}
        out.update({
            "rtmps": {"url": "rtmps://live.cloudflare.invalid:443/live/", "streamKey": i["rtmps_key"]},
            "rtmpsPlayback": {"url": "rtmps://live.cloudflare.invalid:443/live/", "streamKey": i["rtmps_key"] + "p"},
            "srt": {"url": "srt://live.cloudflare.invalid:778", "streamId": i["uid"], "passphrase": i["rtmps_key"]},
            "srtPlayback": {"url": "srt://live.cloudflare.invalid:778", "streamId": "play" + i["uid"],
                            "passphrase": i["rtmps_key"] + "p"},
            "webRTC": {"url": "%s/%s/webRTC/publish" % (host, i["secret"])},
            "webRTCPlayback": {"url": "%s/%s/webRTC/play" % (host, i["uid"])},
            "status": None,
        })
        return out

    async def api(self, request):
        method, uid = request.method, request.match_info.get("uid")
        op = {"POST": "create", "GET": "get" if uid else "list", "PUT": "update", "DELETE": "delete"}[method]
        self.call(op)
        now = time.monotonic()
        if self.cfg.cf_rate_limit > 0:
            while self.window and now - self.window[0] >= self.cfg.cf_rate_window:
                self.window.popleft()
            if len(self.window) >= self.cfg.cf_rate_limit:
                wait = max(1, int(self.cfg.cf_rate_window - (now - self.window[0]) + 0.999))
                self.record("rate_limited", refused=op, retry_after=wait)
                raise self.cf_error(op, 429, 971, "Please wait and consider throttling your request speed",
                                    {"retry-after": str(wait)})
            self.window.append(now)
        header = request.headers.get("Authorization")
        if header is None:
            raise self.cf_error(op, 400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        if not header.startswith("Bearer "):
            raise self.cf_error(op, 400, 6111, "Invalid format for Authorization header")
        if not hmac.compare_digest(header[len("Bearer "):].encode(), self.cfg.cf_token.encode()):
            raise self.cf_error(op, 403, 10000, "Authentication error")
        if request.match_info["account"] != self.cfg.cf_account:
            raise self.cf_error(op, 403, 10000, "Authentication error")
        if op == "list":
            items = [{k: i[k] for k in ("uid", "meta", "created", "modified", "deleteRecordingAfterDays")}
                     for i in self.inputs.values() if not i["deleted"]]
            self.record(op, count=len(items))
            return self.envelope({"liveInputs": items, "range": 1000, "total": len(items)})
        if op == "create":
            data = await self.json_input(request, op)
            return self.create(op, data)
        i = self.inputs.get(uid)
        if i is None or i["deleted"]:
            raise self.cf_error(op, 404, 10003, "Live input not found")
        if op == "get":
            self.record(op, uid=uid)
            return self.envelope(self.full(i))
        if op == "update":
            data = await self.json_input(request, op)
            for k in ("meta", "recording", "enabled", "deleteRecordingAfterDays", "defaultCreator"):
                if k in data:
                    i[k] = data[k]
            i["name"] = (i["meta"] or {}).get("name")
            i["modified"] = self.now()
            self.record(op, uid=uid)
            return self.envelope(self.full(i))
        # delete: the input cannot be streamed to any more; its sessions end.
        i["deleted"] = True
        for s in self.sessions.values():
            if s["uid"] == uid and s["live"]:
                s["live"] = False
                await self.origin.delete(s["leg"])
        self.record(op, uid=uid, name=i["name"])
        return self.envelope(None)

    async def json_input(self, request, op):
        try:
            data = json.loads(await request.read() or b"{}")
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            raise self.cf_error(op, 400, 10005, "Invalid JSON in request body")
        if "meta" in data and not isinstance(data["meta"], dict):
            raise self.cf_error(op, 400, 10005, "meta must be an object")
        mode = (data.get("recording") or {}).get("mode", "off")
        if mode not in ("off", "automatic"):
            raise self.cf_error(op, 400, 10005, "recording.mode must be off or automatic")
        return data

    @staticmethod
    def now():
        return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())

    def create(self, op, data):
        uid, secret = secrets.token_hex(16), secrets.token_hex(32)
        REDACT.add(secret)
        meta = data.get("meta") or {}
        i = {"uid": uid, "secret": secret, "rtmps_key": secrets.token_hex(16), "name": meta.get("name"),
             "created": self.now(), "modified": self.now(), "meta": meta,
             "recording": dict({"mode": "off", "requireSignedURLs": False, "allowedOrigins": None,
                                "timeoutSeconds": 0}, **(data.get("recording") or {})),
             "enabled": data.get("enabled", True), "deleteRecordingAfterDays": data.get("deleteRecordingAfterDays"),
             "defaultCreator": data.get("defaultCreator", ""), "deleted": False, "publishes": 0, "plays": 0}
        REDACT.add(i["rtmps_key"])
        self.inputs[uid] = i
        self.record(op, uid=uid, name=i["name"], body=data)
        full = self.full(i)
        i["webRTC"], i["webRTCPlayback"] = full["webRTC"]["url"], full["webRTCPlayback"]["url"]
        return self.envelope(full)

    # ------------------------------------------------------------ media host
    def stream_of(self, i):
        """whipgate names inputs whipgate:{stream}; that stream is the origin's."""
        name = i["name"] or i["uid"]
        return name[len("whipgate:"):] if name.startswith("whipgate:") else name

    async def media_create(self, request):
        leg_kind = request.match_info["leg"]
        op = "media.%s" % leg_kind
        self.call(op)
        ident = request.match_info["id"]
        if leg_kind == "publish":
            i = next((x for x in self.inputs.values() if x["secret"] == ident), None)
        elif leg_kind == "play":
            i = self.inputs.get(ident)
        else:
            i = None
        if i is None or i["deleted"]:
            raise self.fail(op, 404, "no live input for this URL", respond(404, "Not Found\n", "text/plain"))
        if not i["enabled"]:
            raise self.fail(op, 403, "live input disabled", respond(403, "Forbidden\n", "text/plain"))
        offer = await request.read()
        if not offer:
            raise self.fail(op, 400, "empty POST: draft-murillo-whep-01 server offers are not faked",
                            respond(400, "Bad Request\n", "text/plain"))
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != SDP:
            raise self.fail(op, 415, "Content-Type %r" % ctype, respond(415, "Unsupported Media Type\n", "text/plain"))
        kind = "whip" if leg_kind == "publish" else "whep"
        stream = self.stream_of(i)
        status, headers, body, leg = await self.origin.create(kind, stream, offer)
        if leg is None:
            extra = {"Retry-After": headers["Retry-After"]} if status == 409 and "Retry-After" in headers else None
            raise self.fail(op, status or 502, origin_refusal(status, body),
                            respond(status or 502, body or b"Bad Gateway\n", "text/plain", extra))
        sid = secrets.token_hex(16)
        authorization_sent = "Authorization" in request.headers
        self.sessions[sid] = {"session_id": sid, "uid": i["uid"], "kind": kind, "live": True,
                              "authorization_sent": authorization_sent, "leg": leg}
        i["publishes" if kind == "whip" else "plays"] += 1
        self.record(op, uid=i["uid"], name=i["name"], session_id=sid, origin_stream=stream,
                    authorization_sent=authorization_sent)
        location = "http://127.0.0.1:%d/%s/webRTC/%s/%s" % (self.cfg.base_port + 7, ident, leg_kind, sid)
        version = "draft-ietf-wish-whip-06" if kind == "whip" else "draft-murillo-whep-01"
        return respond(201, body, SDP, {"Location": location, "protocol-version": version})

    def media_session(self, request, op):
        s = self.sessions.get(request.match_info["sid"])
        if s is None or not s["live"]:
            raise self.fail(op, 404, "no live session", respond(404, "Not Found\n", "text/plain"))
        return s

    async def media_patch(self, request):
        op = "media.patch"
        self.call(op)
        s = self.media_session(request, op)
        restart = request.headers.get("If-Match") == "*"
        status, headers, body = await self.origin.patch(s["leg"], await request.read(), SDPFRAG, restart)
        self.record(op, session_id=s["session_id"], origin_status=status)
        return respond(status or 502, body, headers.get("Content-Type") if body else None)

    async def media_delete(self, request):
        op = "media.delete"
        self.call(op)
        s = self.media_session(request, op)
        s["live"] = False
        origin_status = await self.origin.delete(s["leg"])
        self.record(op, session_id=s["session_id"], uid=s["uid"], kind=s["kind"], origin_status=origin_status)
        return respond(200)


# ================================================================== Dolby Millicast

class Millicast(Fake):
    """The director's WHIP/WHEP endpoints (static publish / subscribe tokens, text/plain
    errors, WHEP 409 "Stream not found") whose sessions live on another host.

    Tables: sessions [{session_id, kind, stream, live, token_kind}]."""

    name = "millicast"

    def __init__(self, cfg, origin):
        super().__init__(cfg, origin)
        self.sessions = {}

    def apps(self):
        director = self.app([
            web.post("/api/whip/{stream}", self.create),
            web.post("/api/whep/{account}/{stream}", self.create),
        ])
        media = self.app([
            web.patch("/api/{kind}/{sid}", self.media_patch),
            web.delete("/api/{kind}/{sid}", self.media_delete),
        ])
        return [(8, director, False), (9, media, True)]

    def tables(self):
        return {"sessions": rows(self.sessions)}

    def text_error(self, op, status, message, reason=None):
        return self.fail(op, status, reason or message, respond(status, message, "text/plain"))

    async def create(self, request):
        whep = "account" in request.match_info
        kind = "whep" if whep else "whip"
        op = "%s.create" % kind
        self.call(op)
        stream = request.match_info["stream"]
        token = bearer(request)
        if whep:
            if request.match_info["account"] != self.cfg.millicast_account:
                raise self.text_error(op, 400, "Validation errors: unknown streamAccountId",
                                      "account %s" % request.match_info["account"])
            expected = self.cfg.millicast_subscribe_token
            token_kind = "subscribe" if expected else ("none" if token is None else "ignored")
        else:
            expected, token_kind = self.cfg.millicast_publish_token, "publish"
        if expected is not None:
            if token is None:
                raise self.text_error(op, 401, "Unauthorized: missing token")
            if not hmac.compare_digest(token.encode(), expected.encode()):
                raise self.text_error(op, 401, "Unauthorized: invalid token")
        if not whep and not re.fullmatch(self.cfg.millicast_stream_regex, stream):
            raise self.text_error(op, 401, "Unauthorized: stream name not allowed by the publish token")
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != SDP:
            raise self.text_error(op, 400, "Validation errors: Content-Type must be application/sdp")
        offer = await request.read()
        if not offer.startswith(b"v=0"):
            raise self.text_error(op, 400, "Validation errors: body must be an SDP offer")
        status, _, body, leg = await self.origin.create(kind, stream, offer)
        if leg is None:
            if whep and status in (404, 409):
                # Documented: the stream is not live. No Retry-After (whipgate adds its own).
                raise self.text_error(op, 409, "Stream not found", origin_refusal(status, body))
            raise self.text_error(op, 500, "Internal server error", origin_refusal(status, body))
        sid = rand_id(n=20)
        self.sessions[sid] = {"session_id": sid, "kind": kind, "stream": stream, "live": True,
                              "token_kind": token_kind, "token": token, "leg": leg}
        self.record(op, stream=stream, session_id=sid, token_kind=token_kind, query=dict(request.query))
        location = "http://localhost:%d/api/%s/%s" % (self.cfg.base_port + 9, kind, sid)
        return respond(201, body, SDP, {"Location": location})

    def media_session(self, request, op):
        s = self.sessions.get(request.match_info["sid"])
        if s is None or not s["live"] or s["kind"] != request.match_info["kind"]:
            raise self.text_error(op, 404, "Not Found", "no live session at %s" % request.path)
        token = bearer(request)
        # Whether the remote host wants the bearer again is unverified: accept none, refuse
        # a wrong one.
        if token is not None and token != s["token"]:
            raise self.text_error(op, 401, "Unauthorized: invalid token")
        return s, token is not None

    async def media_patch(self, request):
        op = "media.patch"
        self.call(op)
        s, _ = self.media_session(request, op)
        restart = request.headers.get("If-Match") == "*"
        status, headers, body = await self.origin.patch(s["leg"], await request.read(), SDPFRAG, restart)
        self.record(op, session_id=s["session_id"], origin_status=status)
        return respond(status or 502, body, headers.get("Content-Type") if body else None)

    async def media_delete(self, request):
        op = "media.delete"
        self.call(op)
        s, bearer_sent = self.media_session(request, op)
        s["live"] = False
        origin_status = await self.origin.delete(s["leg"])
        self.record(op, session_id=s["session_id"], kind=s["kind"], stream=s["stream"], host=request.host,
                    bearer_sent=bearer_sent, origin_status=origin_status)
        return respond(200)


# ================================================================== webhook provisioner

class Webhook(Fake):
    """An operator's provisioning service (signed opening/closing events, answers with a
    WHIP URL and a bearer) and the plain WHIP/WHEP server those answers point to.

    Tables: events [{seq, verified, signature, event..., answer}], bearers {stream: bearer},
    sessions [{resource_id, kind, stream, live}]."""

    name = "webhook"
    FIELDS = ("event", "kind", "stream", "route", "subject", "tier", "client_ip", "request_id")

    def __init__(self, cfg, origin):
        super().__init__(cfg, origin)
        self.events = []
        self.bearers = {}
        self.sessions = {}

    def apps(self):
        hook = self.app([web.post("/{tail:.*}", self.hook)])
        server = self.app([
            web.post("/{kind:whip|whep}/{stream}", self.create),
            web.patch("/resource/{rid}", self.patch),
            web.delete("/resource/{rid}", self.delete),
        ])
        return [(10, hook, False), (11, server, False)]

    def tables(self):
        return {"events": self.events, "bearers": self.bearers, "sessions": rows(self.sessions)}

    async def hook(self, request):
        op = "hook"
        self.call(op)
        body = await request.read()  # the exact bytes: the signature covers them
        signature = request.headers.get("X-Whipgate-Signature")
        verified = signature is not None and hmac.compare_digest(
            signature.encode(), webhook_signature(self.cfg.webhook_secret, body).encode())
        entry = {"seq": next(SEQ), "time": round(time.time(), 3), "verified": verified,
                 "signature_present": signature is not None, "path": request.path,
                 "content_type": request.headers.get("Content-Type"), "answer": None}
        LAST_SEQ[0] = entry["seq"]
        self.events.append(entry)
        try:
            event = json.loads(body)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            event = None
        if event is not None:
            entry.update({k: event.get(k) for k in self.FIELDS})
            entry["extra_fields"] = sorted(set(event) - set(self.FIELDS))
        if not verified:
            raise self.fail(op, 401, "X-Whipgate-Signature %s" % ("missing" if signature is None else "does not verify"),
                            respond(401, json_body({"error": "bad signature"}), "application/json"))
        if event is None:
            raise self.fail(op, 400, "body is not a JSON object", respond(400, json_body({"error": "bad json"}), "application/json"))
        missing = [k for k in ("event", "kind", "stream") if not event.get(k)]
        if missing or event["event"] not in ("opening", "closing") or event["kind"] not in ("whip", "whep"):
            raise self.fail(op, 400, "bad event fields: missing %s, event %r, kind %r" % (missing, event.get("event"), event.get("kind")),
                            respond(400, json_body({"error": "bad event"}), "application/json"))
        stream = event["stream"]
        if event["event"] == "closing":
            answer = {}
        elif "denied" in stream:
            answer = {"allowed": False, "reason": "stream is not booked"}
        else:
            token = self.bearers.setdefault(stream, secrets.token_urlsafe(24))
            REDACT.add(token)
            answer = {"allowed": True, "url": "http://127.0.0.1:%d/%s/%s" % (self.cfg.base_port + 11, event["kind"], quote(stream, safe="")),
                      "bearer": token}
        entry["answer"] = answer
        self.record("hook.%s" % event["event"], kind=event["kind"], stream=stream, verified=True,
                    allowed=answer.get("allowed"))
        return respond(200, json_body(answer), "application/json")

    def check_bearer(self, request, op, stream):
        token = bearer(request)
        expected = self.bearers.get(stream)
        if token is None or expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            raise self.fail(op, 401, "Bearer %s for stream %s" % ("absent" if token is None else "wrong", stream),
                            respond(401, "Unauthorized\n", "text/plain"))

    async def create(self, request):
        kind, stream = request.match_info["kind"], request.match_info["stream"]
        op = "%s.create" % kind
        self.call(op)
        self.check_bearer(request, op, stream)
        offer = await request.read()
        status, headers, body, leg = await self.origin.create(kind, stream, offer)
        if leg is None:
            extra = {"Retry-After": headers["Retry-After"]} if "Retry-After" in headers else None
            raise self.fail(op, status or 502, origin_refusal(status, body),
                            respond(status or 502, body, headers.get("Content-Type", "text/plain"), extra))
        rid = rand_id(n=16)
        self.sessions[rid] = {"resource_id": rid, "kind": kind, "stream": stream, "live": True, "leg": leg}
        self.record(op, stream=stream, resource_id=rid)
        extra = {"Location": "/resource/%s" % rid}
        if leg.etag:
            extra["ETag"] = leg.etag
        return respond(201, body, SDP, extra)

    def session(self, request, op):
        s = self.sessions.get(request.match_info["rid"])
        if s is None or not s["live"]:
            raise self.fail(op, 404, "no live session %s" % request.match_info["rid"], respond(404, "Not Found\n", "text/plain"))
        self.check_bearer(request, op, s["stream"])
        return s

    async def patch(self, request):
        op = "patch"
        self.call(op)
        s = self.session(request, op)
        restart = request.headers.get("If-Match") == "*"
        status, headers, body = await self.origin.patch(s["leg"], await request.read(),
                                                        request.headers.get("Content-Type", SDPFRAG), restart)
        self.record(op, resource_id=s["resource_id"], origin_status=status)
        extra = {"ETag": headers["ETag"]} if "ETag" in headers else None
        return respond(status or 502, body, headers.get("Content-Type") if body else None, extra)

    async def delete(self, request):
        op = "delete"
        self.call(op)
        s = self.session(request, op)
        s["live"] = False
        origin_status = await self.origin.delete(s["leg"])
        self.record(op, resource_id=s["resource_id"], kind=s["kind"], stream=s["stream"], origin_status=origin_status)
        return respond(200)


# ================================================================== self-test

def self_test():
    """The checks against vendor-contracts.md's fixtures (computed there by other code)."""
    failures = []

    def expect(cond, what):
        print("%s - %s" % ("ok" if cond else "not ok", what))
        if not cond:
            failures.append(what)

    secret = "whipgate-fixture-secret-0123456789abcdef"
    admin = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJBUEl4eHh4IiwibmJmIjoxNzk1NTAwMDAwLCJpYXQiOjE3OTU1MDAwMDAsImV4cCI6"
             "MTc5NTUwMDYwMCwidmlkZW8iOnsiaW5ncmVzc0FkbWluIjp0cnVlfX0.v6s7w-elQ673yiep3O54hqVBk9DQLqPCUQuIcKkYZqU")
    participant = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJBUEl4eHh4Iiwic3ViIjoid2hpcC1zZXNzLTEiLCJuYW1lIjoiT0JTIiwibmJm"
                   "IjoxNzk1NTAwMDAwLCJpYXQiOjE3OTU1MDAwMDAsImV4cCI6MTc5NTUwMDYwMCwidmlkZW8iOnsicm9vbUpvaW4iOnRydWUsInJvb20iOiJkZW1v"
                   "IiwiY2FuUHVibGlzaCI6dHJ1ZSwiY2FuU3Vic2NyaWJlIjpmYWxzZX19.jVE4njZ8ThcfnrTaFRyMf1B29IzvNN8SRMC2dLDIveM")
    lookup = lambda iss: secret if iss == "APIxxxx" else None  # noqa: E731
    _, c = verify_hs256(admin, lookup, 1795500300)
    expect(c["video"] == {"ingressAdmin": True}, "JWT fixture (ingress admin) verifies")
    _, c = verify_hs256(participant, lookup, 1795500300)
    expect(c["sub"] == "whip-sess-1" and c["video"]["room"] == "demo", "JWT fixture (participant) verifies")

    def refused(token, now, lookup=lookup):
        try:
            verify_hs256(token, lookup, now)
        except CheckError as e:
            return str(e)
        return None

    expect(refused(participant, 1795500600 + 61) is not None, "JWT past exp + 60 s is refused")
    expect(refused(participant, 1795500600 + 59) is None, "JWT within the 60 s leeway is accepted")
    expect(refused(participant, 1795500300, lambda iss: "other" if iss == "APIxxxx" else None) is not None,
           "JWT under another secret is refused")
    expect("invalid API key" in (refused(participant, 1795500300, lambda iss: None) or ""), "JWT with an unknown iss is refused")
    head, body, sig = participant.split(".")
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    expect(refused("%s.%s.%s" % (none_alg, body, sig), 1795500300) is not None, "JWT with alg none is refused")
    expect(refused("%s.%s=.%s" % (head, body, sig), 1795500300) is not None, "JWT with base64 padding is refused")
    noexp = base64.urlsafe_b64encode(json.dumps({"iss": "APIxxxx"}).encode()).rstrip(b"=").decode()
    noexp_sig = base64.urlsafe_b64encode(hmac.new(secret.encode(), ("%s.%s" % (head, noexp)).encode(),
                                                  hashlib.sha256).digest()).rstrip(b"=").decode()
    expect("exp" in (refused("%s.%s.%s" % (head, noexp, noexp_sig), 1795500300) or ""), "JWT without exp is refused")

    body = (b'{"stageArn":"arn:aws:ivs:us-east-1:123456789012:stage/abcdABCDefgh","capabilities":["PUBLISH"],'
            b'"duration":60,"userId":"whipgate-sess-1","attributes":{"via":"whipgate"}}')
    headers = CIMultiDict({
        "Content-Type": "application/json", "Host": "ivsrealtime.us-east-1.amazonaws.com",
        "X-Amz-Date": "20231114T221320Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/ivs/aws4_request, "
                         "SignedHeaders=content-type;host;x-amz-date, "
                         "Signature=efe926a0f27e81d2d4e23dfa4c102524dc75ec82b86ff37f147e0b23b3154e2c"})
    creds = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
    expect(hashlib.sha256(body).hexdigest() == "b4d9dffac7e76b9d33a736f0b48c149f21b32ccef3985751e9d9778328371c8e",
           "SigV4 fixture body hash")
    info = sigv4_verify("POST", "/CreateParticipantToken", "", headers, body, creds, "us-east-1", "ivs", 1700000000)
    expect(info["scope"] == "20231114/us-east-1/ivs/aws4_request", "SigV4 fixture signature verifies")

    def sig_refused(**change):
        h = CIMultiDict(headers)
        args = dict(method="POST", raw_path="/CreateParticipantToken", query="", headers=h, body=body,
                    credentials=creds, region="us-east-1", service="ivs", now=1700000000)
        for k, v in change.items():
            if k.startswith("h_"):
                h[k[2:].replace("_", "-")] = v
            else:
                args[k] = v
        try:
            sigv4_verify(**args)
        except CheckError as e:
            return e.kind
        return None

    expect(sig_refused(body=body + b" ") == "InvalidSignatureException", "SigV4: a changed body is refused")
    expect(sig_refused(now=1700000000 + 301) == "InvalidSignatureException", "SigV4: 5 min skew is refused")
    expect(sig_refused(region="eu-west-1") == "InvalidSignatureException", "SigV4: another region is refused")
    expect(sig_refused(h_Host="127.0.0.1:7303") == "InvalidSignatureException", "SigV4: another Host is refused")
    expect(sig_refused(credentials={"AKIDEXAMPLE": "x"}) == "InvalidSignatureException", "SigV4: another secret is refused")
    expect(sig_refused(credentials={"OTHER": "x"}) == "UnrecognizedClientException", "SigV4: an unknown key id is refused")
    expect(sig_refused(session_token="tok") == "UnrecognizedClientException", "SigV4: a missing session token is refused")
    expect(sig_refused(h_Authorization=headers["Authorization"].replace("content-type;host;x-amz-date", "content-type;x-amz-date"))
           == "InvalidSignatureException", "SigV4: host not signed is refused")

    expect(webhook_signature("s3cret", b'{"a":1}') ==
           "sha256=" + hmac.new(b"s3cret", b'{"a":1}', hashlib.sha256).hexdigest(), "webhook signature format")
    print("RESULT %s" % ("ok" if not failures else "fail: %d" % len(failures)))
    return 0 if not failures else 1


# ================================================================== main

def parse_args(argv):
    def env(name, default=None):
        return os.environ.get("FAKE_" + name, default)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--origin", default=env("ORIGIN", "http://127.0.0.1:8080"))
    ap.add_argument("--base-port", type=int, default=int(env("BASE_PORT", "7300")))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--livekit-key", default=env("LIVEKIT_KEY", "APIxxxx"))
    ap.add_argument("--livekit-secret", default=env("LIVEKIT_SECRET", "whipgate-fixture-secret-0123456789abcdef"))
    ap.add_argument("--ivs-region", default=env("IVS_REGION", "us-east-1"))
    ap.add_argument("--ivs-access-key", default=env("IVS_ACCESS_KEY", "AKIDEXAMPLE"))
    ap.add_argument("--ivs-secret-key", default=env("IVS_SECRET_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"))
    ap.add_argument("--ivs-session-token", default=env("IVS_SESSION_TOKEN"))
    ap.add_argument("--ivs-stage-arn", default=env("IVS_STAGE_ARN", "arn:aws:ivs:us-east-1:123456789012:stage/abcdABCDefgh"))
    ap.add_argument("--ivs-stream", default=env("IVS_STREAM", "live-ivs"))
    ap.add_argument("--ivs-redirects", type=int, default=int(env("IVS_REDIRECTS", "2")))
    ap.add_argument("--cf-account", default=env("CF_ACCOUNT", "023e105f4ecef8ad9ca31a8372d0c353"))
    ap.add_argument("--cf-token", default=env("CF_TOKEN", "cf-fixture-token"))
    ap.add_argument("--cf-rate-limit", type=int, default=int(env("CF_RATE_LIMIT", "0")))
    ap.add_argument("--cf-rate-window", type=float, default=float(env("CF_RATE_WINDOW", "300")))
    ap.add_argument("--millicast-account", default=env("MILLICAST_ACCOUNT", "k9Mwad"))
    ap.add_argument("--millicast-publish-token", default=env("MILLICAST_PUBLISH_TOKEN", "millicast-fixture-publish-token"))
    ap.add_argument("--millicast-subscribe-token", default=env("MILLICAST_SUBSCRIBE_TOKEN"))
    ap.add_argument("--millicast-stream-regex", default=env("MILLICAST_STREAM_REGEX", ".*"))
    ap.add_argument("--webhook-secret", default=env("WEBHOOK_SECRET", "webhook-fixture-secret"))
    args = ap.parse_args(argv)
    if args.ivs_redirects < 1:
        ap.error("--ivs-redirects must be 1 or more (the global host always redirects)")
    if not Ivs.ARN.fullmatch(args.ivs_stage_arn):
        ap.error("--ivs-stage-arn does not match %s" % Ivs.ARN.pattern)
    return args


async def serve(args):
    origin = Origin(args.origin)
    await origin.start()
    fakes = [LiveKit(args, origin), Ivs(args, origin), Cloudflare(args, origin),
             Millicast(args, origin), Webhook(args, origin)]
    runners = []
    for fake in fakes:
        for offset, app, on_localhost in fake.apps():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            port = args.base_port + offset
            await web.TCPSite(runner, args.host, port).start()
            also = ""
            if on_localhost and socket.has_ipv6:
                try:  # "localhost" may resolve to ::1 first
                    await web.TCPSite(runner, "::1", port).start()
                    also = " and [::1]"
                except OSError:
                    pass
            log("%s listening on http://%s:%d%s" % (fake.name, args.host, port, also))
    log("origin %s" % origin.base)
    log("READY")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()
    await origin.close()


def main():
    args = parse_args(sys.argv[1:])
    if args.self_test:
        return self_test()
    REDACT.update(s for s in (args.livekit_secret, args.ivs_secret_key, args.ivs_session_token, args.cf_token,
                              args.millicast_publish_token, args.millicast_subscribe_token, args.webhook_secret) if s)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
