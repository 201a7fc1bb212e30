/* Unit test of daemon/extent_store (and daemon/client's reference keeping):
 * lookup, insert, refcounts, LRU eviction, budgets, namespace isolation,
 * notes (copied, immutable, freed with their extent). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The daemon's headers are not on the unit tests' include path. */
#include "../../daemon/client.h"
#include "../../daemon/extent_store.h"

#include "check.h"

#define MiB (1ull << 20)

/* Heap bytes in use, to see notes freed (the test environment turns leak
 * detection off, and a leak would not say when it happened anyway). */
#if defined(__SANITIZE_ADDRESS__)
/* From <sanitizer/allocator_interface.h>, which gcc does not install. */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void) {
        return __sanitizer_get_current_allocated_bytes();
}
#else
#include <malloc.h>
static size_t heap_in_use(void) {
        return mallinfo2().uordblks;
}
#endif

static uint64_t fake_now;
static int released_count;
static int released_tags[1024];

static uint64_t clock_fn(void *userdata) {
        return fake_now;
}

static void release_fn(void *userdata, Extent *e) {
        released_tags[released_count++] = (int)(intptr_t)e->payload;
}

static SageExtentKey key(uint64_t h, uint64_t size, uint32_t device) {
        return (SageExtentKey){ .hash = { h, ~h }, .size = size, .device = device };
}

static Extent *insert(ExtentStore *s, uint64_t ns, SageExtentKey k, int tag) {
        Extent *e = NULL;
        fake_now++;
        CHECK(extent_store_insert(s, ns, &k, 0, 1, NULL, 0, (void *)(intptr_t)tag, &e) == 0);
        return e;
}

static bool was_released(int tag) {
        for (int i = 0; i < released_count; i++)
                if (released_tags[i] == tag)
                        return true;
        return false;
}

static void test_lookup_and_namespaces(void) {
        ExtentStore *s;
        SageExtentKey k = key(1, 2 * MiB, 0);
        Extent *e, *other = NULL;

        released_count = 0;
        CHECK(extent_store_new(&s, release_fn, clock_fn, NULL) == 0);
        e = insert(s, 1000, k, 1);
        CHECK(e->id == 1 && e->refs == 0);
        CHECK(extent_store_lookup(s, 1000, &k) == e);
        CHECK(extent_store_get(s, e->id) == e);
        /* Another namespace never sees it, even with the exact key. */
        CHECK(extent_store_lookup(s, 1001, &k) == NULL);
        /* Size and device are part of the key. */
        SageExtentKey k2 = key(1, 4 * MiB, 0), k3 = key(1, 2 * MiB, 1);
        CHECK(extent_store_lookup(s, 1000, &k2) == NULL);
        CHECK(extent_store_lookup(s, 1000, &k3) == NULL);
        /* Same key twice in one namespace: refused; in another: a separate extent. */
        CHECK(extent_store_insert(s, 1000, &k, 0, 1, NULL, 0, (void *)9, &other) == EXTENT_STORE_E_EXISTS);
        other = insert(s, 1001, k, 2);
        CHECK(other != e && extent_store_lookup(s, 1001, &k) == other);
        CHECK(extent_store_insert(s, 1, &(SageExtentKey){ .device = EXTENT_STORE_MAX_DEVICES }, 0, 0, NULL, 0, NULL,
                                  &other) == EXTENT_STORE_E_DEVICE);
        extent_store_free(s);
        CHECK(released_count == 2);
}

