/* Publishing candidates (share_publish.c). */
#pragma once

#include <stdint.h>

#include "share_alloc.h"

/* Where verified candidates go: the broker in libsage, a fake in tests. */
typedef struct SharePublisher {
        /*
         * Publish piece `p` of `a` (exported as `fd`, lent for the call) with
         * `notes`. Negative: the publisher is gone (nothing more is tried).
         */
        int (*publish)(void *ctx, const SageShareAlloc *a, const Piece *p, int fd, const void *notes,
                       uint32_t notes_len);
        void *ctx;
} SharePublisher;

/* Key device bytes [at, at+len) by content, read back through `buf` (sage_share_key_chunk() bytes, pinned). */
int share_device_content(ShareVmm *v, CUdeviceptr at, size_t len, void *buf, SageHash *out);

/*
 * Why candidate `p` must not be published, given the content its device
 * bytes hash to now (NULL: they could not be read back); NULL: publish it.
 */
const char *share_publish_verdict(const Piece *p, const SageHash *now);

/*
 * Candidates of `a` unchanged since their uploads go to `pub`, sealed; the
 * others are dropped (counted, one debug line why). Every candidate of `a`
 * stops being one. The context of `a` is pushed and synchronized first.
 */
void share_publish_candidates(ShareVmm *v, SageShareAlloc *a, const SharePublisher *pub);
