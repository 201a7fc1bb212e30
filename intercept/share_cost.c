/*
 * Does a hit pay? (share_cost.h) A hit on an upload's whole granules costs
 * a pass over the bytes for their content key, a broker round trip and
 * some ten driver VMM calls; the copy it replaces costs the bytes over the
 * bus. Alone on an H100 a pageable copy runs at ~6 GB/s and a hit wins on
 * anything past a granule or two; under 16 processes at once hashing and
 * the VMM calls slow down by up to 20 times (docs/sharing.md, "Cost of a
 * hit") and a hit can cost twice the copy. Each rate is measured in the
 * process, on its own calls, and decays, so the choice follows the load.
 * The copy's rate has a floor at what a DMA engine can do: an asynchronous
 * copy from pinned memory returns before its bytes moved.
 */
#include "share_cost.h"

/* Samples of each cost before any choice: one slow call is no rate. */
#define MIN_SAMPLES 2
/* The fastest a host-to-device copy can go, bytes per ns (~50 GB/s, PCIe 5 x16). */
#define COPY_MAX_BYTES_PER_NS 50
#define EXPLORE 8

/* A hit in `maps`: counted in fractions, so small counts decay as the nanoseconds do. */
#define COUNT_ONE 1024

static void decay_add(uint64_t *sum, uint64_t v) {
        *sum = *sum - *sum / 8 + v;
}

static void count(uint32_t *n) {
        if (*n < UINT32_MAX)
                (*n)++;
}

void share_cost_key(ShareCost *c, size_t bytes, uint64_t ns) {
        decay_add(&c->key_ns, ns);
        decay_add(&c->key_bytes, bytes);
        count(&c->nkey);
}

void share_cost_map(ShareCost *c, uint64_t ns) {
        decay_add(&c->map_ns, ns);
        decay_add(&c->maps, COUNT_ONE);
        count(&c->nmap);
}

void share_cost_copy(ShareCost *c, size_t bytes, uint64_t ns) {
        if (bytes < SHARE_COST_MIN_COPY)
                return;
        decay_add(&c->copy_ns, ns);
        decay_add(&c->copy_bytes, bytes);
        count(&c->ncopy);
}

bool share_cost_copy_cheaper(ShareCost *c, size_t len, bool keyed) {
        double hit, copy;

        if (c->nmap < MIN_SAMPLES || c->ncopy < MIN_SAMPLES || (keyed && c->nkey < MIN_SAMPLES))
                return false;
        if (!c->maps || !c->copy_bytes || (keyed && !c->key_bytes))
                return false;
        hit = (double)c->map_ns * COUNT_ONE / (double)c->maps;
        if (keyed)
                hit += (double)len * (double)c->key_ns / (double)c->key_bytes;
        copy = (double)len * (double)c->copy_ns / (double)c->copy_bytes;
        if (copy < (double)len / COPY_MAX_BYTES_PER_NS)
                copy = (double)len / COPY_MAX_BYTES_PER_NS;
        c->copying = hit > copy;
        if (!c->copying)
                return false;
        /* Every EXPLORE-th such upload is a hit anyway: its cost measured again, a load that passed is seen. */
        return ++c->copied % EXPLORE != 0;
}