static void test_many(void) {
        ExtentStore *s;
        ExtentStoreCounters c;

        released_count = 0;
        CHECK(extent_store_new(&s, NULL, clock_fn, NULL) == 0);
        for (uint64_t i = 0; i < 5000; i++)
                insert(s, i % 3, key(i, 2 * MiB, (uint32_t)(i % 4)), 0);
        for (uint64_t i = 0; i < 5000; i++) {
                SageExtentKey k = key(i, 2 * MiB, (uint32_t)(i % 4));
                Extent *e = extent_store_lookup(s, i % 3, &k);
                CHECK(e && e->id == i + 1 && extent_store_get(s, i + 1) == e);
                CHECK(!extent_store_lookup(s, (i + 1) % 3, &k));
        }
        /* Iteration in id order. */
        uint64_t n = 0, last = 0;
        for (Extent *e = extent_store_next(s, 0); e; e = extent_store_next(s, e->id)) {
                CHECK(e->id > last);
                last = e->id;
                n++;
        }
        CHECK(n == 5000);
        extent_store_counters(s, &c);
        CHECK(c.extents == 5000 && c.bytes_resident == 5000 * 2 * MiB);
        extent_store_free(s);
}

/* Root sees every namespace on the unlabelled socket only; a label goes into the namespace. */
static void test_client_labels(void) {
        struct ucred root = { .pid = 1, .uid = 0, .gid = 0 }, user = { .pid = 2, .uid = 1000, .gid = 1000 };
        Client *c;

        CHECK(client_new(&c, dup(0), &root, 0) == 0);
        CHECK(c->sees_all && c->namespace_id == 0);
        client_free(c, NULL);
        CHECK(client_new(&c, dup(0), &root, 3) == 0);
        CHECK(!c->sees_all && c->label == 3 && c->namespace_id == 3ull << 32);
        client_free(c, NULL);
        CHECK(client_new(&c, dup(0), &user, 1) == 0);
        CHECK(!c->sees_all && c->namespace_id == (1ull << 32 | 1000));
        client_free(c, NULL);
}

static void test_refs_and_lru(void) {
        ExtentStore *s;
        ExtentStoreCounters c;
        Extent *a, *b, *d;

        released_count = 0;
        CHECK(extent_store_new(&s, release_fn, clock_fn, NULL) == 0);
        CHECK(extent_store_set_budget(s, 0, 6 * MiB) == 0);
        a = insert(s, 1, key(1, 2 * MiB, 0), 1);
        b = insert(s, 1, key(2, 2 * MiB, 0), 2);
        d = insert(s, 1, key(3, 2 * MiB, 0), 3);
        CHECK(d->id == 3);
        extent_store_ref(s, a);
        extent_store_ref(s, a);
        extent_store_counters(s, &c);
        CHECK(c.refs == 2 && a->refs == 2);
        /* Referenced extents cannot be evicted. */
        CHECK(extent_store_evict(s, a) == EXTENT_STORE_E_BUSY);
        /* Touch b: d becomes the least recently used. */
        fake_now += 10;
        extent_store_ref(s, b);
        fake_now += 10;
        extent_store_unref(s, b);
        /* Full: a new 2 MiB extent evicts the LRU unreferenced one (d). */
        CHECK(extent_store_can_fit(s, 1, 0, 2 * MiB));
        Extent *e = insert(s, 1, key(4, 2 * MiB, 0), 4);
        CHECK(was_released(3) && !was_released(2) && !was_released(1));
        CHECK(extent_store_get(s, 3) == NULL); /* d is gone */
        extent_store_counters(s, &c);
        CHECK(c.evictions == 1 && c.extents == 3 && c.bytes_resident == 6 * MiB);
        /* Larger than the budget: refused, nothing evicted. */
        Extent *x;
        CHECK(!extent_store_can_fit(s, 1, 0, 8 * MiB));
        CHECK(extent_store_insert(s, 1, &(SageExtentKey){ .hash = { 9, 9 }, .size = 8 * MiB }, 0, 0, NULL, 0, NULL,
                                  &x) == EXTENT_STORE_E_BUDGET);
        /* Pin everything: no room even by evicting. */
        extent_store_ref(s, b);
        extent_store_ref(s, e);
        CHECK(!extent_store_can_fit(s, 1, 0, 2 * MiB));
        CHECK(extent_store_insert(s, 1, &(SageExtentKey){ .hash = { 9, 9 }, .size = 2 * MiB }, 0, 0, NULL, 0, NULL,
                                  &x) == EXTENT_STORE_E_BUDGET);
        extent_store_counters(s, &c);
        CHECK(c.extents == 3 && c.evictions == 1);
        /* Another device has its own budget. */
        CHECK(extent_store_set_budget(s, 1, 2 * MiB) == 0);
        insert(s, 1, key(5, 2 * MiB, 1), 5);
        CHECK(extent_store_resident(s, 1) == 2 * MiB && extent_store_resident(s, 0) == 6 * MiB);
        /* Unreferencing below zero is harmless. */
        extent_store_unref(s, b);
        extent_store_unref(s, b);
        CHECK(b->refs == 0);
        /* Evict all unreferenced of namespace 2: none. Of namespace 1: b and #5. */
        uint64_t bytes = 0;
        CHECK(extent_store_evict_unreferenced(s, false, 2, &bytes) == 0 && bytes == 0);
        CHECK(extent_store_evict_unreferenced(s, false, 1, &bytes) == 2 && bytes == 4 * MiB);
        CHECK(was_released(2) && was_released(5));
        extent_store_unref(s, a);
        extent_store_unref(s, a);
        extent_store_unref(s, e);
        CHECK(extent_store_evict_unreferenced(s, true, 0, &bytes) == 2);
        extent_store_counters(s, &c);
        CHECK(c.extents == 0 && c.bytes_resident == 0 && c.refs == 0);
        extent_store_free(s);
        CHECK(released_count == 5);
}

