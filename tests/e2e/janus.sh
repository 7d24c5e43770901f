#!/usr/bin/env bash
# End-to-end test: real WebRTC publishers -> whipgate -> simple-whip-server -> Janus 1.1.2.
#
#   tests/e2e/janus.sh WHIPGATE_BIN          # the real thing
#   E2E_DIRECT=1 tests/e2e/janus.sh          # peers talk straight to simple-whip-server
#
# Needs root (network namespace) and the deps of scripts/install-test-deps
# (deps dir ${WHIPGATE_TEST_DEPS:-/var/cache/whipgate-test-deps}).
# Env: E2E_DIRECT=1 bypass whipgate; E2E_KEEP=1 keep the temp dir; E2E_VERBOSE=1 dump logs
# even on success; E2E_TESTS="A B C" pick tests (A whip-client, B aiortc, C .local offer;
# with whipgate, D (.local stripped) and E (backend token never leaks) are added, and by default
# F G H: a route with sdp = { video_codecs = ["H264"] } -- F aiortc offering VP8+H264,
# G whip-client publishing H264, H whip-client / the GStreamer corpus offer with VP8 only: 422),
# and I: hot reload moves a stream prefix from backend janus-a to janus-b (a second
# simple-whip-server, a second room) while a publisher is live on janus-a.
# With whipgate, also the built-in SFU (backend kind builtin, streams live-*): J aiortc
# publishes and plays, K simple-whip-client publishes and aiortc plays until the publisher
# leaves, L Chromium's /publish page publishes while Chromium's /play page and aiortc play,
# M one publisher to Janus and one to the built-in SFU at the same time.
# Also with whipgate, vendor backends against contract fakes (vendors.sh, vendor_fakes.py):
# O livekit, P livekit ingress, Q ivs, R cloudflare, S millicast, T webhook, U vendor switch by
# reload, V no vendor secret leaks. And real publishers as users run them (ffmpeg.sh): W FFmpeg 9
# with its default flags and X with -whip_flags dtls_active to the built-in SFU, Y FFmpeg to
# Janus and through every vendor kind, Z simple-whip-client publishing for 60 s, OB an
# OBS-like publisher (candidate-less offer, no trickle) to the SFU and to Janus.
# Prints "ok - NAME" / "not ok - NAME: reason" per test and ends with "N passed, M failed".
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
DEPS=${WHIPGATE_TEST_DEPS:-/var/cache/whipgate-test-deps}
VENV_PY=$DEPS/venv/bin/python
SWS_DIR=$DEPS/simple-whip-server
# Real offers captured from the peers (test H posts GStreamer's); the Rust tests use it too.
SDP_CORPUS=${WHIPGATE_SDP_CORPUS:-$HERE/../../../shared/sdp-corpus}
STUB_DIR=$DEPS/gupnp-stub
DIRECT=${E2E_DIRECT:-0}
TESTS=${E2E_TESTS:-A B C}
WHIPGATE_BIN=${1:-}

BACKEND_TOKEN=backend-secret-123
TURN_SECRET=turn-shared-secret-789   # coturn use-auth-secret (test N)
BACKEND_TOKEN_B=backend-b-secret-456   # simple-whip-server B (test I)
CLIENT_TOKEN=client-token-not-forwarded
ADMIN_SECRET=janusoverlord
ROOM=1234
ROOM_B=4321   # test I: janus-b's room (simple-whip-server B); janus-a's is ROOM

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
note() { echo "# [$(elapsed)s] $*"; }

# ------------------------------------------------------------------ preconditions
die_early() { echo "not ok - setup: $*"; echo "0 passed, 1 failed"; exit 1; }
[ "$(id -u)" -eq 0 ] || die_early "must run as root (ip netns)"
if [ "$DIRECT" != 1 ]; then
  [ -n "$WHIPGATE_BIN" ] || die_early "usage: $0 WHIPGATE_BIN  (or E2E_DIRECT=1 $0)"
  [ -x "$WHIPGATE_BIN" ] || die_early "whipgate binary $WHIPGATE_BIN not found or not executable"
  WHIPGATE_BIN=$(cd "$(dirname "$WHIPGATE_BIN")" && pwd)/$(basename "$WHIPGATE_BIN")
fi
for f in /usr/bin/janus /usr/bin/whip-client "$VENV_PY" "$SWS_DIR/src/server.js" \
         "$STUB_DIR/libgupnp-igd-1.0.so.4"; do
  [ -e "$f" ] || die_early "missing $f: run scripts/install-test-deps"
done
for c in ip curl jq node; do
  command -v "$c" >/dev/null || die_early "missing $c: run scripts/install-test-deps"
done

# ------------------------------------------------------------------ cleanup of stale runs
# A run killed with SIGKILL leaves its namespace behind: remove those whose owner is gone.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^wg-e2e-[0-9]+$' || true); do
  owner=${ns#wg-e2e-}
  if ! kill -0 "$owner" 2>/dev/null; then
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null && note "removed stale namespace $ns"
    rm -rf /tmp/whipgate-e2e-"$owner"-*
  fi
done

NS=wg-e2e-$$
TMP=$(mktemp -d /tmp/whipgate-e2e-$$-XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # Give them a moment, then make sure nothing of ours survives in the namespace.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if ip netns list 2>/dev/null | grep -qw "$NS"; then
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
  fi
  if [ "${E2E_KEEP:-0}" = 1 ]; then echo "# kept $TMP"; else rm -rf "$TMP"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nsx() { ip netns exec "$NS" "$@"; }
# Start CMD in the namespace in the background, logging to $TMP/NAME.log; pid in $LAST_PID.
start_bg() {
  local name=$1; shift
  ip netns exec "$NS" "$@" >"$TMP/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# ------------------------------------------------------------------ result bookkeeping
PASSED=0; FAILED=0
ok() { echo "ok - $1"; PASSED=$((PASSED + 1)); matrix_rows "${CURRENT_TEST:-}" >>"$MATRIX_FILE"; }
# The README's table of publishers and players per backend kind is generated from these rows
# (scripts/peer-matrix): each passing test adds "publisher|backend kind|player" lines; a
# player of "-" means the backend itself showed the media (Janus' Admin API).
MATRIX_FILE=${E2E_MATRIX:-$HERE/../../target/e2e-artifacts/peer-matrix.txt}
mkdir -p "$(dirname "$MATRIX_FILE")"; : >"$MATRIX_FILE"
FIRST_MEDIA_FILE=$(dirname "$MATRIX_FILE")/first-media.txt   # ffmpeg.sh's timings
: >"$FIRST_MEDIA_FILE"
matrix_rows() {
  local gst="GStreamer (simple-whip-client)" ff="FFmpeg 9" obs="OBS-like (aiortc, no candidates, no trickle)"
  case $1 in
    A) echo "$gst|whip (Janus)|-" ;;
    B) echo "aiortc|whip (Janus)|-" ;;
    G) echo "$gst|whip (Janus)|-" ;;
    J) echo "aiortc|builtin|aiortc" ;;
    K) echo "$gst|builtin|aiortc" ;;
    L) printf '%s\n' "Chromium|builtin|Chromium" "Chromium|builtin|aiortc" ;;
    N) printf '%s\n' "aiortc|builtin|Chromium" "Chromium|builtin|aiortc" ;;
    O) echo "aiortc|livekit|aiortc" ;;
    P) echo "aiortc|livekit (ingress)|aiortc" ;;
    Q) echo "aiortc|ivs|aiortc" ;;
    R) echo "aiortc|cloudflare|aiortc" ;;
    S) echo "aiortc|millicast|aiortc" ;;
    T) echo "aiortc|webhook|aiortc" ;;
    W | X) echo "$ff|builtin|aiortc" ;;
    Y) printf '%s\n' "$ff|whip (Janus)|-" "$ff|livekit|aiortc" "$ff|livekit (ingress)|aiortc" \
         "$ff|ivs|aiortc" "$ff|cloudflare|aiortc" "$ff|millicast|aiortc" "$ff|webhook|aiortc" ;;
    Z) echo "$gst|builtin|aiortc" ;;
    OB) printf '%s\n' "$obs|builtin|aiortc" "$obs|whip (Janus)|-" ;;
    GS) printf '%s\n' "GStreamer (whipclientsink)|builtin|aiortc" "GStreamer (whipclientsink)|whip (Janus)|-" ;;
    JN) printf '%s\n' "aiortc|janus|aiortc" "aiortc|janus|Chromium" ;;
    JK) echo "aiortc|janus|aiortc" ;;
    SL) echo "Chromium|builtin|aiortc" ;;
    DR) printf '%s\n' "aiortc|builtin|aiortc" "aiortc|builtin|Chromium" ;;
    # Relay rows: the publisher's backend, and the targets' kinds (whipgate B and C are
    # built-in SFUs behind kind whip).
    RL) echo "aiortc|builtin|aiortc" ;;
    RA) printf '%s\n' "aiortc|builtin|aiortc" "aiortc|whip (Janus)|-" ;;
    PL | RF) echo "aiortc|builtin|aiortc" ;;
    AG) printf '%s\n' "aiortc|pipecat|aiortc" "Chromium|pipecat|Chromium" ;;
  esac
}
not_ok() { echo "not ok - $1: $2"; FAILED=$((FAILED + 1)); }
dump() {
  local f
  for f in "$@"; do
    [ -f "$TMP/$f" ] || continue
    echo "# ---------- $f (last 80 lines)"
    tail -n 80 "$TMP/$f" | sed 's/^/#   /'
  done
}
dump_all() {
  dump whipgate.log sws.log whip-client.log aiortc.log aiortc-mdns.log aiortc-h264.log \
    whip-client-h264.log whip-client-vp8.log whipgate-reload.log sws-b.log aiortc-move-1.log \
    aiortc-move-2.log aiortc-play-j0.log aiortc-j.log aiortc-play-j.log whip-client-k.log \
    aiortc-play-k.log chromium-publish.log chromium-play.log aiortc-play-l.log aiortc-m-janus.log \
    aiortc-m-sfu.log coturn.log aiortc-relay.log chromium-relay-play.log chromium-relay-publish.log \
    aiortc-relay-play.log chromium-pages.log dr-publish.log dr-play.log dr-chromium.log jn-pub.log jn-play.log jn-chromium.log jn-whip-client.log jk-pub.log jk-play.log replica-b.log rl-pub.log rl-play-b.log rl-play-c.log ra-pub.log ra-play-b.log edge-b.log edge-c.log edge-pull.log rf-pub.log rf-play-b.log pl-pub.log pl-play-1.log pl-play-2.log sl-publish.log sl-play-q.log sl-play-top.log "${VENDOR_LOGS[@]}" "${AGENT_LOGS[@]}" \
    "${FFMPEG_LOGS[@]}" janus.log
}

