/*
 * The launch guard of sharing (intercept/share_guard.c) against an
 * in-test driver: a candidate records the kernel-parameter uses it sees;
 * those go with it as notes; a mapped extent stays shared for a use in
 * its notes, turns private for any other use, and every shared piece turns
 * private when a kernel's parameters cannot be described; for a launch
 * captured into a graph, the same when settled (share_guard_settle).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../intercept/share_guard.h"
#include "check.h"
#include "fake_share_driver.h"

#define G FAKE_GRAN

static void release_extent(void *ctx, uint64_t id) {
}

static FakeKernel reader = { "reader", 2, { 8, 8 } };
static FakeKernel writer = { "writer", 2, { 8, 8 } };
static FakeKernel opaque = { "opaque", UINT32_MAX, { 0 } };

static void launch_when(ShareGuard *g, ShareVmm *v, FakeKernel *k, CUdeviceptr p0, CUdeviceptr p1,
                        ShareGuardWhen when) {
        void *params[2] = { &p0, &p1 };
        share_guard_scan(g, v, (CUfunction)k, params, NULL, when);
}

static void launch_as(ShareGuard *g, ShareVmm *v, FakeKernel *k, CUdeviceptr p0, CUdeviceptr p1, bool captured) {
        launch_when(g, v, k, p0, p1, captured ? SHARE_GUARD_CAPTURED : SHARE_GUARD_NOW);
}

static void launch(ShareGuard *g, ShareVmm *v, FakeKernel *k, CUdeviceptr p0, CUdeviceptr p1) {
        launch_as(g, v, k, p0, p1, false);
}

/* A piece of `a` mapping an extent (id), filled with `byte`, with `notes`. */
static void map_shared(ShareVmm *v, SageShareAlloc *a, size_t off, uint64_t id, const void *notes, uint32_t len) {
        Piece p = { .off = off, .len = G, .extent_id = id, .span_lo = off, .span_hi = off + G };

        share_notes_apply(&p, notes, len);
        fake.next_import = fake_handle(G, 0x5a);
        CHECK(share_vmm_map_extent(v, a, &p, open("/dev/null", O_RDONLY | O_CLOEXEC)));
}

static size_t piece_at(const SageShareAlloc *a, size_t off) {
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].off == off)
                        return i;
        abort();
}