static void test_client_refs(void) {
        ExtentStore *s;
        ExtentStoreCounters c;
        Client *cl;
        struct ucred cred = { .pid = 123, .uid = 1000, .gid = 1000 };
        int fd = dup(0);
        Extent *a, *b;

        CHECK(extent_store_new(&s, release_fn, clock_fn, NULL) == 0);
        CHECK(client_new(&cl, fd, &cred, 0) == 0);
        CHECK(cl->namespace_id == 1000 && !cl->sees_all);
        CHECK(client_namespace(0, 0) == 0 && client_namespace(5, 2) == (2ull << 32 | 5));
        a = insert(s, cl->namespace_id, key(1, 2 * MiB, 0), 1);
        b = insert(s, cl->namespace_id, key(2, 2 * MiB, 0), 2);
        CHECK(client_ref(cl, s, a) == 0);
        CHECK(client_ref(cl, s, a) == 0);
        CHECK(client_ref(cl, s, b) == 0);
        CHECK(client_ref_total(cl) == 3 && a->refs == 2);
        CHECK(client_unref(cl, s, a->id) == 0 && a->refs == 1);
        CHECK(client_unref(cl, s, 999) == CLIENT_E_NOT_HELD);
        /* Dropping the client (disconnect, SIGKILL) gives every reference back. */
        client_free(cl, s);
        extent_store_counters(s, &c);
        CHECK(c.refs == 0 && a->refs == 0 && b->refs == 0);
        CHECK(extent_store_evict_unreferenced(s, true, 0, NULL) == 2);
        extent_store_free(s);
}

