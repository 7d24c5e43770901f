# shellcheck shell=bash
# Tests W X Y Z of tests/e2e/janus.sh: real publishers as users run them, for as long as a
# broadcast lasts rather than a few seconds.
#
#   W, X  FFmpeg 9's WHIP muxer (the static build inside PyPI's imageio-ffmpeg 0.8.1) publishes
#         H.264 + Opus to the built-in SFU with its default flags (a=setup:passive: the SFU is
#         the DTLS client and FFmpeg swallows its first flight) and with -whip_flags
#         dtls_active; aiortc decodes the frames.
#   Y     The same FFmpeg through whipgate to Janus (simple-whip-server) and through every
#         vendor kind (vendors.sh's fakes fronting the SFU); a player decodes each stream.
#   OB    OBS 30+'s behaviour (a candidate-less offer, no trickle, no ICE restart), emulated with
#         aiortc: to the built-in SFU (an aiortc player decodes it) and to Janus through whipgate.
#   Z     simple-whip-client (libnice: no binding request after it connected, only media and
#         binding indications) publishes for 60 s; an aiortc viewer keeps receiving to the end.
#
# Sourced by janus.sh before its setup (names and functions only); the tests use its helpers
# and those of builtin.sh and vendors.sh. Each FFmpeg run with a player also records the time
# from its start to the first frame the player decoded (BENCHMARKS.md).

NAME_W="FFmpeg 9 (WHIP muxer, default flags: a=setup:passive, the SFU is the DTLS client) publishes H.264 + Opus to the built-in SFU; aiortc decodes its video and audio"
NAME_X="FFmpeg 9 with -whip_flags dtls_active publishes to the built-in SFU; aiortc decodes its video and audio"
NAME_Y="FFmpeg 9 publishes through whipgate to Janus (simple-whip-server) and through every vendor kind (livekit, livekit ingress, ivs, cloudflare, millicast, webhook fakes fronting the SFU); its media reaches Janus, and a player decodes each vendor stream"
NAME_OB="OBS-like publisher (aiortc with a candidate-less offer, never trickling) gets a complete answer and publishes to the built-in SFU (aiortc decodes it) and to Janus through whipgate (Janus receives its packets)"
NAME_Z="built-in SFU: simple-whip-client (libnice keepalives: media and binding indications, no binding requests) publishes for ${E2E_LONG_SECONDS:-60} s; an aiortc viewer keeps receiving its packets to the end"
NAME_GS="GStreamer's whipclientsink (gst-plugins-rs 0.15.4 on webrtcbin) publishes VP8 + Opus to the built-in SFU (aiortc decodes its video and audio; its DELETE ends the stream) and through whipgate to Janus (Janus receives its packets)"
GST_WHIP_PLUGINS=$DEPS/gst-whipclientsink/plugins   # built by scripts/install-test-deps
STREAM_GS=e2e-gst-whipclientsink                   # GS's Janus endpoint
FFMPEG_LOGS=(gs-sfu.log gs-janus.log play-gs.log obs-sfu.log obs-janus.log play-obs.log ffmpeg-w.log ffmpeg-x.log ffmpeg-y-janus.log ffmpeg-y-lk.log ffmpeg-y-lki.log ffmpeg-y-ivs.log
  ffmpeg-y-cf.log ffmpeg-y-dolby.log ffmpeg-y-hook.log whip-client-z.log aiortc-play-z.log)
STREAM_Y=e2e-ffmpeg   # Y's Janus endpoint
STREAM_OB=e2e-obs     # OB's Janus endpoint

# ffmpeg_bin: the FFmpeg with a WHIP muxer, from the venv's imageio-ffmpeg (installed by
# scripts/install-test-deps); empty when missing.
ffmpeg_bin() {
  "$VENV_PY" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())' 2>/dev/null
}

