/*
 * Assembly (intercept/share_assemble.c) against an in-test driver and
 * lookup: what uploads filled in part is keyed by whole runs of granules,
 * gaps included; a granule with room for other buffers is a run of its
 * own; a run the lookup holds maps its extent read-only, any other becomes
 * a candidate remembering the uploads it holds; a lookup that is gone
 * stops the rest.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../intercept/share_assemble.h"
#include "../../intercept/share_key.h"
#include "check.h"
#include "fake_share_driver.h"

#define G FAKE_GRAN

typedef struct Lookups {
        int calls, answer; /* answer < 0: gone; 1: a hit (extent 5); else a miss */
        size_t len[4];
        SageHash key[4];
} Lookups;

static int lookup(void *ctx, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd, const void **notes,
                  uint32_t *notes_len) {
        Lookups *l = ctx;

        CHECK(l->calls < 4);
        l->len[l->calls] = len;
        l->key[l->calls] = key;
        l->calls++;
        if (l->answer < 0)
                return l->answer;
        if (l->answer == 1) {
                *id = 5;
                *fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                *notes = NULL;
                *notes_len = 0;
        }
        return 0;
}

static void release_extent(void *ctx, uint64_t id) {
}

/* A fresh allocation of 4 granules; `n` uploads [off, off+len) of byte 0x61 each. */
static SageShareAlloc *setup(ShareVmm *v, const Range *up, size_t n) {
        SageShareAlloc *a = NULL;

        fake_reset();
        share_vmm_init(v, &fake_driver, release_extent, NULL);
        v->track_pending = true;
        CHECK(share_vmm_alloc(v, 4 * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(v, a);
        for (size_t i = 0; i < n; i++) {
                fake_fill(a->va + up[i].off, up[i].len, 0x61);
                share_vmm_note_written(v, a, up[i].off, up[i].len);
        }
        CHECK(atomic_load(&v->pending) == (n > 0));
        return a;
}

static void teardown(ShareVmm *v, SageShareAlloc *a) {
        CHECK(share_vmm_unlink(v, a->va) == a);
        share_vmm_release(v, a);
        CHECK(fake.live_handles == 0 && fake.bad_unmaps == 0 && fake.bad_writes == 0);
}

/* share_assemble_allocation over `l` (with its key buffer). */
static bool assemble(ShareVmm *v, SageShareAlloc *a, Lookups *l) {
        ShareLookup lk = { lookup, l };
        void *buf = malloc(sage_share_key_chunk());
        bool done;

        CHECK(buf);
        done = share_assemble_allocation(v, a, &lk, buf);
        free(buf);
        return done;
}

/* The key a run [0, len) of `a` must have: its bytes as they are, gaps included. */
static SageHash key_of(SageShareAlloc *a, size_t len) {
        unsigned char *host = malloc(len);
        SageHash h;

        CHECK(host);
        for (size_t i = 0; i < len; i++)
                host[i] = *fake_at(a->va + i, NULL);
        CHECK(sage_share_content_key(host, len, &h) == 0);
        free(host);
        return h;
}

/* One upload across two granules, whole in neither: one run, a candidate. */
static void one_run_candidate(void) {
        const Range up[] = { { 100, 2 * G - 200 } };
        ShareVmm v;
        SageShareAlloc *a = setup(&v, up, 1);
        Lookups l = { 0 };

        CHECK(assemble(&v, a, &l));
        CHECK(l.calls == 1 && l.len[0] == 2 * G && sage_hash_equal(l.key[0], key_of(a, 2 * G)));
        CHECK(a->npieces == 2 && a->pieces[0].len == 2 * G && a->pieces[0].candidate);
        CHECK(sage_hash_equal(a->pieces[0].content, l.key[0]));
        CHECK(a->pieces[0].nfilled == 1 && a->pieces[0].filled[0].off == 100 && a->pieces[0].span_lo == 0);
        CHECK(fake_holds(a->va + 100, 2 * G - 200, 0x61)); /* the bytes moved with the new backing */
        CHECK(fake_stat(SAGE_STAT_SHARE_ASSEMBLED) == 1 && fake_stat(SAGE_STAT_SHARE_ASSEMBLED_HITS) == 0);
        teardown(&v, a);
}

/* The same run held by the lookup: mapped read-only, counted with the uploaded bytes it holds. */
static void one_run_hit(void) {
        const Range up[] = { { 100, 2 * G - 200 } };
        ShareVmm v;
        SageShareAlloc *a = setup(&v, up, 1);
        Lookups l = { .answer = 1 };
        CUmemAccess_flags access;

        fake.next_import = fake_handle(2 * G, 0x61);
        CHECK(assemble(&v, a, &l));
        CHECK(l.calls == 1);
        CHECK(a->pieces[0].extent_id == 5 && a->pieces[0].len == 2 * G && !a->pieces[0].candidate);
        CHECK(fake_at(a->va, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ);
        CHECK(fake_stat(SAGE_STAT_SHARE_ASSEMBLED_HITS) == 1);
        CHECK(fake_stat(SAGE_STAT_SHARE_BYTES_ASSEMBLED) == 2 * G - 200);
        teardown(&v, a);
}

/* Granules with room for other buffers (a gap of 512 bytes or more) are runs of their own. */
static void gappy_granules_alone(void) {
        const Range up[] = { { 0, 1000 }, { G - 1000, 2000 } };
        ShareVmm v;
        SageShareAlloc *a = setup(&v, up, 2);
        Lookups l = { 0 };

        CHECK(assemble(&v, a, &l));
        CHECK(l.calls == 2 && l.len[0] == G && l.len[1] == G);
        CHECK(a->npieces == 3 && a->pieces[0].candidate && a->pieces[1].candidate && !a->pieces[2].candidate);
        CHECK(a->pieces[1].nfilled == 1 && a->pieces[1].span_lo == G - 1000); /* the upload reaching in from before */
        teardown(&v, a);
}

/* A lookup that is gone: no run after the first is keyed. */
static void lookup_gone(void) {
        const Range up[] = { { 0, 1000 }, { G - 1000, 2000 } };
        ShareVmm v;
        SageShareAlloc *a = setup(&v, up, 2);
        Lookups l = { .answer = -EPIPE };

        CHECK(!assemble(&v, a, &l));
        CHECK(l.calls == 1 && a->npieces == 1 && !a->pieces[0].candidate);
        teardown(&v, a);
}

/*
 * An upload copied because its hit would have cost more (share_cost.h) is
 * not assembled: neither the granules it covers whole nor those it shares
 * with the next upload; a run apart from it still is.
 */
static void copied_uploads_skipped(void) {
        const Range up[] = { { 0, 2 * G + 100 }, { 2 * G + 100, 200 }, { 3 * G, 300 } };
        ShareVmm v;
        SageShareAlloc *a = setup(&v, up, 3);
        Lookups l = { 0 };

        share_assemble_skip(a, 0, 2 * G + 100);
        CHECK(assemble(&v, a, &l));
        CHECK(l.calls == 1 && l.len[0] == G); /* the fourth granule alone, not [0, 3G) */
        CHECK(a->pieces[0].off == 0 && !a->pieces[0].candidate && !a->pieces[0].extent_id);
        teardown(&v, a);
}

int main(void) {
        copied_uploads_skipped();
        one_run_candidate();
        one_run_hit();
        gappy_granules_alone();
        lookup_gone();
        fake_reset();
        return 0;
}
