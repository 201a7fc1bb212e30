#!/usr/bin/env bash
# Lean contexts against the simulated driver: SAGE_CTX_STACK_LIMIT sets the
# stack limit of the primary context SAGE warms or redirects to, an app's
# own setting wins, and without the option nothing changes.
#   lean_checks.sh LEAN_TEST
set -euo pipefail
lean=$1
. "$(dirname "$0")/lib.sh"
sage() { env LD_PRELOAD="$preload" "$@"; }
stack() { sed -n 's/^stack=//p'; }
expect() { # expect WANT LABEL COMMAND...
  local want=$1 label=$2 got
  shift 2
  got=$("$@" | stack) || true
  [ "$got" = "$want" ] || bad "$label: stack limit ${got:-none}, expected $want"
}

step "the simulated driver: limits per context, driver defaults, a reset restores them"
[ "$("$lean" fake)" = ok ] || bad "fake driver limit semantics"

step "off by default: the driver's default, with and without libsage"
expect 1024 "native" "$lean" primary
expect 1024 "sage, option unset" sage "$lean" primary
expect 1024 "sage, option unset, redirect" sage "$lean" redirect
expect 1024 "sage, SAGE_CTX_STACK_LIMIT=0" env SAGE_CTX_STACK_LIMIT=0 LD_PRELOAD="$preload" "$lean" primary

step "SAGE_CTX_STACK_LIMIT=16 sets the warm context's limit"
for warmup in auto eager lazy; do
  expect 16 "warm-up $warmup" env SAGE_WARMUP=$warmup SAGE_CTX_STACK_LIMIT=16 LD_PRELOAD="$preload" "$lean" primary
done
# No warm-up: the redirect retains the primary context itself.
expect 16 "redirect, warm-up off" env SAGE_WARMUP=off SAGE_CTX_STACK_LIMIT=16 LD_PRELOAD="$preload" "$lean" redirect
# A delayed driver: the app's first calls race the warm-up thread.
expect 16 "slow driver" env SAGE_FAKE_INIT_MS=100 SAGE_FAKE_CTX_MS=100 SAGE_CTX_STACK_LIMIT=16 \
  LD_PRELOAD="$preload" "$lean" primary
# The trace shows SAGE's own call.
SAGE_CTX_STACK_LIMIT=16 SAGE_TRACE="$tmp/t.json" sage "$lean" primary >/dev/null
grep -q '"cuCtxSetLimit"' "$tmp/t.json" || bad "the trace does not show the lean cuCtxSetLimit"

step "the app's own limit wins"
for warmup in auto off; do
  expect 4096 "app sets 4096, warm-up $warmup" env SAGE_WARMUP=$warmup SAGE_CTX_STACK_LIMIT=16 \
    LD_PRELOAD="$preload" "$lean" app-sets 4096
done
expect 8192 "app set 8192 before a redirected create" env SAGE_WARMUP=off SAGE_CTX_STACK_LIMIT=16 \
  LD_PRELOAD="$preload" "$lean" app-then-redirect 8192
expect 8192 "app set 8192 before a redirected create, warm-up on" env SAGE_CTX_STACK_LIMIT=16 \
  LD_PRELOAD="$preload" "$lean" app-then-redirect 8192

exit $fail