static void test_notes(void) {
        static uint8_t notes[SAGE_PROTO_NOTES_MAX + 1];
        const size_t n_noted = 32, slack = SAGE_PROTO_NOTES_MAX / 2;
        ExtentStoreCounters c;
        ExtentStore *s;
        Extent *e, *x;

        for (size_t i = 0; i < sizeof(notes); i++)
                notes[i] = (uint8_t)(i * 7 + 3);
        released_count = 0;
        size_t base = heap_in_use();
        CHECK(extent_store_new(&s, release_fn, clock_fn, NULL) == 0);
        size_t empty = heap_in_use();
        for (size_t i = 0; i < n_noted; i++) {
                SageExtentKey k = key(100 + i, 2 * MiB, 0);
                CHECK(extent_store_insert(s, 1, &k, SAGE_PUBLISH_SEALED, 1, notes, SAGE_PROTO_NOTES_MAX - (uint32_t)i,
                                          (void *)(intptr_t)(100 + i), &e) == 0);
                /* The store's own copy. */
                CHECK(e->notes && e->notes != notes && e->notes_len == SAGE_PROTO_NOTES_MAX - i);
                CHECK(memcmp(e->notes, notes, e->notes_len) == 0);
        }
        CHECK(heap_in_use() - empty >= n_noted * (SAGE_PROTO_NOTES_MAX - n_noted));
        /* Changing the caller's buffer changes nothing stored. */
        const uint8_t first = notes[0];
        notes[0] ^= 0xff;
        e = extent_store_lookup(s, 1, &(SageExtentKey){ .hash = { 100, ~100ull }, .size = 2 * MiB });
        CHECK(e && e->notes[0] == first);
        /* Sealed: the same key again is refused, its notes stay. */
        CHECK(extent_store_insert(s, 1, &e->key, SAGE_PUBLISH_SEALED, 1, notes, 5, NULL, &x) == EXTENT_STORE_E_EXISTS);
        CHECK(e->notes_len == SAGE_PROTO_NOTES_MAX && e->notes[0] == first);
        notes[0] ^= 0xff;
        /* No notes: none stored. Over the cap, or a length without bytes: refused. */
        x = insert(s, 1, key(99, 2 * MiB, 0), 99);
        CHECK(x->notes == NULL && x->notes_len == 0);
        CHECK(extent_store_insert(s, 1, &(SageExtentKey){ .hash = { 7, 7 }, .size = 2 * MiB }, 0, 0, notes,
                                  SAGE_PROTO_NOTES_MAX + 1, NULL, &x) == -EINVAL);
        CHECK(extent_store_insert(s, 1, &(SageExtentKey){ .hash = { 7, 7 }, .size = 2 * MiB }, 0, 0, NULL, 1, NULL,
                                  &x) == -EINVAL);
        extent_store_counters(s, &c);
        CHECK(c.extents == n_noted + 1);

        /* Notes count against the budget: an extent costs its size plus its notes. */
        extent_store_counters(s, &c);
        CHECK(c.bytes_resident ==
              (n_noted + 1) * 2 * MiB + n_noted * SAGE_PROTO_NOTES_MAX - n_noted * (n_noted - 1) / 2);
        CHECK(extent_store_resident(s, 0) == c.bytes_resident);
        /* Eviction frees them: by budget (LRU), one by one, all unreferenced. */
        CHECK(extent_store_set_budget(s, 0, c.bytes_resident) == 0);
        insert(s, 1, key(98, 2 * MiB, 0), 98);
        CHECK(was_released(100) && released_count == 1);
        CHECK(extent_store_evict(s, extent_store_get(s, 2)) == 0 && was_released(101));
        CHECK(heap_in_use() <= empty + (n_noted - 2) * SAGE_PROTO_NOTES_MAX + slack);
        CHECK(extent_store_evict_unreferenced(s, true, 0, NULL) == n_noted);
        CHECK(heap_in_use() <= empty + slack);

        /* And so does freeing the store (saged's shutdown). */
        for (size_t i = 0; i < 4; i++)
                CHECK(extent_store_insert(s, 2, &(SageExtentKey){ .hash = { i, i }, .size = 2 * MiB }, 0, 0, notes,
                                          SAGE_PROTO_NOTES_MAX, NULL, &e) == 0);
        CHECK(heap_in_use() >= empty + 4 * SAGE_PROTO_NOTES_MAX);
        extent_store_free(s);
        CHECK(heap_in_use() <= base + slack);
}

/* Brute force over a model of what is resident: the page LIST must answer. */
static size_t model_page(Extent *const *all, size_t n_all, bool every, uint64_t ns, uint64_t after, Extent **out,
                         size_t max, bool *more) {
        size_t n = 0;

        *more = false;
        for (size_t i = 0; i < n_all; i++) {
                if (!all[i] || all[i]->id <= after || (!every && all[i]->namespace_id != ns))
                        continue;
                if (n == max) {
                        *more = true;
                        break;
                }
                out[n++] = all[i];
        }
        return n;
}

