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
#include <stdio.h>
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

/* share_assemble_allocations over `l` (with read-back staging of its own). */
static bool assemble(ShareVmm *v, SageShareAlloc *a, Lookups *l) {
        ShareLookup lk = { .lookup = lookup, .ctx = l };
        ShareReadback rb = { 0 };
        bool done;

        done = share_assemble_allocations(v, &a, 1, &lk, &rb);
        share_readback_release(&rb, v->drv);
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

/* The key of bytes [off, off+len) of `a` as they are. */
static SageHash key_at(SageShareAlloc *a, size_t off, size_t len) {
        unsigned char *host = malloc(len);
        SageHash h;

        CHECK(host && fake_read(a->va + off, len, host));
        CHECK(sage_share_content_key(host, len, &h) == 0);
        free(host);
        return h;
}

#define NRUNS 12

/* A lookup of many keys: extent 9 for `hit`, a miss for any other; from request `gone_from` on, gone. */
typedef struct Many {
        int calls;
        size_t n;
        SageHash key[NRUNS], hit;
        size_t len[NRUNS], gone_from;
        bool hit_all; /* every key is a hit */
        /* begin/add/end: the requests added, and how many halves the read-back had waited for at each */
        ShareLookupReq *added[NRUNS];
        int syncs_at[NRUNS], begun;
} Many;

static void lookup_many(void *ctx, ShareLookupReq *q, size_t n) {
        Many *m = ctx;

        CHECK(n <= NRUNS);
        m->calls++;
        m->n = n;
        for (size_t i = 0; i < n; i++) {
                m->key[i] = q[i].key;
                m->len[i] = q[i].len;
                q[i].fd = -1;
                q[i].notes_len = 0;
                q[i].result = i >= m->gone_from ? -EPIPE : 1; /* a miss */
                if (i < m->gone_from && (m->hit_all || sage_hash_equal(q[i].key, m->hit))) {
                        /* Notes as share_guard.c writes them ("SGN1", one use): the mapped run must get them. */
                        uint32_t head[2] = { 0x314e4753u, 1 };
                        uint64_t use = 42;

                        memcpy(q[i].notes, head, sizeof(head));
                        memcpy((char *)q[i].notes + 8, &use, sizeof(use));
                        q[i].notes_len = 16;
                        q[i].result = 0;
                        q[i].id = 9;
                        q[i].fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
        }
}

/* A batch: requests sent as they come (the broker's sage_broker_lookups_*), answered at the end as lookup_many's. */
static void *batch_begin(void *ctx, size_t max) {
        Many *m = ctx;

        CHECK(max == NRUNS);
        m->begun++;
        return m;
}

static void batch_add(void *ctx, void *batch, ShareLookupReq *q) {
        Many *m = batch;

        CHECK(ctx == m && m->n < NRUNS);
        m->syncs_at[m->n] = fake.stream_syncs;
        m->added[m->n++] = q;
}

static void batch_end(void *ctx, void *batch) {
        Many *m = batch;
        size_t n = m->n;
        ShareLookupReq q[NRUNS];

        for (size_t i = 0; i < n; i++)
                q[i] = *m->added[i];
        lookup_many(m, q, n);
        for (size_t i = 0; i < n; i++)
                *m->added[i] = q[i];
}

static int no_single_lookup(void *ctx, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd,
                            const void **notes, uint32_t *notes_len) {
        CHECK(!"lookup_many is there: no lookup one by one");
        return -1;
}

/*
 * A pool segment of NRUNS granules, each with one small tensor (byte 0x10 +
 * g) and room for other buffers: NRUNS runs of a granule each. `hit` is
 * set to the key of granule 5.
 */
static SageShareAlloc *setup_pool(ShareVmm *v, Many *m) {
        SageShareAlloc *a = NULL;

        fake_reset();
        share_vmm_init(v, &fake_driver, release_extent, NULL);
        v->track_pending = true;
        CHECK(share_vmm_alloc(v, NRUNS * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(v, a);
        for (size_t g = 0; g < NRUNS; g++) {
                fake_fill(a->va + g * G, 1000, (unsigned char)(0x10 + g));
                share_vmm_note_written(v, a, g * G, 1000);
        }
        m->hit = key_at(a, 5 * G, G);
        m->gone_from = SIZE_MAX;
        fake.next_import = fake_handle(G, 0x15);
        return a;
}

static bool assemble_many(ShareVmm *v, SageShareAlloc *a, Many *m) {
        ShareLookup lk = { .lookup = no_single_lookup, .lookup_many = lookup_many, .ctx = m };
        ShareReadback rb = { 0 };
        bool done = share_assemble_allocations(v, &a, 1, &lk, &rb);

        CHECK(rb.host && rb.pinned == !fake.fail_alloc_host);
        share_readback_release(&rb, v->drv);
        return done;
}

/* Runs [from, to) of setup_pool's allocation are candidates keyed by their bytes, granule 5 mapped. */
static void check_pool(SageShareAlloc *a, const Many *m, size_t from, size_t to) {
        for (size_t g = from; g < to; g++) {
                const Piece *p = NULL;

                for (size_t i = 0; i < a->npieces; i++)
                        if (a->pieces[i].off == g * G)
                                p = &a->pieces[i];
                CHECK(p && p->len == G);
                CHECK(m->len[g] == G);
                /* The hit's bytes are the extent's now (the fake's, a byte throughout): its key was the old bytes'. */
                CHECK(sage_hash_equal(m->key[g], g == 5 ? m->hit : key_at(a, g * G, G)));
                if (g == 5) {
                        CHECK(p->extent_id == 9 && !p->candidate && p->nallow == 1 && p->allow[0] == 42);
                        continue;
                }
                CHECK(p->candidate && !p->extent_id && sage_hash_equal(p->content, m->key[g]));
                CHECK(p->nfilled == 1 && p->filled[0].off == g * G && p->filled[0].len == 1000);
        }
}

/*
 * Many runs: read back on SAGE's stream into the two halves of the staging
 * (8 MiB each: three batches of four), each keyed by its own bytes; all
 * looked up in one exchange; each answer applied to its own run. Pinned:
 * one context synchronize, one async copy per run, a stream synchronize
 * per batch (before: a synchronous copy per key chunk and a lookup per run).
 */
static void many_runs_one_window(bool eager) {
        ShareVmm v;
        Many m = { 0 };
        SageShareAlloc *a = setup_pool(&v, &m);
        unsigned long hash_calls = sage_share_chunk_calls();

        /* Copies that land only when waited for catch a hash before the wait; eager ones, a copy into the half hashed. */
        fake.eager_copies = eager;
        CHECK(assemble_many(&v, a, &m));
        /* A half's runs are hashed in one call (all its chunks on the pool at once), not one call a run. */
        hash_calls = sage_share_chunk_calls() - hash_calls;
        fprintf(stderr, "%d runs: %lu hashing calls\n", NRUNS, hash_calls);
        CHECK(hash_calls == 3);
        CHECK(m.calls == 1 && m.n == NRUNS);
        check_pool(a, &m, 0, NRUNS);
        fprintf(stderr, "%d runs: %d context synchronize, %d async copies, %d stream synchronizes, %d sync copies\n",
                NRUNS, fake.syncs, fake.dtoh_async, fake.stream_syncs, fake.dtoh_copies);
        CHECK(fake.dtoh_async == NRUNS && fake.dtoh_copies == 0 && fake.stream_syncs == 3);
        CHECK(fake.streams_made == 1 && fake.streams_live == 0 && fake.unsynced_copies == 0); /* released by the test */
        CHECK(fake_stat(SAGE_STAT_SHARE_ASSEMBLED) == NRUNS && fake_stat(SAGE_STAT_SHARE_ASSEMBLED_HITS) == 1);
        teardown(&v, a);
}

/*
 * With a batch the lookups go out as the runs are keyed: the first half's
 * four runs when it is hashed (one stream synchronize behind), the last
 * half's at the end; the same keys and answers as in one exchange after it.
 */
static void many_runs_sent_as_keyed(void) {
        ShareVmm v;
        Many m = { 0 };
        SageShareAlloc *a = setup_pool(&v, &m);
        ShareLookup lk = { .lookup = no_single_lookup,
                           .lookup_many = lookup_many,
                           .ctx = &m,
                           .begin = batch_begin,
                           .add = batch_add,
                           .end = batch_end };
        ShareReadback rb = { 0 };

        CHECK(share_assemble_allocations(&v, &a, 1, &lk, &rb));
        share_readback_release(&rb, v.drv);
        CHECK(m.begun == 1 && m.calls == 1 && m.n == NRUNS && fake.stream_syncs == 3);
        for (size_t i = 0; i < NRUNS; i++)
                CHECK(m.syncs_at[i] == (int)(i / 4) + 1);
        check_pool(a, &m, 0, NRUNS);
        CHECK(fake_stat(SAGE_STAT_SHARE_ASSEMBLED) == NRUNS && fake_stat(SAGE_STAT_SHARE_ASSEMBLED_HITS) == 1);
        teardown(&v, a);
}

/* No stream and no pinned memory: the same keys through synchronous copies into malloc'd staging. */
static void no_stream_no_pinned(void) {
        ShareVmm v;
        Many m = { 0 };
        SageShareAlloc *a = setup_pool(&v, &m);

        fake.fail_stream = fake.fail_alloc_host = true;
        CHECK(assemble_many(&v, a, &m));
        CHECK(m.calls == 1 && m.n == NRUNS);
        check_pool(a, &m, 0, NRUNS);
        CHECK(fake.dtoh_copies == NRUNS && fake.dtoh_async == 0 && fake.streams_live == 0);
        teardown(&v, a);
}

/* The broker gone mid-window: runs answered before it are applied, the rest stay private. */
static void window_gone_midway(void) {
        ShareVmm v;
        Many m = { .gone_from = 7 };
        SageShareAlloc *a = setup_pool(&v, &m);

        m.gone_from = 7;
        CHECK(!assemble_many(&v, a, &m));
        CHECK(m.calls == 1 && m.n == NRUNS);
        check_pool(a, &m, 0, 7);
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].off >= 7 * G)
                        CHECK(!a->pieces[i].candidate && !a->pieces[i].extent_id);
        CHECK(fake_holds(a->va + 8 * G, 1000, 0x18));
        teardown(&v, a);
}

/* A stream synchronize that fails (the context is gone): the batch it waited for and those after stay unkeyed. */
static void readback_fails(void) {
        ShareVmm v;
        Many m = { 0 };
        SageShareAlloc *a = setup_pool(&v, &m);
        ShareLookup lk = { .lookup = no_single_lookup, .lookup_many = lookup_many, .ctx = &m };
        ShareReadback rb = { 0 };

        fake.fail_stream_sync_at = 2;
        fake_driver.vmm.release(fake.next_import); /* granule 5 is never looked up */
        fake.next_import = 0;
        CHECK(share_assemble_allocations(&v, &a, 1, &lk, &rb));
        CHECK(!rb.stream_made); /* the next read-back makes a new one */
        share_readback_release(&rb, v.drv);
        CHECK(m.calls == 1 && m.n == 4); /* the first batch only (four runs of a granule fill a half) */
        check_pool(a, &m, 0, 4);
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].off >= 4 * G)
                        CHECK(!a->pieces[i].candidate && !a->pieces[i].extent_id);
        CHECK(fake.streams_live == 1); /* the failed stream is forgotten, not destroyed: it may be stale */
        fake.streams_live = 0;
        teardown(&v, a);
}

