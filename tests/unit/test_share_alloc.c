/*
 * Sharing's VMM allocator (intercept/share_alloc.c) against an in-test
 * driver: pieces split (content kept where it must be, nothing copied for a
 * fresh allocation's unwritten rest), backed by a broker extent read-only,
 * re-backed privately with the same bytes, and a failure that changes
 * nothing.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fake_share_driver.h"

#define G FAKE_GRAN

static uint64_t released[8];
static size_t nreleased;

static void release_extent(void *ctx, uint64_t id) {
        CHECK(ctx == &released);
        CHECK(nreleased < 8);
        released[nreleased++] = id;
}

/* The allocator under test: one test at a time, setup() starts it afresh. */
static ShareVmm v;

static SageShareAlloc *setup(size_t size) {
        SageShareAlloc *a = NULL;

        fake_reset();
        nreleased = 0;
        share_vmm_init(&v, &fake_driver, release_extent, &released);
        CHECK(share_vmm_alloc(&v, size, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(&v, a);
        CHECK(a && a->npieces == 1 && a->pieces[0].off == 0 && a->pieces[0].len == a->padded);
        CHECK(share_vmm_find(&v, a->va + size - 1, 1) == a && !share_vmm_find(&v, a->va + size, 1));
        return a;
}

static void teardown(SageShareAlloc *a) {
        CHECK(share_vmm_unlink(&v, a->va) == a);
        share_vmm_release(&v, a);
        CHECK(fake.live_handles == 0 && fake_live_maps() == 0 && fake_live_reservations() == 0);
        CHECK(fake.bad_unmaps == 0 && fake.bad_writes == 0);
}

static Piece new_piece(SageShareAlloc *a, size_t off, size_t len) {
        Piece p = { .off = off, .len = len, .candidate = true, .span_lo = off, .span_hi = off + len };
        CHECK(share_vmm_create(&v, a, len, &p.handle) == CUDA_SUCCESS);
        return p;
}

/* A split through memory something else wrote: what remains keeps its bytes. */
static void split_keeps_content(void) {
        SageShareAlloc *a = setup(5 * G - 100);
        Piece p;
        CUmemAccess_flags access;

        CHECK(a->padded == 5 * G);
        fake_fill(a->va, a->padded, 0xAA);
        share_vmm_note_write(&v); /* a launch: not fresh */
        CHECK(!share_vmm_fresh(&v, a));
        p = new_piece(a, G, 2 * G);
        CHECK(share_vmm_replace_range(&v, a, G, 3 * G, &p) == CUDA_SUCCESS);
        CHECK(a->npieces == 3);
        CHECK(a->pieces[0].off == 0 && a->pieces[0].len == G);
        CHECK(a->pieces[1].off == G && a->pieces[1].len == 2 * G && a->pieces[1].candidate);
        CHECK(a->pieces[2].off == 3 * G && a->pieces[2].len == 2 * G);
        CHECK(fake_holds(a->va, G, 0xAA) && fake_holds(a->va + 3 * G, 2 * G, 0xAA));
        CHECK(fake_holds(a->va + G, 2 * G, 0)); /* the new piece: the caller's copy fills it */
        CHECK(fake_at(a->va + G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        CHECK(fake_stat(SAGE_STAT_SHARE_KEEP_COPIES) == 2);
        CHECK(fake.live_handles == 3);
        teardown(a);
}

/*
 * A fresh allocation (only tracked uploads wrote it): a rest an upload wrote
 * keeps its bytes, one no upload wrote is not copied, and a rest after an
 * upload that goes on past the piece is backed as two pieces, its first
 * granule apart (where the next upload of a pool will start).
 */
static void fresh_split_copies_nothing(void) {
        SageShareAlloc *a = setup(5 * G);
        Piece p;

        fake_fill(a->va, 100, 0x42);
        share_vmm_note_written(&v, a, 0, 100); /* an earlier upload */
        CHECK(share_vmm_fresh(&v, a) && a->nwritten == 1);
        p = new_piece(a, G, 2 * G);
        p.span_lo = G - 10;
        p.span_hi = 3 * G + 100;
        CHECK(share_vmm_replace_range(&v, a, G, 3 * G, &p) == CUDA_SUCCESS);
        CHECK(a->npieces == 4);
        CHECK(a->pieces[0].off == 0 && a->pieces[0].len == G);
        CHECK(a->pieces[2].off == 3 * G && a->pieces[2].len == G);
        CHECK(a->pieces[3].off == 4 * G && a->pieces[3].len == G);
        CHECK(fake_holds(a->va, 100, 0x42));
        CHECK(fake_stat(SAGE_STAT_SHARE_KEEP_COPIES) == 1);
        CHECK(fake.copies == 1);
        teardown(a);
}

/* A broker extent mapped read-only, then re-backed privately with the same bytes. */
static void extent_then_private(void) {
        SageShareAlloc *a = setup(4 * G);
        Piece p = { .off = 2 * G, .len = 2 * G, .extent_id = 7 };
        CUmemAccess_flags access;
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

        share_vmm_note_write(&v);
        fake_fill(a->va, 2 * G, 0x11);
        fake.next_import = fake_handle(2 * G, 0x55);
        CHECK(fd >= 0);
        CHECK(share_vmm_map_extent(&v, a, &p, fd));
        CHECK(a->npieces == 2 && a->pieces[1].extent_id == 7);
        CHECK(fake_at(a->va + 2 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ);
        CHECK(fake_holds(a->va + 2 * G, 2 * G, 0x55) && fake_holds(a->va, 2 * G, 0x11));
        CHECK(nreleased == 0);

        /* An API write over its last byte: private first, same bytes, the reference given back. */
        share_vmm_before_write(&v, a, 4 * G - 1, 1);
        CHECK(a->pieces[1].extent_id == 0 && !a->pieces[1].candidate);
        CHECK(fake_at(a->va + 2 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        CHECK(fake_holds(a->va + 2 * G, 2 * G, 0x55));
        CHECK(nreleased == 1 && released[0] == 7);
        CHECK(fake_stat(SAGE_STAT_SHARE_UNSHARED) == 1);
        CHECK(fake.syncs > 0); /* the work in flight first */
        teardown(a);
}

/* An extent the driver cannot import: nothing changes, the reference goes back. */
static void extent_import_fails(void) {
        SageShareAlloc *a = setup(2 * G);
        Piece p = { .off = 0, .len = 2 * G, .extent_id = 9 };

        CHECK(!share_vmm_map_extent(&v, a, &p, open("/dev/null", O_RDONLY | O_CLOEXEC)));
        CHECK(a->npieces == 1 && a->pieces[0].extent_id == 0);
        CHECK(nreleased == 1 && released[0] == 9);
        CHECK(fake_stat(SAGE_STAT_SHARE_FALLBACKS) == 1);
        teardown(a);
}

/* Out of memory for a rest's backing: the pieces, mappings and bytes are as before. */
static void failure_changes_nothing(void) {
        SageShareAlloc *a = setup(4 * G);
        Piece p;
        int live;

        share_vmm_note_write(&v);
        fake_fill(a->va, 4 * G, 0x33);
        p = new_piece(a, G, G);
        live = fake.live_handles;
        fake.fail_create_at = 2; /* the left rest gets its copy, the right one fails */
        CHECK(share_vmm_replace_range(&v, a, G, 2 * G, &p) == CUDA_ERROR_OUT_OF_MEMORY);
        CHECK(a->npieces == 1 && a->pieces[0].len == 4 * G);
        CHECK(fake_holds(a->va, 4 * G, 0x33));
        CHECK(fake.live_handles == live);
        CHECK(fake_driver.vmm.release(p.handle) == CUDA_SUCCESS);
        teardown(a);
}

/* CUDA IPC: one private backing for good, every piece's bytes in it. */
static void consolidate(void) {
        SageShareAlloc *a = setup(4 * G);
        Piece p = { .off = 0, .len = 2 * G, .extent_id = 3 };

        share_vmm_note_write(&v);
        fake_fill(a->va + 2 * G, 2 * G, 0x77);
        fake.next_import = fake_handle(2 * G, 0x66);
        CHECK(share_vmm_map_extent(&v, a, &p, open("/dev/null", O_RDONLY | O_CLOEXEC)));
        CHECK(a->npieces == 2);
        CHECK(share_vmm_consolidate(&v, a));
        CHECK(a->npieces == 1 && a->no_share && a->pieces[0].len == 4 * G);
        CHECK(fake_holds(a->va, 2 * G, 0x66) && fake_holds(a->va + 2 * G, 2 * G, 0x77));
        CHECK(nreleased == 1 && released[0] == 3);
        teardown(a);
}

/* unpark's broker: each key's extent (a handle of byte key.low), or a miss for key 0xdead. The fake driver
 * imports whatever fake.next_import says, so each hit's handle is made here and handed out in order. */
static uint64_t lookups, looked_up; /* calls (broker exchanges), keys asked */
static CUmemGenericAllocationHandle answers[8];
static size_t nanswers, next_answer;
static CUresult import_next(CUmemGenericAllocationHandle *h, void *fd, CUmemAllocationHandleType type) {
        CHECK(next_answer < nanswers);
        *h = answers[next_answer++];
        return CUDA_SUCCESS;
}
static void lookup_keys(void *ctx, ShareParkedLookup *ls, size_t n) {
        CHECK(ctx == &lookups);
        lookups++;
        for (size_t i = 0; i < n; i++, looked_up++) {
                CHECK(ls[i].device == 0 && ls[i].fd == -1 && ls[i].extent_id == 0);
                if (ls[i].key.low == 0xdead)
                        continue;
                CHECK(nanswers < 8);
                answers[nanswers++] = fake_handle(ls[i].len, (unsigned char)ls[i].key.low);
                ls[i].extent_id = 100 + ls[i].key.low;
                ls[i].fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
}
static SageShareDriver unpark_driver;
static const SageShareDriver *with_import_next(void) {
        unpark_driver = fake_driver;
        unpark_driver.import_fd = import_next;
        return &unpark_driver;
}

/* Suspend: extents unmapped and released (reservation and private bytes kept), then mapped again
 * at the same addresses, read-only, one access call for adjacent ones. */
static void park_unpark(void) {
        SageShareAlloc *a = setup(6 * G);
        Piece p1 = { .off = 0, .len = 2 * G, .extent_id = 7, .key = { .low = 0x55 } };
        Piece p2 = { .off = 2 * G, .len = 2 * G, .extent_id = 8, .key = { .low = 0x66 } };
        CUmemAccess_flags access;
        int maps, accesses;

        share_vmm_note_write(&v);
        fake_fill(a->va + 4 * G, 2 * G, 0x11);
        fake.next_import = fake_handle(2 * G, 0x55);
        CHECK(share_vmm_map_extent(&v, a, &p1, open("/dev/null", O_RDONLY | O_CLOEXEC)));
        fake.next_import = fake_handle(2 * G, 0x66);
        CHECK(share_vmm_map_extent(&v, a, &p2, open("/dev/null", O_RDONLY | O_CLOEXEC)));
        CHECK(a->npieces == 3);

        CHECK(share_vmm_park(&v) == 2);
        CHECK(nreleased == 2 && !fake_at(a->va, NULL) && !fake_at(a->va + 2 * G, NULL));
        CHECK(a->pieces[0].parked && a->pieces[1].parked && !a->pieces[0].extent_id && !a->pieces[0].handle);
        CHECK(fake_holds(a->va + 4 * G, 2 * G, 0x11) && fake_live_reservations() == 1);
        CHECK(share_vmm_park(&v) == 2); /* nothing more to do, both still parked */
        CHECK(nreleased == 2);

        maps = fake.maps;
        accesses = fake.accesses;
        v.drv = with_import_next();
        lookups = looked_up = nanswers = next_answer = 0;
        CHECK(share_vmm_unpark(&v, lookup_keys, &lookups) == 0);
        CHECK(lookups == 1 && looked_up == 2 && fake.maps == maps + 2 && fake.accesses == accesses + 1);
        CHECK(fake_holds(a->va, 2 * G, 0x55) && fake_holds(a->va + 2 * G, 2 * G, 0x66));
        CHECK(fake_at(a->va, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ);
        CHECK(fake_at(a->va + 2 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ);
        CHECK(fake_at(a->va + 4 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        CHECK(a->pieces[0].extent_id == 100 + 0x55 && !a->pieces[0].parked);

        /* A key the broker lost: that piece stays parked and unpark says so. */
        CHECK(share_vmm_park(&v) == 2);
        a->pieces[1].key.low = 0xdead;
        nanswers = next_answer = 0;
        CHECK(share_vmm_unpark(&v, lookup_keys, &lookups) == 1);
        CHECK(!a->pieces[0].parked && a->pieces[1].parked && fake_holds(a->va, 2 * G, 0x55));
        v.drv = &fake_driver;
        teardown(a); /* a parked piece holds nothing to give back */
}

/*
 * A resume's cost beyond the restore (docs/suspend.md, "What a resume
 * costs"): for every parked extent one import and one map, one access call
 * per run of adjacent extents, and one broker exchange for all of them,
 * whichever allocation they lie in (not one round trip per extent).
 */
static void unpark_asks_once(void) {
        SageShareAlloc *a = setup(6 * G), *b = NULL;
        Piece pa1 = { .off = 0, .len = 2 * G, .extent_id = 7, .key = { .low = 0x55 } };
        Piece pa2 = { .off = 2 * G, .len = 2 * G, .extent_id = 8, .key = { .low = 0x66 } };
        Piece pb = { .off = 2 * G, .len = 2 * G, .extent_id = 9, .key = { .low = 0x77 } };
        int maps, accesses, live, copies, syncs;

        CHECK(share_vmm_alloc(&v, 4 * G, G, 0, 0, NULL, &b) == CUDA_SUCCESS);
        share_vmm_link(&v, b);
        share_vmm_note_write(&v);
        fake_fill(a->va + 4 * G, 2 * G, 0x11);
        fake_fill(b->va, 2 * G, 0x22);
        fake.next_import = fake_handle(2 * G, 0x55);
        CHECK(share_vmm_map_extent(&v, a, &pa1, open("/dev/null", O_RDONLY | O_CLOEXEC)));
        fake.next_import = fake_handle(2 * G, 0x66);
        CHECK(share_vmm_map_extent(&v, a, &pa2, open("/dev/null", O_RDONLY | O_CLOEXEC)));
        fake.next_import = fake_handle(2 * G, 0x77);
        CHECK(share_vmm_map_extent(&v, b, &pb, open("/dev/null", O_RDONLY | O_CLOEXEC)));
        CHECK(share_vmm_park(&v) == 3);

        maps = fake.maps;
        accesses = fake.accesses;
        live = fake.live_handles;
        copies = fake.copies;
        syncs = fake.syncs;
        v.drv = with_import_next();
        lookups = looked_up = nanswers = next_answer = 0;
        CHECK(share_vmm_unpark(&v, lookup_keys, &lookups) == 0);
        CHECK(lookups == 1 && looked_up == 3);                         /* one exchange with the broker */
        CHECK(next_answer == 3 && fake.live_handles == live + 3);      /* an import each */
        CHECK(fake.maps == maps + 3 && fake.accesses == accesses + 2); /* a map each, an access per run */
        CHECK(fake.copies == copies && fake.syncs == syncs);           /* nothing else on the way */
        CHECK(fake_holds(a->va, 2 * G, 0x55) && fake_holds(a->va + 2 * G, 2 * G, 0x66));
        CHECK(fake_holds(a->va + 4 * G, 2 * G, 0x11));
        CHECK(fake_holds(b->va, 2 * G, 0x22) && fake_holds(b->va + 2 * G, 2 * G, 0x77));
        CHECK(a->pieces[1].extent_id == 100 + 0x66 && b->pieces[1].extent_id == 100 + 0x77);
        v.drv = &fake_driver;
        CHECK(share_vmm_unlink(&v, b->va) == b);
        share_vmm_release(&v, b);
        teardown(a);
}

int main(void) {
        split_keeps_content();
        fresh_split_copies_nothing();
        extent_then_private();
        extent_import_fails();
        failure_changes_nothing();
        consolidate();
        park_unpark();
        unpark_asks_once();
        fake_reset();
        return 0;
}
