#!/usr/bin/env bash
# scripts/bench-proxy refuses bad arguments before it installs or starts anything: each case
# must exit with the expected status. Prints "N passed, M failed" for scripts/test's total.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BP=$ROOT/scripts/bench-proxy
pass=0 fail=0
expect() {  # $1 = expected status, $2 = what, then the arguments
  local want=$1 what=$2 got
  shift 2
  "$BP" "$@" >/dev/null 2>&1
  got=$?
  if [ "$got" = "$want" ]; then
    pass=$((pass + 1)); echo "ok - $what"
  else
    fail=$((fail + 1)); echo "not ok - $what (exit $got, expected $want)"
  fi
}
if bash -n "$BP"; then pass=$((pass + 1)); echo "ok - bench-proxy parses"; else fail=$((fail + 1)); echo "not ok - bench-proxy has a syntax error"; fi
if "$BP" --help | grep -q -- '--ab OTHER_BIN'; then pass=$((pass + 1)); echo "ok - --help documents --ab"; else fail=$((fail + 1)); echo "not ok - --help does not document --ab"; fi
if "$BP" --help | grep -q -- '--callgrind N'; then pass=$((pass + 1)); echo "ok - --help documents --callgrind"; else fail=$((fail + 1)); echo "not ok - --help does not document --callgrind"; fi
expect 2 "an unknown argument is refused" --frobnicate
expect 2 "--ab needs an executable" --ab /nonexistent/whipgate
expect 2 "--ab and --soak exclude each other" --ab /bin/true --soak 5
expect 2 "--rounds 0 is refused" --ab /bin/true --rounds 0
expect 2 "--duration 0 is refused" --duration 0
expect 2 "--soak above 20M is refused" --soak 20000001
expect 2 "--callgrind and --ab exclude each other" --callgrind 5 --ab /bin/true
expect 2 "--callgrind above 100k cycles is refused" --callgrind 100001
expect 2 "--callgrind needs a whole number" --callgrind many
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