/*
 * Issue 11.3: LIST scanned from the first extent for every entry (O(N^2):
 * 100 ms per call at 9,995 extents, even for a caller who sees none). A
 * page now costs O(log N + page) and a tenant's never visits another
 * namespace's extents: asserted on the store's step meter, not on time.
 */
static void test_list_pages(void) {
        enum {
                N = 10000,
                PAGE = 512,
                SEEK = 64
        };
        static Extent *all[N + 3], *got[PAGE], *want[PAGE];
        const uint64_t big = 1000, small = 2000, other = 3000;
        ExtentStore *s;
        uint64_t steps;
        bool more, want_more;
        size_t n, total;

        /* 10,000 extents of one namespace; three of another: two in between, one at the end. */
        CHECK(extent_store_new(&s, NULL, clock_fn, NULL) == 0);
        for (size_t i = 0; i < N + 3; i++) {
                uint64_t ns = (i == 10 || i == N / 2 || i == N + 2) ? small : big;
                all[i] = insert(s, ns, key(i, MiB, 0), 0);
                CHECK(all[i]->id == i + 1);
        }

        /* Another namespace's LIST: three entries, a handful of steps, whatever is resident. */
        steps = extent_store_steps(s);
        n = extent_store_page(s, false, small, 0, got, PAGE, &more);
        CHECK(n == 3 && !more && got[0] == all[10] && got[1] == all[N / 2] && got[2] == all[N + 2]);
        CHECK(extent_store_steps(s) - steps <= SEEK);
        /* A namespace with nothing: nothing visited at all. */
        steps = extent_store_steps(s);
        CHECK(extent_store_page(s, false, other, 0, got, PAGE, &more) == 0 && !more);
        CHECK(extent_store_steps(s) - steps == 0);

        /* Paging through the big one: each page O(seek + page), all of it O(N). */
        uint64_t after = 0;
        total = 0;
        steps = extent_store_steps(s);
        do {
                uint64_t before = extent_store_steps(s);
                n = extent_store_page(s, false, big, after, got, PAGE, &more);
                CHECK(extent_store_steps(s) - before <= SEEK + PAGE + 1);
                for (size_t i = 0; i < n; i++)
                        CHECK(got[i]->namespace_id == big && got[i]->id > after &&
                              (i == 0 || got[i]->id > got[i - 1]->id));
                total += n;
                after = n ? got[n - 1]->id : after;
        } while (more);
        CHECK(total == N);
        CHECK(extent_store_steps(s) - steps <= N + (N / PAGE + 1) * (SEEK + 1));

        /* Root's view pages through everything, in id order. */
        n = extent_store_page(s, true, 0, N, got, PAGE, &more);
        CHECK(n == 3 && !more && got[0] == all[N] && got[1] == all[N + 1] && got[2] == all[N + 2]);
        n = extent_store_page(s, true, 0, 0, got, PAGE, &more);
        CHECK(n == PAGE && more && got[0] == all[0] && got[PAGE - 1] == all[PAGE - 1]);

        /* Evictions anywhere, then pages from ids that exist, that were evicted, and past the end:
         * always what a brute-force scan of the residents says. */
        uint64_t seed = 7;
        for (int round = 0; round < 40; round++) {
                for (int k = 0; k < 100; k++) {
                        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                        size_t i = (size_t)(seed >> 33) % (N + 3);
                        if (all[i]) {
                                CHECK(extent_store_evict(s, all[i]) == 0);
                                all[i] = NULL;
                        }
                }
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                uint64_t from = (seed >> 33) % (N + 10);
                bool every = round % 3 == 0;
                uint64_t ns = round % 3 == 1 ? small : big;
                size_t max = round % 2 ? PAGE : 7;
                uint64_t before = extent_store_steps(s);
                n = extent_store_page(s, every, ns, from, got, max, &more);
                CHECK(extent_store_steps(s) - before <= SEEK + max + 1);
                size_t m = model_page(all, N + 3, every, ns, from, want, max, &want_more);
                CHECK(n == m && more == want_more && memcmp(got, want, n * sizeof(*got)) == 0);
                Extent *next = extent_store_next(s, from);
                size_t j = 0;
                while (j < N + 3 && (!all[j] || all[j]->id <= from))
                        j++;
                CHECK(next == (j < N + 3 ? all[j] : NULL));
        }

        /* A namespace's last extent goes, and its record with it; new ones come back in order. */
        for (size_t i = 0; i < N + 3; i++)
                if (all[i] && all[i]->namespace_id == small) {
                        CHECK(extent_store_evict(s, all[i]) == 0);
                        all[i] = NULL;
                }
        CHECK(extent_store_page(s, false, small, 0, got, PAGE, &more) == 0);
        Extent *again = insert(s, small, key(1, MiB, 0), 0);
        CHECK(extent_store_page(s, false, small, 0, got, PAGE, &more) == 1 && got[0] == again && !more);
        extent_store_free(s);

        /* An insert whose eviction takes its own namespace's last extent (and record). */
        CHECK(extent_store_new(&s, NULL, clock_fn, NULL) == 0);
        CHECK(extent_store_set_budget(s, 0, MiB) == 0);
        uint64_t first = insert(s, small, key(1, MiB, 0), 0)->id;
        Extent *second = insert(s, small, key(2, MiB, 0), 0);
        CHECK(extent_store_get(s, first) == NULL);
        CHECK(extent_store_page(s, false, small, 0, got, PAGE, &more) == 1 && got[0] == second && !more);
        CHECK(extent_store_page(s, true, 0, 0, got, PAGE, &more) == 1 && got[0] == second);
        extent_store_free(s);
}

