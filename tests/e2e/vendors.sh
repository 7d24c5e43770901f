# shellcheck shell=bash
# Tests O P Q R S T U V of tests/e2e/janus.sh: whipgate's vendor backends (kinds livekit, ivs,
# cloudflare, millicast, webhook) with real peers, against contract fakes of the vendors
# (vendor_fakes.py, ports 7301-7311) that check what each vendor checks and front a real
# media server: the main whipgate of janus.sh (127.0.0.1:8080), whose built-in SFU serves
# live-*. A second whipgate, the "front" (127.0.0.1:8082, routes.toml alone in $TMP/front),
# sends each stream to one vendor backend:
#
#   aiortc --WHIP--> front whipgate --vendor API + WHIP--> fake --WHIP--> origin SFU <--WHEP-- aiortc
#
# Sourced by janus.sh before its setup: defines names, variables and functions only. The tests
# run after the setup and use its helpers (nsx, start_bg, wait_for, ok, not_ok, PIDS, TMP) and
# builtin.sh's (sfu_gone, release_publisher, result_line). The fakes and the front whipgate start
# with the first vendor test that runs.

NAME_O="vendor livekit (native WHIP): aiortc publishes through whipgate with a participant JWT LiveKit verifies (HS256, iss, exp, roomJoin, room, canPublish, identity), aiortc plays through the route's WHEP fallback to origin; the DELETE, re-signed with the same identity and room, ends the participant"
NAME_P="vendor livekit (ingress): CreateIngress (Twirp, ingressAdmin JWT), WHIP to the ingress URL with the stream key, aiortc plays; after the client's DELETE the key-bearing Location is deleted, then DeleteIngress"
NAME_Q="vendor ivs: a VP8-only offer gets 422 before any IVS call; SigV4-signed CreateParticipantToken (PUBLISH, session token), WHIP through two 307s with Authorization kept, aiortc plays; DELETE on the regional Location, then DisconnectParticipant"
NAME_R="vendor cloudflare: one live input whipgate:live-cf created once and reused by a WHEP play and two publishes, its webRTC URLs posted without Authorization"
NAME_S="vendor millicast: WHEP before publishing is 409 + Retry-After; aiortc publishes and plays with the publish and subscribe tokens; DELETEs reach the absolute Location on the other host"
NAME_T="vendor webhook: signed opening and closing events for WHIP and WHEP, media through the URL and bearer the provisioner returned; a stream it denies gets 403 with its reason"
NAME_U="vendor switch by reload: live-sw-* moves from livekit to ivs while a livekit publisher is live; a new publisher lands on ivs, and the first one's DELETE still reaches livekit with its identity"
NAME_V="no vendor secret (LiveKit secret and stream key, AWS secret key and session token, IVS token, Cloudflare token and webRTC secret, Millicast tokens, webhook secret and bearer) in the whipgates' logs or in what clients received"
# Logs janus.sh's dump_all prints (names under $TMP).
VENDOR_LOGS=(vendor-fakes-selftest.log vendor-fakes.log whipgate-front.log v-lk.log v-play-lk.log v-lki.log v-play-lki.log
  v-ivs.log v-play-ivs.log v-cf-1.log v-cf-2.log v-play-cf.log v-dolby.log v-play-dolby-early.log
  v-play-dolby.log v-hook.log v-play-hook.log v-sw-1.log v-sw-2.log)

FRONT=http://127.0.0.1:8082
ORIGIN_URL=http://127.0.0.1:8080
FAKE_BASE=7300
FAKE_PORT_LK=$((FAKE_BASE + 1)) FAKE_PORT_LK_INGRESS=$((FAKE_BASE + 2)) FAKE_PORT_IVS=$((FAKE_BASE + 3))
FAKE_PORT_IVS_WHIP=$((FAKE_BASE + 4)) FAKE_PORT_IVS_REGION=$((FAKE_BASE + 5)) FAKE_PORT_CF=$((FAKE_BASE + 6))
FAKE_PORT_MC=$((FAKE_BASE + 8)) FAKE_PORT_MC_MEDIA=$((FAKE_BASE + 9)) FAKE_PORT_HOOK=$((FAKE_BASE + 10))
IVS_REDIRECTS=2

# Fresh secrets each run, so that finding one anywhere cannot be chance (test V).
vrand() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
LK_KEY=APIwhipgateE2E
LK_SECRET=lk-$(vrand 20)
AWS_AKID=AKIAWHIPGATEE2E0000
AWS_SECRET=aws-$(vrand 20)
AWS_TOKEN=sts-$(vrand 24)
IVS_REGION=us-east-1
IVS_STAGE_ARN=arn:aws:ivs:us-east-1:123456789012:stage/abcdABCDefgh
CF_ACCOUNT=023e105f4ecef8ad9ca31a8372d0c353
CF_TOKEN=cf-$(vrand 20)
MC_ACCOUNT=k9Mwad
MC_PUBLISH=mcp-$(vrand 20)
MC_SUBSCRIBE=mcs-$(vrand 20)
HOOK_SECRET=hook-$(vrand 20)

