/*
 * The cost of a hit (issue 14), counted in driver calls against the in-test
 * driver: a framework fills a fresh pool segment tensor after tensor, each
 * tensor's whole granules a broker hit. Each hit imports and maps its
 * extent, splits the unwritten rest without a synchronize (nothing in
 * flight uses it) and grants the rest's two pieces access in one call; a
 * hit over pieces an upload wrote, or in an allocation something else
 * wrote, still waits for the work in flight.
 */
#include <fcntl.h>
#include <unistd.h>

#include "check.h"
#include "fake_share_driver.h"

#define G FAKE_GRAN
#define HIT_CALLS_MAX 10 /* import, 2 creates, unmap + release of the old rest, 3 maps, 2 access calls */

static void release_extent(void *ctx, uint64_t id) {
}

static int calls(void) {
        return fake.creates + fake.releases + fake.maps + fake.unmaps + fake.accesses + fake.syncs;
}

/*
 * An upload of n bytes at offset o of `a` whose whole granules the broker
 * holds (share_upload.c's hit path), then the app's copy of its two ends.
 * Returns the driver calls it took (the import counted as one).
 */
static int upload_hit(ShareVmm *v, SageShareAlloc *a, size_t o, size_t n, uint64_t id) {
        size_t lo = (o + G - 1) / G * G, hi = (o + n) / G * G;
        Piece p = { .off = lo, .len = hi - lo, .extent_id = id, .span_lo = o, .span_hi = o + n };
        int before = calls();
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

        CHECK(fd >= 0 && hi > lo);
        share_vmm_sync_for_replace(v, a, lo, hi);
        fake.next_import = fake_handle(hi - lo, (unsigned char)id);
        CHECK(share_vmm_map_extent(v, a, &p, fd));
        fake_fill(a->va + o, lo - o, 0x11);
        share_vmm_note_written(v, a, o, lo - o);
        fake_fill(a->va + hi, o + n - hi, 0x11);
        share_vmm_note_written(v, a, hi, o + n - hi);
        return calls() - before + 1;
}

/* PyTorch's large pool: a 20 MiB segment filled by 4 tensors of 4.5 MiB at 512-byte rounded offsets. */
static void sequential_hits_are_cheap(void) {
        ShareVmm v;
        SageShareAlloc *a = NULL;
        size_t o = 0, n = 9 * G / 4 + 200;
        CUmemAccess_flags access;

        fake_reset();
        share_vmm_init(&v, &fake_driver, release_extent, NULL);
        CHECK(share_vmm_alloc(&v, 10 * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(&v, a);
        for (uint64_t id = 1; id <= 4; id++) {
                int c = upload_hit(&v, a, o, n, id);
                fprintf(stderr, "hit %d: %d driver calls\n", (int)id, c);
                CHECK(c <= HIT_CALLS_MAX);
                o = (o + n + 511) / 512 * 512;
        }
        CHECK(fake.syncs == 0 && fake_stat(SAGE_STAT_SHARE_SYNCS_SKIPPED) == 4);
        CHECK(fake_stat(SAGE_STAT_SHARE_KEEP_COPIES) == 0 && fake.copies == 0);
        /* Every extent read-only with its bytes, every end the app copied in place. */
        for (size_t i = 0; i < a->npieces; i++) {
                const Piece *p = &a->pieces[i];
                CHECK(fake_at(a->va + p->off, &access));
                CHECK(access == (p->extent_id ? CU_MEM_ACCESS_FLAGS_PROT_READ : CU_MEM_ACCESS_FLAGS_PROT_READWRITE));
                if (p->extent_id)
                        CHECK(fake_holds(a->va + p->off, p->len, (unsigned char)p->extent_id));
        }
        for (size_t i = 0; i < a->nwritten; i++)
                CHECK(fake_holds(a->va + a->written[i].off, a->written[i].len, 0x11));
        CHECK(share_vmm_unlink(&v, a->va) == a);
        share_vmm_release(&v, a);
        CHECK(fake.live_handles == 0 && fake_live_maps() == 0 && fake.bad_unmaps == 0 && fake.bad_writes == 0);
}

/* Pieces an upload wrote (its copy may still be in flight), or anything else since: wait first. */
static void written_pieces_wait(void) {
        ShareVmm v;
        SageShareAlloc *a = NULL;

        fake_reset();
        share_vmm_init(&v, &fake_driver, release_extent, NULL);
        CHECK(share_vmm_alloc(&v, 4 * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(&v, a);
        CHECK(!share_vmm_replace_needs_sync(&v, a, G, 3 * G));
        share_vmm_note_written(&v, a, 3 * G + 10, 100); /* in the same (only) piece, outside the range */
        CHECK(share_vmm_replace_needs_sync(&v, a, G, 3 * G));
        share_vmm_sync_for_replace(&v, a, G, 3 * G);
        CHECK(fake.syncs == 1 && fake_stat(SAGE_STAT_SHARE_SYNCS_SKIPPED) == 0);
        CHECK(share_vmm_unlink(&v, a->va) == a);
        share_vmm_release(&v, a);

        CHECK(share_vmm_alloc(&v, 4 * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(&v, a);
        share_vmm_note_write(&v); /* a launch: anything may be in flight */
        CHECK(share_vmm_replace_needs_sync(&v, a, G, 3 * G));
        CHECK(share_vmm_unlink(&v, a->va) == a);
        share_vmm_release(&v, a);
        CHECK(fake.live_handles == 0);
}

int main(void) {
        sequential_hits_are_cheap();
        written_pieces_wait();
        fake_reset();
        return 0;
}