/* Each namespace's share of a device, and who may evict whom when the device is full. */
static void test_namespace_share(void) {
        ExtentStoreCounters c;
        ExtentStore *s;
        Extent *a1, *a2, *x;

        released_count = 0;
        CHECK(extent_store_new(&s, release_fn, clock_fn, NULL) == 0);
        CHECK(extent_store_set_namespace_share(s, 0) == -EINVAL && extent_store_set_namespace_share(s, 101) == -EINVAL);
        CHECK(extent_store_set_budget(s, 0, 8 * MiB) == 0 && extent_store_set_namespace_share(s, 50) == 0);
        CHECK(extent_store_namespace_cap(s, 0) == 4 * MiB);
        /* Namespace 1 at its share: its next publish evicts its own least recently used. */
        a1 = insert(s, 1, key(1, 2 * MiB, 0), 1);
        a2 = insert(s, 1, key(2, 2 * MiB, 0), 2);
        CHECK(extent_store_can_fit(s, 1, 0, 2 * MiB) && released_count == 0);
        insert(s, 1, key(3, 2 * MiB, 0), 3);
        CHECK(was_released(1) && released_count == 1 && extent_store_namespace_resident(s, 1, 0) == 4 * MiB);
        /* More than the share at once: refused, even with room on the device. */
        CHECK(!extent_store_can_fit(s, 2, 0, 6 * MiB));
        /* Its extents pinned: refused, although the device has room; nothing evicted. */
        a2 = extent_store_get(s, 2);
        extent_store_ref(s, a2);
        extent_store_ref(s, extent_store_get(s, 3));
        CHECK(!extent_store_can_fit(s, 1, 0, 2 * MiB));
        CHECK(extent_store_insert(s, 1, &(SageExtentKey){ .hash = { 9, 9 }, .size = 2 * MiB }, 0, 0, NULL, 0, NULL,
                                  &x) == EXTENT_STORE_E_BUDGET);
        CHECK(released_count == 1);
        /* Namespace 2 fills the rest of the device. */
        insert(s, 2, key(4, 2 * MiB, 0), 4);
        insert(s, 2, key(5, 2 * MiB, 0), 5);
        CHECK(extent_store_resident(s, 0) == 8 * MiB);
        /* A newcomer may take from namespace 2 while 2 keeps at least what the newcomer will hold... */
        insert(s, 3, key(6, 2 * MiB, 0), 6);
        CHECK(was_released(4) && released_count == 2);
        CHECK(extent_store_namespace_resident(s, 2, 0) == 2 * MiB &&
              extent_store_namespace_resident(s, 3, 0) == 2 * MiB);
        /* ...and no further: its next publish evicts its own, not namespace 2 below its level. */
        insert(s, 3, key(7, 2 * MiB, 0), 7);
        CHECK(was_released(6) && !was_released(5) && released_count == 3);
        CHECK(extent_store_namespace_resident(s, 2, 0) == 2 * MiB);
        /* Nothing fair to evict for 4 MiB of a fourth namespace: refused, nothing evicted. */
        CHECK(!extent_store_can_fit(s, 4, 0, 4 * MiB));
        CHECK(extent_store_insert(s, 4, &(SageExtentKey){ .hash = { 8, 8 }, .size = 4 * MiB }, 0, 0, NULL, 0, NULL,
                                  &x) == EXTENT_STORE_E_BUDGET);
        CHECK(released_count == 3 && extent_store_resident(s, 0) == 8 * MiB);
        /* Per-namespace figures (STATS for a tenant): namespace 1 holds 2 extents, 2 refs, 1 eviction. */
        extent_store_namespace_counters(s, 1, &c);
        CHECK(c.extents == 2 && c.refs == 2 && c.evictions == 1 && c.bytes_resident == 4 * MiB);
        extent_store_namespace_counters(s, 2, &c);
        CHECK(c.extents == 1 && c.refs == 0 && c.evictions == 1 && c.bytes_resident == 2 * MiB);
        extent_store_namespace_counters(s, 99, &c);
        CHECK(c.extents == 0 && c.evictions == 0);
        /* Notes count against the namespace's share too: with one of its two extents unpinned,
         * 2 MiB fit in namespace 1's share, 2 MiB and 64 bytes of notes do not. */
        static uint8_t notes[64];
        extent_store_unref(s, a2);
        CHECK(extent_store_can_fit(s, 1, 0, 2 * MiB) && !extent_store_can_fit(s, 1, 0, 2 * MiB + sizeof(notes)));
        CHECK(extent_store_insert(s, 1, &(SageExtentKey){ .hash = { 10, 10 }, .size = 2 * MiB }, 0, 0, notes,
                                  sizeof(notes), NULL, &x) == EXTENT_STORE_E_BUDGET);
        CHECK(released_count == 3);
        CHECK(extent_store_insert(s, 1, &(SageExtentKey){ .hash = { 10, 10 }, .size = 2 * MiB - 4096 }, 0, 0, notes,
                                  sizeof(notes), NULL, &x) == 0);
        CHECK(was_released(2) && extent_store_namespace_resident(s, 1, 0) == 4 * MiB - 4096 + sizeof(notes));
        (void)a1;
        extent_store_free(s);
}