# front_routes SW_BACKEND: the front whipgate's routes.toml; live-sw-* goes to SW_BACKEND
# (lk, then ivs in test U). Every vendor route but the ones with a WHEP of their own also
# lists `origin`: whipgate skips WHIP-only vendors for WHEP, so players reach the origin.
front_routes() {
  cat <<EOF
[server]
listen = "127.0.0.1:8082"
public_url = "$FRONT"
session_keys = [{ id = "k1", secret_env = "WHIPGATE_SESSION_KEY" }]

[[backend]]
id = "lk"
kind = "livekit"
url = "http://127.0.0.1:$FAKE_PORT_LK"
api_key = "$LK_KEY"
api_secret_env = "LIVEKIT_API_SECRET"
room = "{stream}"
mode = "whip"

[[backend]]
id = "lki"
kind = "livekit"
url = "http://127.0.0.1:$FAKE_PORT_LK"
api_key = "$LK_KEY"
api_secret_env = "LIVEKIT_API_SECRET"
mode = "ingress"
allowed_hosts = ["127.0.0.1:$FAKE_PORT_LK_INGRESS"]

[[backend]]
id = "ivs"
kind = "ivs"
region = "$IVS_REGION"
stage_arn = "$IVS_STAGE_ARN"
access_key_id_env = "AWS_ACCESS_KEY_ID"
secret_access_key_env = "AWS_SECRET_ACCESS_KEY"
session_token_env = "AWS_SESSION_TOKEN"
api_url = "http://127.0.0.1:$FAKE_PORT_IVS"
whip_url = "http://127.0.0.1:$FAKE_PORT_IVS_WHIP"
allowed_hosts = ["localhost"]

[[backend]]
id = "cf"
kind = "cloudflare"
account_id = "$CF_ACCOUNT"
api_token_env = "CLOUDFLARE_API_TOKEN"
api_url = "http://127.0.0.1:$FAKE_PORT_CF/client/v4"

[[backend]]
id = "dolby"
kind = "millicast"
account_id = "$MC_ACCOUNT"
publish_token_env = "MILLICAST_PUBLISH_TOKEN"
subscribe_token_env = "MILLICAST_SUBSCRIBE_TOKEN"
url = "http://127.0.0.1:$FAKE_PORT_MC"
allowed_hosts = ["localhost"]

[[backend]]
id = "hook"
kind = "webhook"
url = "http://127.0.0.1:$FAKE_PORT_HOOK/whipgate"
secret_env = "WHIPGATE_WEBHOOK_SECRET"

[[backend]]
id = "origin"
kind = "whip"
whip_url = "$ORIGIN_URL/whip/{stream}"
whep_url = "$ORIGIN_URL/whep/{stream}"

[[route]]
id = "lk"
match = { stream = "live-lk" }
backends = ["lk", "origin"]

[[route]]
id = "lki"
match = { stream = "live-lki" }
backends = ["lki", "origin"]

[[route]]
id = "ivs"
match = { stream = "live-ivs*" }
backends = ["ivs", "origin"]

[[route]]
id = "cf"
match = { stream = "live-cf" }
backends = ["cf"]

[[route]]
id = "dolby"
match = { stream = "live-dolby" }
backends = ["dolby"]

[[route]]
id = "hook"
match = { stream = "live-hook*" }
backends = ["hook"]

[[route]]
id = "sw"
match = { stream = "live-sw-*" }
backends = ["$1", "origin"]
EOF
}
# write_front: stdin becomes $TMP/front/routes.toml atomically (temp file + mv, same directory).
write_front() {
  cat >"$TMP/front/.routes.toml.new" && mv -f "$TMP/front/.routes.toml.new" "$TMP/front/routes.toml"
}