int main(void) {
        ShareGuard *g = calloc(1, sizeof(*g));
        ShareVmm v;
        SageShareAlloc *a = NULL;
        Piece *c;
        void *notes;
        uint32_t len = 0;
        uint64_t unshared;

        CHECK(g);
        fake_reset();
        CHECK(share_guard_available(&fake_driver));
        share_vmm_init(&v, &fake_driver, release_extent, NULL);
        v.due_over = share_guard_due_over;
        CHECK(share_vmm_alloc(&v, 4 * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(&v, a);

        /* The uploading process: a candidate at [0, G) records "reader, parameter 1". */
        {
                Piece p = { .off = 0, .len = G, .candidate = true, .span_lo = 0, .span_hi = G };
                CHECK(share_vmm_create(&v, a, G, &p.handle) == CUDA_SUCCESS);
                CHECK(share_vmm_replace_range(&v, a, 0, G, &p) == CUDA_SUCCESS);
        }
        c = &a->pieces[piece_at(a, 0)];
        launch(g, &v, &reader, 0, a->va + 100);
        launch(g, &v, &reader, 0, a->va + 200); /* the same use again */
        CHECK(c->nseen == 1 && !c->seen_overflow);
        notes = share_notes_build(c, &len);
        CHECK(notes && len == 16);

        /* Notes that are not ours are ignored: no use is expected then. */
        {
                Piece p = { 0 };
                uint32_t bad[4];
                memcpy(bad, notes, sizeof(bad));
                bad[0] ^= 1;
                share_notes_apply(&p, bad, sizeof(bad));
                CHECK(!p.allow && !p.nallow);
                share_notes_apply(&p, notes, len - 8);
                CHECK(!p.allow);
        }

        /* A process mapping the extent at [2G, 3G) with those notes. */
        map_shared(&v, a, 2 * G, 41, notes, len);
        launch(g, &v, &reader, 0, a->va + 2 * G + 64); /* a use in the notes: stays shared */
        CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 41);
        launch(g, &v, &reader, a->va + 2 * G, 0); /* reader, but parameter 0: not in the notes */
        CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 0);
        CHECK(fake_holds(a->va + 2 * G, G, 0x5a)); /* private, same bytes */
        CHECK(fake_stat(SAGE_STAT_SHARE_GUARD_UNSHARED) == 1);

        /* Another kernel: not in the notes either. */
        map_shared(&v, a, 3 * G, 42, notes, len);
        launch(g, &v, &writer, 0, a->va + 3 * G);
        CHECK(a->pieces[piece_at(a, 3 * G)].extent_id == 0);
        CHECK(fake_stat(SAGE_STAT_SHARE_GUARD_UNSHARED) == 2);

        /* A piece with no notes is private at its first use. */
        map_shared(&v, a, 3 * G, 43, NULL, 0);
        launch(g, &v, &reader, 0, a->va + 3 * G);
        CHECK(a->pieces[piece_at(a, 3 * G)].extent_id == 0);

        /* A kernel whose parameters the driver cannot describe: every shared piece turns private. */
        map_shared(&v, a, 2 * G, 44, notes, len);
        map_shared(&v, a, 3 * G, 45, notes, len);
        launch(g, &v, &opaque, 0, 0);
        CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 0 && a->pieces[piece_at(a, 3 * G)].extent_id == 0);
        CHECK(fake_stat(SAGE_STAT_SHARE_GUARD_UNKNOWN) == 1);
        CHECK(a->pieces[piece_at(a, 0)].candidate); /* a candidate is its owner's memory: untouched */

        /*
         * A launch captured into a graph runs with its graph: an unexpected
         * use leaves the piece shared and due, with no synchronize (the
         * driver refuses one while a capture is open and breaks the capture);
         * settling makes it private, as an uncaptured launch would have.
         */
        map_shared(&v, a, 2 * G, 46, notes, len);
        map_shared(&v, a, 3 * G, 47, notes, len);
        unshared = fake_stat(SAGE_STAT_SHARE_GUARD_UNSHARED);
        {
                int syncs = fake.syncs, copies = fake.copies;
                launch_as(g, &v, &writer, 0, a->va + 3 * G, true);
                launch_as(g, &v, &reader, 0, a->va + 2 * G, true); /* in the notes: not due */
                CHECK(fake.syncs == syncs && fake.copies == copies);
        }
        CHECK(a->pieces[piece_at(a, 3 * G)].extent_id == 47 && a->pieces[piece_at(a, 3 * G)].private_due);
        CHECK(!a->pieces[piece_at(a, 2 * G)].private_due);
        CHECK(fake_stat(SAGE_STAT_SHARE_GUARD_UNSHARED) == unshared);
        share_guard_settle(&v);
        CHECK(a->pieces[piece_at(a, 3 * G)].extent_id == 0 && !a->pieces[piece_at(a, 3 * G)].private_due);
        CHECK(fake_holds(a->va + 3 * G, G, 0x5a));
        CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 46); /* not due: stays shared */
        CHECK(fake_stat(SAGE_STAT_SHARE_GUARD_UNSHARED) == unshared + 1);
        share_guard_settle(&v); /* nothing due: nothing done */
        CHECK(fake_stat(SAGE_STAT_SHARE_GUARD_UNSHARED) == unshared + 1);

        /* Making it private fails (the synchronize refused while a capture is open): due still, later done. */
        map_shared(&v, a, 3 * G, 49, notes, len);
        launch_as(g, &v, &writer, 0, a->va + 3 * G, true);
        fake.fail_copy_at = 1;
        share_guard_settle(&v);
        CHECK(a->pieces[piece_at(a, 3 * G)].extent_id == 49 && a->pieces[piece_at(a, 3 * G)].private_due);
        CHECK(atomic_load(&v.private_due) && fake_stat(SAGE_STAT_SHARE_GUARD_UNSHARED) == unshared + 1);
        share_guard_settle(&v);
        CHECK(a->pieces[piece_at(a, 3 * G)].extent_id == 0 && !atomic_load(&v.private_due));
        CHECK(fake_stat(SAGE_STAT_SHARE_GUARD_UNSHARED) == unshared + 2);

        /* A hit mapped over a due piece (the same weights uploaded again before the graph runs) is due too. */
        map_shared(&v, a, 3 * G, 50, notes, len);
        launch_as(g, &v, &writer, 0, a->va + 3 * G, true);
        map_shared(&v, a, 3 * G, 51, notes, len);
        CHECK(a->pieces[piece_at(a, 3 * G)].extent_id == 51 && a->pieces[piece_at(a, 3 * G)].private_due);
        share_guard_settle(&v);
        CHECK(a->pieces[piece_at(a, 3 * G)].extent_id == 0);

        /* Captured, the layout unknown: every shared piece due, made private when settled. */
        map_shared(&v, a, 3 * G, 48, notes, len);
        launch_as(g, &v, &opaque, 0, 0, true);
        CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 46 && a->pieces[piece_at(a, 2 * G)].private_due);
        CHECK(a->pieces[piece_at(a, 3 * G)].extent_id == 48 && a->pieces[piece_at(a, 3 * G)].private_due);
        share_guard_settle(&v);
        CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 0 && a->pieces[piece_at(a, 3 * G)].extent_id == 0);
        CHECK(fake_stat(SAGE_STAT_SHARE_GUARD_UNSHARED) == unshared + 5);

        /*
         * A graph outlives its capture and is not scanned when launched: a hit mapped later over what a
         * captured launch uses in a way the hit's notes do not allow is due at once; a use they allow is not.
         */
        CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 0);
        launch_as(g, &v, &writer, 0, a->va + 2 * G + 8, true); /* over private memory: nothing due now */
        launch_as(g, &v, &reader, 0, a->va + G + 8, true);
        CHECK(!atomic_load(&v.private_due));
        map_shared(&v, a, 2 * G, 52, notes, len);
        map_shared(&v, a, G, 53, notes, len);
        CHECK(a->pieces[piece_at(a, 2 * G)].private_due && !a->pieces[piece_at(a, G)].private_due);
        share_guard_settle(&v);
        CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 0 && a->pieces[piece_at(a, G)].extent_id == 53);

        /* Another stream captures: an uncaptured launch's unexpected use is due too, its use not kept. */
        {
                size_t kept = a->ngraph_uses;
                int syncs = fake.syncs;
                map_shared(&v, a, 2 * G, 54, notes, len);
                launch_when(g, &v, &writer, 0, a->va + 2 * G + 16, SHARE_GUARD_DEFER);
                CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 54 && a->pieces[piece_at(a, 2 * G)].private_due);
                CHECK(a->ngraph_uses == kept && fake.syncs == syncs);
                share_guard_settle(&v);
                CHECK(a->pieces[piece_at(a, 2 * G)].extent_id == 0);
        }

        free(notes);
        CHECK(share_vmm_unlink(&v, a->va) == a);
        share_vmm_release(&v, a);
        CHECK(fake.live_handles == 0 && fake.bad_unmaps == 0 && fake.bad_writes == 0);
        share_guard_clear(g);
        free(g);
        fake_reset();
        return 0;
}
