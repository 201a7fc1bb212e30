/* The broker's extents: keyed lookup, references, LRU of unreferenced extents, budgets. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"

#define EXTENT_STORE_MAX_DEVICES 64
#define EXTENT_STORE_UNLIMITED UINT64_MAX

/* Positive results callers must handle. */
enum {
        EXTENT_STORE_E_BUDGET = 1, /* does not fit even after evicting everything evictable */
        EXTENT_STORE_E_EXISTS = 2, /* the key is already resident */
        EXTENT_STORE_E_BUSY = 3,   /* referenced: cannot evict */
        EXTENT_STORE_E_DEVICE = 4, /* device out of range */
};

typedef struct Extent Extent;
struct Extent {
        uint64_t id;
        uint64_t namespace_id;
        SageExtentKey key;
        uint32_t refs;
        uint32_t flags;
        uint32_t publisher_pid;
        uint64_t last_use_ns;
        void *payload;  /* owned; handed to the release callback when the extent goes */
        uint8_t *notes; /* owned, immutable, freed with the extent; NULL when notes_len is 0 */
        uint32_t notes_len;

        /* private to extent_store.c */
        Extent *next_by_key, *next_by_id;
        Extent *lru_prev, *lru_next;
        Extent *all_prev, *all_next;
        /* id-ordered indexes for LIST: a search tree over every extent and
         * one over its namespace's, and the namespace's list in id order */
        Extent *all_left, *all_right;
        Extent *ns_left, *ns_right;
        Extent *ns_prev, *ns_next;
};

/* Called once for each extent that leaves the store (eviction or free). */
typedef void (*ExtentReleaseFn)(void *userdata, Extent *extent);
/* Injected clock, so tests control "least recently used". NULL: sage_now_ns. */
typedef uint64_t (*ExtentClockFn)(void *userdata);

typedef struct ExtentStore ExtentStore;

typedef struct ExtentStoreCounters {
        uint64_t extents;
        uint64_t bytes_resident;
        uint64_t refs;
        uint64_t evictions;
        uint64_t evicted_bytes;
} ExtentStoreCounters;

int extent_store_new(ExtentStore **out, ExtentReleaseFn release, ExtentClockFn clock, void *userdata);
ExtentStore *extent_store_free(ExtentStore *store);

/* Budgets are per device (extents live on one GPU); default unlimited. */
int extent_store_set_budget(ExtentStore *store, uint32_t device, uint64_t bytes);
uint64_t extent_store_get_budget(const ExtentStore *store, uint32_t device);
uint64_t extent_store_resident(const ExtentStore *store, uint32_t device);

/* Lookup in one namespace; never crosses namespaces. Takes no reference. */
Extent *extent_store_lookup(ExtentStore *store, uint64_t namespace_id, const SageExtentKey *key);
Extent *extent_store_get(ExtentStore *store, uint64_t id);

/* Would `size` bytes fit on `device` if every unreferenced extent there were evicted? */
bool extent_store_can_fit(const ExtentStore *store, uint32_t device, uint64_t size);

/*
 * Insert an extent with no references (the caller refs it next). Evicts
 * least recently used unreferenced extents of the device until it fits.
 * On success the store owns `payload` and a copy of the `notes_len` bytes of
 * `notes` (SAGE_PROTO_NOTES_MAX at most, else -EINVAL; they count against no
 * budget); on failure (EXTENT_STORE_E_*, -errno) the caller still owns
 * `payload`, and nothing was evicted unless that made room.
 */
int extent_store_insert(ExtentStore *store, uint64_t namespace_id, const SageExtentKey *key, uint32_t flags,
                        uint32_t publisher_pid, const void *notes, uint32_t notes_len, void *payload,
                        Extent **out);

void extent_store_ref(ExtentStore *store, Extent *extent);
void extent_store_unref(ExtentStore *store, Extent *extent);

/* Evict one unreferenced extent (EXTENT_STORE_E_BUSY if referenced). */
int extent_store_evict(ExtentStore *store, Extent *extent);

/* Evict every unreferenced extent (of one namespace, or of all when
 * `all_namespaces`). Returns the count; *bytes receives the bytes freed. */
uint64_t extent_store_evict_unreferenced(ExtentStore *store, bool all_namespaces, uint64_t namespace_id,
                                         uint64_t *bytes);

/* Iterate in id order: the first extent with id > after_id, or NULL. O(log N). */
Extent *extent_store_next(ExtentStore *store, uint64_t after_id);

/*
 * One page of a LIST: up to `max` extents with id > after_id in id order,
 * of `namespace_id` only, or of every namespace when `all_namespaces`.
 * Returns how many were stored in out[]; *more says whether another
 * follows. Costs O(log N + max): a tenant's page never visits another
 * namespace's extents.
 */
size_t extent_store_page(ExtentStore *store, bool all_namespaces, uint64_t namespace_id, uint64_t after_id,
                         Extent **out, size_t max, bool *more);

/* Extents and index nodes extent_store_next/_page visited so far: a cost
 * meter, so tests can assert a page's cost instead of timing it. */
uint64_t extent_store_steps(const ExtentStore *store);

void extent_store_counters(const ExtentStore *store, ExtentStoreCounters *out);