# vendors_setup: start the fakes and the front whipgate once; on failure VENDORS_FAIL says why.
VENDORS_STARTED=0 VENDORS_FAIL=
vendors_setup() {
  [ "$VENDORS_STARTED" = 1 ] && { [ -z "$VENDORS_FAIL" ]; return; }
  VENDORS_STARTED=1
  if [ "$DIRECT" = 1 ]; then VENDORS_FAIL="the vendor tests need whipgate (not E2E_DIRECT=1)"; return 1; fi
  # The fakes' JWT, SigV4 and HMAC checks against vendor-contracts.md's fixtures first: a
  # checker that accepts anything would make every vendor test pass.
  if ! "$VENV_PY" "$HERE/vendor_fakes.py" --self-test >"$TMP/vendor-fakes-selftest.log" 2>&1; then
    VENDORS_FAIL="vendor_fakes.py --self-test: $(grep -m1 '^not ok' "$TMP/vendor-fakes-selftest.log" || tail -1 "$TMP/vendor-fakes-selftest.log")"
    return 1
  fi
  # Secrets through the environment, never on a command line.
  start_bg vendor-fakes env FAKE_LIVEKIT_KEY="$LK_KEY" FAKE_LIVEKIT_SECRET="$LK_SECRET" \
    FAKE_IVS_ACCESS_KEY="$AWS_AKID" FAKE_IVS_SECRET_KEY="$AWS_SECRET" FAKE_IVS_SESSION_TOKEN="$AWS_TOKEN" \
    FAKE_IVS_REGION="$IVS_REGION" FAKE_IVS_STAGE_ARN="$IVS_STAGE_ARN" FAKE_IVS_REDIRECTS="$IVS_REDIRECTS" \
    FAKE_CF_ACCOUNT="$CF_ACCOUNT" FAKE_CF_TOKEN="$CF_TOKEN" FAKE_MILLICAST_ACCOUNT="$MC_ACCOUNT" \
    FAKE_MILLICAST_PUBLISH_TOKEN="$MC_PUBLISH" FAKE_MILLICAST_SUBSCRIBE_TOKEN="$MC_SUBSCRIBE" \
    FAKE_WEBHOOK_SECRET="$HOOK_SECRET" \
    "$VENV_PY" "$HERE/vendor_fakes.py" --origin "$ORIGIN_URL" --base-port "$FAKE_BASE" --ivs-stream live-ivs
  local fakes=$LAST_PID
  if ! wait_for 15 "$fakes" "vendor fakes" grep -q '^READY' "$TMP/vendor-fakes.log"; then
    VENDORS_FAIL="vendor_fakes.py did not print READY: $(tail -1 "$TMP/vendor-fakes.log")"; return 1
  fi
  mkdir -p "$TMP/front"
  front_routes lk | write_front
  (cd "$TMP/front" && exec env LIVEKIT_API_SECRET="$LK_SECRET" AWS_ACCESS_KEY_ID="$AWS_AKID" \
    AWS_SECRET_ACCESS_KEY="$AWS_SECRET" AWS_SESSION_TOKEN="$AWS_TOKEN" CLOUDFLARE_API_TOKEN="$CF_TOKEN" \
    MILLICAST_PUBLISH_TOKEN="$MC_PUBLISH" MILLICAST_SUBSCRIBE_TOKEN="$MC_SUBSCRIBE" \
    WHIPGATE_WEBHOOK_SECRET="$HOOK_SECRET" WHIPGATE_SESSION_KEY="$(vrand 32)" \
    RUST_LOG="${RUST_LOG:-info}" RUST_BACKTRACE=1 \
    ip netns exec "$NS" "$WHIPGATE_BIN" serve --config "$TMP/front/routes.toml") >"$TMP/whipgate-front.log" 2>&1 &
  FRONT_PID=$!; PIDS+=("$FRONT_PID")
  front_up() {
    local c
    c=$(nsx curl -s -o /dev/null -m 1 -w '%{http_code}' -X OPTIONS "$FRONT/whip/x")
    [ "${c:0:1}" = 2 ]
  }
  if ! wait_for 20 "$FRONT_PID" "front whipgate" front_up; then
    VENDORS_FAIL="front whipgate not ready: $(grep -m1 -iE 'error|refused|panic' "$TMP/whipgate-front.log" || tail -1 "$TMP/whipgate-front.log")"
    return 1
  fi
  note "vendors: fakes on 127.0.0.1:$((FAKE_BASE + 1))-$((FAKE_BASE + 11)), front whipgate on $FRONT"
}

# ------------------------------------------------------------------ fake state helpers
# fake_state PORT: the JSON record of the fake listening on PORT.
fake_state() { nsx curl -s -m 3 "http://127.0.0.1:$1/_fake/state"; }
# fake_seq: the fakes' shared event counter; tests keep the entries after it.
fake_seq() { fake_state "$FAKE_PORT_LK" | jq -r '.seq'; }
# In every filter: $s0 (the counter before the test) and h(op), the history entries of
# op since $s0.
FAKE_DEFS='def h(op): [.history[] | select(.seq > $s0 and .op == op)];'
# fake_q PORT S0 FILTER: print FILTER's result (jq -r) on PORT's state.
fake_q() { fake_state "$1" | jq -r --argjson s0 "$2" "$FAKE_DEFS $3"; }
# fake_refusals PORT S0: what the fake refused since S0 (to explain a failure).
fake_refusals() {
  fake_q "$1" "$2" '[.errors[] | select(.seq > $s0) | "\(.op) \(.status) \(.reason)"] | join("; ")' 2>/dev/null
}
# fake_wait SECS PORT S0 WHY FILTER: wait until FILTER holds on PORT's state (some vendor
# calls, like DeleteIngress, may follow the client's DELETE); else FAIL=WHY + refusals.
fake_wait() {
  local secs=$1 port=$2 s0=$3 why=$4 filter=$5 end=$((SECONDS + $1))
  while :; do
    fake_state "$port" >"$TMP/fake-$port.json"
    jq -e --argjson s0 "$s0" "$FAKE_DEFS $filter" "$TMP/fake-$port.json" >/dev/null 2>&1 && return 0
    [ $SECONDS -ge $end ] && break
    sleep 0.2
  done
  FAIL="$why (fake refusals: $(fake_refusals "$port" "$s0"))"
  return 1
}
fake_ok() { fake_wait 0 "$@"; }
# front_log_has REGEX [AFTER]: whipgate-front.log has REGEX (after the line matching AFTER).
front_log_has() {
  if [ -n "${2:-}" ]; then sed -n "/$2/,\$p" "$TMP/whipgate-front.log" | grep -qE "$1"
  else grep -qE "$1" "$TMP/whipgate-front.log"; fi
}

