/*
 * Predicted remap (intercept/share_hint.c): hints learned from an
 * allocation's pieces, saved and found again by the same program; a hint
 * file that lies (garbage, huge counts, offsets past the allocation,
 * overlapping or unaligned pieces) predicting nothing it should not; and
 * unconfirmed pieces in the in-test driver: mapped read-only at
 * allocation, confirmed by their upload with no driver call, made private
 * without a copy before anything else writes, given back on failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../intercept/share_hint.h"
#include "../../intercept/share_place.h"
#include "check.h"
#include "fake_share_driver.h"

#define G FAKE_GRAN

static int released;

static void release_extent(void *ctx, uint64_t id) {
        released++;
}

static SageHash key_of(uint64_t n) {
        return (SageHash){ n * 0x9e3779b97f4a7c15ull, n };
}

/* An allocation of `size` bytes with pieces at (off, len) of granules: filled by one upload each. */
static SageShareAlloc *fake_alloc(size_t size, uint32_t ordinal, const size_t *offs, size_t n) {
        SageShareAlloc *a = calloc(1, sizeof(*a));
        CHECK(a && (a->pieces = calloc(n, sizeof(*a->pieces))));
        a->size = a->padded = size;
        a->ordinal = ordinal;
        for (size_t i = 0; i < n; i++)
                a->pieces[i] = (Piece){ .off = offs[2 * i] * G,
                                        .len = offs[2 * i + 1] * G,
                                        .extent_id = i % 2 ? 7 : 0,
                                        .candidate = i % 2 == 0,
                                        .key = key_of(i + 1),
                                        .span_hi = (offs[2 * i] + offs[2 * i + 1]) * G };
        a->npieces = n;
        return a;
}

static void free_fake(SageShareAlloc *a) {
        free(a->pieces);
        free(a);
}

static void learn_save_find(const char *dir) {
        ShareHints h = { 0 };
        const size_t offs[] = { 0, 3, 3, 1, 5, 4 };
        SageShareAlloc *a = fake_alloc(10 * G, 1, offs, 3), *b;
        Piece out[8];
        size_t n;

        share_hints_open(&h, dir);
        CHECK(h.path && h.n == 0 && strstr(h.path, "/predict-"));
        a->pieces[1].nfilled = 1; /* assembled: keyed at a launch, a run (its uploads kept on the host) */
        a->pieces[1].span_hi = 0;
        share_hints_learn(&h, a);
        CHECK(h.n == 3 && h.dirty && share_hints_save(&h) == 0 && !h.dirty);
        share_hints_close(&h);

        share_hints_open(&h, dir);
        CHECK(h.n == 3);
        n = share_hints_for(&h, 10 * G, 1, G, 10 * G, out, 8);
        CHECK(n == 3 && out[0].off == 0 && out[0].len == 3 * G && sage_hash_equal(out[0].key, key_of(1)));
        CHECK(out[1].off == 3 * G && out[1].len == G && sage_hash_equal(out[1].key, key_of(2)) && out[1].run_hint);
        CHECK(out[2].off == 5 * G && out[2].len == 4 * G && sage_hash_equal(out[2].key, key_of(3)));
        CHECK(!out[0].run_hint && !out[2].run_hint);
        CHECK(share_hints_for(&h, 10 * G, 0, G, 10 * G, out, 8) == 0); /* another ordinal */
        CHECK(share_hints_for(&h, 10 * G, 1, G, 8 * G, out, 8) == 2);  /* a smaller allocation: what fits */
        CHECK(share_hints_for(&h, 10 * G, 1, G, 10 * G, out, 1) == 1); /* the caller's room */
        /* The same pieces again: nothing to write; the same but no longer a run: written. */
        share_hints_learn(&h, a);
        CHECK(!h.dirty);
        a->pieces[1].nfilled = 0;
        a->pieces[1].span_hi = 4 * G;
        share_hints_learn(&h, a);
        CHECK(h.dirty && share_hints_for(&h, 10 * G, 1, G, 10 * G, out, 8) == 3 && !out[1].run_hint);
        a->pieces[1].candidate = false; /* dropped: not learned */
        a->pieces[1].extent_id = 0;
        share_hints_learn(&h, a);
        CHECK(h.n == 2);
        /* Another allocation's join them. */
        b = fake_alloc(4 * G, 0, offs, 1);
        share_hints_learn(&h, b);
        CHECK(h.dirty && h.n == 3);
        /* What an allocation holds replaces what it held: now one piece, then none. */
        a->npieces = 1;
        share_hints_learn(&h, a);
        CHECK(h.n == 2 && share_hints_for(&h, 10 * G, 1, G, 10 * G, out, 8) == 1);
        a->pieces[0].candidate = false; /* dropped: nothing to predict */
        share_hints_learn(&h, a);
        CHECK(h.n == 1 && share_hints_for(&h, 4 * G, 0, G, 4 * G, out, 8) == 1);
        CHECK(share_hints_save(&h) == 0);
        share_hints_close(&h);
        free_fake(a);
        free_fake(b);
        share_hints_open(&h, NULL); /* off */
        CHECK(!h.path && share_hints_for(&h, 4 * G, 0, G, 4 * G, out, 8) == 0);
}

