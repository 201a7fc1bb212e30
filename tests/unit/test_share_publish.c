/*
 * The publisher of sharing (intercept/share_publish.c) against an in-test
 * driver and publisher: a candidate still holding what was uploaded is
 * published with the uses the guard saw as notes; one whose bytes changed
 * is dropped (and says why); a publisher that is gone stops the rest.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../../intercept/share_key.h"
#include "../../intercept/share_publish.h"
#include "check.h"
#include "fake_share_driver.h"

#define G FAKE_GRAN

typedef struct Published {
        int calls, answer;
        size_t off[4];
        uint32_t notes_len[4];
} Published;

static int publish(void *ctx, const SageShareAlloc *a, const Piece *p, int fd, const void *notes, uint32_t notes_len) {
        Published *pub = ctx;

        CHECK(fd >= 0 && pub->calls < 4);
        pub->off[pub->calls] = p->off;
        pub->notes_len[pub->calls] = notes_len;
        pub->calls++;
        return pub->answer;
}

static void release_extent(void *ctx, uint64_t id) {
}

/* The content key of `len` bytes of `byte`, as an upload would have computed it. */
static SageHash key_of(size_t len, unsigned char byte) {
        unsigned char *buf = malloc(len);
        SageHash h;

        CHECK(buf);
        memset(buf, byte, len);
        CHECK(sage_share_content_key(buf, len, &h) == 0);
        free(buf);
        return h;
}

/* `a` with candidates at [0, G) and [2G, 3G), uploaded as 0x21 and 0x22. */
static SageShareAlloc *setup(ShareVmm *v) {
        SageShareAlloc *a = NULL;
        size_t offs[2] = { 0, 2 * G };

        fake_reset();
        share_vmm_init(v, &fake_driver, release_extent, NULL);
        CHECK(share_vmm_alloc(v, 4 * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(v, a);
        for (size_t k = 0; k < 2; k++) {
                Piece p = { .off = offs[k], .len = G, .candidate = true };
                p.key = p.content = key_of(G, (unsigned char)(0x21 + k));
                CHECK(share_vmm_create(v, a, G, &p.handle) == CUDA_SUCCESS);
                CHECK(share_vmm_replace_range(v, a, offs[k], offs[k] + G, &p) == CUDA_SUCCESS);
                fake_fill(a->va + offs[k], G, (unsigned char)(0x21 + k));
        }
        CHECK(a->npieces == 4);
        return a;
}

static void teardown(ShareVmm *v, SageShareAlloc *a) {
        for (size_t i = 0; i < a->npieces; i++)
                CHECK(!a->pieces[i].candidate); /* every candidate was decided */
        CHECK(share_vmm_unlink(v, a->va) == a);
        share_vmm_release(v, a);
        CHECK(fake.live_handles == 0);
}

static void verdicts(void) {
        Piece p = { .candidate = true, .content = key_of(64, 1) };
        SageHash same = key_of(64, 1), other = key_of(64, 2);

        CHECK(share_publish_verdict(&p, &same) == NULL);
        CHECK(strstr(share_publish_verdict(&p, &other), "changed"));
        CHECK(strstr(share_publish_verdict(&p, NULL), "read back"));
        p.candidate = false;
        CHECK(share_publish_verdict(&p, &same) != NULL);
}

static void unchanged_published(void) {
        ShareVmm v;
        SageShareAlloc *a = setup(&v);
        Published pub = { 0 };
        SharePublisher publisher = { publish, &pub };
        uint64_t use = 12345;

        a->pieces[0].seen = malloc(sizeof(use)); /* one use the guard saw */
        CHECK(a->pieces[0].seen);
        a->pieces[0].seen[0] = use;
        a->pieces[0].nseen = 1;
        share_publish_candidates(&v, a, &publisher);
        CHECK(pub.calls == 2 && pub.off[0] == 0 && pub.off[1] == 2 * G);
        CHECK(pub.notes_len[0] == 16 && pub.notes_len[1] == 8);
        CHECK(fake_stat(SAGE_STAT_SHARE_PUBLISHED) == 2);
        CHECK(fake_stat(SAGE_STAT_SHARE_DROPPED) == 0);
        teardown(&v, a);
}

static void changed_dropped(void) {
        ShareVmm v;
        SageShareAlloc *a = setup(&v);
        Published pub = { 0 };
        SharePublisher publisher = { publish, &pub };

        fake_fill(a->va + 2 * G + 5, 1, 0); /* a kernel wrote one byte after the upload */
        share_publish_candidates(&v, a, &publisher);
        CHECK(pub.calls == 1 && pub.off[0] == 0);
        CHECK(fake_stat(SAGE_STAT_SHARE_DROPPED) == 1);
        CHECK(fake_stat(SAGE_STAT_SHARE_BYTES_DROPPED) == G);
        teardown(&v, a);
}

static void publisher_gone(void) {
        ShareVmm v;
        SageShareAlloc *a = setup(&v);
        Published pub = { .answer = -EPIPE };
        SharePublisher publisher = { publish, &pub };

        share_publish_candidates(&v, a, &publisher);
        CHECK(pub.calls == 1);
        CHECK(fake_stat(SAGE_STAT_SHARE_PUBLISHED) == 0);
        a->pieces[2].candidate = false; /* never tried: the process is going without a broker */
        teardown(&v, a);
}

int main(void) {
        verdicts();
        unchanged_published();
        changed_dropped();
        publisher_gone();
        fake_reset();
        return 0;
}