# ------------------------------------------------------------------ peer helpers
# vpub TAG STREAM [HOLD]: aiortc publishes STREAM through the front whipgate (log $TMP/TAG.log,
# answer $TMP/TAG.answer.sdp); pid in LAST_PID. It DELETEs (200, then 404) when released.
vpub() {
  rm -f "$TMP/$1.ready" "$TMP/$1.release" "$TMP/$1.state"
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$FRONT/whip/$2" \
    --expect-absolute "$FRONT/session/" --ready-file "$TMP/$1.ready" --release-file "$TMP/$1.release" \
    --state-file "$TMP/$1.state" --answer-file "$TMP/$1.answer.sdp" --hold "${3:-60}") >"$TMP/$1.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
# vpub_ready TAG PID: wait for the connection; else FAIL.
vpub_ready() {
  wait_for 20 "$2" "aiortc $1" test -f "$TMP/$1.ready" && return 0
  FAIL="publisher $1: $(result_line "$1" || echo 'no connection within 20 s')"; return 1
}
# vpub_stop TAG PID: release it; FAIL unless it ends with RESULT ok (DELETE 200, then 404).
vpub_stop() {
  release_publisher "$1" "$2"
  [ "$(result_line "$1")" = "RESULT ok" ] && return 0
  FAIL="publisher $1: $(result_line "$1" || echo 'no RESULT')"; return 1
}
# vplay TAG STREAM: aiortc plays STREAM from the front whipgate (frames counted), then DELETEs.
vplay() {
  nsx "$VENV_PY" "$HERE/aiortc_play.py" "$FRONT/whep/$2" --min-frames 30 --min-audio 20 --timeout 20 \
    >"$TMP/$1.log" 2>&1 && { note "$1: $(grep -E '^check: decoded' "$TMP/$1.log" | sed 's/^check: //')"; return 0; }
  FAIL="player $1: $(result_line "$1" || echo 'no RESULT')"; return 1
}
# vpost TAG STREAM OFFER_FILE: curl POSTs a corpus offer to the front's WHIP; sets CODE, BODY.
vpost() {
  CODE=$(nsx curl -s -m 10 -D "$TMP/$1.headers" -o "$TMP/$1.body" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/sdp' --data-binary @"$3" "$FRONT/whip/$2")
  BODY=$(cat "$TMP/$1.body" 2>/dev/null)
}
corpus() { # NAME: a corpus offer, or FAIL
  [ -f "$SDP_CORPUS/$1" ] && return 0
  FAIL="missing $SDP_CORPUS/$1 (set WHIPGATE_SDP_CORPUS)"; return 1
}

# Run a vendor test body (test_X_steps) with setup and the usual bookkeeping. Steps set
# FAIL and return 1 on the first failure; VPIDS lists publishers to release whatever happens.
vendor_test() {
  local name=$1 steps=$2 p
  FAIL='' VPIDS=()
  if ! vendors_setup; then not_ok "$name" "setup: $VENDORS_FAIL"; return; fi
  "$steps"
  for p in "${VPIDS[@]}"; do
    kill -0 "${p#*:}" 2>/dev/null && release_publisher "${p%%:*}" "${p#*:}"
  done
  if [ -n "$FAIL" ]; then not_ok "$name" "$FAIL"; else ok "$name"; fi
}

# ------------------------------------------------------------------ O: livekit, native WHIP
test_o_steps() {
  local s0 pub pid ident
  s0=$(fake_seq)
  note "O: aiortc -> $FRONT/whip/live-lk -> livekit /whip/v1 -> origin"
  vpub v-lk live-lk; pub=$LAST_PID; VPIDS+=("v-lk:$pub")
  vpub_ready v-lk "$pub" || return 1
  fake_ok "$FAKE_PORT_LK" "$s0" "LiveKit saw no single verified WHIP POST for room live-lk with the expected claims" \
    'h("whip.create") | length == 1 and (.[0] | .room == "live-lk" and (.identity | length > 0)
      and (.claims | .iss == "'"$LK_KEY"'" and .video.roomJoin == true and .video.room == "live-lk"
        and .video.canPublish == true and .video.canSubscribe == false and .exp_in > 0 and .exp_in <= 3600
        and .auth_source == "header"))' || return 1
  pid=$(fake_q "$FAKE_PORT_LK" "$s0" 'h("whip.create")[0].participant_id')
  ident=$(fake_q "$FAKE_PORT_LK" "$s0" 'h("whip.create")[0].identity')
  note "O: LiveKit participant $pid, identity $ident, claims $(fake_q "$FAKE_PORT_LK" "$s0" 'h("whip.create")[0].claims | {sub, video, exp_in} | tostring')"
  front_log_has 'method=POST endpoint="whip" route="lk" backend="lk" .*status=201' ||
    { FAIL="whipgate-front.log has no WHIP POST placed on backend lk"; return 1; }
  vplay v-play-lk live-lk || return 1
  front_log_has 'method=POST endpoint="whep" route="lk" backend="origin" .*status=201' ||
    { FAIL="the WHEP POST did not fall through from lk to origin (whipgate-front.log)"; return 1; }
  VPIDS=(); vpub_stop v-lk "$pub" || return 1
  fake_wait 5 "$FAKE_PORT_LK" "$s0" "LiveKit recorded no DELETE of $pid by identity $ident (room live-lk) ending the origin session" \
    'h("whip.delete") | length == 1 and (.[0] | .participant_id == "'"$pid"'" and .identity == "'"$ident"'"
      and .room == "live-lk" and .matched == true and .origin_status == 200)' || return 1
  wait_for 5 "" "live-lk gone" sfu_gone live-lk || { FAIL="the origin SFU still lists live-lk after the DELETE"; return 1; }
}
test_o() { vendor_test "$NAME_O" test_o_steps; }