static void lying_file(const char *dir) {
        ShareHints h = { 0 };
        char key[33], *path = share_place_file(dir, "predict");
        Piece out[8];
        FILE *f;

        sage_hash_format(key_of(9), key);
        CHECK(path && (f = fopen(path, "w")));
        fprintf(f, "garbage\n%s\n", key);
        fprintf(f, "20971520 0 0 2097152 %s trailing\n", key); /* something after the key */
        fprintf(f, "20971520 0 0 2097152 %s runs\n20971520 0 0 2097152 %s run x\n", key, key); /* after "run" */
        fprintf(f, "20971520 0 0 0 %s run\n", key);                      /* a never-again mark is no run */
        fprintf(f, "20971520 0 0 2097152 %.31s\n", key);                 /* a short key */
        fprintf(f, "20971520 0 1048576 2097152 %s\n", key);              /* not on a granule */
        fprintf(f, "20971520 0 2097152 3000000 %s\n", key);              /* not granules long */
        fprintf(f, "20971520 0 18446744073709551615 2097152 %s\n", key); /* past every allocation */
        fprintf(f, "20971520 0 20971520 2097152 %s\n", key);             /* past this one */
        fprintf(f, "20971520 0 4194304 4194304 %s\n20971520 0 6291456 2097152 %s\n", key, key); /* overlapping */
        fprintf(f, "20971520 0 2097152 0 %s\n0 0 0 2097152 %s\n", key, key);                    /* empty; no size */
        fprintf(f, "20971520 4294967296 0 2097152 %s\n", key); /* an ordinal past 32 bits */
        fprintf(f, "20971520 0 10485760 2097152 %s", key);     /* valid, no newline at the end */
        for (int i = 0; i < 300; i++)                          /* a line far too long */
                fputs("1234567890", f);
        fputs("\n20971520 0 14680064 2097152 ", f);
        fputs(key, f);
        fputc('\n', f);
        CHECK(fclose(f) == 0);
        share_hints_open(&h, dir);
        CHECK(share_hints_for(&h, 10 * G, 0, G, 5 * G, out, 8) == 1 && out[0].off == 2 * G);
        CHECK(share_hints_for(&h, 10 * G, 0, G, 10 * G, out, 8) == 2 && out[0].off == 2 * G &&
              out[1].off == 7 * G); /* the line glued to the long one is lost with it */
        share_hints_close(&h);

        /* Huge counts: no more than SHARE_HINT_MAX read, no more than the caller's room handed out. */
        CHECK((f = fopen(path, "w")));
        for (unsigned i = 0; i < SHARE_HINT_MAX + 100; i++)
                fprintf(f, "4194304 0 %llu 2097152 %s\n", (unsigned long long)i * G, key);
        CHECK(fclose(f) == 0);
        share_hints_open(&h, dir);
        CHECK(h.n == SHARE_HINT_MAX);
        CHECK(share_hints_for(&h, 2 * G, 0, G, 2 * G, out, 8) == 2);
        CHECK(share_hints_for(&h, 2 * G, 0, G, 100 * G, out, 8) == 8);
        share_hints_close(&h);
        unlink(path);
        free(path);
}