NAME_A="whip-client (GStreamer, trickle via PATCH) publishes VP8+Opus, media reaches Janus, SIGINT DELETE releases it"
NAME_B="aiortc 1.16 publishes, media reaches Janus, DELETE 200 then 404"
NAME_C="offer with a .local (mDNS) candidate is accepted"
NAME_D="whipgate drops the .local candidate before forwarding the offer (RFC 9725 4.3.2)"
# D checks what whipgate did, so it needs whipgate and test C.
if [ "$DIRECT" != 1 ] && [[ " $TESTS " == *" C "* ]] && [[ " $TESTS " != *" D "* ]]; then TESTS="$TESTS D"; fi
NAME_F="route forcing H264: aiortc offers VP8+H264 in one m-line, the backend gets H264 only, Janus negotiates and receives H264"
NAME_G="route forcing H264: whip-client (GStreamer) publishes H264, Janus negotiates and receives H264"
NAME_H="route forcing H264: a VP8-only offer (whip-client, GStreamer corpus offer) gets 422 and never reaches the backend"
# Added in gateway mode unless E2E_TESTS picks tests:
NAME_I="hot reload: move-* moved from janus-a to janus-b (janus-a removed) while a publisher is live; an invalid file is refused; the old session keeps its media and its DELETE reaches janus-a"
# F G H test whipgate's per-route SDP policy, I its routes.toml hot reload.
if [ "$DIRECT" != 1 ] && [ -z "${E2E_TESTS:-}" ]; then TESTS="$TESTS F G H I J K L M N O P Q R S T U V W X Y Z OB GS PG DR JN JK SL RL RF RA PL AG"; fi
NAME_N="TURN: aiortc and Chromium get coturn credentials minted by whipgate (OPTIONS, use-auth-secret) and carry media through the relay only; Chromium plays relay-only too"
NAME_PG="pages: an embedded <whep-player> on another origin plays; the publish page opened at localhost (session URLs on 127.0.0.1) shows the WHIP URL for OBS and live send stats, stops cleanly (DELETE 200, camera and microphone released), the play page says the stream ended within 2 s of the DELETE's answer, and closing a publishing tab ends its session"
NAME_DR="drain: POST /admin/drain ends the drained backend's publisher (close_notify), the aiortc publisher re-publishes and lands on the route's next backend; an aiortc player and Chromium's play page follow their WHEP reconnect event there, sent once the stream is live again (the aiortc player also hears active, viewercount and layers); the seconds without frames at each player are counted"
NAME_JN="kind janus (Janus's own HTTP API, no WHIP server): aiortc publishes into a VideoRoom room created for its stream, aiortc and Chromium's play page play through the 406 counter-offer made of Janus's subscriber offer (PATCH application/sdp 204), frames decoded; aiortc plays it through the SFU too, which pulls it from Janus (pull = "janus-api", Janus offering) and drops the pull when the player leaves; simple-whip-client publishes with trickle; rooms and Janus sessions are gone after the DELETEs"
NAME_JK="kind janus: a publisher whose replica is killed stays in its room past Janus's 60 s session timeout (another replica keeps its session alive), plays through the other replica, and is ended by DELETE through a restarted replica"
NAME_RL="relay, failover: aiortc publishes on the SFU, which republishes to whipgate B; a player decodes on B; B is killed (SIGKILL) and the copy moves to whipgate C, where frames flow again (seconds counted) and a player decodes; the publisher's connection never changes state; its DELETE ends the copy on C"
NAME_RA="relay, all: one aiortc publisher on the SFU, copies on Janus (through simple-whip-server) and on whipgate B at once; a player decodes on B; a third target whose SDP policy takes only AV1, a codec the publisher never negotiated, is skipped (log line, metric reason codec); the publisher's DELETE ends both copies"
NAME_RF="relay failback: the copy moves from whipgate B (killed) to C, and back to B once B has restarted and rested failback = 3s (make before break: frames on B, then the copy on C closed); a player decodes on B; the publisher never notices"
NAME_PL="pull: an edge whipgate's SFU (pull = \"origin\") serves two aiortc players of a stream published on the main gateway's SFU through one WHEP pull (the origin counts one viewer), and drops the pull when both players have left"
NAME_SL="built-in SFU, WHEP layer extension: Chromium publishes simulcast (q h f); an aiortc player that chooses q decodes the small picture, one that chooses nothing the highest layer"
NAME_J="built-in SFU: WHEP before any publisher is 409 + Retry-After; aiortc publishes, aiortc plays (frames decoded); DELETE ends both"
NAME_K="built-in SFU: whip-client (GStreamer, trickle via PATCH) publishes, aiortc plays; when the publisher's DELETE comes, its viewers are released"
NAME_L="built-in SFU: Chromium publishes from /publish, Chromium plays /play (frames decoded, pixels not black, screenshot; the page shows live and the viewer count from WHEP events) and aiortc plays too"
NAME_M="routes.toml sends one publisher to Janus (remote backend) and another to the built-in SFU at the same time; both carry media"
NAME_E="the backend tokens and the TURN secret never show in whipgate's log or in what clients received"
if [ "$DIRECT" != 1 ] && [[ " $TESTS " != *" E "* ]]; then TESTS="$TESTS E"; fi
# shellcheck source-path=SCRIPTDIR source=vendors.sh
. "$HERE/vendors.sh"   # NAME_O .. NAME_V, VENDOR_LOGS, test_o .. test_v
# shellcheck source-path=SCRIPTDIR source=ffmpeg.sh
. "$HERE/ffmpeg.sh"    # NAME_W .. NAME_Z, FFMPEG_LOGS, test_w .. test_z
# shellcheck source-path=SCRIPTDIR source=agents.sh
. "$HERE/agents.sh"    # NAME_AG, AGENT_LOGS, test_ag
ALL_NAMES=()
for t in $TESTS; do
  case $t in
    A) ALL_NAMES+=("$NAME_A");; B) ALL_NAMES+=("$NAME_B");;
    C) ALL_NAMES+=("$NAME_C");; D) ALL_NAMES+=("$NAME_D");; E) ALL_NAMES+=("$NAME_E");;
    F) ALL_NAMES+=("$NAME_F");; G) ALL_NAMES+=("$NAME_G");; H) ALL_NAMES+=("$NAME_H");;
    I) ALL_NAMES+=("$NAME_I");; J) ALL_NAMES+=("$NAME_J");; K) ALL_NAMES+=("$NAME_K");;
    L) ALL_NAMES+=("$NAME_L");; M) ALL_NAMES+=("$NAME_M");; N) ALL_NAMES+=("$NAME_N");;
    O | P | Q | R | S | T | U | V | W | X | Y | Z | OB | GS | PG | DR | JN | JK | SL | RL | RF | RA | PL | AG) n=NAME_$t; ALL_NAMES+=("${!n}");;
  esac
