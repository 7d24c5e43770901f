# Tests J K L M of tests/e2e/janus.sh: the built-in SFU with real peers. Sourced by janus.sh
# after its setup (namespace, Janus, simple-whip-server, whipgate with the `sfu` backend
# serving live-*); uses its helpers (nsx, start_bg, wait_for, ok, not_ok, wait_media ...).

GW=http://127.0.0.1:8080
# Screenshots and other evidence a person may want to look at after a run.
ARTIFACTS=${E2E_ARTIFACTS:-$HERE/../../target/e2e-artifacts}
mkdir -p "$ARTIFACTS"

# sfu_stream STREAM -> the JSON of STREAM in /api/status (empty when not live)
sfu_stream() {
  nsx curl -s -m 2 "$GW/api/status" | jq -c --arg s "$1" '.streams[] | select(.stream == $s)'
}
sfu_gone() { [ -z "$(sfu_stream "$1")" ]; }
sfu_receiving() { # STREAM MIN: the SFU got more than MIN packets from STREAM's publisher
  local n
  n=$(sfu_stream "$1" | jq -r '.packets_in // 0')
  [ "${n:-0}" -gt "$2" ]
}
# aiortc_publisher NAME STREAM: starts aiortc_publish.py on the gateway; pid in $LAST_PID
aiortc_publisher() {
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$GW/whip/$2" \
    --expect-absolute "$GW/session/" --ready-file "$TMP/$1.ready" \
    --release-file "$TMP/$1.release" --hold 60) >"$TMP/$1.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
# release_publisher NAME PID: lets it DELETE and exit; fails unless it ends with RESULT ok
release_publisher() {
  touch "$TMP/$1.release"
  local end=$((SECONDS + 10))
  while kill -0 "$2" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  wait "$2" 2>/dev/null
}
result_line() { grep -E '^RESULT' "$TMP/$1.log" | tail -1; }
check_line() { grep -E '^check: decoded' "$TMP/$1.log" | tail -1 | sed 's/^check: //'; }

test_j() {
  local name=$NAME_J stream=live-j
  note "J: WHEP before publishing"
  if ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream" --expect-status 409 \
      >"$TMP/aiortc-play-j0.log" 2>&1; then
    not_ok "$name" "early WHEP: $(result_line aiortc-play-j0)"; return
  fi
  aiortc_publisher aiortc-j "$stream"; local pub=$LAST_PID
  if ! wait_for 20 "$pub" "aiortc publisher" test -f "$TMP/aiortc-j.ready"; then
    not_ok "$name" "publisher: $(result_line aiortc-j || echo 'no connection within 20 s')"; return
  fi
  if ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream" --min-frames 60 --min-audio 50 \
      >"$TMP/aiortc-play-j.log" 2>&1; then
    not_ok "$name" "player: $(result_line aiortc-play-j)"; release_publisher aiortc-j "$pub"; return
  fi
  note "J: player $(check_line aiortc-play-j); SFU $(sfu_stream "$stream")"
  release_publisher aiortc-j "$pub" || true
  if [ "$(result_line aiortc-j)" != "RESULT ok" ]; then
    not_ok "$name" "publisher: $(result_line aiortc-j)"; return
  fi
  if ! wait_for 5 "" "stream gone" sfu_gone "$stream"; then
    not_ok "$name" "the SFU still lists $stream after both DELETEs: $(sfu_stream "$stream")"; return
  fi
  ok "$name"
}

test_k() {
  local name=$NAME_K stream=live-k
  note "K: whip-client -> built-in SFU"
  (exec env LD_LIBRARY_PATH="$STUB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" GST_DEBUG_NO_COLOR=1 \
    ip netns exec "$NS" whip-client -u "$GW/whip/$stream" -t "$CLIENT_TOKEN" -o -L \
    -A "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=111 ssrc=1 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111" \
    -V "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue ! vp8enc deadline=1 target-bitrate=300000 keyframe-max-dist=30 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96") \
    >"$TMP/whip-client-k.log" 2>&1 &
  local wc=$!; PIDS+=("$wc")
  if ! wait_for 15 "$wc" "whip-client" grep -q 'PeerConnection connected' "$TMP/whip-client-k.log"; then
    not_ok "$name" "whip-client never logged 'PeerConnection connected'"; kill -INT "$wc" 2>/dev/null; return
  fi
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream" --min-frames 30 \
    --min-audio 30 --ready-file "$TMP/play-k.ready" --release-file "$TMP/play-k.release" --keep \
    --timeout 20) >"$TMP/aiortc-play-k.log" 2>&1 &
  local player=$!; PIDS+=("$player")
  if ! wait_for 25 "$player" "aiortc player" test -f "$TMP/play-k.ready"; then
    not_ok "$name" "player: $(result_line aiortc-play-k || echo 'no frames within 25 s')"
    kill -INT "$wc" 2>/dev/null; return
  fi
  note "K: player $(check_line aiortc-play-k); SFU $(sfu_stream "$stream")"
  local viewer; viewer=$(sed -n 's/^LOCATION //p' "$TMP/play-k.ready")
  if grep -q ' \[trickle\] ' "$TMP/whip-client-k.log"; then
    not_ok "$name" "trickle PATCH failed: $(grep -o '\[trickle\] .*' "$TMP/whip-client-k.log" | head -1)"
    kill -INT "$wc" 2>/dev/null; return
  fi
  kill -INT "$wc" 2>/dev/null
  local end=$((SECONDS + 5))
  while kill -0 "$wc" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if ! wait_for 5 "" "stream gone" sfu_gone "$stream"; then
    not_ok "$name" "after the publisher's DELETE the SFU still lists $stream: $(sfu_stream "$stream")"; return
  fi
  # The viewer's session ended with the publisher: its DELETE still succeeds once (the
  # client may not have noticed yet), then the session is gone.
  local code code2
  code=$(nsx curl -s -o /dev/null -w '%{http_code}' -m 3 -X DELETE "$viewer")
  code2=$(nsx curl -s -o /dev/null -w '%{http_code}' -m 3 -X DELETE "$viewer")
  touch "$TMP/play-k.release"
  wait "$player" 2>/dev/null
  if [ "$code $code2" != "200 404" ]; then
    not_ok "$name" "the released viewer's DELETEs answered $code $code2, expected 200 404"; return
  fi
  if [ "$(result_line aiortc-play-k)" != "RESULT ok" ]; then
    not_ok "$name" "player: $(result_line aiortc-play-k)"; return
  fi
  ok "$name"
}

test_l() {
  local name=$NAME_L stream=live-chrome
  note "L: Chromium publishes $stream"
  (exec ip netns exec "$NS" node "$HERE/chromium.mjs" publish "$GW" "$stream" --hold 90 \
    --ready-file "$TMP/chrome-pub.ready" --release-file "$TMP/chrome-pub.release") \
    >"$TMP/chromium-publish.log" 2>&1 &
  local pub=$!; PIDS+=("$pub")
  if ! wait_for 40 "$pub" "Chromium publisher" test -f "$TMP/chrome-pub.ready"; then
    not_ok "$name" "publisher: $(result_line chromium-publish || echo 'not publishing within 40 s')"; return
  fi
  local fail=
  if ! nsx node "$HERE/chromium.mjs" play "$GW" "$stream" --min-frames 30 --timeout 40 --expect-viewers \
      --screenshot "$ARTIFACTS/play-$stream.png" >"$TMP/chromium-play.log" 2>&1; then
    fail="Chromium player: $(result_line chromium-play)"
  fi
  [ -n "$fail" ] || note "L: $(grep -E '^check:' "$TMP/chromium-play.log" | tr '\n' ' ')"
  if [ -z "$fail" ] && ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream" --min-frames 30 \
      --min-audio 30 --timeout 20 >"$TMP/aiortc-play-l.log" 2>&1; then
    fail="aiortc player: $(result_line aiortc-play-l)"
  fi
  [ -n "$fail" ] || note "L: aiortc $(check_line aiortc-play-l)"
  touch "$TMP/chrome-pub.release"
  local end=$((SECONDS + 15))
  while kill -0 "$pub" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
  wait "$pub" 2>/dev/null
  [ -n "$fail" ] && { not_ok "$name" "$fail"; return; }
  if [ "$(result_line chromium-publish)" != "RESULT ok" ]; then
    not_ok "$name" "publisher: $(result_line chromium-publish)"; return
  fi
  if ! wait_for 5 "" "stream gone" sfu_gone "$stream"; then
    not_ok "$name" "the SFU still lists $stream after the publisher's DELETE"; return
  fi
  ok "$name"
}

test_m() {
  local name=$NAME_M label=label-$STREAM_M stream=live-m
  note "M: aiortc -> Janus ($STREAM_M) and aiortc -> built-in SFU ($stream) at once"
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$GW/whip/$STREAM_M" \
    --token "$CLIENT_TOKEN" --ready-file "$TMP/aiortc-m-janus.ready" \
    --release-file "$TMP/aiortc-m-janus.release" --hold 60) >"$TMP/aiortc-m-janus.log" 2>&1 &
  local to_janus=$!; PIDS+=("$to_janus")
  aiortc_publisher aiortc-m-sfu "$stream"; local to_sfu=$LAST_PID
  local fail=
  wait_for 20 "$to_janus" "publisher to Janus" test -f "$TMP/aiortc-m-janus.ready" ||
    fail="publisher to Janus: $(result_line aiortc-m-janus || echo 'no connection')"
  [ -n "$fail" ] || wait_for 20 "$to_sfu" "publisher to the SFU" test -f "$TMP/aiortc-m-sfu.ready" ||
    fail="publisher to the SFU: $(result_line aiortc-m-sfu || echo 'no connection')"
  [ -n "$fail" ] || wait_media "$label" 20 10 ||
    fail="Janus admin: no publisher handle with audio+video packets for $label (got '${STATS}')"
  [ -n "$fail" ] || wait_for 10 "" "SFU media" sfu_receiving "$stream" 100 ||
    fail="the SFU got no media for $stream: $(sfu_stream "$stream")"
  if [ -z "$fail" ]; then
    local s h a v; read -r s h a v <<<"$STATS"
    note "M: Janus handle $h in packets audio $a video $v; SFU $(sfu_stream "$stream")"
    # Each went where routes.toml said, and only there.
    grep -q "\[$STREAM_M\]" "$TMP/sws.log" || fail="no request for $STREAM_M reached simple-whip-server"
    grep -q "\[$stream\]" "$TMP/sws.log" && fail="$stream reached simple-whip-server"
  fi
  release_publisher aiortc-m-janus "$to_janus"
  release_publisher aiortc-m-sfu "$to_sfu"
  [ -n "$fail" ] && { not_ok "$name" "$fail"; return; }
  for p in aiortc-m-janus aiortc-m-sfu; do
    if [ "$(result_line $p)" != "RESULT ok" ]; then not_ok "$name" "$p: $(result_line $p)"; return; fi
  done
  ok "$name"
}

# coturn on 127.0.0.2 (the libnice rule), shared secret: whipgate mints the credentials.
start_coturn() {
  cat >"$TMP/coturn.conf" <<EOF2
listening-ip=127.0.0.2
relay-ip=127.0.0.2
listening-port=3478
min-port=40000
max-port=40999
realm=whip.test
use-auth-secret
static-auth-secret=$TURN_SECRET
fingerprint
allow-loopback-peers
no-tls
no-dtls
no-cli
log-file=stdout
simple-log
verbose
EOF2
  start_bg coturn turnserver -c "$TMP/coturn.conf"
  COTURN_PID=$LAST_PID
  wait_for 15 "$COTURN_PID" "coturn" grep -q "listener opened on: 127.0.0.2:3478" "$TMP/coturn.log"
}

test_n() {
  local name=$NAME_N stream=relay-a stream_c=relay-c fail=
  note "N: coturn, relay-only publishers and players"
  if ! start_coturn; then not_ok "$name" "coturn did not start: $(tail -3 "$TMP/coturn.log")"; return; fi
  # aiortc publishes through the relay only; Chromium plays through the relay only.
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$GW/whip/$stream" --relay \
    --ready-file "$TMP/aiortc-relay.ready" --release-file "$TMP/aiortc-relay.release" --hold 60) \
    >"$TMP/aiortc-relay.log" 2>&1 &
  local pub=$!; PIDS+=("$pub")
  wait_for 25 "$pub" "aiortc relay publisher" test -f "$TMP/aiortc-relay.ready" ||
    fail="aiortc relay publisher: $(result_line aiortc-relay || echo 'no connection')"
  [ -n "$fail" ] || wait_for 10 "" "SFU media" sfu_receiving "$stream" 50 ||
    fail="the SFU got no media from the relayed publisher: $(sfu_stream "$stream")"
  if [ -z "$fail" ] && ! nsx node "$HERE/chromium.mjs" play "$GW" "$stream" --relay --min-frames 20 \
      --timeout 40 --screenshot "$ARTIFACTS/play-$stream-relay.png" >"$TMP/chromium-relay-play.log" 2>&1; then
    fail="Chromium relay player: $(result_line chromium-relay-play)"
  fi
  [ -n "$fail" ] || note "N: $(grep -E '^check: (media goes|decoded)' "$TMP/chromium-relay-play.log" | sed 's/Location .*//' | tr '\n' ' ')"
  release_publisher aiortc-relay "$pub"
  [ -n "$fail" ] || [ "$(result_line aiortc-relay)" = "RESULT ok" ] || fail="aiortc relay publisher: $(result_line aiortc-relay)"
  # Chromium publishes through the relay only; aiortc plays it.
  if [ -z "$fail" ]; then
    (exec ip netns exec "$NS" node "$HERE/chromium.mjs" publish "$GW" "$stream_c" --relay --hold 90 \
      --ready-file "$TMP/chrome-relay.ready" --release-file "$TMP/chrome-relay.release") \
      >"$TMP/chromium-relay-publish.log" 2>&1 &
    local cpub=$!; PIDS+=("$cpub")
    wait_for 40 "$cpub" "Chromium relay publisher" test -f "$TMP/chrome-relay.ready" ||
      fail="Chromium relay publisher: $(result_line chromium-relay-publish || echo 'not publishing')"
    [ -n "$fail" ] || nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream_c" --min-frames 20 \
      --min-audio 20 --timeout 20 >"$TMP/aiortc-relay-play.log" 2>&1 ||
      fail="aiortc player of the relayed Chromium: $(result_line aiortc-relay-play)"
    touch "$TMP/chrome-relay.release"
    local end=$((SECONDS + 15))
    while kill -0 "$cpub" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    [ -n "$fail" ] || [ "$(result_line chromium-relay-publish)" = "RESULT ok" ] ||
      fail="Chromium relay publisher: $(result_line chromium-relay-publish)"
    [ -n "$fail" ] || note "N: $(grep -E '^check: media goes' "$TMP/chromium-relay-publish.log")"
  fi
  # coturn allocated relays for whipgate's minted usernames (expiry:subject); its first 401
  # per session is TURN's usual nonce challenge.
  if [ -z "$fail" ]; then
    local allocated
    allocated=$(grep -cE 'user <[0-9]+:[A-Za-z0-9._-]+>: incoming packet ALLOCATE processed, success' "$TMP/coturn.log")
    if [ "${allocated:-0}" -lt 2 ]; then
      fail="coturn's log shows $allocated successful allocations by minted usernames, expected 2 or more"
    else
      note "N: coturn: $allocated allocations by minted usernames, e.g. $(grep -oE 'username=<[0-9]+:[^>]+>' "$TMP/coturn.log" | head -1)"
    fi
  fi
  kill "$COTURN_PID" 2>/dev/null
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; else ok "$name"; fi
}

test_pg() {
  local name=$NAME_PG
  if [ "$DIRECT" = 1 ]; then echo "# PG needs whipgate: skipped in direct mode"; return; fi
  note "PG: Chromium, the pages' own behaviour"
  if ! nsx node "$HERE/chromium.mjs" pages "$GW" live-pages --timeout 30 >"$TMP/chromium-pages.log" 2>&1; then
    not_ok "$name" "$(result_line chromium-pages)"; return
  fi
  note "PG: $(grep '^check:' "$TMP/chromium-pages.log" | sed 's/^check: //' | tr '\n' ';')"
  ok "$name"
}

# DR: a live stream moved off a drained backend. drain-dr is published on `sfu2` and played
# there; draining sfu2 ends the publisher (the SFU says goodbye with DTLS close_notify), the
# publisher POSTs again at once and lands on `self` (this gateway's own moved-* route, on the
# SFU again), and the player follows its `reconnect` event. The player counts the longest
# time without a video frame (written to first-media.txt too).
test_dr() {
  local name=$NAME_DR stream=drain-dr fail=
  if [ "$DIRECT" = 1 ]; then echo "# DR needs whipgate: skipped in direct mode"; return; fi
  note "DR: drain under a live aiortc publisher and player"
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_follow.py" publish "$GW/whip/$stream" \
    --stop-file "$TMP/dr.stop" --ready-file "$TMP/dr-pub.ready") >"$TMP/dr-publish.log" 2>&1 &
  local pub=$!; PIDS+=("$pub")
  if ! wait_for 20 "$pub" "follow publisher" test -f "$TMP/dr-pub.ready"; then
    not_ok "$name" "publisher: $(result_line dr-publish || echo 'not connected within 20 s')"; touch "$TMP/dr.stop"; return
  fi
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_follow.py" play "$GW/whep/$stream" \
    --stop-file "$TMP/dr.stop" --ready-file "$TMP/dr-play.ready" --min-reconnects 1 \
    --min-frames-after 30 --max-gap 15) >"$TMP/dr-play.log" 2>&1 &
  local player=$!; PIDS+=("$player")
  if ! wait_for 20 "$player" "follow player" grep -q '^check: 30 video frames' "$TMP/dr-play.log"; then
    fail="player: $(result_line dr-play || echo 'no frames within 20 s')"
  fi
  (exec ip netns exec "$NS" node "$HERE/chromium.mjs" follow "$GW" "$stream" --timeout 30 \
    --ready-file "$TMP/dr-chromium.ready" --release-file "$TMP/dr.stop") >"$TMP/dr-chromium.log" 2>&1 &
  local browser=$!; PIDS+=("$browser")
  if [ -z "$fail" ] && ! wait_for 40 "$browser" "Chromium player" test -f "$TMP/dr-chromium.ready"; then
    fail="Chromium player: $(result_line dr-chromium || echo 'no frames within 40 s')"
  fi
  if [ -z "$fail" ]; then
    local drained
    drained=$(nsx curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST \
      -H "Authorization: Bearer $ADMIN_TOKEN" "$GW/admin/drain?backend=sfu2")
    [ "$drained" = 200 ] || fail="POST /admin/drain answered $drained"
  fi
  if [ -z "$fail" ] && ! wait_for 30 "$player" "player after the drain" test -f "$TMP/dr-play.ready"; then
    fail="the player did not follow: $(grep -E '^check: (reconnect|joined)' "$TMP/dr-play.log" | tr '\n' ';') $(result_line dr-play)"
  fi
  if [ -z "$fail" ] && ! wait_for 30 "$browser" "Chromium after the drain" test -f "$TMP/dr-chromium.ready.moved"; then
    fail="Chromium player did not follow within 30 s: $(grep '^check:' "$TMP/dr-chromium.log" | tr '\n' ';')"
  fi
  if [ -z "$fail" ] && ! grep -q '^check: reconnect event' "$TMP/dr-play.log"; then
    fail="the player re-joined without a reconnect event: $(grep '^check:' "$TMP/dr-play.log" | tr '\n' ';')"
  fi
  # The player subscribed to every event the SFU offers: besides reconnect, it heard the
  # stream go live, its viewer count and its layers.
  local event
  for event in active viewercount layers; do
    if [ -z "$fail" ] && ! grep -q "^check: event $event " "$TMP/dr-play.log"; then
      fail="the player never got a $event event: $(grep '^check: event' "$TMP/dr-play.log" | tr '\n' ';')"
    fi
  done
  if [ -z "$fail" ] && ! grep -q '^check: session 2 connected' "$TMP/dr-publish.log"; then
    fail="the publisher did not publish again: $(grep '^check:' "$TMP/dr-publish.log" | tr '\n' ';')"
  fi
  # whipgate sends reconnect once the stream is live again (the publisher's second session
  # answered), not before and not when its 10 s fallback runs out. Both scripts log
  # wall-clock times on this machine; 0.2 s of slack for the two answers' race.
  if [ -z "$fail" ]; then
    local reconnect_at republished_at
    reconnect_at=$(grep -oE '^check: reconnect event at [0-9.]+' "$TMP/dr-play.log" | head -1 | grep -oE '[0-9.]+$')
    republished_at=$(grep -oE 'session 2 answered at [0-9.]+' "$TMP/dr-publish.log" | grep -oE '[0-9.]+$')
    if ! awk -v r="$reconnect_at" -v p="$republished_at" 'BEGIN { exit !(r != "" && p != "" && r + 0.2 >= p && r - p < 5) }'; then
      fail="reconnect at $reconnect_at, the publisher's second session answered at $republished_at: not sent when the stream went live again"
    fi
  fi
  if [ -z "$fail" ] && [ -z "$(sfu_stream "moved-$stream")" ]; then
    fail="the stream is not on the route's next backend (no moved-$stream on the SFU)"
  fi
  touch "$TMP/dr.stop"
  local end=$((SECONDS + 10))
  while { kill -0 "$pub" 2>/dev/null || kill -0 "$player" 2>/dev/null || kill -0 "$browser" 2>/dev/null; } &&
    [ $SECONDS -lt $end ]; do sleep 0.1; done
  nsx curl -s -m 5 -o /dev/null -X DELETE -H "Authorization: Bearer $ADMIN_TOKEN" "$GW/admin/drain?backend=sfu2"
  [ -n "$fail" ] || [ "$(result_line dr-play)" = "RESULT ok" ] || fail="player: $(result_line dr-play)"
  [ -n "$fail" ] || [ "$(result_line dr-publish)" = "RESULT ok" ] || fail="publisher: $(result_line dr-publish)"
  [ -n "$fail" ] || [ "$(result_line dr-chromium)" = "RESULT ok" ] || fail="Chromium player: $(result_line dr-chromium)"
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; return; fi
  local gap ended rejoined
  gap=$(grep -oE 'longest gap without video frames [0-9.]+ s' "$TMP/dr-play.log")
  ended=$(grep -oE 'session 1 ended by the server at [0-9.]+' "$TMP/dr-publish.log" | grep -oE '[0-9.]+$')
  rejoined=$(grep -oE 'session 2 connected at [0-9.]+' "$TMP/dr-publish.log" | grep -oE '[0-9.]+$')
  note "DR: Chromium: $(grep -E '^check: longest gap' "$TMP/dr-chromium.log" | sed 's/^check: //')"
  note "DR: publisher re-published $(awk -v a="$ended" -v b="$rejoined" 'BEGIN{printf "%.2f", b-a}') s after the server ended it; player: $gap; $(grep -E '^check: [0-9]+ reconnects' "$TMP/dr-play.log" | sed 's/^check: //')"
  echo "drain (aiortc publisher and player, built-in SFU to the route's next backend): $gap" >>"$FIRST_MEDIA_FILE"
  echo "drain (same, Chromium's play page): $(grep -oE 'longest gap without decoded frames [0-9.]+ s' "$TMP/dr-chromium.log")" >>"$FIRST_MEDIA_FILE"
  ok "$name"
}

# jn_list: Janus's VideoRoom room list (JSON array), asked through its own API.
jn_list() {
  local api=http://127.0.0.1:8088/janus s h
  s=$(nsx curl -s -m 3 -X POST -d '{"janus":"create","transaction":"t"}' "$api" | jq -r .data.id)
  h=$(nsx curl -s -m 3 -X POST -d '{"janus":"attach","plugin":"janus.plugin.videoroom","transaction":"t"}' \
    "$api/$s" | jq -r .data.id)
  nsx curl -s -m 3 -X POST -d '{"janus":"message","transaction":"t","body":{"request":"list"}}' "$api/$s/$h" |
    jq -c '.plugindata.data.list'
  nsx curl -s -m 3 -X POST -d '{"janus":"destroy","transaction":"t"}' "$api/$s" >/dev/null
}
# jn_rooms: how many of whipgate's rooms Janus has.
jn_rooms() { jn_list | jq -r '[.[] | select(.description | startswith("whipgate:"))] | length'; }
# jn_participants STREAM: how many participants the whipgate room of STREAM has (0: none).
jn_participants() {
  jn_list | jq -r --arg d "whipgate:$1" '[.[] | select(.description == $d) | .num_participants] | first // 0'
}

# JN: kind janus, through Janus's own HTTP API.
test_jn() {
  local name=$NAME_JN stream=jn-1 fail=
  if [ "$DIRECT" = 1 ]; then echo "# JN needs whipgate: skipped in direct mode"; return; fi
  note "JN: aiortc -> whipgate -> Janus HTTP API (VideoRoom); aiortc plays through a counter-offer"
  local sessions_before
  sessions_before=$(admin "" ',"janus":"list_sessions"' | jq -r '.sessions | length')
  aiortc_publisher jn-pub "$stream"; local pub=$LAST_PID
  if ! wait_for 20 "$pub" "aiortc publisher" test -f "$TMP/jn-pub.ready"; then
    not_ok "$name" "publisher: $(result_line jn-pub || echo 'no connection within 20 s')"; return
  fi
  local rooms
  rooms=$(jn_rooms)
  [ "$rooms" = 1 ] || fail="Janus has $rooms whipgate rooms while publishing, expected 1"
  if [ -z "$fail" ] && ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream" --min-frames 30 \
      --min-audio 20 >"$TMP/jn-play.log" 2>&1; then
    fail="player: $(result_line jn-play)"
  fi
  if [ -z "$fail" ] && ! grep -q '406 counter-offer' "$TMP/jn-play.log"; then
    fail="the player did not get a counter-offer: $(grep '^check:' "$TMP/jn-play.log" | tr '\n' ';')"
  fi
  # The play page answers the counter-offer too (rollback, answer, PATCH application/sdp).
  if [ -z "$fail" ] && ! nsx node "$HERE/chromium.mjs" play "$GW" "$stream" --min-frames 30 \
      --timeout 20 >"$TMP/jn-chromium.log" 2>&1; then
    fail="Chromium's play page: $(result_line jn-chromium)"
  fi
  # Through the SFU: it pulls the stream from Janus (Janus offers, the SFU answers) and
  # answers the player's own offer with a 201; the pull ends with its last viewer.
  local asked
  asked=$(date +%s.%N)
  if [ -z "$fail" ] && ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream?via=sfu" --min-frames 30 \
      --min-audio 20 >"$TMP/jn-play-pull.log" 2>&1; then
    fail="player through the SFU's pull from Janus: $(result_line jn-play-pull)"
  elif [ -z "$fail" ] && grep -q '406 counter-offer' "$TMP/jn-play-pull.log"; then
    fail="the SFU's player got a counter-offer: the pull's should have answered its offer"
  elif [ -z "$fail" ] && ! wait_for 10 "" "the pull from Janus dropped" \
      grep -q "pull ended stream=$stream origin=janus-api" "$TMP/whipgate.log"; then
    fail="the SFU's pull of $stream outlived its viewer"
  fi
  # The SFU asks Janus for a keyframe in a way Janus 1.1 files under the video m-line (see
  # the engine's request_keyframe): before, the first frame waited 3 to 15 s and more.
  local first_video
  first_video=$(awk -v a="$asked" -v b="$(grep -oE 'first video frame at [0-9.]+' "$TMP/jn-play-pull.log" | grep -oE '[0-9.]+$')" \
    'BEGIN { if (b == "") print "never"; else printf "%.1f", b - a }')
  if [ -z "$fail" ] && ! awk -v t="$first_video" 'BEGIN { exit !(t != "never" && t < 3) }'; then
    fail="through the SFU's pull from Janus the first video frame came $first_video s after the POST (want < 3 s)"
  fi
  [ -n "$fail" ] || note "JN: through the SFU's pull from Janus, first video frame $first_video s after the POST; $(check_line jn-play-pull)"
  release_publisher jn-pub "$pub" || true
  [ -n "$fail" ] || [ "$(result_line jn-pub)" = "RESULT ok" ] || fail="publisher: $(result_line jn-pub)"
  if [ -z "$fail" ] && ! wait_for 5 "" "room destroyed" test "$(jn_rooms)" = 0; then
    fail="the room outlived its publisher ($(jn_rooms) whipgate rooms left)"
  fi
  # A trickling publisher (simple-whip-client sends its candidates by PATCH).
  if [ -z "$fail" ]; then
    (exec env LD_LIBRARY_PATH="$STUB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" GST_DEBUG_NO_COLOR=1 \
      ip netns exec "$NS" whip-client -u "$GW/whip/jn-2" -t "$CLIENT_TOKEN" \
      -A "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=111 ssrc=1 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111" \
      -V "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue ! vp8enc deadline=1 target-bitrate=300000 keyframe-max-dist=30 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96") \
      >"$TMP/jn-whip-client.log" 2>&1 &
    local wc=$!; PIDS+=("$wc")
    if ! wait_for 15 "$wc" "whip-client" grep -q 'PeerConnection connected' "$TMP/jn-whip-client.log"; then
      fail="whip-client (trickle) never connected to Janus through kind janus"
    elif [ "$(grep -c 'method=PATCH endpoint="session".*backend="janus-api".*status=204' "$TMP/whipgate.log")" -lt 2 ]; then
      # One is the aiortc player's answer; the others are whip-client's trickles.
      fail="no trickle PATCH of whip-client reached kind janus (204)"
    elif [ "$(jn_participants jn-2)" != 1 ]; then
      fail="whip-client is not in the jn-2 room ($(jn_participants jn-2) participants)"
    fi
    kill -INT "$wc" 2>/dev/null
    local end=$((SECONDS + 10))
    while kill -0 "$wc" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  fi
  if [ -z "$fail" ] && ! wait_for 5 "" "rooms destroyed" test "$(jn_rooms)" = 0; then
    fail="a room outlived the trickling publisher ($(jn_rooms) whipgate rooms left)"
  fi
  local sessions_after
  sessions_after=$(admin "" ',"janus":"list_sessions"' | jq -r '.sessions | length')
  if [ -z "$fail" ] && [ "$sessions_after" -gt "$sessions_before" ]; then
    fail="Janus holds $sessions_after sessions after the DELETEs, $sessions_before before the test"
  fi
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; return; fi
  note "JN: player $(check_line jn-play); Chromium: $(grep -E '^check: decoded' "$TMP/jn-chromium.log" | sed 's/^check: //' | cut -c1-80)"
  ok "$name"
}

# JK: a publisher outlives the replica that created its Janus session. Replica B (port
# 8083, the same session key, kind janus) takes the publisher and is killed (SIGKILL); the
# main gateway's sweep keeps the Janus session alive past Janus's 60 s session_timeout; a
# player then plays it through the main gateway, and a restarted B ends it with DELETE.
start_replica_b() {
  (exec env WHIPGATE_SESSION_KEY="$SESSION_KEY" JANUS_ROOM_KEY=supersecret RUST_LOG=info \
    ip netns exec "$NS" "$WHIPGATE_BIN" serve --config "$TMP/replica-b.toml") >>"$TMP/replica-b.log" 2>&1 &
  REPLICA_B=$!; PIDS+=("$REPLICA_B")
  b_ready() {
    local c
    c=$(nsx curl -s -o /dev/null -m 1 -w '%{http_code}' -X OPTIONS http://127.0.0.1:8083/whip/x)
    [ "${c:0:1}" = 2 ]
  }
  wait_for 20 "$REPLICA_B" "replica B" b_ready
}

test_jk() {
  local name=$NAME_JK stream=jn-keep fail=
  if [ "$DIRECT" = 1 ]; then echo "# JK needs whipgate: skipped in direct mode"; return; fi
  cat >"$TMP/replica-b.toml" <<'TOML'
[server]
listen = "127.0.0.1:8083"
public_url = "http://127.0.0.1:8083"
session_keys = [{ id = "k1", secret_env = "WHIPGATE_SESSION_KEY" }]

[[backend]]
id = "janus-api"
kind = "janus"
url = "http://127.0.0.1:8088/janus"
room_admin_key_env = "JANUS_ROOM_KEY"

[[route]]
match = { stream = "jn-*" }
backends = ["janus-api"]
TOML
  if ! start_replica_b; then not_ok "$name" "replica B did not start"; return; fi
  note "JK: aiortc -> replica B -> Janus; B is then killed"
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "http://127.0.0.1:8083/whip/$stream" \
    --ready-file "$TMP/jk-pub.ready" --release-file "$TMP/jk-pub.release" --hold 150) >"$TMP/jk-pub.log" 2>&1 &
  local pub=$!; PIDS+=("$pub")
  if ! wait_for 20 "$pub" "aiortc publisher" test -f "$TMP/jk-pub.ready"; then
    not_ok "$name" "publisher: $(result_line jk-pub || echo 'no connection within 20 s')"; kill "$REPLICA_B"; return
  fi
  kill -KILL "$REPLICA_B"; wait "$REPLICA_B" 2>/dev/null
  # Janus drops a session 60 s after its last request: watch the room for 70 s.
  local end=$((SECONDS + 70)) n
  while [ $SECONDS -lt $end ]; do
    n=$(jn_participants "$stream")
    if [ "${n:-0}" -lt 1 ]; then fail="the publisher left the room $((70 - end + SECONDS)) s after its replica died"; break; fi
    kill -0 "$pub" 2>/dev/null || { fail="publisher exited: $(result_line jk-pub)"; break; }
    sleep 1
  done
  if [ -z "$fail" ] && ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream" --min-frames 30 \
      --min-audio 20 >"$TMP/jk-play.log" 2>&1; then
    fail="player through the main gateway: $(result_line jk-play)"
  fi
  if start_replica_b; then
    release_publisher jk-pub "$pub" || true
    [ -n "$fail" ] || [ "$(result_line jk-pub)" = "RESULT ok" ] || fail="publisher's DELETE through the restarted replica: $(result_line jk-pub)"
    kill "$REPLICA_B" 2>/dev/null; wait "$REPLICA_B" 2>/dev/null
  else
    [ -n "$fail" ] || fail="replica B did not restart"
    touch "$TMP/jk-pub.release"
  fi
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; return; fi
  note "JK: 70 s after its replica died the publisher is still in its room; player $(check_line jk-play)"
  ok "$name"
}

# SL: the WHEP layer extension on the built-in SFU. Chromium publishes simulcast (q, h, f:
# a quarter, half and full size); one aiortc player chooses q and gets the small picture,
# another chooses nothing and gets the highest layer.
test_sl() {
  local name=$NAME_SL stream=live-sl fail=
  note "SL: Chromium simulcast -> built-in SFU; aiortc players choose a layer"
  (exec ip netns exec "$NS" node "$HERE/chromium.mjs" publish "$GW" "$stream" --simulcast --hold 90 \
    --ready-file "$TMP/sl-pub.ready" --release-file "$TMP/sl-pub.release") >"$TMP/sl-publish.log" 2>&1 &
  local pub=$!; PIDS+=("$pub")
  if ! wait_for 40 "$pub" "Chromium simulcast publisher" test -f "$TMP/sl-pub.ready"; then
    not_ok "$name" "publisher: $(result_line sl-publish || echo 'not publishing within 40 s')"; return
  fi
  # The default first: once it gets a wide picture, q is not what a player gets anyway, so the
  # small picture of the next one can only come from its choice.
  if ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream" --min-width 300 \
      --min-frames 30 --min-audio 20 --timeout 20 >"$TMP/sl-play-top.log" 2>&1; then
    fail="player without a choice: $(result_line sl-play-top)"
  fi
  if [ -z "$fail" ] && ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream" --layer q --max-width 200 \
      --min-frames 30 --min-audio 20 --timeout 20 >"$TMP/sl-play-q.log" 2>&1; then
    fail="player choosing q: $(result_line sl-play-q)"
  fi
  touch "$TMP/sl-pub.release"
  local end=$((SECONDS + 15))
  while kill -0 "$pub" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; return; fi
  note "SL: q: $(grep -E '^check: last decoded' "$TMP/sl-play-q.log" | sed 's/^check: //'); default: $(grep -E '^check: last decoded' "$TMP/sl-play-top.log" | sed 's/^check: //')"
  ok "$name"
}

# RL and RA: the built-in SFU republishes (relay). Two more whipgates, B (8084) and C (8085),
# each serving its own SFU, are relay targets of rl-* (failover: B, then C); ra-* is relayed
# to Janus (through simple-whip-server) and to B at once.
start_edge() { # start_edge NAME PORT UDP_PORT: a whipgate serving every stream on its SFU
  cat >"$TMP/edge-$1.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2"
pages = true

[builtin]
udp_listen = "127.0.0.2:$3"

[[backend]]
id = "sfu"
kind = "builtin"

[[route]]
match = { stream = "*" }
backends = ["sfu"]
TOML
  (exec env RUST_LOG=info ip netns exec "$NS" "$WHIPGATE_BIN" serve --config "$TMP/edge-$1.toml") \
    >>"$TMP/edge-$1.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
  edge_up() { [ "$(nsx curl -s -o /dev/null -m 1 -w '%{http_code}' -X OPTIONS "http://127.0.0.1:$1/whip/x")" = 204 ]; }
  wait_for 20 "$LAST_PID" "whipgate $1" edge_up "$2"
}
# edge_frames PORT STREAM -> frames the edge's SFU received on STREAM (0 when not there)
edge_frames() {
  local n
  n=$(nsx curl -sf -m 1 "http://127.0.0.1:$1/api/status" |
    jq -r --arg s "$2" '[.streams[] | select(.stream == $s) | .frames_in] | first // 0')
  echo "${n:-0}"
}
edge_gone() { # the edge answers, without the stream
  nsx curl -sf -m 1 "http://127.0.0.1:$1/api/status" |
    jq -e --arg s "$2" '[.streams[] | select(.stream == $s)] | length == 0' >/dev/null
}
# relay_leg STREAM -> "target state" of each of the main gateway's legs of STREAM
relay_legs() {
  nsx curl -s -m 1 "$GW/api/status" |
    jq -r --arg s "$1" '.relays[]? | select(.stream == $s) | .legs[] | "\(.target) \(.state)"'
}
relay_connected() { relay_legs "$1" | grep -qx "$2 connected"; }
switches_b_to_c() {
  local n
  n=$(nsx curl -s -m 1 "$GW/metrics" | awk '/^whipgate_relay_switches_total\{from="edge-b",to="edge-c"\}/ { print $2 }')
  echo "${n:-0}"
}

test_rl() {
  local name=$NAME_RL stream=rl-1 fail= b c
  if [ "$DIRECT" = 1 ]; then echo "# RL needs whipgate: skipped in direct mode"; return; fi
  start_edge b 8084 8194 || { not_ok "$name" "whipgate B did not start"; return; }
  b=$LAST_PID
  start_edge c 8085 8195 || { not_ok "$name" "whipgate C did not start"; kill "$b"; return; }
  c=$LAST_PID
  # scripts/relay-failover runs this test several times in one namespace.
  rm -f "$TMP"/rl-pub.*
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$GW/whip/$stream" \
    --ready-file "$TMP/rl-pub.ready" --release-file "$TMP/rl-pub.release" \
    --state-file "$TMP/rl-pub.state" --hold 90) >"$TMP/rl-pub.log" 2>&1 &
  local pub=$!; PIDS+=("$pub")
  if ! wait_for 20 "$pub" "aiortc publisher" test -f "$TMP/rl-pub.ready"; then
    fail="publisher: $(result_line rl-pub || echo 'no connection within 20 s')"
  elif ! wait_for 15 "" "relay leg to B" relay_connected "$stream" edge-b; then
    fail="no connected relay leg to B: $(relay_legs "$stream" | tr '\n' ';')"
  elif ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "http://127.0.0.1:8084/whep/$stream" \
      --min-frames 30 --min-audio 20 >"$TMP/rl-play-b.log" 2>&1; then
    fail="player on B: $(result_line rl-play-b)"
  fi
  if [ -z "$fail" ]; then
    note "RL: the relay to B plays ($(check_line rl-play-b)); B is killed"
    local killed switches_before
    switches_before=$(switches_b_to_c)
    killed=$(date +%s.%N)
    kill -KILL "$b"; wait "$b" 2>/dev/null
    # Frames reach C: the SFU there counts them as they arrive from the relay leg.
    local end=$((SECONDS + 30))
    while [ $SECONDS -lt $end ] && [ "$(edge_frames 8085 "$stream")" -lt 1 ]; do sleep 0.1; done
    local flowing
    flowing=$(awk -v a="$killed" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$(edge_frames 8085 "$stream")" -lt 1 ]; then
      fail="no frames on C within 30 s of B's death: legs $(relay_legs "$stream" | tr '\n' ';')"
    elif ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "http://127.0.0.1:8085/whep/$stream" \
        --min-frames 30 --min-audio 20 >"$TMP/rl-play-c.log" 2>&1; then
      fail="player on C: $(result_line rl-play-c)"
    elif [ ! -s "$TMP/rl-pub.state" ] || grep -qv '^connected$\|^connecting$\|^new$' "$TMP/rl-pub.state"; then
      fail="the publisher's connection changed state: $(tr '\n' ' ' <"$TMP/rl-pub.state")"
    elif [ "$(switches_b_to_c)" != $((switches_before + 1)) ]; then
      fail="the metrics count $(switches_b_to_c) relay switches B -> C, not $((switches_before + 1))"
    else
      echo "$flowing" >>"$ARTIFACTS/relay-failover-seconds.txt"
      note "RL: frames flowed on C ${flowing} s after B died; player on C $(check_line rl-play-c); the publisher stayed connected"
    fi
  fi
  release_publisher rl-pub "$pub" || true
  [ -n "$fail" ] || [ "$(result_line rl-pub)" = "RESULT ok" ] || fail="publisher's DELETE: $(result_line rl-pub)"
  # Its DELETE closes the relay: the stream leaves C.
  if [ -z "$fail" ] && ! wait_for 10 "" "the stream leaving C" edge_gone 8085 "$stream"; then
    fail="the relayed copy on C outlived its publisher"
  fi
  kill "$b" "$c" 2>/dev/null; wait "$c" 2>/dev/null
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; return; fi
  ok "$name"
}

test_ra() {
  local name=$NAME_RA stream=ra-1 fail= b code
  if [ "$DIRECT" = 1 ]; then echo "# RA needs whipgate: skipped in direct mode"; return; fi
  code=$(nsx curl -s -o /dev/null -w '%{http_code}' -m 3 -H 'Content-Type: application/json' \
    -X POST http://127.0.0.1:7080/whip/create \
    -d "{\"id\":\"$stream\",\"room\":$ROOM,\"label\":\"label-$stream\",\"token\":\"$BACKEND_TOKEN\"}")
  [ "$code" = 200 ] || { not_ok "$name" "simple-whip-server: POST /whip/create answered $code"; return; }
  start_edge b 8084 8194 || { not_ok "$name" "whipgate B did not start"; return; }
  b=$LAST_PID
  aiortc_publisher ra-pub "$stream"
  local pub=$LAST_PID
  if ! wait_for 20 "$pub" "aiortc publisher" test -f "$TMP/ra-pub.ready"; then
    fail="publisher: $(result_line ra-pub || echo 'no connection within 20 s')"
  elif ! wait_for 15 "" "relay legs" eval 'relay_connected "$stream" janus && relay_connected "$stream" edge-b'; then
    fail="legs not both connected: $(relay_legs "$stream" | tr '\n' ';')"
  elif ! wait_for 10 "" "Janus publishing" participant_publishing "label-$stream"; then
    fail="Janus has no publisher label-$stream"
  elif ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "http://127.0.0.1:8084/whep/$stream" \
      --min-frames 30 --min-audio 20 >"$TMP/ra-play-b.log" 2>&1; then
    fail="player on B: $(result_line ra-play-b)"
  elif ! wait_for 10 "" "the AV1-only target skipped" eval \
      'nsx curl -s -m 1 "$GW/metrics" | grep "^whipgate_relay_leg_ends_total{" | grep "reason=\"codec\"" | grep -q "target=\"av1-only\""'; then
    fail="no codec skip of av1-only in /metrics: $(nsx curl -s -m 1 "$GW/metrics" | grep relay_leg_ends | tr '\n' ';')"
  elif ! grep -q 'relay leg not opened.*av1-only\|av1-only.*relay leg not opened' "$TMP/whipgate.log"; then
    fail="no log line says why av1-only was skipped"
  fi
  release_publisher ra-pub "$pub" || true
  [ -n "$fail" ] || [ "$(result_line ra-pub)" = "RESULT ok" ] || fail="publisher's DELETE: $(result_line ra-pub)"
  if [ -z "$fail" ] && ! wait_for 10 "" "Janus publisher leaving" eval '! participant_present "label-$stream"'; then
    fail="the copy on Janus outlived its publisher"
  fi
  if [ -z "$fail" ] && ! wait_for 10 "" "the stream leaving B" edge_gone 8084 "$stream"; then
    fail="the copy on B outlived its publisher"
  fi
  kill "$b" 2>/dev/null; wait "$b" 2>/dev/null
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; return; fi
  note "RA: one publisher, copies on Janus and on B; player on B $(check_line ra-play-b)"
  ok "$name"
}

# PL: an edge whipgate (8086) whose SFU pulls streams over WHEP from the main gateway's SFU
# (pull = "origin") serves two players with one pull, and drops it when both have left.
test_pl() {
  local name=$NAME_PL stream=live-pulled fail= edge p1 p2 viewers
  if [ "$DIRECT" = 1 ]; then echo "# PL needs whipgate: skipped in direct mode"; return; fi
  cat >"$TMP/edge-pull.toml" <<'TOML'
[server]
listen = "127.0.0.1:8086"
public_url = "http://127.0.0.1:8086"
pages = true

[builtin]
udp_listen = "127.0.0.2:8196"

[[backend]]
id = "origin"
kind = "whip"
whip_url = "http://127.0.0.1:8080/whip/{stream}"
whep_url = "http://127.0.0.1:8080/whep/{stream}"

[[backend]]
id = "edge"
kind = "builtin"
pull = "origin"

[[route]]
match = { stream = "*" }
backends = ["edge"]
TOML
  (exec env RUST_LOG=info ip netns exec "$NS" "$WHIPGATE_BIN" serve --config "$TMP/edge-pull.toml") \
    >>"$TMP/edge-pull.log" 2>&1 &
  edge=$!; PIDS+=("$edge")
  edge_up() { [ "$(nsx curl -s -o /dev/null -m 1 -w '%{http_code}' -X OPTIONS "http://127.0.0.1:8086/whip/x")" = 204 ]; }
  wait_for 20 "$edge" "edge whipgate" edge_up || { not_ok "$name" "the edge did not start"; return; }
  aiortc_publisher pl-pub "$stream"
  local pub=$LAST_PID
  if ! wait_for 20 "$pub" "aiortc publisher" test -f "$TMP/pl-pub.ready"; then
    fail="publisher: $(result_line pl-pub || echo 'no connection within 20 s')"
  else
    for n in 1 2; do
      (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_play.py" "http://127.0.0.1:8086/whep/$stream" \
        --min-frames 30 --min-audio 20 --timeout 30 --ready-file "$TMP/pl-play-$n.ready" \
        --release-file "$TMP/pl-play.release") >"$TMP/pl-play-$n.log" 2>&1 &
      eval "p$n=\$!"; PIDS+=("$!")
    done
    if ! wait_for 30 "$p1" "player 1" test -f "$TMP/pl-play-1.ready"; then
      fail="player 1 on the edge: $(result_line pl-play-1)"
    elif ! wait_for 30 "$p2" "player 2" test -f "$TMP/pl-play-2.ready"; then
      fail="player 2 on the edge: $(result_line pl-play-2)"
    else
      viewers=$(sfu_stream "$stream" | jq -r '.viewers')
      [ "$viewers" = 1 ] || fail="the origin has $viewers viewers of $stream, not the one pull"
    fi
    touch "$TMP/pl-play.release"
    wait "$p1" "$p2" 2>/dev/null
    if [ -z "$fail" ]; then
      for n in 1 2; do
        [ "$(result_line "pl-play-$n")" = "RESULT ok" ] || fail="player $n: $(result_line "pl-play-$n")"
      done
    fi
    pull_dropped() { [ "$(sfu_stream "$stream" | jq -r '.viewers')" = 0 ]; }
    if [ -z "$fail" ] && ! wait_for 10 "" "the pull leaving the origin" pull_dropped; then
      fail="the pull outlived its viewers: the origin still has $(sfu_stream "$stream" | jq -r '.viewers') viewers"
    fi
  fi
  release_publisher pl-pub "$pub" || true
  [ -n "$fail" ] || [ "$(result_line pl-pub)" = "RESULT ok" ] || fail="publisher's DELETE: $(result_line pl-pub)"
  kill "$edge" 2>/dev/null; wait "$edge" 2>/dev/null
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; return; fi
  note "PL: two players on the edge through one pull: $(check_line pl-play-1); $(check_line pl-play-2)"
  ok "$name"
}

# RF: failback. rf-* is relayed to B, then C, with failback = "3s": B is killed, the copy
# moves to C; B comes back, and once it has rested 3 s the copy returns to B (a leg to B is
# opened beside C's and replaces it once connected): frames on B again, the stream gone
# from C, the publisher untouched.
test_rf() {
  local name=$NAME_RF stream=rf-1 fail= b c back
  if [ "$DIRECT" = 1 ]; then echo "# RF needs whipgate: skipped in direct mode"; return; fi
  start_edge b 8084 8194 || { not_ok "$name" "whipgate B did not start"; return; }
  b=$LAST_PID
  start_edge c 8085 8195 || { not_ok "$name" "whipgate C did not start"; kill "$b"; return; }
  c=$LAST_PID
  rm -f "$TMP"/rf-pub.*
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$GW/whip/$stream" \
    --ready-file "$TMP/rf-pub.ready" --release-file "$TMP/rf-pub.release" \
    --state-file "$TMP/rf-pub.state" --hold 90) >"$TMP/rf-pub.log" 2>&1 &
  local pub=$!; PIDS+=("$pub")
  if ! wait_for 20 "$pub" "aiortc publisher" test -f "$TMP/rf-pub.ready"; then
    fail="publisher: $(result_line rf-pub || echo 'no connection within 20 s')"
  elif ! wait_for 15 "" "relay leg to B" relay_connected "$stream" edge-b; then
    fail="no connected relay leg to B: $(relay_legs "$stream" | tr '\n' ';')"
  else
    kill -KILL "$b"; wait "$b" 2>/dev/null
    if ! wait_for 15 "" "relay leg to C" relay_connected "$stream" edge-c; then
      fail="the copy did not move to C: $(relay_legs "$stream" | tr '\n' ';')"
    else
      start_edge b 8084 8194 || fail="whipgate B did not restart"
      b=$LAST_PID
      back=$(date +%s.%N)
      on_b() { [ "$(edge_frames 8084 "$stream")" -gt 0 ]; }
      if [ -z "$fail" ] && ! wait_for 20 "" "frames back on B" on_b; then
        fail="the copy did not come back to B: $(relay_legs "$stream" | tr '\n' ';')"
      elif [ -z "$fail" ] && ! wait_for 10 "" "the stream leaving C" edge_gone 8085 "$stream"; then
        fail="the copy on C was not closed after the failback: $(relay_legs "$stream" | tr '\n' ';')"
      elif [ -z "$fail" ] && ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "http://127.0.0.1:8084/whep/$stream" \
          --min-frames 30 --min-audio 20 >"$TMP/rf-play-b.log" 2>&1; then
        fail="player on B after the failback: $(result_line rf-play-b)"
      elif [ -z "$fail" ] && { [ ! -s "$TMP/rf-pub.state" ] || grep -qv '^connected$\|^connecting$\|^new$' "$TMP/rf-pub.state"; }; then
        fail="the publisher's connection changed state: $(tr '\n' ' ' <"$TMP/rf-pub.state")"
      fi
      [ -n "$fail" ] || note "RF: back on B $(awk -v a="$back" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s after it restarted; player $(check_line rf-play-b)"
    fi
  fi
  release_publisher rf-pub "$pub" || true
  [ -n "$fail" ] || [ "$(result_line rf-pub)" = "RESULT ok" ] || fail="publisher's DELETE: $(result_line rf-pub)"
  kill "$b" "$c" 2>/dev/null; wait "$b" "$c" 2>/dev/null
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; return; fi
  ok "$name"
}