/* Every driver call the fake counts. */
static int driver_calls(void) {
        return fake.creates + fake.releases + fake.maps + fake.unmaps + fake.accesses + fake.syncs + fake.copies +
               fake.imports + fake.dtoh_copies + fake.dtoh_async + fake.stream_syncs + 2 * fake.streams_made -
               fake.streams_live;
}

/*
 * Three allocations, each one run that is one piece (a pool segment its
 * tensors fill but for the ends): one context synchronize, one lookup of
 * three keys. Two runs of 4 MiB fill a half of the staging: an async copy
 * a run, a stream synchronize a batch (two), 2 calls for the window (a
 * context synchronize; the stream, made at the process's first read-back,
 * kept); all hits (`hits`): 5 more a run (import, unmap and release of the
 * private piece, map and access of the extent). Before: per run a
 * synchronous copy per key chunk and a round trip, per allocation a context
 * synchronize.
 */
static void allocations_one_window(bool hits) {
        ShareVmm v;
        Many m = { .gone_from = SIZE_MAX };
        int before, calls;
        SageShareAlloc *a[3];
        ShareLookup lk = { .lookup = no_single_lookup, .lookup_many = lookup_many, .ctx = &m };
        ShareReadback rb = { 0 };

        fake_reset();
        share_vmm_init(&v, &fake_driver, release_extent, NULL);
        v.track_pending = true;
        for (size_t i = 0; i < 3; i++) {
                CHECK(share_vmm_alloc(&v, 2 * G, G, 0, 0, NULL, &a[i]) == CUDA_SUCCESS);
                share_vmm_link(&v, a[i]);
                fake_fill(a[i]->va + 100, 2 * G - 200, (unsigned char)(0x30 + i));
                share_vmm_note_written(&v, a[i], 100, 2 * G - 200);
        }
        if (hits) {
                m.hit_all = true;
                fake.import_len = 2 * G;
        }
        before = driver_calls();
        CHECK(share_assemble_allocations(&v, a, 3, &lk, &rb));
        calls = driver_calls() - before;
        share_readback_release(&rb, v.drv);
        CHECK(m.calls == 1 && m.n == 3 && fake.dtoh_async == 3 && fake.dtoh_copies == 0);
        for (size_t i = 0; i < 3; i++) {
                Piece *p = &a[i]->pieces[0];

                CHECK(a[i]->npieces == 1 && p->len == 2 * G);
                CHECK(hits ? p->extent_id == 9 && !p->candidate
                           : p->candidate && sage_hash_equal(p->content, m.key[i]) &&
                                      sage_hash_equal(m.key[i], key_at(a[i], 0, 2 * G)));
        }
        fprintf(stderr, "3 one-piece runs, %s: %d driver calls\n", hits ? "hits" : "misses", calls);
        CHECK(calls == 3 + 2 + 2 + (hits ? 3 * 5 : 0));
        CHECK(fake_stat(SAGE_STAT_SHARE_ASSEMBLED_HITS) == (hits ? 3 : 0));
        for (size_t i = 0; i < 3; i++) {
                CHECK(share_vmm_unlink(&v, a[i]->va) == a[i]);
                share_vmm_release(&v, a[i]);
        }
        CHECK(fake.live_handles == 0 && fake.bad_unmaps == 0 && fake.bad_writes == 0);
}