# ------------------------------------------------------------------ P: livekit, ingress
test_p_steps() {
  local s0 pub iid
  s0=$(fake_seq)
  note "P: aiortc -> $FRONT/whip/live-lki -> livekit CreateIngress + ingress WHIP -> origin"
  vpub v-lki live-lki; pub=$LAST_PID; VPIDS+=("v-lki:$pub")
  vpub_ready v-lki "$pub" || return 1
  fake_ok "$FAKE_PORT_LK" "$s0" "LiveKit saw no single CreateIngress (WHIP_INPUT, room live-lki, ingressAdmin) followed by a WHIP POST with its stream key" \
    'h("twirp.CreateIngress") as $c | h("ingress.create") as $w | ($c | length) == 1 and ($w | length) == 1
      and ($c[0] | .input_type == "WHIP_INPUT" and .room_name == "live-lki" and (.participant_identity | length > 0)
        and .claims.video.ingressAdmin == true and .claims.iss == "'"$LK_KEY"'")
      and $w[0].ingress_id == $c[0].ingress_id' || return 1
  iid=$(fake_q "$FAKE_PORT_LK" "$s0" 'h("twirp.CreateIngress")[0].ingress_id')
  note "P: ingress $iid ($(fake_q "$FAKE_PORT_LK" "$s0" 'h("twirp.CreateIngress")[0] | "name \(.name), identity \(.participant_identity)"'), key sent as $(fake_q "$FAKE_PORT_LK" "$s0" 'h("ingress.create")[0].auth_form')"
  vplay v-play-lki live-lki || return 1
  VPIDS=(); vpub_stop v-lki "$pub" || return 1
  fake_wait 5 "$FAKE_PORT_LK" "$s0" "LiveKit did not see the ingress session's DELETE followed by DeleteIngress $iid" \
    'h("ingress.delete") as $d | h("twirp.DeleteIngress") as $x | ($d | length) == 1 and ($x | length) == 1
      and $d[0].ingress_id == "'"$iid"'" and $d[0].origin_status == 200 and $x[0].ingress_id == "'"$iid"'"
      and $x[0].seq > $d[0].seq and $x[0].stopped_live_session == false
      and ([.ingresses[] | select(.ingress_id == "'"$iid"'" and .deleted)] | length == 1)' || return 1
  wait_for 5 "" "live-lki gone" sfu_gone live-lki || { FAIL="the origin SFU still lists live-lki"; return 1; }
}
test_p() { vendor_test "$NAME_P" test_p_steps; }

# ------------------------------------------------------------------ Q: Amazon IVS
test_q_steps() {
  local s0 pub ppid
  s0=$(fake_seq)
  corpus gstreamer-whip-offer.sdp || return 1
  note "Q: GStreamer's VP8-only corpus offer -> $FRONT/whip/live-ivs-vp8 (IVS wants H.264)"
  vpost v-ivs-vp8 live-ivs-vp8 "$SDP_CORPUS/gstreamer-whip-offer.sdp"
  [ "$CODE" = 422 ] || { FAIL="a VP8-only offer for ivs answered $CODE '$BODY', want 422"; return 1; }
  fake_ok "$FAKE_PORT_IVS" "$s0" "the VP8-only offer reached IVS" \
    '(h("CreateParticipantToken") | length) == 0 and ([.errors[] | select(.seq > $s0)] | length) == 0' || return 1
  note "Q: 422 '$BODY', no IVS call"
  note "Q: aiortc -> $FRONT/whip/live-ivs -> IVS token + 307 x$IVS_REDIRECTS -> regional -> origin"
  vpub v-ivs live-ivs; pub=$LAST_PID; VPIDS+=("v-ivs:$pub")
  vpub_ready v-ivs "$pub" || return 1
  fake_ok "$FAKE_PORT_IVS" "$s0" "IVS saw no single signed CreateParticipantToken (PUBLISH, session token) whose token came through $IVS_REDIRECTS redirects with Authorization" \
    'h("CreateParticipantToken") as $t | h("whip.create") as $w | ($t | length) == 1 and ($w | length) == 1
      and ($t[0] | .capabilities == ["PUBLISH"] and (.userId | length > 0) and .duration >= 1 and .duration <= 20160
        and .sigv4.access_key == "'"$AWS_AKID"'" and .sigv4.session_token == true
        and (.sigv4.signed_headers | index("host") != null and index("x-amz-date") != null))
      and ($w[0] | .participantId == $t[0].participantId and .redirects_followed == '"$IVS_REDIRECTS"'
        and ([.hops[] | select(.authorization and .body_bytes > 0)] | length) == '"$IVS_REDIRECTS"'
        and .host == "localhost:'"$FAKE_PORT_IVS_REGION"'" and .origin_stream == "live-ivs")' || return 1
  ppid=$(fake_q "$FAKE_PORT_IVS" "$s0" 'h("whip.create")[0].participantId')
  note "Q: IVS participant $ppid (userId $(fake_q "$FAKE_PORT_IVS" "$s0" 'h("CreateParticipantToken")[0].userId'), signed $(fake_q "$FAKE_PORT_IVS" "$s0" 'h("CreateParticipantToken")[0].sigv4.signed_headers | join(";")'))"
  vplay v-play-ivs live-ivs || return 1
  front_log_has 'method=POST endpoint="whep" route="ivs" backend="origin" .*status=201' ||
    { FAIL="the WHEP POST did not fall through from ivs to origin (whipgate-front.log)"; return 1; }
  VPIDS=(); vpub_stop v-ivs "$pub" || return 1
  fake_wait 5 "$FAKE_PORT_IVS" "$s0" "IVS did not see the regional DELETE (with the token) followed by DisconnectParticipant $ppid" \
    'h("whip.delete") as $d | h("DisconnectParticipant") as $x | ($d | length) == 1 and ($x | length) >= 1
      and $d[0].participantId == "'"$ppid"'" and $d[0].origin_status == 200
      and $x[0].participantId == "'"$ppid"'" and $x[0].seq > $d[0].seq and $x[0].stopped_live_session == false' || return 1
  # The client's second DELETE may reach IVS and be refused (404): anything else is a fault.
  fake_ok "$FAKE_PORT_IVS" "$s0" "IVS refused a call" \
    '[.errors[] | select(.seq > $s0 and .op != "whip.delete")] | length == 0' || return 1
}
test_q() { vendor_test "$NAME_Q" test_q_steps; }