# ffmpeg_pub TAG URL SECONDS [OPTIONS...]: FFmpeg publishes a test pattern and a tone for
# SECONDS (the README's command line); log in $TMP/TAG.log, pid in LAST_PID.
ffmpeg_pub() {
  local tag=$1 url=$2 seconds=$3; shift 3
  local ff; ff=$(ffmpeg_bin)
  (exec ip netns exec "$NS" "$ff" -hide_banner -nostdin -loglevel verbose -re \
    -f lavfi -i testsrc=size=640x360:rate=30 -f lavfi -i sine=frequency=440 \
    -c:v libx264 -profile:v baseline -tune zerolatency -g 30 -b:v 800k -pix_fmt yuv420p \
    -c:a libopus -ar 48000 -ac 2 -t "$seconds" "$@" -f whip "$url") >"$TMP/$tag.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
ffmpeg_muxing() { grep -q 'Muxer state=10' "$TMP/$1.log"; }
ffmpeg_why() { # TAG: FFmpeg's last word on what failed
  grep -E 'failed|Failed|Error|error' "$TMP/$1.log" | grep -v 'DELETE\|dispose' | tail -1
}
# ffmpeg_wait_end TAG PID: FFmpeg ran to its -t and exited 0.
ffmpeg_wait_end() {
  local end=$((SECONDS + 20))
  while kill -0 "$2" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
  wait "$2" 2>/dev/null
}

# ff_play URL TAG: aiortc plays URL, started together with FFmpeg (it retries the 409 of a
# stream not live yet), until it decoded 60 video and 30 audio frames. Records the time from
# FFmpeg's start (FFMPEG_T0; its POST follows within milliseconds) to the first video frame
# the player decoded, in $FIRST_MEDIA_FILE (target/e2e-artifacts/first-media.txt, for
# BENCHMARKS.md).
ff_play() {
  local url=$1 tag=$2 first
  if ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$url" --min-frames 60 --min-audio 30 --timeout 20 \
      --wait-live 15 >"$TMP/play-$tag.log" 2>&1; then
    FAIL="player of $tag: $(grep -E '^RESULT' "$TMP/play-$tag.log" | tail -1)"; return 1
  fi
  first=$(sed -n 's/^check: first video frame at //p' "$TMP/play-$tag.log" | head -1)
  [ -z "$first" ] || echo "$tag $(awk -v a="$FFMPEG_T0" -v b="$first" 'BEGIN { printf "%.2f", b - a }')" \
    >>"$FIRST_MEDIA_FILE"
}

# ff_sfu_test NAME TAG STREAM [FFMPEG OPTIONS...]: FFmpeg -> the built-in SFU, aiortc plays.
ff_sfu_test() {
  local name=$1 tag=$2 stream=$3; shift 3
  if [ -z "$(ffmpeg_bin)" ]; then not_ok "$name" "no FFmpeg with a WHIP muxer (imageio-ffmpeg in $VENV_PY)"; return; fi
  note "$tag: FFmpeg $* -> built-in SFU ($stream)"
  FAIL= FFMPEG_T0=$(date +%s.%N)
  ffmpeg_pub "ffmpeg-$tag" "$GW/whip/$stream" 12 "$@"; local ff=$LAST_PID
  if ! ff_play "$GW/whep/$stream" "sfu-$tag"; then
    not_ok "$name" "$FAIL; FFmpeg: $(ffmpeg_why "ffmpeg-$tag")"; kill "$ff" 2>/dev/null; return
  fi
  if ! ffmpeg_muxing "ffmpeg-$tag"; then
    not_ok "$name" "FFmpeg never reached its muxing state: $(ffmpeg_why "ffmpeg-$tag")"
    kill "$ff" 2>/dev/null; return
  fi
  note "$tag: $(grep -o 'DTLS handshake is done, elapsed=[0-9.]*ms' "$TMP/ffmpeg-$tag.log")"
  note "$tag: player $(check_line "play-sfu-$tag")"
  if ! ffmpeg_wait_end "ffmpeg-$tag" "$ff"; then
    not_ok "$name" "FFmpeg exited with an error: $(ffmpeg_why "ffmpeg-$tag")"; return
  fi
  if ! wait_for 5 "" "stream gone" sfu_gone "$stream"; then
    not_ok "$name" "FFmpeg's DELETE did not end $stream: $(sfu_stream "$stream")"; return
  fi
  ok "$name"
}

test_w() { ff_sfu_test "$NAME_W" w live-ff-w; }
test_x() { ff_sfu_test "$NAME_X" x live-ff-x -whip_flags dtls_active; }

# ------------------------------------------------------------------ Y: Janus and vendors
test_y_steps() {
  local label=label-$STREAM_Y ff
  # Janus through the main whipgate (route whip * -> dead, janus: a failover on the way).
  FFMPEG_T0=$(date +%s.%N)
  ffmpeg_pub ffmpeg-y-janus "$(url_for "$STREAM_Y")" 10 -authorization "$TOKEN"; ff=$LAST_PID
  if ! wait_for 15 "$ff" "FFmpeg" ffmpeg_muxing ffmpeg-y-janus; then
    FAIL="FFmpeg -> Janus: $(ffmpeg_why ffmpeg-y-janus)"; kill "$ff" 2>/dev/null; return 1
  fi
  if ! wait_media "$label" 40 10; then
    FAIL="Janus admin: no H.264/Opus packets from FFmpeg for $label (got '${STATS}')"; kill "$ff" 2>/dev/null; return 1
  fi
  note "Y: Janus handle in packets (session handle audio video): $STATS"
  ffmpeg_wait_end ffmpeg-y-janus "$ff" || { FAIL="FFmpeg -> Janus exited with an error: $(ffmpeg_why ffmpeg-y-janus)"; return 1; }

  # Every vendor kind through the front whipgate; the stream names are its routes'.
  vendors_setup || { FAIL="vendors: $VENDORS_FAIL"; return 1; }
  local pair backend stream
  for pair in lk:live-lk lki:live-lki ivs:live-ivs cf:live-cf dolby:live-dolby hook:live-hook; do
    backend=${pair%%:*} stream=${pair#*:}
    local placed="method=POST endpoint=\"whip\" route=\"$backend\" backend=\"$backend\" failovers=0 status=201"
    local before; before=$(grep -cE "$placed" "$TMP/whipgate-front.log")
    FFMPEG_T0=$(date +%s.%N)
    ffmpeg_pub "ffmpeg-y-$backend" "$FRONT/whip/$stream" 10; ff=$LAST_PID
    # Players use the front's WHEP: the vendor's own, or the route's fallback to origin.
    if ! ff_play "$FRONT/whep/$stream" "$backend"; then
      FAIL="$FAIL; FFmpeg: $(ffmpeg_why "ffmpeg-y-$backend")"; kill "$ff" 2>/dev/null; return 1
    fi
    if ! ffmpeg_muxing "ffmpeg-y-$backend"; then
      FAIL="FFmpeg -> $backend: $(ffmpeg_why "ffmpeg-y-$backend")"; kill "$ff" 2>/dev/null; return 1
    fi
    if [ "$(grep -cE "$placed" "$TMP/whipgate-front.log")" -le "$before" ]; then
      FAIL="the front's log shows no new POST of $stream placed on $backend without failover"; kill "$ff" 2>/dev/null; return 1
    fi
    note "Y: FFmpeg -> $backend: player $(check_line "play-$backend")"
    ffmpeg_wait_end "ffmpeg-y-$backend" "$ff" || { FAIL="FFmpeg -> $backend exited with an error: $(ffmpeg_why "ffmpeg-y-$backend")"; return 1; }
  done
}

test_y() {
  local name=$NAME_Y
  if [ "$DIRECT" = 1 ]; then echo "# Y needs whipgate: skipped in direct mode"; return; fi
  if [ -z "$(ffmpeg_bin)" ]; then not_ok "$name" "no FFmpeg with a WHIP muxer (imageio-ffmpeg in $VENV_PY)"; return; fi
  FAIL=
  if test_y_steps; then ok "$name"; else not_ok "$name" "$FAIL"; fi
}

# ------------------------------------------------------------------ Z: 60 s of libnice
test_z() {
  local name=$NAME_Z stream=live-z seconds=${E2E_LONG_SECONDS:-60}
  note "Z: whip-client -> built-in SFU for $seconds s"
  (exec env LD_LIBRARY_PATH="$STUB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" GST_DEBUG_NO_COLOR=1 \
    ip netns exec "$NS" whip-client -u "$GW/whip/$stream" -t "$CLIENT_TOKEN" -o -L \
    -A "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=111 ssrc=1 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111" \
    -V "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue ! vp8enc deadline=1 target-bitrate=300000 keyframe-max-dist=30 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96") \
    >"$TMP/whip-client-z.log" 2>&1 &
  local wc=$!; PIDS+=("$wc")
  if ! wait_for 15 "$wc" "whip-client" grep -q 'PeerConnection connected' "$TMP/whip-client-z.log"; then
    not_ok "$name" "whip-client never logged 'PeerConnection connected'"; kill -INT "$wc" 2>/dev/null; return
  fi
  local started=$SECONDS
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/$stream" --min-frames 30 \
    --min-audio 30 --ready-file "$TMP/play-z.ready" --release-file "$TMP/play-z.release" --keep \
    --timeout $((seconds + 20))) >"$TMP/aiortc-play-z.log" 2>&1 &
  local player=$!; PIDS+=("$player")
  if ! wait_for 25 "$player" "aiortc player" test -f "$TMP/play-z.ready"; then
    not_ok "$name" "player: $(result_line aiortc-play-z || echo 'no frames within 25 s')"
    kill -INT "$wc" 2>/dev/null; return
  fi
  # The SFU's packet count for the stream must keep growing until the end: the ICE-lite
  # agent's 15 s without a binding request must not end the publisher.
  local last=0 last_out=0 now_in now_out fail=
  while [ $((SECONDS - started)) -lt "$seconds" ]; do
    sleep 10
    if ! kill -0 "$wc" 2>/dev/null; then fail="whip-client exited early"; break; fi
    now_in=$(sfu_stream "$stream" | jq -r '.packets_in // 0')
    now_out=$(sfu_stream "$stream" | jq -r '.frames_out // 0')
    if [ "${now_in:-0}" -le "$last" ] || [ "${now_out:-0}" -le "$last_out" ]; then
      fail="after $((SECONDS - started)) s the SFU's packets from whip-client or frames to the viewer stopped (in $last, out $last_out; stream: '$(sfu_stream "$stream")')"
      break
    fi
    last=$now_in last_out=$now_out
  done
  local viewers; viewers=$(sfu_stream "$stream" | jq -r '.viewers // 0')
  [ -n "$fail" ] || [ "${viewers:-0}" -ge 1 ] || fail="after $seconds s the viewer is gone (stream: '$(sfu_stream "$stream")')"
  note "Z: after $((SECONDS - started)) s: $last packets in, $last_out frames out, $viewers viewer(s)"
  touch "$TMP/play-z.release"
  kill -INT "$wc" 2>/dev/null
  wait "$player" 2>/dev/null
  local end=$((SECONDS + 5))
  while kill -0 "$wc" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  [ -z "$fail" ] || { not_ok "$name" "$fail"; return; }
  if ! wait_for 5 "" "stream gone" sfu_gone "$stream"; then
    not_ok "$name" "after SIGINT's DELETE the SFU still lists $stream"; return
  fi
  ok "$name"
}

# ------------------------------------------------------------------ OB: OBS's behaviour
test_ob_steps() {
  local pub
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$GW/whip/live-obs" --obs \
    --expect-absolute "$GW/session/" --ready-file "$TMP/obs-sfu.ready" \
    --release-file "$TMP/obs-sfu.release" --hold 60) >"$TMP/obs-sfu.log" 2>&1 &
  pub=$!; PIDS+=("$pub")
  if ! wait_for 20 "$pub" "OBS-like publisher" test -f "$TMP/obs-sfu.ready"; then
    FAIL="to the SFU: $(result_line obs-sfu || echo 'no connection within 20 s')"; return 1
  fi
  if ! nsx "$VENV_PY" "$HERE/aiortc_play.py" "$GW/whep/live-obs" --min-frames 60 --min-audio 30 \
      >"$TMP/play-obs.log" 2>&1; then
    FAIL="player: $(result_line play-obs)"; touch "$TMP/obs-sfu.release"; return 1
  fi
  note "OB: SFU player $(check_line play-obs)"
  release_publisher obs-sfu "$pub" || true
  [ "$(result_line obs-sfu)" = "RESULT ok" ] || { FAIL="to the SFU: $(result_line obs-sfu)"; return 1; }

  local label=label-$STREAM_OB
  (exec ip netns exec "$NS" "$VENV_PY" "$HERE/aiortc_publish.py" "$(url_for "$STREAM_OB")" --obs \
    --token "$TOKEN" "${PY_ABS[@]}" --ready-file "$TMP/obs-janus.ready" \
    --release-file "$TMP/obs-janus.release" --hold 60) >"$TMP/obs-janus.log" 2>&1 &
  pub=$!; PIDS+=("$pub")
  if ! wait_for 20 "$pub" "OBS-like publisher" test -f "$TMP/obs-janus.ready"; then
    FAIL="to Janus: $(result_line obs-janus || echo 'no connection within 20 s')"; return 1
  fi
  if ! wait_media "$label" 40 10; then
    FAIL="Janus admin: no packets from the OBS-like publisher (got '${STATS}')"; touch "$TMP/obs-janus.release"; return 1
  fi
  note "OB: Janus handle in packets (session handle audio video): $STATS"
  release_publisher obs-janus "$pub" || true
  [ "$(result_line obs-janus)" = "RESULT ok" ] || { FAIL="to Janus: $(result_line obs-janus)"; return 1; }
}

test_ob() {
  local name=$NAME_OB
  if [ "$DIRECT" = 1 ]; then echo "# OB needs whipgate: skipped in direct mode"; return; fi
  FAIL=
  if test_ob_steps; then ok "$name"; else not_ok "$name" "$FAIL"; fi
}

# ------------------------------------------------------------------ GS: whipclientsink
# gs_pub TAG URL TOKEN: whipclientsink publishes a test pattern (VP8) and a tone (Opus) as a
# user's gst-launch would; -e makes SIGINT an EOS, on which it sends its DELETE. Log in
# $TMP/TAG.log, pid in LAST_PID. stun-server=NULL: its default is Google's STUN server, and it
# posts its offer only once candidate gathering is over.
gs_pub() {
  local tag=$1 url=$2 token=$3
  (exec env GST_PLUGIN_PATH="$GST_WHIP_PLUGINS" GST_DEBUG_NO_COLOR=1 GST_DEBUG='whip*:5' \
    ip netns exec "$NS" gst-launch-1.0 -e whipclientsink name=ws \
      signaller::whip-endpoint="$url" signaller::auth-token="$token" \
      video-caps=video/x-vp8 audio-caps=audio/x-opus congestion-control=disabled stun-server=NULL \
      videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
        ! videoconvert ! queue ! ws. \
      audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! ws.) \
    >"$TMP/$tag.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
# gs_stop PID: SIGINT (EOS, then its DELETE), and wait for it to exit.
gs_stop() {
  kill -INT "$1" 2>/dev/null
  local end=$((SECONDS + 10))
  while kill -0 "$1" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  kill "$1" 2>/dev/null
  wait "$1" 2>/dev/null || true
}
gs_why() { grep -E 'ERROR|WARN' "$TMP/$1.log" | tail -1; }

test_gs() {
  local name=$NAME_GS stream=live-gs gs
  if ! GST_PLUGIN_PATH="$GST_WHIP_PLUGINS" gst-inspect-1.0 whipclientsink >/dev/null 2>&1; then
    not_ok "$name" "whipclientsink is not in $GST_WHIP_PLUGINS (scripts/install-test-deps builds it)"; return
  fi
  note "GS: whipclientsink -> built-in SFU ($stream)"
  FAIL= FFMPEG_T0=$(date +%s.%N)
  gs_pub gs-sfu "$GW/whip/$stream" "$CLIENT_TOKEN"; gs=$LAST_PID
  if ! ff_play "$GW/whep/$stream" gs; then
    not_ok "$name" "$FAIL; whipclientsink: $(gs_why gs-sfu)"; gs_stop "$gs"; return
  fi
  note "GS: player $(check_line play-gs)"
  gs_stop "$gs"
  if ! wait_for 5 "" "stream gone" sfu_gone "$stream"; then
    not_ok "$name" "whipclientsink's EOS did not end $stream (no DELETE?): $(sfu_stream "$stream")"; return
  fi
  note "GS: whipclientsink -> whipgate -> Janus ($STREAM_GS)"
  local label=label-$STREAM_GS
  gs_pub gs-janus "$(url_for "$STREAM_GS")" "$TOKEN"; gs=$LAST_PID
  if ! wait_media "$label" 40 10; then
    not_ok "$name" "Janus admin: no VP8/Opus packets from whipclientsink for $label (got '${STATS}'); whipclientsink: $(gs_why gs-janus)"
    gs_stop "$gs"; return
  fi
  note "GS: Janus handle in packets (session handle audio video): $STATS"
  gs_stop "$gs"
  ok "$name"
}