/* Imported extents at (off, len) in granules, bytes 0x40 + i, as share_predict.c hands them over. */
static size_t imported(Piece *pre, const size_t *offs, size_t n) {
        for (size_t i = 0; i < n; i++) {
                pre[i] = (Piece){ .off = offs[2 * i] * G, .len = offs[2 * i + 1] * G, .extent_id = 100 + i };
                pre[i].handle = fake_handle(pre[i].len, (unsigned char)(0x40 + i));
                pre[i].key = key_of(i);
        }
        return n;
}

static int calls(void) {
        return fake.creates + fake.releases + fake.maps + fake.unmaps + fake.accesses + fake.syncs + fake.copies;
}

static void unconfirmed_pieces(void) {
        ShareVmm v;
        SageShareAlloc *a = NULL;
        Piece pre[4];
        const size_t offs[] = { 0, 2, 2, 3, 7, 1 };
        CUmemAccess_flags access;
        int before;

        fake_reset();
        released = 0;
        share_vmm_init(&v, &fake_driver, release_extent, NULL);
        imported(pre, offs, 3);
        before = calls();
        CHECK(share_vmm_alloc_predicted(&v, 10 * G, G, 0, 0, NULL, pre, 3, &a) == CUDA_SUCCESS);
        share_vmm_link(&v, a);
        /* 3 maps of extents + 1 access for the two adjacent, 1 for the third; private [5G, 7G) and [8G, 10G). */
        fprintf(stderr, "predicted allocation: %d driver calls\n", calls() - before);
        CHECK(calls() - before == 3 + 2 + 2 * 3);
        CHECK(a->npieces == 5 && atomic_load(&v.unconfirmed) == 3);
        CHECK(fake_at(a->va, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ && fake_holds(a->va, 2 * G, 0x40));
        CHECK(fake_at(a->va + 7 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ);
        CHECK(fake_at(a->va + 5 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        /* Only an exact piece is confirmed. */
        CHECK(!share_hint_unconfirmed_at(a, 0, G) && !share_hint_unconfirmed_at(a, G, 3 * G));
        CHECK(share_hint_unconfirmed_at(a, 2 * G, 5 * G) == &a->pieces[1]);
        /* The upload of [2G - 100, 5G + 300): its key matched, no driver call. */
        before = calls();
        share_hint_confirm(&v, a, &a->pieces[1], 2 * G - 100, 3 * G + 400);
        CHECK(calls() == before && atomic_load(&v.unconfirmed) == 2);
        CHECK(!a->pieces[1].unconfirmed && a->pieces[1].span_lo == 2 * G - 100 && a->pieces[1].span_hi == 5 * G + 300);
        CHECK(!share_hint_unconfirmed_at(a, 2 * G, 5 * G));
        /* A write into [7G, 8G) first: private, no copy, no synchronize; the rest at the launch. */
        share_vmm_note_write(&v);
        share_vmm_before_write(&v, a, 7 * G + 10, 10);
        CHECK(fake.copies == 0 && fake.syncs == 0 && atomic_load(&v.unconfirmed) == 1 && released == 1);
        CHECK(fake_at(a->va + 7 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        CHECK(share_hint_unshare_all(&v, NULL, false) == 0);
        CHECK(fake.copies == 0 && fake.syncs == 0 && atomic_load(&v.unconfirmed) == 0 && released == 2);
        CHECK(fake_at(a->va, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        CHECK(fake_stat(SAGE_STAT_SHARE_PREDICT_UNUSED) == 2 && fake_stat(SAGE_STAT_SHARE_UNSHARED) == 0);
        /* The confirmed one is a hit like any other: read-only, its extent's bytes. */
        CHECK(fake_at(a->va + 2 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ &&
              fake_holds(a->va + 2 * G, 3 * G, 0x41) && a->pieces[1].extent_id == 101);
        CHECK(share_vmm_unlink(&v, a->va) == a);
        share_vmm_release(&v, a);
        CHECK(released == 3 && fake.live_handles == 0 && fake_live_maps() == 0 && fake.bad_unmaps == 0);

        /* A failed grant: nothing of the allocation stays, the pieces are the caller's to give back. */
        imported(pre, offs, 3);
        fake.fail_access_at = 2;
        CHECK(share_vmm_alloc_predicted(&v, 10 * G, G, 0, 0, NULL, pre, 3, &a) != CUDA_SUCCESS);
        CHECK(fake_live_maps() == 0 && fake.live_handles == 3 && atomic_load(&v.unconfirmed) == 0);
        share_hint_give_back(&v, pre, 3);
        CHECK(fake.live_handles == 0 && released == 6 && fake_live_reservations() == 0);
        /* The release of an allocation never confirmed gives every reference back. */
        imported(pre, offs, 3);
        CHECK(share_vmm_alloc_predicted(&v, 10 * G, G, 0, 0, NULL, pre, 3, &a) == CUDA_SUCCESS);
        share_vmm_release(&v, a);
        CHECK(released == 9 && fake.live_handles == 0 && atomic_load(&v.unconfirmed) == 0);
}

/* A test's content key (FNV-1a, twice): what share_predict.c hashes with sage_share_content_key. */
static int test_key(const void *data, size_t n, SageHash *out) {
        const unsigned char *b = data;
        uint64_t h = 14695981039346656037ull, g = 1099511628211ull;

        for (size_t i = 0; i < n; i++) {
                h = (h ^ b[i]) * 1099511628211ull;
                g = (g ^ b[i]) * 14695981039346656037ull;
        }
        *out = (SageHash){ h, g };
        return 0;
}

/* The run [2G, 5G) holding upload A (1000 bytes at 2G + 100, byte `a`) and B ([3G, 4G), byte 0x22), zeros around. */
static SageHash run_key(unsigned char a) {
        unsigned char *img = calloc(1, 3 * G);
        SageHash k;

        CHECK(img);
        memset(img + 100, a, 1000);
        memset(img + G, 0x22, G);
        test_key(img, 3 * G, &k);
        free(img);
        return k;
}

/* A whole-granule piece [0, 2G) and the run [2G, 5G) (bytes 0x41, key run_key(0x11)) predicted in 6G. */
static SageShareAlloc *predicted_run(ShareVmm *v) {
        SageShareAlloc *a = NULL;
        Piece pre[2];
        const size_t offs[] = { 0, 2, 2, 3 };

        imported(pre, offs, 2);
        pre[1].run_hint = true;
        pre[1].key = run_key(0x11);
        CHECK(share_vmm_alloc_predicted(v, 6 * G, G, 0, 0, NULL, pre, 2, &a) == CUDA_SUCCESS);
        share_vmm_link(v, a);
        CHECK(a->pieces[1].run_hint && a->pieces[1].unconfirmed);
        return a;
}

/* Upload A (byte `a`) and B into the run: to its image, no driver call; the device still shows the extent. */
static ShareVmm v_of_test;
static void upload_run(SageShareAlloc *a, unsigned char byte) {
        unsigned char *buf = malloc(G);
        Piece *run;
        int before = calls() + fake.htod_copies;

        CHECK(buf);
        share_hint_confirm(&v_of_test, a, &a->pieces[0], 0, 2 * G); /* [0, 2G)'s own upload had its key */
        memset(buf, byte, 1000);
        CHECK(!share_hint_run_at(a, 5 * G - 10, 20) && !share_hint_run_at(a, 100, 10)); /* past its end; not a run */
        CHECK((run = share_hint_run_at(a, 2 * G + 100, 1000)) == &a->pieces[1]);
        CHECK(share_hint_image(run, 2 * G + 100, 1000, buf));
        memset(buf, 0x22, G);
        CHECK(share_hint_run_at(a, 3 * G, G) == run && share_hint_image(run, 3 * G, G, buf));
        CHECK(calls() + fake.htod_copies == before && run->nfilled == 2 && fake_holds(a->va + 2 * G, 3 * G, 0x41));
        free(buf);
}

/*
 * Predicted assembled runs: the uploads inside one kept in a host image;
 * at the launch the image with the run's key confirms the mapped extent
 * (no copy, no read-back, no remap); other bytes, or a write first, give
 * the run private backing with the uploads copied in from the image.
 */
static void predicted_runs(void) {
        SageShareAlloc *a;
        CUmemAccess_flags access;
        unsigned char got[1000], want[1000];

        fake_reset();
        released = 0;
        share_vmm_init(&v_of_test, &fake_driver, release_extent, NULL);
        a = predicted_run(&v_of_test);
        upload_run(a, 0x11);
        CHECK(share_hint_unshare_all(&v_of_test, test_key, false) == 0);
        CHECK(!a->pieces[1].unconfirmed && !a->pieces[1].run_hint && !a->pieces[1].image && a->pieces[1].nfilled == 2);
        CHECK(a->pieces[1].extent_id == 101 && a->pieces[1].span_lo == 2 * G && a->pieces[0].extent_id == 100);
        CHECK(fake_at(a->va + 2 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ && fake.htod_copies == 0);
        CHECK(fake_stat(SAGE_STAT_SHARE_PREDICTED_RUNS) == 1 && fake_stat(SAGE_STAT_SHARE_ASSEMBLED_HITS) == 1 &&
              fake_stat(SAGE_STAT_SHARE_BYTES_ASSEMBLED) == 1000 + G && fake_stat(SAGE_STAT_SHARE_PREDICT_UNUSED) == 0);
        CHECK(!a->predict_spoiled && atomic_load(&v_of_test.unconfirmed) == 0);
        CHECK(share_vmm_unlink(&v_of_test, a->va) == a);
        share_vmm_release(&v_of_test, a);

        /*
         * Other bytes in A: private, each upload copied in from the image (not
         * the extent's 0x41) on a stream of its own, waited for; not spoiled. A
         * read first (runs_only) settles the run alone; a failed private
         * backing first (out of memory) keeps the image for the next settle.
         */
        a = predicted_run(&v_of_test);
        upload_run(a, 0x33);
        a->pieces[0].unconfirmed = true; /* as if its upload had not come yet (undone below) */
        atomic_fetch_add(&v_of_test.unconfirmed, 1);
        fake.fail_create_at = 1;
        CHECK(share_hint_unshare_all(&v_of_test, test_key, true) == 1);
        CHECK(a->pieces[1].unconfirmed && a->pieces[1].image && a->pieces[1].nfilled == 2 && fake.htod_copies == 0);
        CHECK(share_hint_unshare_all(&v_of_test, test_key, true) == 0);
        CHECK(a->pieces[0].unconfirmed && atomic_load(&v_of_test.unconfirmed) == 1); /* a read leaves it predicted */
        CHECK(fake.htod_async == 2 && fake.streams_live == 0 && fake_stat(SAGE_STAT_SHARE_PREDICT_UNUSED) == 0);
        a->pieces[0].unconfirmed = false;
        atomic_fetch_sub(&v_of_test.unconfirmed, 1);
        CHECK(!a->pieces[1].unconfirmed && a->pieces[1].extent_id == 0 && !a->pieces[1].image);
        CHECK(fake_at(a->va + 2 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        memset(want, 0x33, sizeof(want));
        CHECK(fake_read(a->va + 2 * G + 100, 1000, got) && !memcmp(got, want, 1000));
        CHECK(fake_holds(a->va + 3 * G, G, 0x22) && fake.htod_copies == 2 && fake.stream_syncs >= 1);
        CHECK(fake_stat(SAGE_STAT_SHARE_PREDICT_RUNS_COPIED) == 1 && fake_stat(SAGE_STAT_SHARE_PREDICTED_RUNS) == 1);
        CHECK(!a->predict_spoiled && a->nwritten == 3); /* [0, 2G) and the two: assembled at this launch */
        CHECK(share_vmm_unlink(&v_of_test, a->va) == a);
        share_vmm_release(&v_of_test, a);

        /* A run a single upload fills whole, confirmed as a whole-granule hit: its run state goes. */
        a = predicted_run(&v_of_test);
        upload_run(a, 0x11);
        share_hint_confirm(&v_of_test, a, &a->pieces[1], 2 * G, 3 * G);
        CHECK(!a->pieces[1].image && !a->pieces[1].nfilled && !a->pieces[1].run_hint && !a->pieces[1].unconfirmed);
        CHECK(share_vmm_unlink(&v_of_test, a->va) == a);
        share_vmm_release(&v_of_test, a);

        /* Written before the launch (a memset over B): private first, the uploads copied in, then the write. */
        a = predicted_run(&v_of_test);
        upload_run(a, 0x11);
        share_vmm_before_write(&v_of_test, a, 3 * G + 10, 10);
        CHECK(fake_at(a->va + 2 * G, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        CHECK(fake_holds(a->va + 3 * G, G, 0x22) && fake_holds(a->va + 2 * G + 100, 1000, 0x11) &&
              fake.htod_copies == 4);
        /* Released with an image never settled: nothing leaks, every reference back. */
        CHECK(share_vmm_unlink(&v_of_test, a->va) == a);
        share_vmm_release(&v_of_test, a);
        a = predicted_run(&v_of_test);
        upload_run(a, 0x11);
        CHECK(share_vmm_unlink(&v_of_test, a->va) == a);
        share_vmm_release(&v_of_test, a);
        CHECK(fake.live_handles == 0 && fake_live_maps() == 0 && fake.bad_writes == 0 &&
              atomic_load(&v_of_test.unconfirmed) == 0);
        CHECK(released == 10);
}

/* A spoiled prediction (a piece written or covered in part before its upload) marks the allocation: never again. */
static void spoiled_marks(const char *dir) {
        ShareHints h = { 0 };
        const size_t offs[] = { 0, 3, 5, 4 };
        SageShareAlloc *a = fake_alloc(10 * G, 2, offs, 2);
        Piece out[8];

        share_hints_open(&h, dir);
        share_hints_learn(&h, a);
        CHECK(share_hints_for(&h, 10 * G, 2, G, 10 * G, out, 8) == 2);
        a->predict_spoiled = true;
        share_hints_learn(&h, a);
        CHECK(h.dirty && share_hints_for(&h, 10 * G, 2, G, 10 * G, out, 8) == 0);
        CHECK(share_hints_save(&h) == 0);
        share_hints_close(&h);
        /* Read back, the mark holds; a later clean run learns nothing over it. */
        share_hints_open(&h, dir);
        CHECK(share_hints_for(&h, 10 * G, 2, G, 10 * G, out, 8) == 0);
        a->predict_spoiled = false;
        share_hints_learn(&h, a);
        CHECK(!h.dirty && share_hints_for(&h, 10 * G, 2, G, 10 * G, out, 8) == 0);
        share_hints_close(&h);
        free_fake(a);
}

int main(void) {
        char dir[] = "/tmp/sage-hint-XXXXXX";

        CHECK(mkdtemp(dir));
        learn_save_find(dir);
        spoiled_marks(dir);
        lying_file(dir);
        unconfirmed_pieces();
        predicted_runs();
        fake_reset();
        char *path = share_place_file(dir, "predict");
        unlink(path);
        free(path);
        CHECK(rmdir(dir) == 0);
        return 0;
}