# ------------------------------------------------------------------ R: Cloudflare Stream
test_r_steps() {
  local s0 pub pub2 uid
  s0=$(fake_seq)
  note "R: aiortc -> $FRONT/whip/live-cf -> Cloudflare live input -> origin; twice, with a WHEP play"
  vpub v-cf-1 live-cf; pub=$LAST_PID; VPIDS+=("v-cf-1:$pub")
  vpub_ready v-cf-1 "$pub" || return 1
  vplay v-play-cf live-cf || return 1
  VPIDS=(); vpub_stop v-cf-1 "$pub" || return 1
  wait_for 5 "" "live-cf gone" sfu_gone live-cf || { FAIL="the origin SFU still lists live-cf after the first DELETE"; return 1; }
  vpub v-cf-2 live-cf; pub2=$LAST_PID; VPIDS+=("v-cf-2:$pub2")
  vpub_ready v-cf-2 "$pub2" || return 1
  VPIDS=(); vpub_stop v-cf-2 "$pub2" || return 1
  fake_ok "$FAKE_PORT_CF" "$s0" "not exactly one live input whipgate:live-cf, created once, used by both publishes and the play" \
    '[.inputs[] | select(.name == "whipgate:live-cf" and (.deleted | not))] as $i
      | ($i | length) == 1 and (h("create") | map(select(.name == "whipgate:live-cf")) | length) == 1
      and ($i[0].publishes == 2) and ($i[0].plays == 1)' || return 1
  uid=$(fake_q "$FAKE_PORT_CF" "$s0" '.inputs[] | select(.name == "whipgate:live-cf") | .uid')
  fake_ok "$FAKE_PORT_CF" "$s0" "a media POST went to another input or carried Authorization" \
    '[h("media.publish")[], h("media.play")[]] | length == 3 and all(.uid == "'"$uid"'" and .authorization_sent == false)' || return 1
  fake_ok "$FAKE_PORT_CF" "$s0" "not every media session was DELETEd with its origin session" \
    '[h("media.delete")[] | select(.uid == "'"$uid"'" and .origin_status == 200)] | length == 3' || return 1
  note "R: input $uid; API calls $(fake_q "$FAKE_PORT_CF" "$s0" '[h("list"), h("get"), h("create")] | "list \(.[0] | length), get \(.[1] | length), create \(.[2] | length)"')"
}
test_r() { vendor_test "$NAME_R" test_r_steps; }

