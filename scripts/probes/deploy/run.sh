#!/usr/bin/env bash
# Deploy probe for the GPU machine (deploy/README.md): does saged work with
# the privileges deploy/ gives it, on the real driver, and does the $LIB
# injection reach a real CUDA process?
#  1. saged runs as root with only the DaemonSet's capabilities (CHOWN,
#     DAC_OVERRIDE, FOWNER, SYS_PTRACE, SYS_NICE; setpriv bounding set) and
#     no new privileges, as in deploy/kubernetes/daemonset.yaml, at nice -10;
#  2. a function under LD_PRELOAD='DIR/$LIB/libsage.so' (sage-install-preload)
#     with SAGE_SHARE=1 runs twice: same output, the second maps (SHARE_HITS > 0);
#  3. a function with SAGE_SUSPEND=1 is suspended and resumed by sagectl
#     through that saged (the checkpoint API on another process, with those
#     capabilities only), and reads its memory back intact.
# Prints PASS/FAIL lines and "deploy-probe: N passed, M failed"; exit 0 when
# all passed, 1 otherwise, 77 when not root (setpriv needs it).
#   scripts/probes/deploy/run.sh [--build DIR]   (default: build)
# Without a GPU it runs against the simulated driver when
# LD_LIBRARY_PATH names tests/fakecuda's build folder (a dry run).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=$root/build
[ "${1:-}" = --build ] && build=$(cd "$2" && pwd)
[ "$(id -u)" = 0 ] || { echo "deploy-probe: needs root (saged with a bounding set)"; exit 77; }
tmp=$(mktemp -d)
saged_pid=
cleanup() {
    [ -n "$saged_pid" ] && kill "$saged_pid" 2>/dev/null && wait "$saged_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
pass=0 failn=0
ok() { echo "PASS: $*"; pass=$((pass + 1)); }
no() { echo "FAIL: $*"; failn=$((failn + 1)); }
stat_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['otherData']['stats'][sys.argv[2]])" "$1" "$2"; }

inc=/usr/local/cuda/include
[ -f "$inc/cuda.h" ] || inc=/usr/include
libdirs=()
for d in ${LD_LIBRARY_PATH//:/ } /usr/local/cuda/lib64/stubs; do [ -d "$d" ] && libdirs+=(-L"$d"); done
gcc -O2 -I"$inc" "$here/function.c" "${libdirs[@]}" -l:libcuda.so.1 -o "$tmp/function" ||
    { echo "deploy-probe: function.c does not build"; exit 1; }
"$root/deploy/sage-install-preload" --lib "$build/intercept/libsage.so" "$tmp/preload" >/dev/null ||
    { echo "deploy-probe: sage-install-preload failed"; exit 1; }
# shellcheck disable=SC2016 # $LIB is ld.so's
preload="$tmp/preload/\$LIB/libsage.so"
mkdir -m 0755 "$tmp/run"
sock=$tmp/run/saged.sock

# 1. saged with the DaemonSet's capabilities; READY=1 as under systemd.
python3 - "$build/daemon/saged" "$sock" "$tmp" >"$tmp/saged.pid" <<'PY'
import os, socket, subprocess, sys
saged, sock, tmp = sys.argv[1:]
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.bind(tmp + "/notify")
n.settimeout(60)
log = open(tmp + "/saged.log", "w")
p = subprocess.Popen(["setpriv", "--no-new-privs", "--inh-caps=-all",
                      "--bounding-set=-all,+chown,+dac_override,+fowner,+sys_ptrace,+sys_nice",
                      saged, "--foreground", "-v", "--socket", sock],
                     stdout=log, stderr=log, env=dict(os.environ, NOTIFY_SOCKET=tmp + "/notify"))
print(p.pid)
try:
    n.recv(16)
except socket.timeout:
    pass
PY
saged_pid=$(cat "$tmp/saged.pid")
if "$build/tools/sagectl" --socket "$sock" ping >"$tmp/ping" 2>&1; then
    ok "saged with CHOWN DAC_OVERRIDE FOWNER SYS_PTRACE SYS_NICE only: $(head -1 "$tmp/ping")"
else
    no "saged with the DaemonSet's capabilities: $(cat "$tmp/ping") / $(tail -3 "$tmp/saged.log")"
fi
grep "CapBnd\|CapEff" "/proc/$saged_pid/status" | tr '\n' ' ' | sed 's/^/saged: /'; echo
# saged's default --nice: field 19 of its stat (the 17th after the command).
nice=$(sed 's/.*) //' "/proc/$saged_pid/stat" | awk '{print $17}')
[ "$nice" = -10 ] && ok "saged at nice -10 with SYS_NICE" || no "saged at nice '$nice', not -10 / $(grep nice "$tmp/saged.log")"

# 2. Sharing through the injection path.
native=$("$tmp/function" once 256 7 2>&1)
for i in 1 2; do
    out=$(LD_PRELOAD=$preload SAGE_SHARE=1 SAGE_SOCKET=$sock SAGE_TRACE=$tmp/share$i.json \
          "$tmp/function" once 256 7 2>"$tmp/share$i.err")
    [ "$out" = "$native" ] && [ ! -s "$tmp/share$i.err" ] || no "share run $i: '$out' vs native '$native', stderr: $(cat "$tmp/share$i.err")"
done
if [ -f "$tmp/share2.json" ]; then
    hits=$(stat_of "$tmp/share2.json" SHARE_HITS)
    [ "$hits" -gt 0 ] && ok "injection (\$LIB) + sharing: the second run mapped $hits upload(s)" ||
        no "injection + sharing: the second run was not served by the broker (hits $hits)"
else
    no "no trace from the injected run: libsage not loaded through \$LIB"
fi

# 3. Suspend and resume through the restricted saged.
coproc FN { LD_PRELOAD=$preload SAGE_SUSPEND=1 SAGE_SOCKET=$sock exec "$tmp/function" serve 256 9 2>"$tmp/serve.err"; }
fn_pid=$FN_PID
read -r -t 60 ready sum <&"${FN[0]}" || ready=
if [ "$ready" != ready ]; then
    no "suspend: the function did not start: $(cat "$tmp/serve.err")"
else
    r=
    if s=$("$build/tools/sagectl" --socket "$sock" suspend "$fn_pid" 2>&1) &&
        r=$("$build/tools/sagectl" --socket "$sock" resume "$fn_pid" 2>&1); then
        echo x >&"${FN[1]}"
        read -r -t 60 again <&"${FN[0]}" || again=
        [ "$again" = "$sum" ] && ok "suspend + resume with SYS_PTRACE only: memory intact ($s / $r)" ||
            no "suspend + resume: read back $again, expected $sum"
    else
        no "suspend/resume with the DaemonSet's capabilities: $s $r / $(tail -3 "$tmp/saged.log")"
    fi
fi
eval "exec ${FN[1]}>&-"
wait "$fn_pid" 2>/dev/null
echo "deploy-probe: $pass passed, $failn failed"
[ "$failn" = 0 ]