/*
 * Deferred backing (share_backing.c) the first launch needs anyway is made
 * while the read-back's copies are in flight: an allocation nothing reached
 * yet is backed by the time its run is keyed, with the same key; where the
 * copies landed at once (nothing to wait for) it is left for the launch.
 */
static void backs_while_reading(bool eager) {
        ShareVmm v;
        SageShareAlloc *a = NULL, *idle = NULL;
        Lookups l = { 0 };

        fake_reset();
        share_vmm_init(&v, &fake_driver, release_extent, NULL);
        v.track_pending = true;
        v.defer = true;
        CHECK(share_vmm_alloc(&v, 4 * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(&v, a);
        CHECK(share_vmm_alloc(&v, 2 * G, G, 0, 0, NULL, &idle) == CUDA_SUCCESS);
        share_vmm_link(&v, idle);
        CHECK(share_vmm_has_unbacked(a) && share_vmm_has_unbacked(idle));
        CHECK(share_vmm_back(&v, a, 100, 2 * G - 200) == CUDA_SUCCESS); /* what an upload backs first */
        fake_fill(a->va + 100, 2 * G - 200, 0x61);
        share_vmm_note_written(&v, a, 100, 2 * G - 200);
        fake.eager_copies = eager;
        CHECK(assemble(&v, a, &l));
        fake.eager_copies = false;
        CHECK(l.calls == 1 && l.len[0] == 2 * G && sage_hash_equal(l.key[0], key_of(a, 2 * G)));
        CHECK(eager == share_vmm_has_unbacked(idle) && eager == share_vmm_has_unbacked(a));
        CHECK(eager == (fake_stat(SAGE_STAT_SHARE_NS_BACK_OVERLAPPED) == 0));
        CHECK(share_vmm_back_all(&v) && !share_vmm_has_unbacked(idle) && !atomic_load(&v.unbacked));
        CHECK(share_vmm_unlink(&v, idle->va) == idle);
        share_vmm_release(&v, idle);
        teardown(&v, a);
}

/*
 * When whole granules are left to assembly: only where their hit would keep
 * bytes copied into the same plain private piece, only under 8 MiB (a miss
 * that large is staged), only in a fresh allocation with assembly on, never
 * where those bytes were copied because their hit cost more (not assembled).
 */
static void takes_rules(void) {
        const Range up[] = { { 0, G / 2 } };
        ShareVmm v;
        SageShareAlloc *a = setup(&v, up, 1);

        CHECK(share_assemble_takes(&v, a, G, 3 * G));
        CHECK(share_assemble_takes(&v, a, 2 * G, 3 * G));
        CHECK(!share_assemble_takes(&v, a, G, G)); /* no whole granule */
        v.track_pending = false;
        CHECK(!share_assemble_takes(&v, a, G, 3 * G));
        v.track_pending = true;
        share_assemble_skip(a, 0, G / 2);
        CHECK(!share_assemble_takes(&v, a, G, 3 * G));
        teardown(&v, a);

        a = setup(&v, NULL, 0); /* nothing copied yet: a hit keeps nothing */
        CHECK(!share_assemble_takes(&v, a, G, 3 * G));
        fake_fill(a->va + 3 * G + 100, 100, 0x61); /* copied after the granules: kept on the right */
        share_vmm_note_written(&v, a, 3 * G + 100, 100);
        CHECK(share_assemble_takes(&v, a, G, 3 * G));
        share_vmm_note_write(&v); /* a launch: assembly is over for it */
        CHECK(!share_assemble_takes(&v, a, G, 3 * G));
        teardown(&v, a);

        a = setup(&v, NULL, 0);
        CHECK(share_vmm_unlink(&v, a->va) == a);
        share_vmm_release(&v, a);
        CHECK(share_vmm_alloc(&v, 8 * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(&v, a);
        share_vmm_note_written(&v, a, 0, 100);
        CHECK(share_assemble_takes(&v, a, G, SHARE_ASSEMBLE_TAKES_MAX));
        CHECK(!share_assemble_takes(&v, a, G, G + SHARE_ASSEMBLE_TAKES_MAX)); /* a miss this large is staged */
        teardown(&v, a);
}

/* Assembly at idleness: the run at offset 0 waits (v->defer_run), the other is assembled now. */
static bool defer_first(void *ctx, const SageShareAlloc *a, size_t off, size_t len) {
        (void)ctx, (void)a, (void)len;
        return off == 0;
}

/* share_assemble_due over `l`. */
static bool assemble_due(ShareVmm *v, SageShareAlloc *a, Lookups *l) {
        ShareLookup lk = { .lookup = lookup, .ctx = l };
        ShareReadback rb = { 0 };
        bool done = share_assemble_due(v, &a, 1, &lk, &rb);

        share_readback_release(&rb, v->drv);
        return done;
}

/*
 * Two one-granule runs; the first left due at the "first launch", keyed and
 * mapped at idleness (a hit), or left plain private (a miss: no candidate),
 * or dropped unkeyed when it is no longer plain private memory.
 */
static void due_runs_at_idleness(int outcome) {
        const Range up[] = { { 100, G - 200 }, { 2 * G, G - 200 } };
        ShareVmm v;
        SageShareAlloc *a = setup(&v, up, 2);
        Lookups l = { 0 }, at_idle = { .answer = outcome == 0 ? 1 : 0 };
        CUmemAccess_flags access;
        SageHash want;

        v.defer_run = defer_first;
        CHECK(assemble(&v, a, &l));
        CHECK(l.calls == 1 && l.len[0] == G); /* the second run only */
        CHECK(a->ndue == 1 && a->due[0].off == 0 && a->due[0].len == G && a->due[0].nfilled == 1);
        CHECK(atomic_load(&v.idle_due) && fake_stat(SAGE_STAT_SHARE_ASSEMBLE_DEFERRED) == 1);
        CHECK(!a->pieces[0].candidate && !a->pieces[0].extent_id);
        if (outcome == 2) /* since then: the granule became a candidate (an upload filled it whole) */
                a->pieces[0].candidate = true;
        want = key_at(a, 0, G); /* the bytes as they are at idleness */
        if (outcome == 0)
                fake.next_import = fake_handle(G, 0x61);
        CHECK(assemble_due(&v, a, &at_idle));
        CHECK(a->ndue == 0 && !a->due && !atomic_load(&v.idle_due));
        if (outcome == 0) { /* a hit: mapped read-only, counted as assembled at idleness */
                CHECK(at_idle.calls == 1 && sage_hash_equal(at_idle.key[0], want));
                CHECK(a->pieces[0].extent_id == 5 && a->pieces[0].len == G && a->pieces[0].nfilled == 1);
                CHECK(fake_at(a->va, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ);
                CHECK(fake_stat(SAGE_STAT_SHARE_ASSEMBLED_IDLE) == 1 && fake_stat(SAGE_STAT_SHARE_ASSEMBLED_HITS) == 1);
        } else if (outcome == 1) { /* a miss: plain private, its bytes kept, never a candidate */
                CHECK(at_idle.calls == 1 && !a->pieces[0].candidate && !a->pieces[0].extent_id);
                CHECK(fake_holds(a->va + 100, G - 200, 0x61) && fake_stat(SAGE_STAT_SHARE_ASSEMBLED_IDLE) == 0);
        } else { /* no longer plain private: not even keyed */
                CHECK(at_idle.calls == 0);
                a->pieces[0].candidate = false;
        }
        teardown(&v, a);
}

int main(void) {
        takes_rules();
        backs_while_reading(false);
        backs_while_reading(true);
        many_runs_one_window(false);
        many_runs_one_window(true);
        many_runs_sent_as_keyed();
        no_stream_no_pinned();
        window_gone_midway();
        readback_fails();
        allocations_one_window(false);
        allocations_one_window(true);
        copied_uploads_skipped();
        one_run_candidate();
        one_run_hit();
        gappy_granules_alone();
        lookup_gone();
        due_runs_at_idleness(0);
        due_runs_at_idleness(1);
        due_runs_at_idleness(2);
        fake_reset();
        return 0;
}