# ------------------------------------------------------------------ S: Dolby Millicast
test_s_steps() {
  local s0 pub
  s0=$(fake_seq)
  note "S: WHEP $FRONT/whep/live-dolby before any publisher"
  if ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$FRONT/whep/live-dolby" --expect-status 409 \
      >"$TMP/v-play-dolby-early.log" 2>&1; then
    FAIL="early WHEP: $(result_line v-play-dolby-early)"; return 1
  fi
  fake_ok "$FAKE_PORT_MC" "$s0" "Millicast did not answer the early WHEP 409 Stream not found" \
    '[.errors[] | select(.seq > $s0 and .op == "whep.create" and .status == 409)] | length == 1' || return 1
  note "S: $(grep -E '^check: POST answered' "$TMP/v-play-dolby-early.log" | sed 's/^check: //')"
  vpub v-dolby live-dolby; pub=$LAST_PID; VPIDS+=("v-dolby:$pub")
  vpub_ready v-dolby "$pub" || return 1
  vplay v-play-dolby live-dolby || return 1
  fake_ok "$FAKE_PORT_MC" "$s0" "Millicast saw no publish with the publish token and play with the subscribe token for live-dolby" \
    '(h("whip.create") | length == 1 and .[0].stream == "live-dolby" and .[0].token_kind == "publish")
      and (h("whep.create") | length == 1 and .[0].stream == "live-dolby" and .[0].token_kind == "subscribe")' || return 1
  VPIDS=(); vpub_stop v-dolby "$pub" || return 1
  fake_wait 5 "$FAKE_PORT_MC" "$s0" "the DELETEs did not reach the media host (localhost:$FAKE_PORT_MC_MEDIA) and end both origin sessions" \
    'h("media.delete") | length == 2 and all(.host == "localhost:'"$FAKE_PORT_MC_MEDIA"'" and .origin_status == 200)
      and (map(.kind) | sort) == ["whep", "whip"]' || return 1
}
test_s() { vendor_test "$NAME_S" test_s_steps; }

# ------------------------------------------------------------------ T: provisioning webhook
test_t_steps() {
  local s0 pub
  s0=$(fake_seq)
  corpus aiortc116-whip-offer.sdp || return 1
  note "T: $FRONT/whip/live-hook-denied (the provisioner says no)"
  vpost v-hook-denied live-hook-denied "$SDP_CORPUS/aiortc116-whip-offer.sdp"
  if [ "$CODE" != 403 ] || [[ "$BODY" != *"stream is not booked"* ]]; then
    FAIL="a denied stream answered $CODE '$BODY', want 403 with 'stream is not booked'"; return 1
  fi
  fake_ok "$FAKE_PORT_HOOK" "$s0" "no verified opening event for live-hook-denied answered allowed=false, or its offer reached the WHIP server" \
    '([.events[] | select(.seq > $s0 and .stream == "live-hook-denied" and .event == "opening" and .kind == "whip"
        and .verified and .answer.allowed == false)] | length) == 1
      and ([h("whip.create")[] | select(.stream == "live-hook-denied")] | length) == 0' || return 1
  note "T: denied: $CODE '$BODY'"
  vpub v-hook live-hook; pub=$LAST_PID; VPIDS+=("v-hook:$pub")
  vpub_ready v-hook "$pub" || return 1
  vplay v-play-hook live-hook || return 1
  VPIDS=(); vpub_stop v-hook "$pub" || return 1
  fake_wait 5 "$FAKE_PORT_HOOK" "$s0" "the provisioner did not get verified opening and closing events for the WHIP and WHEP of live-hook, or the sessions did not end" \
    '[.events[] | select(.seq > $s0 and .stream == "live-hook")] as $e
      | ([$e[] | "\(.event)/\(.kind)"] | unique) == ["closing/whep", "closing/whip", "opening/whep", "opening/whip"]
      and ([$e[] | select(.event == "opening")] | length) == 2
      and all($e[]; .verified and (.route | length > 0) and (.request_id | length > 0))
      and (h("whip.create") | length) == 1 and (h("whep.create") | length) == 1
      and ([h("delete")[] | select(.stream == "live-hook" and .origin_status == 200)] | length) == 2' || return 1
  fake_ok "$FAKE_PORT_HOOK" "$s0" "an event did not verify" '[.events[] | select(.seq > $s0 and (.verified | not))] | length == 0' || return 1
  note "T: events $(fake_q "$FAKE_PORT_HOOK" "$s0" '[.events[] | select(.seq > $s0) | "\(.event)/\(.kind)/\(.stream)"] | join(" ")')"
}
test_t() { vendor_test "$NAME_T" test_t_steps; }

