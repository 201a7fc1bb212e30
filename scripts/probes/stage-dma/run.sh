#!/usr/bin/env bash
# How fast the miss path's staged DMAs run: 128 MiB from 8 registered 16 MiB
# buffers to device memory, 24 times, on 8 streams (libsage) or one, in 3
# copies a buffer or one, from cuMemAllocHost buffers, into a VMM mapping, and
# again while 4, 8, ... THREADS (default 16) host threads memcpy. Bounded: 60 s.
#   scripts/probes/stage-dma/run.sh
# Reading it: streams8 well under stream1 says libsage's staging should send
# on one stream; "while ... memcpy" well under alone says host memory
# bandwidth, not the DMA engine, bounds a staged miss.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
probe_prepare stage-dma "$here/probe.c"
timeout 60 "$probe"
