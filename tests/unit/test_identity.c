/* Unit test of daemon/identity's table: container numbers (once each, never
 * again), clients and extents keeping a container known, the bound. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The daemon's headers are not on the unit tests' include path. */
#include "../../daemon/extent_store.h"
#include "../../daemon/identity.h"
#include "../../daemon/tally.h"

#include "check.h"

#define MiB (1ull << 20)

static int released;

static void release_fn(void *userdata, Extent *e) {
        released++;
}

static uint32_t forgotten[16];
static size_t n_forgotten;

static void forget_fn(void *userdata, uint32_t number) {
        CHECK(n_forgotten < 16);
        forgotten[n_forgotten++] = number;
}

/* Container `n`'s namespaces: made-up nsfs ids no real namespace (saged's) has. */
static const uint64_t *container(uint64_t n) {
        static uint64_t ids[6];
        for (int i = 0; i < 6; i++)
                ids[i] = i % 2 ? 1000 * n + (uint64_t)i : UINT64_MAX - 1;
        return ids;
}

static uint32_t attach(IdentityTable *t, uint64_t n) {
        uint32_t number = 0;
        CHECK(identity_attach_ids(t, container(n), &number) == 0);
        CHECK(identity_is_container(number));
        return number;
}

static void publish(ExtentStore *s, uint32_t number, uint64_t h) {
        SageExtentKey k = { .hash = { h, h }, .size = 2 * MiB, .device = 0 };
        Extent *e;
        CHECK(extent_store_insert(s, (uint64_t)number << 32, &k, 0, 1, NULL, 0, NULL, &e) == 0);
}

/* Request counters per namespace: a hash table whose entries go when told (the namespace's last connection left). */
static void test_tally(void) {
        const uint64_t first = (uint64_t)IDENTITY_FIRST << 32;
        TallyTable tallies = { 0 };

        CHECK(tally_find(&tallies, first) == NULL && tally_count(&tallies) == 0);
        for (uint64_t uid = 0; uid < 5000; uid++) {
                tally_get(&tallies, first | uid)->hits = uid + 1;
                CHECK(tally_count(&tallies) == 1);
                CHECK(tally_of(&tallies, first | uid).hits == uid + 1);
                tally_forget(&tallies, first | uid);
                CHECK(tally_count(&tallies) == 0 && tally_find(&tallies, first | uid) == NULL);
        }
        tally_get(&tallies, 1ull << 32)->hits = 4;
        tally_get(&tallies, 1000)->hits = 5;
        tally_forget(&tallies, 2000); /* never counted: nothing happens */
        CHECK(tally_count(&tallies) == 2 && tally_of(&tallies, 1ull << 32).hits == 4);
        CHECK(tally_of(&tallies, 2000).hits == 0 && tally_count(&tallies) == 2);
        tally_table_clear(&tallies);
        CHECK(tally_count(&tallies) == 0 && tally_find(&tallies, 1000) == NULL);
}

int main(void) {
        ExtentStore *store;
        IdentityTable *t;
        uint32_t a, b, c, d, e, n;

        CHECK(extent_store_new(&store, release_fn, NULL, NULL) == 0);
        CHECK(identity_table_new(&t, IDENTITY_ISOLATE, store, 3, forget_fn, NULL) == 0);

        /* One number per container, the same for each of its clients. */
        a = attach(t, 1);
        CHECK(a == IDENTITY_FIRST);
        CHECK(attach(t, 1) == a);
        b = attach(t, 2);
        CHECK(b == IDENTITY_FIRST + 1 && identity_count(t) == 2);

        /* a's clients go, it has no extents: forgotten at the next new container,
         * and if it comes back, a new number (its old one is never given again). */
        identity_detach(t, a);
        identity_detach(t, a);
        c = attach(t, 3);
        CHECK(c == IDENTITY_FIRST + 2 && identity_count(t) == 2);
        CHECK(n_forgotten == 1 && forgotten[0] == a);
        n = attach(t, 1);
        CHECK(n != a && n == IDENTITY_FIRST + 3 && identity_count(t) == 3);
        identity_detach(t, n);

        /* b's clients go but it keeps an extent: it stays known, with its number. */
        publish(store, b, 7);
        identity_detach(t, b);
        d = attach(t, 4); /* sweeps container 1 (no clients, no extents) */
        CHECK(identity_count(t) == 3 && n_forgotten == 2 && forgotten[1] == n);
        CHECK(attach(t, 2) == b);
        identity_detach(t, b);

        /* Full (b idle with an extent, c and d with clients): b, least recently
         * used, gives its extent and its entry back. */
        e = attach(t, 5);
        CHECK(e == d + 1 && identity_count(t) == 3 && released == 1);
        CHECK(n_forgotten == 3 && forgotten[2] == b);
        CHECK(extent_store_next(store, 0) == NULL);
        /* Everyone has clients: the next container is refused. */
        uint32_t refused = 0;
        CHECK(identity_attach_ids(t, container(6), &refused) == IDENTITY_E_FULL);
        /* Detaching what is not attached changes nothing. */
        identity_detach(t, IDENTITY_FIRST + 1000);
        identity_detach(t, 0);
        CHECK(identity_count(t) == 3 && n_forgotten == 3);
        /* A number handed out but not in the table (a private namespace): its client's going forgets it. */
        identity_detach(t, e + 1);
        CHECK(n_forgotten == 3); /* never handed out */

        identity_table_free(t);
        extent_store_free(store);
        test_tally();
        printf("identity: ok\n");
        return 0;
}