# ------------------------------------------------------------------ U: vendor switch by reload
test_u_steps() {
  local s0 p1 p2 pid ident reloads
  s0=$(fake_seq)
  note "U: aiortc -> $FRONT/whip/live-sw-1 on livekit"
  vpub v-sw-1 live-sw-1; p1=$LAST_PID; VPIDS+=("v-sw-1:$p1")
  vpub_ready v-sw-1 "$p1" || return 1
  fake_ok "$FAKE_PORT_LK" "$s0" "publisher 1 did not land on livekit (room live-sw-1)" \
    'h("whip.create") | length == 1 and .[0].room == "live-sw-1"' || return 1
  pid=$(fake_q "$FAKE_PORT_LK" "$s0" 'h("whip.create")[0].participant_id')
  ident=$(fake_q "$FAKE_PORT_LK" "$s0" 'h("whip.create")[0].identity')
  fake_ok "$FAKE_PORT_LK" "$s0" "identity $ident was used by an earlier LiveKit session (identities must be unique per session)" \
    '[.participants[] | select(.identity == "'"$ident"'")] | length == 1' || return 1
  # -- live edit: live-sw-* -> ivs
  reloads=$(grep -c 'routes reloaded' "$TMP/whipgate-front.log")
  front_routes ivs | write_front
  front_reloaded() { [ "$(grep -c 'routes reloaded' "$TMP/whipgate-front.log")" -gt "$reloads" ]; }
  wait_for 10 "$FRONT_PID" "front whipgate reload" front_reloaded ||
    { FAIL="the front whipgate did not log 'routes reloaded' ($(grep -E 'routes' "$TMP/whipgate-front.log" | tail -1))"; return 1; }
  grep -q 'routes.toml refused' "$TMP/whipgate-front.log" &&
    { FAIL="the front whipgate refused a routes.toml: $(grep -m1 'routes.toml refused' "$TMP/whipgate-front.log")"; return 1; }
  local mark; mark=$(grep 'routes reloaded' "$TMP/whipgate-front.log" | tail -1 | grep -oE 'generation=[0-9]+')
  note "U: routes reloaded ($mark): live-sw-* -> ivs"
  vpub v-sw-2 live-sw-2; p2=$LAST_PID; VPIDS+=("v-sw-2:$p2")
  vpub_ready v-sw-2 "$p2" || return 1
  fake_ok "$FAKE_PORT_IVS" "$s0" "publisher 2 did not land on ivs" \
    '(h("CreateParticipantToken") | length) == 1 and (h("whip.create") | length) == 1' || return 1
  fake_ok "$FAKE_PORT_LK" "$s0" "publisher 2 reached livekit" \
    '[h("whip.create")[] | select(.room == "live-sw-2")] | length == 0' || return 1
  front_log_has 'method=POST endpoint="whip" route="sw" backend="ivs" .*status=201' "routes reloaded.*$mark" ||
    { FAIL="whipgate-front.log has no POST placed on ivs after the reload"; return 1; }
  # -- publisher 1 is still live on livekit; its DELETE (pre-reload session) goes there
  kill -0 "$p1" 2>/dev/null || { FAIL="publisher 1 exited during the reload: $(result_line v-sw-1)"; return 1; }
  grep -qE 'failed|closed' "$TMP/v-sw-1.state" 2>/dev/null &&
    { FAIL="publisher 1's connection went $(tr '\n' ' ' <"$TMP/v-sw-1.state")"; return 1; }
  VPIDS=("v-sw-2:$p2"); vpub_stop v-sw-1 "$p1" || return 1
  fake_wait 5 "$FAKE_PORT_LK" "$s0" "livekit recorded no DELETE of $pid by identity $ident after the reload" \
    'h("whip.delete") | length == 1 and (.[0] | .participant_id == "'"$pid"'" and .identity == "'"$ident"'"
      and .room == "live-sw-1" and .matched == true and .origin_status == 200)' || return 1
  front_log_has 'method=DELETE endpoint="session" route="sw" backend="lk" .*status=200' "routes reloaded.*$mark" ||
    { FAIL="whipgate-front.log has no DELETE to lk answered 200 after the reload"; return 1; }
  VPIDS=(); vpub_stop v-sw-2 "$p2" || return 1
  fake_wait 5 "$FAKE_PORT_IVS" "$s0" "publisher 2's DELETE did not end its IVS participant" \
    '(h("whip.delete") | length) == 1 and (h("DisconnectParticipant") | length) >= 1' || return 1
  note "U: publisher 1 ($pid) DELETEd on livekit after the reload, publisher 2 on ivs"
}
test_u() { vendor_test "$NAME_U" test_u_steps; }

# ------------------------------------------------------------------ V: no vendor secret leaks
test_v_steps() {
  local secrets=() s f hits=
  secrets=("$LK_SECRET" "$AWS_SECRET" "$AWS_TOKEN" "$CF_TOKEN" "$MC_PUBLISH" "$MC_SUBSCRIBE" "$HOOK_SECRET")
  # What the fakes minted or handed out: CF webRTC secrets (and RTMPS keys), LiveKit stream
  # keys, IVS participant tokens, webhook bearers.
  while read -r s; do [ -n "$s" ] && secrets+=("$s"); done < <(
    fake_state "$FAKE_PORT_CF" | jq -r '.inputs[]? | .secret, .rtmps_key'
    fake_state "$FAKE_PORT_LK" | jq -r '.ingresses[]? | .stream_key'
    fake_state "$FAKE_PORT_IVS" | jq -r '.participants[]? | .token'
    fake_state "$FAKE_PORT_HOOK" | jq -r '.bearers // {} | .[]')
  # Both whipgates' logs and everything the clients wrote or received (vendor-fakes.log is
  # the vendors' side: it holds no secret either, but it is theirs to know).
  for f in "$TMP/whipgate.log" "$TMP/whipgate-front.log" "$TMP"/v-*.log "$TMP"/v-*.body "$TMP"/v-*.headers \
           "$TMP"/v-*.answer.sdp; do
    [ -f "$f" ] || continue
    for s in "${secrets[@]}"; do
      if grep -qF -- "$s" "$f"; then hits="$hits $(basename "$f")"; break; fi
    done
  done
  [ -z "$hits" ] || { FAIL="a vendor secret found in:$hits"; return 1; }
  note "V: ${#secrets[@]} secrets, none in whipgate.log, whipgate-front.log or the clients' files"
}
test_v() { vendor_test "$NAME_V" test_v_steps; }
