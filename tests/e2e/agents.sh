# shellcheck shell=bash
# Test AG of tests/e2e/janus.sh: voice agents behind whipgate. A real Pipecat bot
# (pipecat-ai from PyPI, tests/e2e/pipecat_echo_bot.py, no model and no network) echoes the
# caller's audio; an aiortc caller (tests/e2e/aiortc_talk.py) publishes a two-way WHIP session
# (sendrecv audio and a data channel) through the main whipgate's talk-* route (kind
# pipecat), sends a 440 Hz tone and measures what comes back. The same caller talks to the
# bot directly too, so the answer time and the audio round trip are compared side by side.
#
# Sourced by janus.sh before its setup: names and functions only; the test uses its helpers.

NAME_AG="voice agent (kind pipecat): an aiortc caller's two-way WHIP session (sendrecv audio + data channel) reaches a real Pipecat echo bot through whipgate; the 440 Hz tone comes back (frequency and level measured); DELETE answered by whipgate; answer time and audio round trip compared with the bot reached directly; Chromium's /talk page hears the bot echo its fake microphone"
AGENT_LOGS=(pipecat-bot.log ag-direct.log ag-whip.log ag-chromium.log)
PIPECAT_PY=${WHIPGATE_TEST_DEPS:-/var/cache/whipgate-test-deps}/pipecat-venv/bin/python

test_ag() {
  local name=$NAME_AG fail= bot
  if [ "$DIRECT" = 1 ]; then echo "# AG needs whipgate: skipped in direct mode"; return; fi
  [ -x "$PIPECAT_PY" ] || { not_ok "$name" "no Pipecat venv at $PIPECAT_PY (scripts/install-test-deps)"; return; }
  (exec ip netns exec "$NS" "$PIPECAT_PY" "$HERE/pipecat_echo_bot.py" --host 127.0.0.1 --port 7860) \
    >"$TMP/pipecat-bot.log" 2>&1 &
  bot=$!; PIDS+=("$bot")
  bot_ready() { grep -q "pipecat_echo_bot: ready" "$TMP/pipecat-bot.log"; }
  if ! wait_for 60 "$bot" "Pipecat bot" bot_ready; then
    not_ok "$name" "the Pipecat bot did not start: $(tail -3 "$TMP/pipecat-bot.log" | tr '\n' ' ')"; return
  fi
  # AG_ROUNDS (default 1) alternates direct and whipgate calls that many times, for
  # scripts/agent-latency; the test itself needs one of each.
  local round rounds=${AG_ROUNDS:-1}
  : >"$TMP/ag-direct.log"; : >"$TMP/ag-whip.log"
  for round in $(seq "$rounds"); do
    if ! nsx "$VENV_PY" "$HERE/aiortc_talk.py" --direct-pipecat http://127.0.0.1:7860/api/offer \
        --data-channel >>"$TMP/ag-direct.log" 2>&1; then
      fail="the bot reached directly (round $round): $(result_line ag-direct)"; break
    elif ! nsx "$VENV_PY" "$HERE/aiortc_talk.py" "$GW/whip/talk-echo" --data-channel \
        >>"$TMP/ag-whip.log" 2>&1; then
      fail="the bot through whipgate (round $round): $(result_line ag-whip)"; break
    fi
  done
  # A person's browser on the talk page: Chromium's fake microphone to the same bot.
  if [ -z "$fail" ] && ! nsx node "$HERE/chromium.mjs" talk "$GW" talk-echo \
      >"$TMP/ag-chromium.log" 2>&1; then
    fail="Chromium on /talk: $(result_line ag-chromium)"
  fi
  kill "$bot" 2>/dev/null; wait "$bot" 2>/dev/null
  if [ -n "$fail" ]; then not_ok "$name" "$fail"; return; fi
  note "AG Chromium: $(grep -E '^check: audio back' "$TMP/ag-chromium.log" | sed 's/^check: //')"
  local figures
  for how in direct whip; do
    figures=$(grep -E '^check: (answer after|round trip|tone back)' "$TMP/ag-$how.log" | tail -3 | sed 's/^check: //' | tr '\n' ';')
    grep -E '^check: (answer after|round trip)' "$TMP/ag-$how.log" | sed "s/^check: /$how: /" >>"$ARTIFACTS/agent-latency-all.txt"
    note "AG $how: $figures"
    echo "$how: $figures" >>"$ARTIFACTS/agent-latency.txt"
  done
  ok "$name"
}