done
setup_failed() {
  local n
  echo "# setup failed: $1"
  for n in "${ALL_NAMES[@]}"; do not_ok "$n" "setup failed: $1"; done
  dump_all
  echo "$PASSED passed, $FAILED failed"
  exit 1
}

# ------------------------------------------------------------------ network namespace
ip netns add "$NS" || setup_failed "ip netns add $NS"
netns_add_veth "$NS" || setup_failed "namespace network"
note "namespace $NS ready, temp dir $TMP"

# ------------------------------------------------------------------ Janus
JCFG=$TMP/janus-conf
janus_write_config "$JCFG" "$ADMIN_SECRET" "$ROOM" "whipgate e2e" v0 || setup_failed "Janus config"
# A second room for test I's second backend: which room a publisher joined tells the backends apart.
cat >>"$JCFG/janus.plugin.videoroom.jcfg" <<EOF
room-$ROOM_B: {
  description = "whipgate e2e backend b"
  secret = "adminpwd"
  publishers = 6
  bitrate = 512000
  fir_freq = 10
  audiocodec = "opus"
  videocodec = "vp8,h264"
}
EOF
start_bg janus janus -F "$JCFG" -C "$JCFG/janus.jcfg" -o
JANUS_PID=$LAST_PID
wait_for() { # wait_for SECONDS PID DESC CMD... : poll CMD every 0.1 s while PID lives
  local secs=$1 pid=$2 desc=$3; shift 3
  local end=$((SECONDS + secs))
  while [ $SECONDS -lt $end ]; do
    "$@" >/dev/null 2>&1 && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null; echo "# $desc: process exited with status $?"; return 1
    fi
    sleep 0.1
  done
  echo "# $desc: timeout after ${secs}s"; return 1
}
janus_ready() { nsx curl -sf -m 1 http://127.0.0.1:8088/janus/info | grep -q '"server_info"'; }
wait_for 20 "$JANUS_PID" "janus" janus_ready || setup_failed "Janus not ready"
note "janus $(nsx curl -s http://127.0.0.1:8088/janus/info | jq -r .version_string) ready"

# Janus Admin API helper: admin PATH JSON-EXTRA -> prints the reply
admin() {
  local path=$1 extra=${2:-}
  nsx curl -s -m 3 -H 'Content-Type: application/json' -X POST \
    "http://127.0.0.1:7088/admin$path" \
    -d "{\"transaction\":\"e2e$RANDOM\",\"admin_secret\":\"$ADMIN_SECRET\"$extra}"
}
# All videoroom handles as lines "SESSION HANDLE"
list_all_handles() {
  local s h
  for s in $(admin "" ',"janus":"list_sessions"' | jq -r '.sessions[]?'); do
    for h in $(admin "/$s" ',"janus":"list_handles"' | jq -r '.handles[]?'); do
      echo "$s $h"
    done
  done
}
# handle_stats LABEL -> "SESSION HANDLE AUDIO_IN_PACKETS VIDEO_IN_PACKETS" of the videoroom
# publisher whose display is LABEL (nothing if none).
handle_stats() {
  local label=$1 s h info
  while read -r s h; do
    [ -n "$h" ] || continue
    info=$(admin "/$s/$h" ',"janus":"handle_info"')
    echo "$info" >"$TMP/handle-$h.json"
    if [ "$(jq -r '.info.plugin_specific.display // empty' <<<"$info")" = "$label" ]; then
      jq -r --arg s "$s" --arg h "$h" '
        [.info.webrtc.media // {} | to_entries[] | .value] as $m
        | ([$m[] | select(.type == "audio") | .stats.in.packets // 0] | add // 0) as $a
        | ([$m[] | select(.type == "video") | .stats.in.packets // 0] | add // 0) as $v
        | "\($s) \($h) \($a) \($v)"' <<<"$info"
      return 0
    fi
  done < <(list_all_handles)
}
handle_exists() { list_all_handles | awk -v h="$2" '$2 == h { found = 1 } END { exit !found }'; }
# participant_publishing LABEL [ROOM]: videoroom listparticipants shows LABEL with publisher true
participant_publishing() {
  admin "" ",\"janus\":\"message_plugin\",\"plugin\":\"janus.plugin.videoroom\",\"request\":{\"request\":\"listparticipants\",\"room\":${2:-$ROOM}}" |
    jq -e --arg l "$1" '[.response.participants[]? | select(.display == $l and .publisher == true)] | length > 0' >/dev/null
}
participant_present() { # LABEL [ROOM]
  admin "" ",\"janus\":\"message_plugin\",\"plugin\":\"janus.plugin.videoroom\",\"request\":{\"request\":\"listparticipants\",\"room\":${2:-$ROOM}}" |
    jq -e --arg l "$1" '[.response.participants[]? | select(.display == $l)] | length > 0' >/dev/null
}

# ------------------------------------------------------------------ simple-whip-server
SWS=$TMP/simple-whip-server
mkdir -p "$SWS"
cp "$SWS_DIR/src/server.js" "$SWS_DIR/src/whip-janus.js" "$SWS/"
cat >"$SWS/config.js" <<'EOF'
module.exports = { janus: { address: 'ws://127.0.0.1:8188' }, port: 7080, rest: '/whip',
  allowTrickle: true, strictETags: false, iceServers: [] };
EOF
(cd "$SWS" && NODE_PATH="$SWS_DIR/node_modules" DEBUG='whip:*' DEBUG_COLORS=0 \
  exec ip netns exec "$NS" node "$SWS/server.js") >"$TMP/sws.log" 2>&1 &
SWS_PID=$!; PIDS+=("$SWS_PID")
sws_ready() { nsx curl -sf -m 1 http://127.0.0.1:7080/whip/healthcheck; }
wait_for 15 "$SWS_PID" "simple-whip-server" sws_ready || setup_failed "simple-whip-server not ready"
STREAM_A=e2e-whipclient STREAM_B=e2e-aiortc STREAM_C=e2e-mdns
# Streams named h264-* take the route whose SDP policy allows only H264 for video (F G H).
STREAM_F=h264-aiortc STREAM_G=h264-whipclient STREAM_H=h264-vp8only
STREAM_M=e2e-mixed   # test M's Janus side
for id in $STREAM_A $STREAM_B $STREAM_C $STREAM_F $STREAM_G $STREAM_H $STREAM_M $STREAM_Y $STREAM_OB $STREAM_GS; do
  code=$(nsx curl -s -o /dev/null -w '%{http_code}' -m 3 -H 'Content-Type: application/json' \
    -X POST http://127.0.0.1:7080/whip/create \
    -d "{\"id\":\"$id\",\"room\":$ROOM,\"label\":\"label-$id\",\"token\":\"$BACKEND_TOKEN\"}")
  [ "$code" = 200 ] || setup_failed "POST /whip/create $id answered $code"
done
note "simple-whip-server ready, endpoints $STREAM_A $STREAM_B $STREAM_C $STREAM_F $STREAM_G $STREAM_H"

# ------------------------------------------------------------------ whipgate
if [ "$DIRECT" = 1 ]; then
  url_for() { echo "http://127.0.0.1:7080/whip/endpoint/$1"; }
  TOKEN=$BACKEND_TOKEN
  LOCATION_PREFIX=http://127.0.0.1:7080/whip/resource/  # whip-client resolves the relative one
  PY_ABS=()
  note "E2E_DIRECT=1: peers talk to simple-whip-server directly"
else
  cat >"$TMP/routes.toml" <<'EOF'
[server]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
session_keys = [{ id = "k1", secret_env = "WHIPGATE_SESSION_KEY" }]
pages = true
admin_token_env = "WHIPGATE_ADMIN_TOKEN"

# Peers in the namespace reach 127.0.0.2 (the libnice rule of real-peers.md).
[builtin]
udp_listen = "127.0.0.2:8189"

[[backend]]
id = "sfu"
kind = "builtin"

[[backend]]
id = "dead"
kind = "whip"
whip_url = "http://127.0.0.1:1/whip/endpoint/{stream}"   # connection refused -> failover

[[backend]]
id = "janus"
kind = "whip"
whip_url = "http://127.0.0.1:7080/whip/endpoint/{stream}"
auth = { bearer_env = "JANUS_TOKEN" }

# Routes are tried in file order: this one first. The backend only ever sees H264 video
# (VP8 and its rtx removed), or the client gets 422 when its offer has no H264.
[[route]]
match = { kind = "whip", stream = "h264-*" }
backends = ["janus"]
sdp = { video_codecs = ["H264"] }

# relay-* on the built-in SFU, with coturn as the only ICE server clients get (N).
[ice_server.coturn]
urls = ["turn:127.0.0.2:3478?transport=udp"]
turn_secret_env = "TURN_SECRET"
lifetime = "10m"

[[route]]
match = { stream = "relay-*" }
backends = ["sfu"]
ice_servers = ["coturn"]
ice_policy = "replace"

# Publish and play live-* on the built-in SFU (J K L M).
[[route]]
match = { stream = "live-*" }
backends = ["sfu"]

# DR: drain-* on a second name for the SFU, then (drained) on this gateway itself, whose
# moved-* streams are on the SFU again: a publisher and a player that follow a move.
[[backend]]
id = "sfu2"
kind = "builtin"

[[backend]]
id = "self"
kind = "whip"
whip_url = "http://127.0.0.1:8080/whip/moved-{stream}"
whep_url = "http://127.0.0.1:8080/whep/moved-{stream}"

# JN: Janus through its own HTTP API (kind janus): a VideoRoom room per stream.
[[backend]]
id = "janus-api"
kind = "janus"
url = "http://127.0.0.1:8088/janus"
room_admin_key_env = "JANUS_ROOM_KEY"

# JN: the same Janus stream played through the SFU, which pulls it over Janus's own API (a
# subscriber: Janus makes the offer) once and serves its viewers.
[[backend]]
id = "sfu-pull-janus"
kind = "builtin"
pull = "janus-api"

[[route]]
match = { kind = "whep", stream = "jn-*", query = { via = "sfu" } }
backends = ["sfu-pull-janus"]

[[route]]
match = { stream = "jn-*" }
backends = ["janus-api"]

[[route]]
match = { stream = "drain-*" }
backends = ["sfu2", "self"]

[[route]]
match = { stream = "moved-*" }
backends = ["sfu"]

# RL, RA: publishers on the SFU relayed to two more whipgates (B, C) and to Janus.
[[backend]]
id = "edge-b"
kind = "whip"
whip_url = "http://127.0.0.1:8084/whip/{stream}"

[[backend]]
id = "edge-c"
kind = "whip"
whip_url = "http://127.0.0.1:8085/whip/{stream}"

[[route]]
match = { stream = "rl-*" }
backends = ["sfu"]
relay = { to = ["edge-b", "edge-c"], mode = "failover" }

# AG: a voice agent, Pipecat's echo bot (started by the test) behind kind pipecat.
[[backend]]
id = "bot"
kind = "pipecat"
url = "http://127.0.0.1:7860"

[[route]]
match = { stream = "talk-*" }
backends = ["bot"]

[[route]]
match = { stream = "rf-*" }
backends = ["sfu"]
relay = { to = ["edge-b", "edge-c"], mode = "failover", failback = "3s" }

# RA: a target whose SDP policy takes only AV1, which the publisher (aiortc: VP8, H264) never
# negotiated: the leg is skipped (metric reason "codec") before any request reaches it.
[[backend]]
id = "av1-only"
kind = "whip"
whip_url = "http://127.0.0.1:8085/whip/{stream}"
sdp = { video_codecs = ["AV1"] }

[[route]]
match = { stream = "ra-*" }
backends = ["sfu"]
relay = { to = ["janus", "edge-b", "av1-only"], mode = "all" }

[[route]]
match = { kind = "whip", stream = "*" }
backends = ["dead", "janus"]
EOF
  SESSION_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  ADMIN_TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  (cd "$TMP" && exec env JANUS_TOKEN=$BACKEND_TOKEN WHIPGATE_SESSION_KEY="$SESSION_KEY" \
    WHIPGATE_ADMIN_TOKEN="$ADMIN_TOKEN" JANUS_ROOM_KEY=supersecret \
    TURN_SECRET="$TURN_SECRET" \
    RUST_LOG="${RUST_LOG:-info}" RUST_BACKTRACE=1 \
    ip netns exec "$NS" "$WHIPGATE_BIN" serve --config "$TMP/routes.toml") >"$TMP/whipgate.log" 2>&1 &
  WG_PID=$!; PIDS+=("$WG_PID")
  wg_ready() {
    local c
    c=$(nsx curl -s -o /dev/null -m 1 -w '%{http_code}' -X OPTIONS http://127.0.0.1:8080/whip/x)
    [ "${c:0:1}" = 2 ]
  }
  wait_for 20 "$WG_PID" "whipgate" wg_ready || setup_failed "whipgate not ready"
  url_for() { echo "http://127.0.0.1:8080/whip/$1"; }
  TOKEN=$CLIENT_TOKEN
  LOCATION_PREFIX=http://127.0.0.1:8080/session/
  PY_ABS=(--expect-absolute "$LOCATION_PREFIX")
  note "whipgate ready"
fi

# Wait until LABEL's publisher handle has > MIN audio and video packets; sets STATS.
wait_media() {
  local label=$1 min=$2 secs=$3 end=$((SECONDS + $3))
  STATS=
  while [ $SECONDS -lt $end ]; do
    STATS=$(handle_stats "$label")
    if [ -n "$STATS" ]; then
      read -r _ _ a v <<<"$STATS"
      [ "${a:-0}" -gt "$min" ] && [ "${v:-0}" -gt "$min" ] && return 0
    fi
    sleep 0.5
  done
  return 1
}
# wait_gone LABEL H SECS [ROOM]: wait until handle H (of LABEL) is gone and LABEL left the room.
wait_gone() {
  local label=$1 h=$2 end=$((SECONDS + $3)) room=${4:-$ROOM}
  while [ $SECONDS -lt $end ]; do
    if ! handle_exists x "$h" && ! participant_present "$label" "$room"; then return 0; fi
    sleep 0.3
  done
  return 1
}

# ------------------------------------------------------------------ test A: simple-whip-client
test_a() {
  local name=$NAME_A label=label-$STREAM_A url
  url=$(url_for "$STREAM_A")
  note "A: whip-client -> $url"
  (exec env LD_LIBRARY_PATH="$STUB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" GST_DEBUG_NO_COLOR=1 \
    ip netns exec "$NS" whip-client -u "$url" -t "$TOKEN" -o -L \
    -A "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=111 ssrc=1 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111" \
    -V "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue ! vp8enc deadline=1 target-bitrate=300000 keyframe-max-dist=30 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96") \
    >"$TMP/whip-client.log" 2>&1 &
  local wc=$!; PIDS+=("$wc")
  if ! wait_for 15 "$wc" "whip-client" grep -q 'PeerConnection connected' "$TMP/whip-client.log"; then
    not_ok "$name" "whip-client never logged 'PeerConnection connected' ($(grep -oE 'Disconnecting from server.*|[A-Za-z]+ failed.*' "$TMP/whip-client.log" | head -1))"
    kill -INT "$wc" 2>/dev/null; return
  fi
  if ! grep -q "Resource URL: $LOCATION_PREFIX" "$TMP/whip-client.log"; then
    not_ok "$name" "whip-client log lacks 'Resource URL: $LOCATION_PREFIX' ($(grep -o 'Resource URL: .*' "$TMP/whip-client.log" | head -1))"
    kill -INT "$wc" 2>/dev/null; return
  fi
  note "A: $(grep -o 'Resource URL: .*' "$TMP/whip-client.log" | head -1)"
  # ~6 s of media, checked on Janus' side
  sleep 5
  if ! wait_media "$label" 20 8; then
    not_ok "$name" "Janus admin: no publisher handle with audio+video packets for $label (got '${STATS}')"
    kill -INT "$wc" 2>/dev/null; return
  fi
  local s h a v; read -r s h a v <<<"$STATS"
  note "A: Janus handle $h in packets: audio $a video $v"
  if ! participant_publishing "$label"; then
    not_ok "$name" "videoroom listparticipants does not show $label as publisher"
    kill -INT "$wc" 2>/dev/null; return
  fi
  kill -INT "$wc" 2>/dev/null
  local end=$((SECONDS + 5))
  while kill -0 "$wc" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if kill -0 "$wc" 2>/dev/null; then
    not_ok "$name" "whip-client still running 5 s after SIGINT"; kill -KILL "$wc"; return
  fi
  if ! wait_gone "$label" "$h" 6; then
    not_ok "$name" "Janus handle $h / participant $label still there after whip-client's DELETE"; return
  fi
  # The trickle PATCH and the DELETE (sent to the Location the client got) reached the backend
  # with the backend's token (simple-whip-server answers 403 to any other).
  if grep -q ' \[trickle\] ' "$TMP/whip-client.log"; then
    not_ok "$name" "trickle PATCH failed: $(grep -o '\[trickle\] .*' "$TMP/whip-client.log" | head -1)"; return
  fi
  if ! grep -q "/resource\[trickle\]/: $STREAM_A" "$TMP/sws.log"; then
    not_ok "$name" "no trickle PATCH for $STREAM_A reached simple-whip-server"; return
  fi
  if ! grep -q "\[$STREAM_A\] Terminating WHIP session" "$TMP/sws.log"; then
    not_ok "$name" "whip-client's DELETE did not reach simple-whip-server"; return
  fi
  ok "$name"
}

# ------------------------------------------------------------------ test B: aiortc
test_b() {
  local name=$NAME_B label=label-$STREAM_B url ready=$TMP/aiortc.ready release=$TMP/aiortc.release
  url=$(url_for "$STREAM_B")
  note "B: aiortc -> $url"
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$url" --token "$TOKEN" \
    "${PY_ABS[@]}" --ready-file "$ready" --release-file "$release" --hold 25) \
    >"$TMP/aiortc.log" 2>&1 &
  local py=$!; PIDS+=("$py")
  if ! wait_for 20 "$py" "aiortc" test -f "$ready"; then
    not_ok "$name" "$(grep -E '^RESULT' "$TMP/aiortc.log" || echo 'no connection within 20 s')"; return
  fi
  note "B: $(cat "$ready")"
  sleep 5
  local fail=
  if ! wait_media "$label" 20 8; then
    fail="Janus admin: no publisher handle with audio+video packets for $label (got '${STATS}')"
  fi
  local s h a v; read -r s h a v <<<"$STATS"
  [ -n "$fail" ] || note "B: Janus handle $h in packets: audio $a video $v"
  if [ -z "$fail" ] && ! participant_publishing "$label"; then
    fail="videoroom listparticipants does not show $label as publisher"
  fi
  touch "$release"
  local end=$((SECONDS + 10))
  while kill -0 "$py" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  wait "$py"; local rc=$?
  [ -n "$fail" ] && { not_ok "$name" "$fail"; return; }
  if [ $rc -ne 0 ]; then
    not_ok "$name" "$(grep -E '^RESULT' "$TMP/aiortc.log" || echo "aiortc_publish.py exited $rc")"; return
  fi
  if ! wait_gone "$label" "$h" 6; then
    not_ok "$name" "Janus handle $h / participant $label still there after DELETE"; return
  fi
  if ! grep -q "\[$STREAM_B\] Terminating WHIP session" "$TMP/sws.log"; then
    not_ok "$name" "the DELETE did not reach simple-whip-server"; return
  fi
  ok "$name"
}

# ------------------------------------------------------------------ test C: .local candidate
test_c() {
  local name=$NAME_C url
  url=$(url_for "$STREAM_C")
  note "C: aiortc with a .local candidate -> $url"
  if nsx "$VENV_PY" "$HERE/aiortc_publish.py" "$url" --token "$TOKEN" "${PY_ABS[@]}" \
      --local-candidate --hold 0.5 >"$TMP/aiortc-mdns.log" 2>&1; then
    ok "$name"
  else
    not_ok "$name" "$(grep -E '^RESULT' "$TMP/aiortc-mdns.log" || echo 'aiortc_publish.py failed')"
  fi
}

# ------------------------------------------------------------------ test D: .local dropped
test_d() {
  local name=$NAME_D
  if [ "$DIRECT" = 1 ]; then echo "# D needs whipgate: skipped in direct mode"; return; fi
  # simple-whip-server (DEBUG=whip:*) logs every offer it receives.
  if ! grep -q "/endpoint/: $STREAM_C" "$TMP/sws.log"; then
    not_ok "$name" "no offer for $STREAM_C reached simple-whip-server"
  elif grep -q '3f1c9b2e-5d7a-4c1e-9f0a-[0-9]*\.local' "$TMP/sws.log"; then
    not_ok "$name" "the backend received the .local candidate: $(grep -m1 -o 'a=candidate:[^ ]* .*\.local.*' "$TMP/sws.log")"
  else
    ok "$name"
  fi
}

# ------------------------------------------------------------------ test E: secret stays
test_e() {
  local name=$NAME_E f hits=
  if [ "$DIRECT" = 1 ]; then echo "# E needs whipgate: skipped in direct mode"; return; fi
  # Everything whipgate and the clients wrote (the backends' and coturn's own logs hold
  # their own secrets).
  for f in "$TMP"/*.log "$TMP"/*.body; do
    [ -f "$f" ] || continue
    case $(basename "$f") in coturn* | sws* | janus*) continue ;; esac
    grep -qE "$BACKEND_TOKEN|$BACKEND_TOKEN_B|$TURN_SECRET" "$f" && hits="$hits $(basename "$f")"
  done
  if [ -n "$hits" ]; then not_ok "$name" "found in:$hits"; else ok "$name"; fi
}

# ------------------------------------------------------------------ SDP policy helpers (F G H)
# The offer simple-whip-server received for stream ID (with DEBUG=whip:* it logs
# "/endpoint/: ID", then the SDP up to an empty line), without CRs.
sws_offer() {
  awk -v id="$1" '
    { sub(/\r$/, "") }
    !grab && $0 ~ ("whip:debug /endpoint/: " id "$") { grab = 1; next }
    grab && $0 == "" { exit }
    grab { sub(/^[0-9TZ:.-]+ whip:debug /, ""); print }' "$TMP/sws.log"
}
# SDP on stdin -> one line per video m-line: the codec names of its payload types in m-line
# order, an rtx as rtx/NAME of what it repairs (e.g. "VP8 rtx/VP8 H264 rtx/H264").
sdp_video_codecs() {
  awk '
    function flush(   i, n, pt, nm, out) {
      if (!video) return
      n = split(pts, p, " "); out = ""
      for (i = 1; i <= n; i++) {
        pt = p[i]; nm = (pt in name) ? name[pt] : pt
        if (tolower(nm) == "rtx") nm = "rtx/" ((apt[pt] in name) ? name[apt[pt]] : "?")
        out = out (out == "" ? "" : " ") nm
      }
      print out
    }
    { sub(/\r$/, "") }
    /^m=/ {
      flush(); delete name; delete apt; pts = ""
      video = ($0 ~ /^m=video /)
      if (video) { k = split($0, f, " "); for (j = 4; j <= k; j++) pts = pts " " f[j] }
    }
    video && /^a=rtpmap:/ { split($2, r, "/"); name[substr($1, 10)] = r[1] }
    video && /^a=fmtp:/ && /apt=/ { match($0, /apt=[0-9]+/); apt[substr($1, 8)] = substr($0, RSTART + 4, RLENGTH - 4) }
    END { flush() }'
}
# only_h264 "CODEC LIST": at least one H264, and nothing but H264 and rtx/H264.
only_h264() {
  [[ " $1 " == *" H264 "* ]] && ! tr ' ' '\n' <<<"$1" | grep -qvxE 'H264|rtx/H264'
}
# janus_video_codec H -> "VIDEOROOM_CODEC CORE_CODEC" from handle H's last handle_info (saved
# by handle_stats): the VideoRoom's .info.plugin_specific.streams[].codec and Janus core's
# .info.webrtc.media[].codecs.codec of the video stream ("none" when missing).
janus_video_codec() {
  jq -r '[(.info.plugin_specific.streams // [] | map(select(.type == "video")) | .[0].codec // "none"),
          (.info.webrtc.media // {} | [.[] | select(.type == "video")] | .[0].codecs.codec // "none")]
         | join(" ")' "$TMP/handle-$1.json" 2>/dev/null
}

# ------------------------------------------------------------------ test F: aiortc, VP8+H264
test_f() {
  local name=$NAME_F label=label-$STREAM_F url
  local ready=$TMP/aiortc-h264.ready release=$TMP/aiortc-h264.release offer=$TMP/aiortc-h264.offer.sdp
  if [ "$DIRECT" = 1 ]; then echo "# F needs whipgate: skipped in direct mode"; return; fi
  url=$(url_for "$STREAM_F")
  note "F: aiortc (offers VP8 and H264) -> $url (route allows H264 only)"
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$url" --token "$TOKEN" \
    "${PY_ABS[@]}" --ready-file "$ready" --release-file "$release" --hold 25 \
    --offer-file "$offer" --expect-video-codec H264) >"$TMP/aiortc-h264.log" 2>&1 &
  local py=$!; PIDS+=("$py")
  if ! wait_for 20 "$py" "aiortc (H264)" test -f "$ready"; then
    not_ok "$name" "$(grep -E '^RESULT' "$TMP/aiortc-h264.log" || echo 'no connection within 20 s')"
    kill "$py" 2>/dev/null; return
  fi
  local fail='' offered forwarded
  offered=$(sdp_video_codecs <"$offer")
  forwarded=$(sws_offer "$STREAM_F" | sdp_video_codecs)
  note "F: video codecs offered by aiortc: [$offered], received by simple-whip-server: [$forwarded]"
  STATS=
  if [ "$(grep -c . <<<"$offered")" != 1 ] || [[ " $offered " != *" VP8 "* ]] || [[ " $offered " != *" H264 "* ]]; then
    fail="aiortc's offer does not have VP8 and H264 in one video m-line: [$offered]"
  elif [ "$(grep -c . <<<"$forwarded")" != 1 ] || ! only_h264 "$forwarded"; then
    fail="the offer simple-whip-server received is not H264-only (plus its rtx): [$forwarded]"
  elif ! wait_media "$label" 40 10; then
    fail="Janus admin: no publisher handle with audio+video packets for $label (got '${STATS}')"
  fi
  local s h a v codecs; read -r s h a v <<<"$STATS"
  if [ -z "$fail" ]; then
    codecs=$(janus_video_codec "$h")
    note "F: Janus handle $h video codec (videoroom, core): $codecs; in packets: audio $a video $v"
    [ "$codecs" = "h264 h264" ] || fail="Janus negotiated video codec '$codecs', want 'h264 h264'"
  fi
  touch "$release"
  local end=$((SECONDS + 10))
  while kill -0 "$py" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  wait "$py"; local rc=$?
  [ -n "$fail" ] && { not_ok "$name" "$fail"; return; }
  if [ $rc -ne 0 ]; then
    not_ok "$name" "$(grep -E '^RESULT' "$TMP/aiortc-h264.log" || echo "aiortc_publish.py exited $rc")"; return
  fi
  note "F: aiortc: $(grep -o 'video sent as .*' "$TMP/aiortc-h264.log" | head -1)"
  if ! wait_gone "$label" "$h" 6; then
    not_ok "$name" "Janus handle $h / participant $label still there after DELETE"; return
  fi
  ok "$name"
}

# ------------------------------------------------------------------ test G: whip-client, H264
test_g() {
  local name=$NAME_G label=label-$STREAM_G url
  if [ "$DIRECT" = 1 ]; then echo "# G needs whipgate: skipped in direct mode"; return; fi
  url=$(url_for "$STREAM_G")
  note "G: whip-client (H264) -> $url (route allows H264 only)"
  (exec env LD_LIBRARY_PATH="$STUB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" GST_DEBUG_NO_COLOR=1 \
    ip netns exec "$NS" whip-client -u "$url" -t "$TOKEN" -o -L \
    -A "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=111 ssrc=1 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111" \
    -V "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 ssrc=2 config-interval=-1 aggregate-mode=zero-latency ! queue ! application/x-rtp,media=video,encoding-name=H264,payload=102") \
    >"$TMP/whip-client-h264.log" 2>&1 &
  local wc=$!; PIDS+=("$wc")
  if ! wait_for 15 "$wc" "whip-client (H264)" grep -q 'PeerConnection connected' "$TMP/whip-client-h264.log"; then
    not_ok "$name" "whip-client never logged 'PeerConnection connected' ($(grep -oE 'Disconnecting from server.*|\[[0-9]{3}\] .*|[A-Za-z]+ failed.*' "$TMP/whip-client-h264.log" | head -1))"
    kill -INT "$wc" 2>/dev/null; return
  fi
  local fail='' forwarded
  forwarded=$(sws_offer "$STREAM_G" | sdp_video_codecs)
  STATS=
  if [ "$(grep -c . <<<"$forwarded")" != 1 ] || ! only_h264 "$forwarded"; then
    fail="the offer simple-whip-server received is not H264-only: [$forwarded]"
  elif ! wait_media "$label" 40 10; then
    fail="Janus admin: no publisher handle with audio+video packets for $label (got '${STATS}')"
  fi
  local s h a v codecs; read -r s h a v <<<"$STATS"
  if [ -z "$fail" ]; then
    codecs=$(janus_video_codec "$h")
    note "G: Janus handle $h video codec (videoroom, core): $codecs; in packets: audio $a video $v"
    [ "$codecs" = "h264 h264" ] || fail="Janus negotiated video codec '$codecs', want 'h264 h264'"
  fi
  kill -INT "$wc" 2>/dev/null
  local end=$((SECONDS + 5))
  while kill -0 "$wc" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if kill -0 "$wc" 2>/dev/null; then
    kill -KILL "$wc"; [ -n "$fail" ] || fail="whip-client still running 5 s after SIGINT"
  fi
  [ -n "$fail" ] && { not_ok "$name" "$fail"; return; }
  if ! wait_gone "$label" "$h" 6; then
    not_ok "$name" "Janus handle $h / participant $label still there after whip-client's DELETE"; return
  fi
  ok "$name"
}

# ------------------------------------------------------------------ test H: VP8 only -> 422
test_h() {
  local name=$NAME_H url code body want="backend accepts only H264 for video, offer has VP8"
  local offer=$SDP_CORPUS/gstreamer-whip-offer.sdp
  if [ "$DIRECT" = 1 ]; then echo "# H needs whipgate: skipped in direct mode"; return; fi
  url=$(url_for "$STREAM_H")
  note "H: whip-client (VP8 only) and GStreamer's corpus offer -> $url (route allows H264 only)"
  # The real client: whipgate refuses its offer; it logs the status and exits by itself.
  (exec env LD_LIBRARY_PATH="$STUB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" GST_DEBUG_NO_COLOR=1 \
    ip netns exec "$NS" whip-client -u "$url" -t "$TOKEN" -o -L \
    -V "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96") \
    >"$TMP/whip-client-vp8.log" 2>&1 &
  local wc=$!; PIDS+=("$wc")
  # The same refusal with its body (whip-client does not log bodies): GStreamer's VP8+Opus offer.
  local fail=
  if [ ! -f "$offer" ]; then
    fail="missing $offer (set WHIPGATE_SDP_CORPUS)"
  else
    code=$(nsx curl -s -m 5 -o "$TMP/h264-refused.body" -w '%{http_code}' -X POST \
      -H 'Content-Type: application/sdp' -H "Authorization: Bearer $TOKEN" \
      --data-binary @"$offer" "$url")
    body=$(cat "$TMP/h264-refused.body" 2>/dev/null)
    note "H: curl POST of $(basename "$offer"): $code $body"
    if [ "$code" != 422 ] || [ "$body" != "$want" ]; then
      fail="POST of GStreamer's VP8 offer answered $code '$body', want 422 '$want'"
    fi
  fi
  local end=$((SECONDS + 10))
  while kill -0 "$wc" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if kill -0 "$wc" 2>/dev/null; then
    kill -INT "$wc" 2>/dev/null
    [ -n "$fail" ] || fail="whip-client still running 10 s after sending its VP8 offer"
  fi
  if [ -z "$fail" ] && ! grep -q '\[422\] Unprocessable Entity' "$TMP/whip-client-vp8.log"; then
    fail="whip-client did not log '[422] Unprocessable Entity' ($(grep -oE '\[[0-9]{3}\] .*|PeerConnection connected' "$TMP/whip-client-vp8.log" | head -1))"
  fi
  if [ -z "$fail" ] && grep -q "/endpoint/: $STREAM_H" "$TMP/sws.log"; then
    fail="an offer for $STREAM_H reached simple-whip-server"
  fi
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; else ok "$name"; fi
}

# ------------------------------------------------------------------ test I: hot reload
# A second whipgate (127.0.0.1:8081, its routes.toml alone in $TMP/reload, the directory it
# watches) in front of two backends on the same Janus: janus-a = simple-whip-server A (:7080,
# endpoints join room $ROOM, labels a-*) and janus-b = simple-whip-server B (:7081, its own
# token, endpoints join room $ROOM_B, labels b-*). Both servers have endpoints move-1 and
# move-2, so only the room and the label show which backend a publisher reached.
WG2=http://127.0.0.1:8081
WG2_LOG=$TMP/whipgate-reload.log
# write_routes2: stdin becomes $TMP/reload/routes.toml atomically (temp file + mv, same dir).
write_routes2() {
  cat >"$TMP/reload/.routes.toml.new" && mv -f "$TMP/reload/.routes.toml.new" "$TMP/reload/routes.toml"
}
# room_of H: the VideoRoom room of handle H, from its last handle_info (saved by handle_stats).
room_of() { jq -r '.info.plugin_specific.room // empty' "$TMP/handle-$1.json" 2>/dev/null; }
ROUTES_HEAD='[server]
listen = "127.0.0.1:8081"
public_url = "http://127.0.0.1:8081"
session_keys = [{ id = "k1", secret_env = "WHIPGATE_SESSION_KEY" }]
'
BACKEND_A_TOML='
[[backend]]
id = "janus-a"
kind = "whip"
whip_url = "http://127.0.0.1:7080/whip/endpoint/{stream}"
auth = { bearer_env = "JANUS_TOKEN" }
'
BACKEND_B_TOML='
[[backend]]
id = "janus-b"
kind = "whip"
whip_url = "http://127.0.0.1:7081/whip/endpoint/{stream}"
auth = { bearer_env = "JANUS_B_TOKEN" }
'

# start_publisher N: aiortc publishes move-N through the second whipgate until released.
start_publisher() {
  local n=$1
  rm -f "$TMP/move-$n.ready" "$TMP/move-$n.release"
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$WG2/whip/move-$n" \
    --token "$CLIENT_TOKEN" --expect-absolute "$WG2/session/" --ready-file "$TMP/move-$n.ready" \
    --release-file "$TMP/move-$n.release" --state-file "$TMP/move-$n.state" --hold 40) \
    >"$TMP/aiortc-move-$n.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
# stop_publisher N PID: release it (it DELETEs, expects 200, DELETEs again, expects 404);
# sets STOP_RC to its exit status (124 if it was still running after 10 s).
stop_publisher() {
  local n=$1 pid=$2 end=$((SECONDS + 10))
  touch "$TMP/move-$n.release"
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; STOP_RC=124; return; fi
  wait "$pid"; STOP_RC=$?
}
result_of() { grep -E '^RESULT' "$TMP/aiortc-move-$1.log" || echo "${2:-no RESULT line}"; }

# The steps of test I; on the first failure sets FAIL and returns 1. P1 and P2 are the
# publishers' pids (0 when not started or already stopped).
test_i_steps() {
  local id code label
  # -- backend B: a second simple-whip-server, same Janus, its own port, token and room
  mkdir -p "$TMP/reload" "$TMP/simple-whip-server-b"
  cp "$SWS/server.js" "$SWS/whip-janus.js" "$TMP/simple-whip-server-b/"
  cat >"$TMP/simple-whip-server-b/config.js" <<'EOT'
module.exports = { janus: { address: 'ws://127.0.0.1:8188' }, port: 7081, rest: '/whip',
  allowTrickle: true, strictETags: false, iceServers: [] };
EOT
  (cd "$TMP/simple-whip-server-b" && NODE_PATH="$SWS_DIR/node_modules" DEBUG='whip:*' DEBUG_COLORS=0 \
    exec ip netns exec "$NS" node "$TMP/simple-whip-server-b/server.js") >"$TMP/sws-b.log" 2>&1 &
  local swsb=$!; PIDS+=("$swsb")
  # -- the second whipgate, generation 1: move-* -> janus-a only
  { echo "$ROUTES_HEAD$BACKEND_A_TOML$BACKEND_B_TOML"; cat <<'EOT'
[[route]]
id = "move"
match = { kind = "whip", stream = "move-*" }
backends = ["janus-a"]
EOT
  } | write_routes2
  (cd "$TMP/reload" && exec env JANUS_TOKEN=$BACKEND_TOKEN JANUS_B_TOKEN=$BACKEND_TOKEN_B \
    WHIPGATE_SESSION_KEY="$SESSION_KEY" RUST_LOG="${RUST_LOG:-info}" RUST_BACKTRACE=1 \
    ip netns exec "$NS" "$WHIPGATE_BIN" serve --config "$TMP/reload/routes.toml") >"$WG2_LOG" 2>&1 &
  local wg2=$!; PIDS+=("$wg2")
  wg2_up() { [ "$(nsx curl -s -o /dev/null -m 1 -w '%{http_code}' "$WG2/whip/none")" != 000 ]; }
  sws_b_ready() { nsx curl -sf -m 1 http://127.0.0.1:7081/whip/healthcheck; }
  wait_for 15 "$swsb" "simple-whip-server B" sws_b_ready || { FAIL="simple-whip-server B not ready"; return 1; }
  wait_for 20 "$wg2" "whipgate (reload)" wg2_up || { FAIL="second whipgate not ready"; return 1; }
  for id in move-1 move-2; do
    code=$(nsx curl -s -o /dev/null -w '%{http_code}' -m 3 -H 'Content-Type: application/json' \
      -X POST http://127.0.0.1:7080/whip/create \
      -d "{\"id\":\"$id\",\"room\":$ROOM,\"label\":\"a-$id\",\"token\":\"$BACKEND_TOKEN\"}")
    [ "$code" = 200 ] || { FAIL="simple-whip-server A: POST /whip/create $id answered $code"; return 1; }
    code=$(nsx curl -s -o /dev/null -w '%{http_code}' -m 3 -H 'Content-Type: application/json' \
      -X POST http://127.0.0.1:7081/whip/create \
      -d "{\"id\":\"$id\",\"room\":$ROOM_B,\"label\":\"b-$id\",\"token\":\"$BACKEND_TOKEN_B\"}")
    [ "$code" = 200 ] || { FAIL="simple-whip-server B: POST /whip/create $id answered $code"; return 1; }
  done
  note "I: second whipgate on $WG2 (generation 1: move-* -> janus-a), simple-whip-server B on :7081 (room $ROOM_B)"

  # -- 1. publisher 1 on move-1 lands on janus-a (room $ROOM, label a-move-1)
  start_publisher 1; P1=$LAST_PID
  wait_for 20 "$P1" "aiortc move-1" test -f "$TMP/move-1.ready" || { FAIL="publisher 1: $(result_of 1 'no connection within 20 s')"; return 1; }
  note "I: publisher 1 $(cat "$TMP/move-1.ready")"
  wait_media a-move-1 20 10 || { FAIL="publisher 1: no janus-a handle (a-move-1) with audio+video packets (got '$STATS'; b-move-1: '$(handle_stats b-move-1)')"; return 1; }
  local h1 a1 v1; read -r _ h1 a1 v1 <<<"$STATS"
  [ "$(room_of "$h1")" = "$ROOM" ] || { FAIL="publisher 1's handle $h1 is in room '$(room_of "$h1")', want $ROOM (janus-a)"; return 1; }
  note "I: publisher 1 on janus-a: Janus handle $h1, room $ROOM, in packets audio $a1 video $v1"

  # -- 2. live edit: move-* -> janus-b only; janus-a leaves the file
  { echo "$ROUTES_HEAD$BACKEND_B_TOML"; cat <<'EOT'
[[route]]
id = "move"
match = { kind = "whip", stream = "move-*" }
split = [{ backend = "janus-b", weight = 100 }]
EOT
  } | write_routes2
  grep -q 'janus-a' "$TMP/reload/routes.toml" && { FAIL="harness: janus-a still in the new routes.toml"; return 1; }
  wait_for 10 "$wg2" "whipgate reload to generation 2" grep -qE 'routes reloaded.*generation=2' "$WG2_LOG" ||
    { FAIL="whipgate did not log 'routes reloaded generation=2' ($(grep -E 'routes|reload' "$WG2_LOG" | tail -1))"; return 1; }
  note "I: $(grep -m1 -oE 'routes reloaded.*generation=2.*' "$WG2_LOG")"

  # -- 5. an invalid version (its route names janus-a, which no longer exists) is refused
  { echo "$ROUTES_HEAD$BACKEND_B_TOML"; cat <<'EOT'
[[route]]
id = "move"
match = { kind = "whip", stream = "move-*" }
backends = ["janus-a"]
EOT
  } | write_routes2
  wait_for 10 "$wg2" "whipgate refusing the invalid routes.toml" grep -q 'routes.toml refused' "$WG2_LOG" ||
    { FAIL="whipgate did not log 'routes.toml refused' for a route naming an unknown backend"; return 1; }
  note "I: $(grep -m1 -o 'routes.toml refused.*' "$WG2_LOG" | cut -c1-220)"
  grep -q 'janus-a' <<<"$(grep -m1 'routes.toml refused' "$WG2_LOG")" ||
    { FAIL="the refusal does not name the unknown backend janus-a: $(grep -m1 'routes.toml refused' "$WG2_LOG")"; return 1; }
  if grep -qE 'generation=3' "$WG2_LOG"; then FAIL="the invalid routes.toml was applied (generation 3)"; return 1; fi

  # -- 3. publisher 2 on move-2 lands on janus-b (room $ROOM_B, label b-move-2)
  start_publisher 2; P2=$LAST_PID
  wait_for 20 "$P2" "aiortc move-2" test -f "$TMP/move-2.ready" || { FAIL="publisher 2 (after the reload and the refused file): $(result_of 2 'no connection within 20 s')"; return 1; }
  note "I: publisher 2 $(cat "$TMP/move-2.ready")"
  wait_media b-move-2 20 10 || { FAIL="publisher 2: no janus-b handle (b-move-2) with audio+video packets (got '$STATS'; a-move-2: '$(handle_stats a-move-2)')"; return 1; }
  local h2 a2 v2; read -r _ h2 a2 v2 <<<"$STATS"
  [ "$(room_of "$h2")" = "$ROOM_B" ] || { FAIL="publisher 2's handle $h2 is in room '$(room_of "$h2")', want $ROOM_B (janus-b)"; return 1; }
  grep -q '/endpoint/: move-2' "$TMP/sws-b.log" || { FAIL="no offer for move-2 reached simple-whip-server B"; return 1; }
  grep -q '/endpoint/: move-2' "$TMP/sws.log" && { FAIL="an offer for move-2 reached simple-whip-server A (janus-a)"; return 1; }
  sed -n '/routes reloaded generation=2/,$p' "$WG2_LOG" |
    grep -qE 'method=POST endpoint="whip" route="move" backend="janus-b" .*status=201' ||
    { FAIL="whipgate's log has no POST placed on janus-b after the reload"; return 1; }
  note "I: publisher 2 on janus-b: Janus handle $h2, room $ROOM_B, in packets audio $a2 video $v2"

  # -- 4. publisher 1 still live on janus-a; its DELETE (pre-reload Location) ends its handle
  kill -0 "$P1" 2>/dev/null || { FAIL="publisher 1 exited during the reload: $(result_of 1)"; return 1; }
  grep -qE 'failed|closed' "$TMP/move-1.state" 2>/dev/null && { FAIL="publisher 1's connection went $(tr '\n' ' ' <"$TMP/move-1.state")"; return 1; }
  STATS=$(handle_stats a-move-1)
  local h1b a1b v1b; read -r _ h1b a1b v1b <<<"$STATS"
  if [ "$h1b" != "$h1" ] || [ "${a1b:-0}" -le "$a1" ] || [ "${v1b:-0}" -le "$v1" ]; then
    FAIL="publisher 1's janus-a handle $h1 stopped receiving after the reload: before audio $a1 video $v1, now '$STATS'"; return 1
  fi
  note "I: publisher 1 still on janus-a after the reload: handle $h1 in packets audio $a1 -> $a1b, video $v1 -> $v1b"
  stop_publisher 1 "$P1"; P1=0
  [ "$STOP_RC" = 0 ] || { FAIL="publisher 1's DELETE through whipgate: $(result_of 1 "exit $STOP_RC")"; return 1; }
  grep -q 'check: DELETE 200' "$TMP/aiortc-move-1.log" || { FAIL="publisher 1: no 'DELETE 200' in its log"; return 1; }
  wait_gone a-move-1 "$h1" 6 "$ROOM" || { FAIL="janus-a handle $h1 / participant a-move-1 still there after DELETE through whipgate"; return 1; }
  grep -q '\[move-1\] Terminating WHIP session' "$TMP/sws.log" || { FAIL="publisher 1's DELETE did not reach simple-whip-server A"; return 1; }
  grep -qE '/(endpoint|resource)/: move-1' "$TMP/sws-b.log" && { FAIL="a request for move-1 reached simple-whip-server B"; return 1; }
  # whipgate's access log: that DELETE, after the reload, went to the retired janus-a.
  sed -n '/routes reloaded generation=2/,$p' "$WG2_LOG" |
    grep -qE 'method=DELETE endpoint="session" route="move" backend="janus-a" .*status=200' ||
    { FAIL="whipgate's log has no DELETE to janus-a answered 200 after the reload"; return 1; }
  note "I: publisher 1's DELETE (its pre-reload Location) through whipgate: 200 from the retired janus-a (then 404); handle $h1 gone"

  stop_publisher 2 "$P2"; P2=0
  [ "$STOP_RC" = 0 ] || { FAIL="publisher 2: $(result_of 2 "exit $STOP_RC")"; return 1; }
  wait_gone b-move-2 "$h2" 6 "$ROOM_B" || { FAIL="janus-b handle $h2 / participant b-move-2 still there after DELETE"; return 1; }
  grep -q '\[move-2\] Terminating WHIP session' "$TMP/sws-b.log" || { FAIL="publisher 2's DELETE did not reach simple-whip-server B"; return 1; }
  kill -0 "$wg2" 2>/dev/null || { FAIL="the second whipgate exited"; return 1; }
  return 0
}

test_i() {
  local name=$NAME_I
  if [ "$DIRECT" = 1 ]; then echo "# I needs whipgate: skipped in direct mode"; return; fi
  FAIL='' P1=0 P2=0
  test_i_steps
  # On failure, still release whoever is publishing.
  [ "$P1" = 0 ] || stop_publisher 1 "$P1"
  [ "$P2" = 0 ] || stop_publisher 2 "$P2"
  if [ -n "$FAIL" ]; then not_ok "$name" "$FAIL"; else ok "$name"; fi
}

# shellcheck source-path=SCRIPTDIR source=builtin.sh
. "$HERE/builtin.sh"

for t in $TESTS; do
  CURRENT_TEST=$t
  case $t in
    D) test_d ;;
    E) test_e ;;
    A) test_a ;;
    B) test_b ;;
    C) test_c ;;
    F) test_f ;;
    G) test_g ;;
    H) test_h ;;
    I) test_i ;;
    J) test_j ;;
    K) test_k ;;
    L) test_l ;;
    M) test_m ;;
    N) test_n ;;
    O | P | Q | R | S | T | U | V | W | X | Y | Z | OB | GS | PG | DR | JN | JK | SL | RL | RF | RA | PL | AG) "test_${t,,}" ;;
    *) not_ok "unknown test name $t" "E2E_TESTS names tests A to Z, OB, GS, PG, DR, JN, JK, SL, RL, RF, RA, PL and AG" ;;
  esac
done

if [ "$FAILED" -gt 0 ] || [ "${E2E_VERBOSE:-0}" = 1 ]; then dump_all; fi
note "done"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
