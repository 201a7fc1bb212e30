/* Assembly: keying what no single upload covers whole (share_assemble.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "share_alloc.h"

/* Where keys are looked up: the broker in libsage, a fake in tests. */
typedef struct ShareLookup {
        /*
         * 0 with *fd >= 0: a hit, extent *id (a reference now ours) with
         * *notes (valid until the next lookup); 0 with *fd < 0 or positive:
         * a miss; negative: the lookup is gone.
         */
        int (*lookup)(void *ctx, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd, const void **notes,
                      uint32_t *notes_len);
        void *ctx;
} ShareLookup;

/*
 * Key the runs of granules that uploads filled in part (or several uploads
 * together) of fresh allocation `a` by their whole content, read back
 * through `buf` (sage_share_key_chunk() bytes): a run the lookup holds maps
 * its extent, any other becomes a candidate. The caller has synchronized
 * the context of `a`. False: the lookup is gone.
 */
bool share_assemble_allocation(ShareVmm *v, SageShareAlloc *a, const ShareLookup *lk, void *buf);
/*
 * Bytes [off, off+len) of `a` were copied although the broker may hold
 * them: a hit would have cost more than the copy (share_cost.h). The
 * granules they touch are not assembled either.
 */
void share_assemble_skip(SageShareAlloc *a, size_t off, size_t len);
