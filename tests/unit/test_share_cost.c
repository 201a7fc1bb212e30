/*
 * Does a hit pay (intercept/share_cost.c)? Costs injected as samples: no
 * choice before each cost was seen twice; a hit costlier than the copy is
 * copied but for one in 8 (its cost measured again); the rates decay, so
 * a load that passed turns the choice back. And how many threads hash a
 * content key (intercept/share_key.c): half the CPUs, no more than idle,
 * or SAGE_SHARE_KEY_THREADS.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../intercept/share_cost.h"
#include "../../intercept/share_key.h"
#include "check.h"
#include "hash_pool.h"

#define MIB ((size_t)1 << 20)

/* Hashing 4 GB/s, a hit's lookup and remap `map_us`, copies `copy_gbps`: 2 samples each. */
static void learn(ShareCost *c, uint64_t map_us, unsigned copy_gbps) {
        for (int i = 0; i < 2; i++) {
                share_cost_key(c, 4 * MIB, 4 * MIB / 4);
                share_cost_map(c, map_us * 1000);
                share_cost_copy(c, 4 * MIB, 4 * MIB / copy_gbps);
        }
}

static void needs_samples(void) {
        ShareCost c = { 0 };

        share_cost_key(&c, 4 * MIB, 4 * MIB);
        share_cost_map(&c, 1000000000);
        share_cost_copy(&c, 4 * MIB, 1);
        share_cost_copy(&c, 4 * MIB, 1);
        CHECK(!share_cost_copy_cheaper(&c, 4 * MIB, true));       /* one key sample */
        CHECK(!share_cost_copy_cheaper(&c, 4 * MIB, false));      /* one map sample */
        share_cost_copy(&c, SHARE_COST_MIN_COPY - 1, 1000000000); /* a short copy is no sample */
        CHECK(c.ncopy == 2);
}

/* Alone: hashing at 4 GB/s plus 0.4 ms of mapping beats a 2 GB/s copy of 4 MiB; a 6 GB/s copy does not. */
static void hit_against_copy(void) {
        ShareCost slow_copy = { 0 }, fast_copy = { 0 };

        learn(&slow_copy, 400, 2);
        CHECK(!share_cost_copy_cheaper(&slow_copy, 4 * MIB, true));
        learn(&fast_copy, 400, 6);
        CHECK(share_cost_copy_cheaper(&fast_copy, 4 * MIB, true));
        /* A file key costs no hashing: the same hit then pays (0.4 ms against 0.7 ms). */
        CHECK(!share_cost_copy_cheaper(&fast_copy, 4 * MIB, false));
        /* Large uploads: the mapping's fixed cost is spread (0.4 ms + 64 MiB at 4 GB/s vs 64 MiB at 2 GB/s). */
        CHECK(!share_cost_copy_cheaper(&slow_copy, 64 * MIB, true));
}

/* Under contention every eighth upload is a hit anyway; once the load passed, hits again. */
static void explores_and_follows_the_load(void) {
        ShareCost c = { 0 };
        int hits = 0;

        learn(&c, 20000, 2); /* 20 ms per hit: 16 processes re-mapping at once */
        for (int i = 0; i < 16; i++)
                hits += !share_cost_copy_cheaper(&c, 4 * MIB, true);
        CHECK(hits == 2);
        for (int i = 0; i < 40; i++) /* the hits it took measure 0.1 ms now */
                share_cost_map(&c, 100000);
        CHECK(!share_cost_copy_cheaper(&c, 4 * MIB, true));
}

/* Pinned sources: an async copy returns at once; the copy still costs its DMA (~50 GB/s). */
static void copy_floor(void) {
        ShareCost c = { 0 };

        for (int i = 0; i < 2; i++) {
                share_cost_key(&c, 64 * MIB, 64 * MIB / 80); /* 80 GB/s: 16 threads */
                share_cost_map(&c, 10000);
                share_cost_copy(&c, 64 * MIB, 1000); /* "1 us" */
        }
        CHECK(!share_cost_copy_cheaper(&c, 64 * MIB, true)); /* 0.85 ms against 1.34 ms at 50 GB/s */
}

static void hash_threads(void) {
        CHECK(sage_share_hash_threads(16, 1) == 8);  /* alone: half the CPUs */
        CHECK(sage_share_hash_threads(16, 0) == 8);  /* load unknown */
        CHECK(sage_share_hash_threads(16, 12) == 5); /* 11 others runnable: 5 idle */
        CHECK(sage_share_hash_threads(16, 40) == 1); /* 16 processes at once: one each */
        CHECK(sage_share_hash_threads(64, 1) == 16); /* never more than 16 */
        CHECK(sage_share_hash_threads(2, 1) == 1);
        CHECK(sage_share_hash_threads(1, 1) == 1);
        CHECK(sage_share_hash_threads(0, 0) == 1);
}

/*
 * SAGE_SHARE_KEY_THREADS=3 (set in main) keys on the caller and 2 pool threads. The test
 * runs on at most 2 CPUs, where the default is 1 (no pool): the default cannot pass.
 */
static void key_threads_fixed(void) {
        size_t size = 16 * (size_t)SAGE_CONTENT_KEY_CHUNK;
        unsigned char *data = malloc(size);
        SageHash chunks[16];
        cpu_set_t all, two;

        CHECK(data && sage_content_key_nchunks(size) == 16);
        CHECK(sched_getaffinity(0, sizeof(all), &all) == 0);
        CPU_ZERO(&two);
        for (int cpu = 0, kept = 0; cpu < CPU_SETSIZE && kept < 2; cpu++)
                if (CPU_ISSET(cpu, &all)) {
                        CPU_SET(cpu, &two);
                        kept++;
                }
        CHECK(sched_setaffinity(0, sizeof(two), &two) == 0);
        CHECK(sage_share_hash_threads(sage_share_cpu_count(), 1) == 1);
        memset(data, 7, size);
        sage_share_content_chunks(data, size, chunks);
        CHECK(sage_hash_pool_threads() == 2);
        CHECK(sched_setaffinity(0, sizeof(all), &all) == 0);
        free(data);
}

int main(void) {
        setenv("SAGE_SHARE_KEY_THREADS", "3", 1);
        key_threads_fixed();
        needs_samples();
        hit_against_copy();
        explores_and_follows_the_load();
        copy_floor();
        hash_threads();
        return 0;
}
