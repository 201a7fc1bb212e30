#!/usr/bin/env bash
# sage-run --share's embedded default broker (tools/sage_run_broker.c), with
# the simulated driver: no saged configured, the first run starts the user's
# broker and publishes, the next (within the grace period) maps it, the broker
# exits after its grace, concurrent runs start one broker, a dead broker's
# stale socket is replaced, a configured broker wins, exit statuses and
# signals pass through the supervising sage-run.
#   embedded_checks.sh SAGE_RUN SHARE_TEST SAGED SAGECTL PYTHON3
set -euo pipefail
sage_run=$1 prog=$2 saged=$3 sagectl=$4 python=$5
. "$(dirname "$0")/lib.sh"
unset SAGE_SOCKET
export SAGE_LIB=$SAGE_TEST_LIBSAGE
# Under ASan the preload list starts with its runtime, which programs built
# without it (python3, sh) need before an instrumented libsage: sage-run puts
# libsage in front of what LD_PRELOAD holds (ASAN_OPTIONS tolerates the order).
case $preload in *" "*) export LD_PRELOAD=${preload% *} ;; esac
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT

# The broker's pid on socket $1 (SO_PEERCRED), or "none".
peer_pid() {
  "$python" - "$1" <<'PY'
import socket, struct, sys
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    print(struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])
except OSError:
    print("none")
PY
}
# Wait (pidfd, no polling) until process $1 exits; fail after $2 seconds.
wait_gone() {
  "$python" - "$1" "$2" <<'PY'
import os, select, sys
try:
    fd = os.pidfd_open(int(sys.argv[1]))
except ProcessLookupError:
    sys.exit(0)
p = select.poll()
p.register(fd, select.POLLIN)
sys.exit(0 if p.poll(float(sys.argv[2]) * 1000) else 1)
PY
}
# One run under sage-run --share in runtime dir $1 with grace $2; trace $3; args...
run() {
  local xdg=$1 grace=$2 trace=$3
  shift 3
  XDG_RUNTIME_DIR=$xdg SAGE_TRACE=$trace "$sage_run" --share --broker-grace "$grace" -- "$prog" "$@"
}

if [ "$(peer_pid /run/sage/saged.sock)" != none ]; then
  echo "SKIP: a system broker answers on /run/sage/saged.sock; sage-run --share would (rightly) use it"
  exit 77
fi

native=$("$prog" 96 7)
xdg=$tmp/xdg && mkdir -m 700 "$xdg"
sock=$xdg/sage/saged.sock
step "first run: no broker anywhere; sage-run starts the user's own, the upload is published"
out=$(run "$xdg" 30 "$tmp/1.json" 96 7) || bad "first run failed"
[ "$out" = "$native" ] || bad "first run output: $out vs $native"
[ -S "$sock" ] || bad "no broker socket at $sock"
[ "$(stat -c %a "$xdg/sage")" = 700 ] || bad "$xdg/sage is not 0700"
[ "$(stat_of "$tmp/1.json" SHARE_PUBLISHED)" = 1 ] || bad "first run did not publish"
broker=$(peer_pid "$sock")
[ "$broker" != none ] || bad "the broker did not outlive the run"
pids+=("$broker")
grep -q -- "--exit-idle" "/proc/$broker/cmdline" || bad "the broker was not started with --exit-idle"

step "second run within the grace period: the same broker, the upload is mapped"
out=$(run "$xdg" 30 "$tmp/2.json" 96 7) || bad "second run failed"
[ "$out" = "$native" ] || bad "second run output"
[ "$(stat_of "$tmp/2.json" SHARE_HITS)" = 1 ] || bad "second run did not hit"
[ "$(peer_pid "$sock")" = "$broker" ] || bad "a second broker was started"
"$sagectl" --socket "$sock" stats --json | "$python" -c 'import json,sys; d=json.load(sys.stdin); assert d["extents"] == 1 and d["clients"] == 1, d' ||
  bad "broker stats after two runs (1 extent; only sagectl connected)"

step "a dead broker's stale socket is replaced"
kill -KILL "$broker"
wait_gone "$broker" 10 || bad "SIGKILL did not end the broker"
[ -S "$sock" ] || bad "no stale socket left to replace"
out=$(run "$xdg" 30 "$tmp/3.json" 96 7) || bad "run after the broker died failed"
[ "$out" = "$native" ] || bad "run after the broker died: output"
[ "$(stat_of "$tmp/3.json" SHARE_PUBLISHED)" = 1 ] || bad "the new broker did not get the upload"
broker2=$(peer_pid "$sock")
pids+=("$broker2")
{ [ "$broker2" != none ] && [ "$broker2" != "$broker" ]; } || bad "no new broker on the stale socket ($broker2)"

step "grace 1 s: the broker outlives the run, then exits and removes its socket"
xdg1=$tmp/xdg1 && mkdir -m 700 "$xdg1"
out=$(run "$xdg1" 1 "$tmp/g1.json" 8 3) || bad "grace-1 run failed"
b1=$(peer_pid "$xdg1/sage/saged.sock")
[ "$b1" != none ] || bad "the broker did not outlive the run"
wait_gone "$b1" 15 || bad "the broker is still there 15 s after a 1 s grace"
[ ! -e "$xdg1/sage/saged.sock" ] || bad "the broker left its socket behind"

