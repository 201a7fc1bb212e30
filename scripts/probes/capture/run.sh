#!/usr/bin/env bash
# Which driver calls spoil a stream capture in progress, by the calling
# thread's capture mode (probe.c says how). Builds probe.c and runs it on
# GPU 0 (bounded: 30 s; it takes ~1 s); prints one line per call x thread x mode:
#   OP by other/global: RESULT, capture CUDA_SUCCESS | CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
# Reading it: a call "by other/global" that invalidates the capture must not
# be made by libsage's own threads unless they are in the relaxed mode; the
# rows "by other/relaxed" say whether that mode makes it safe.
# tests/fakecuda models what this prints (fake_stream.c, "unsafe" calls).
#   scripts/probes/capture/run.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
probe_prepare capture "$here/probe.c"
timeout 30 "$probe"