/*
 * Namespace records are bounded: one lives exactly while its namespace holds
 * extents (5,000 uids of one label each publishing and losing an extent leave
 * nothing behind), and a label's namespaces holding extents are capped.
 */
static void test_namespace_records(void) {
        const uint64_t label = 7ull << 32;
        ExtentStore *s;
        Extent *e, *pinned;

        CHECK(extent_store_new(&s, NULL, clock_fn, NULL) == 0);
        CHECK(extent_store_namespace_records(s) == 0);
        for (uint64_t uid = 1; uid <= 5000; uid++) {
                e = insert(s, label | uid, key(uid, 2 * MiB, 0), 0);
                CHECK(extent_store_namespace_records(s) == 2); /* the namespace and its label's count */
                CHECK(extent_store_evict(s, e) == 0);
                CHECK(extent_store_namespace_records(s) == 0);
        }
        /* Host uids (label 0) have no label record. */
        e = insert(s, 1000, key(1, 2 * MiB, 0), 0);
        CHECK(extent_store_namespace_records(s) == 1);
        CHECK(extent_store_evict(s, e) == 0 && extent_store_namespace_records(s) == 0);

        /* A cap of 3 namespaces per label: the fourth is refused until one empties. */
        CHECK(extent_store_set_namespaces_per_label(s, 0) == -EINVAL);
        CHECK(extent_store_set_namespaces_per_label(s, 3) == 0);
        pinned = insert(s, label | 1, key(1, 2 * MiB, 0), 0);
        extent_store_ref(s, pinned);
        insert(s, label | 1, key(2, 2 * MiB, 0), 0); /* the same namespace again: no new one */
        insert(s, label | 2, key(3, 2 * MiB, 0), 0);
        e = insert(s, label | 3, key(4, 2 * MiB, 0), 0);
        CHECK(!extent_store_admits(s, label | 4) && extent_store_admits(s, label | 3));
        CHECK(extent_store_admits(s, (8ull << 32) | 4) && extent_store_admits(s, 4)); /* other labels, host */
        CHECK(extent_store_insert(s, label | 4, &(SageExtentKey){ .hash = { 9, 9 }, .size = 2 * MiB }, 0, 0, NULL, 0,
                                  NULL, &e) == EXTENT_STORE_E_NAMESPACES);
        CHECK(extent_store_namespace_records(s) == 4);
        e = extent_store_lookup(s, label | 3, &(SageExtentKey){ .hash = { 4, ~4ull }, .size = 2 * MiB });
        CHECK(e && extent_store_evict(s, e) == 0);
        CHECK(extent_store_admits(s, label | 4));
        insert(s, label | 4, key(5, 2 * MiB, 0), 0);
        /* Evicting everything unreferenced leaves only the pinned extent's namespace (and its label's count). */
        extent_store_evict_unreferenced(s, true, 0, NULL);
        CHECK(extent_store_namespace_records(s) == 2);
        extent_store_unref(s, pinned);
        CHECK(extent_store_evict(s, pinned) == 0 && extent_store_namespace_records(s) == 0);
        extent_store_free(s);
}