step "grace 0: the broker exits with the run"
xdg0=$tmp/xdg0 && mkdir -m 700 "$xdg0"
XDG_RUNTIME_DIR=$xdg0 OUT=$tmp/b0 "$sage_run" --share --broker-grace 0 -- "$python" -c '
import os, socket, struct
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(os.environ["SAGE_SOCKET"])
open(os.environ["OUT"], "w").write(str(struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]))
' || bad "grace-0 run failed"
b0=$(cat "$tmp/b0" 2>/dev/null || echo none)
[ "$b0" != none ] || bad "grace 0: the run saw no broker"
wait_gone "$b0" 5 || bad "grace 0: the broker outlived the run by 5 s"

step "four runs at once: one broker"
xdgc=$tmp/xdgc && mkdir -m 700 "$xdgc"
for i in 1 2 3 4; do
  XDG_RUNTIME_DIR=$xdgc SAGE_FAKE_INIT_MS=300 "$sage_run" --share --broker-grace 5 -- "$python" -c '
import os, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(os.environ["SAGE_SOCKET"])
print(struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])
' > "$tmp/c$i" 2>"$tmp/c$i.err" &
done
wait
seen=$(cat "$tmp"/c[1-4] | sort -u)
[ "$(cat "$tmp"/c[1-4] | wc -l)" = 4 ] && [ "$(echo "$seen" | wc -l)" = 1 ] ||
  bad "four concurrent runs saw brokers: $(cat "$tmp"/c[1-4] "$tmp"/c[1-4].err | tr '\n' ' ')"
n=0
for p in /proc/[0-9]*; do
  { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null | grep -q -- "--socket $xdgc/sage/saged.sock" && n=$((n + 1))
done
[ "$n" = 1 ] || bad "$n brokers run for $xdgc"
pids+=($seen)

step "a configured broker (SAGE_SOCKET) is used as it is; nothing is started"
xdgs=$tmp/xdgs && mkdir -m 700 "$xdgs"
"$saged" --socket "$tmp/sys/saged.sock" --foreground 2>"$tmp/sys.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$tmp/sys/saged.sock" ] && break; sleep 0.1; done
out=$(SAGE_SOCKET=$tmp/sys/saged.sock XDG_RUNTIME_DIR=$xdgs "$sage_run" --share -- "$prog" 8 4) || bad "run with SAGE_SOCKET failed"
[ ! -e "$xdgs/sage" ] || bad "a broker was started although SAGE_SOCKET names one"
SAGE_SOCKET=$tmp/sys/saged.sock "$sagectl" stats --json | "$python" -c 'import json,sys; assert json.load(sys.stdin)["publishes"] == 1' ||
  bad "the configured broker did not get the upload"

step "a runtime folder others may write: no broker there, the program still runs"
mkdir -m 700 "$tmp/bad" && mkdir -m 777 "$tmp/bad/sage"
out=$(XDG_RUNTIME_DIR=$tmp/bad "$sage_run" --share -- "$prog" 96 7 2>"$tmp/bad.err") || bad "run with an unsafe folder failed"
[ "$out" = "$native" ] || bad "unsafe folder: output"
grep -q "not a folder only you may write" "$tmp/bad.err" || bad "unsafe folder: no reason given: $(cat "$tmp/bad.err")"
[ ! -e "$tmp/bad/sage/saged.sock" ] || bad "a broker was started in a folder others may write"

step "the broker keeps none of the caller's fds open (a pipe the caller reads to its end)"
xdgf=$tmp/xdgf && mkdir -m 700 "$xdgf"
# fd 3 is the pipe to cat: cat ends when every holder closed it; a broker holding it would keep cat 30 s.
timeout 20 bash -c 'XDG_RUNTIME_DIR=$1 "$2" --share --broker-grace 30 -- true 3>&1 >/dev/null | cat' _ "$xdgf" "$sage_run" ||
  bad "the broker kept an fd of its caller (a pipe stayed open)"
pids+=("$(peer_pid "$xdgf/sage/saged.sock")")

step "the supervising sage-run exits as its program did, and forwards signals"
set +e
XDG_RUNTIME_DIR=$xdg "$sage_run" --share -- sh -c 'exit 3'
[ $? = 3 ] || bad "exit status 3 not passed on"
XDG_RUNTIME_DIR=$xdg "$sage_run" --share -- sh -c 'kill -TERM $$'
[ $? = 143 ] || bad "death by SIGTERM not passed on"
mkfifo "$tmp/ready"
XDG_RUNTIME_DIR=$xdg "$sage_run" --share -- "$python" -c '
import signal, sys, time
signal.signal(signal.SIGUSR1, lambda *a: sys.exit(7))
open(sys.argv[1], "w").write("ready\n")
time.sleep(30)
' "$tmp/ready" &
runner=$!
timeout 20 cat "$tmp/ready" >/dev/null || bad "the program did not start"
kill -USR1 "$runner"
wait "$runner"
[ $? = 7 ] || bad "SIGUSR1 not forwarded to the program"
set -e
[ "$fail" = 0 ] && echo "all embedded broker checks passed"
exit "$fail"