/* The namespace is part of the key, not only of the bucket: with many
 * namespaces, some hash into the bucket of another's extent, and must still
 * not find it. */
static void test_namespace_in_key(void) {
        ExtentStore *s;
        SageExtentKey k = key(42, 2 * MiB, 0);
        Extent *e;

        released_count = 0;
        CHECK(extent_store_new(&s, release_fn, clock_fn, NULL) == 0);
        e = insert(s, 7, k, 1);
        for (uint64_t ns = 0; ns < 4096; ns++)
                CHECK(extent_store_lookup(s, ns, &k) == (ns == 7 ? e : NULL));
        for (uint64_t ns = 100; ns < 200; ns++)
                CHECK(insert(s, ns, k, (int)ns) != e);
        extent_store_free(s);
}

/* Making room on one device never evicts another device's extents, even
 * when those are older; the same when another namespace makes the room
 * (the device-budget rule, not the namespace share). */
static void test_eviction_per_device(void) {
        for (uint64_t maker = 1; maker <= 2; maker++) {
                ExtentStore *s;

                released_count = 0;
                CHECK(extent_store_new(&s, release_fn, clock_fn, NULL) == 0);
                CHECK(extent_store_set_budget(s, 0, 4 * MiB) == 0);
                CHECK(extent_store_set_budget(s, 1, 4 * MiB) == 0);
                insert(s, 1, key(1, 2 * MiB, 1), 1); /* the oldest, on device 1 */
                insert(s, 1, key(2, 2 * MiB, 0), 2);
                insert(s, 1, key(3, 2 * MiB, 0), 3);
                insert(s, maker, key(4, 2 * MiB, 0), 4); /* device 0 is full: evicts #2 */
                CHECK(was_released(2) && !was_released(1) && !was_released(3));
                CHECK(extent_store_resident(s, 1) == 2 * MiB && extent_store_resident(s, 0) == 4 * MiB);
                extent_store_free(s);
        }
}

int main(void) {
        test_lookup_and_namespaces();
        test_many();
        test_refs_and_lru();
        test_client_refs();
        test_client_labels();
        test_notes();
        test_namespace_share();
        test_list_pages();
        test_namespace_records();
        test_namespace_in_key();
        test_eviction_per_device();
        printf("extent_store: ok\n");
        return 0;
}
