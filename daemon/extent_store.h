/* The broker's extents: keyed lookup, references, LRU of unreferenced extents, budgets. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#define EXTENT_STORE_MAX_DEVICES 64
#define EXTENT_STORE_UNLIMITED UINT64_MAX
/* Default cap on the namespaces of one label (label != 0) that hold extents. */
#define EXTENT_STORE_NAMESPACES_PER_LABEL 1024

/* Positive results callers must handle. */
enum {
        EXTENT_STORE_E_BUDGET = 1,     /* does not fit even after evicting everything evictable */
        EXTENT_STORE_E_EXISTS = 2,     /* the key is already resident */
        EXTENT_STORE_E_BUSY = 3,       /* referenced: cannot evict */
        EXTENT_STORE_E_DEVICE = 4,     /* device out of range */
        EXTENT_STORE_E_NAMESPACES = 5, /* the label has as many namespaces holding extents as it may */
};

typedef struct Extent Extent;
typedef struct ExtentNamespace ExtentNamespace;
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
        bool unverified; /* the broker has not checked its bytes against the key yet: not served */

        /* private to extent_store.c */
        uint64_t cost;          /* what it counts against budgets: key.size + notes_len */
        ExtentNamespace *owner; /* its namespace's accounting */
        bool doomed;            /* planned victim of the insert under way */
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
/*
 * The share of each device's budget one namespace may hold, in percent
 * (1-100; default 100). See extent_store_insert for the eviction rule.
 */
int extent_store_set_namespace_share(ExtentStore *store, unsigned percent);
/* One namespace's share of `device`'s budget, in bytes. */
uint64_t extent_store_namespace_cap(const ExtentStore *store, uint32_t device);
uint64_t extent_store_get_budget(const ExtentStore *store, uint32_t device);
uint64_t extent_store_resident(const ExtentStore *store, uint32_t device);

/* Lookup in one namespace; never crosses namespaces. Takes no reference. */
Extent *extent_store_lookup(ExtentStore *store, uint64_t namespace_id, const SageExtentKey *key);
Extent *extent_store_get(ExtentStore *store, uint64_t id);

/*
 * Would an extent costing `cost` bytes (size + notes) of namespace `ns` fit
 * on `device` after the evictions extent_store_insert may make? Evicts nothing.
 */
bool extent_store_can_fit(const ExtentStore *store, uint64_t ns, uint32_t device, uint64_t cost);

/*
 * Insert an extent with no references (the caller refs it next). It costs
 * its size plus its notes' length against the budgets. Room is made in
 * least-recently-used order among unreferenced extents of the device:
 * - over the namespace's share: only the namespace's own extents go;
 * - over the device's budget: its own, and another namespace's only while
 *   that namespace keeps at least as much on the device as the publisher
 *   will hold with the new extent (max-min fairness: no namespace pushes
 *   another below its own level, so k busy namespaces each keep about a
 *   k-th of the budget, or their share if that is smaller).
 * On success the store owns `payload` and a copy of the `notes_len` bytes of
 * `notes` (SAGE_PROTO_NOTES_MAX at most, else -EINVAL); on failure
 * (EXTENT_STORE_E_*, -errno) the caller still owns `payload`, and nothing
 * was evicted.
 */
int extent_store_insert(ExtentStore *store, uint64_t namespace_id, const SageExtentKey *key, uint32_t flags,
                        uint32_t publisher_pid, const void *notes, uint32_t notes_len, void *payload, Extent **out);

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
/*
 * Namespaces are recorded while they hold extents, no longer (so a tenant
 * taking many uids cannot grow the broker with empty ones); a label's
 * namespaces (label != 0) that hold extents are capped (default
 * EXTENT_STORE_NAMESPACES_PER_LABEL): inserting for one more answers
 * EXTENT_STORE_E_NAMESPACES, which extent_store_admits tells in advance.
 */
int extent_store_set_namespaces_per_label(ExtentStore *store, size_t max);
/* Called when a namespace's last extent left the store (its record went). */
typedef void (*ExtentNamespaceGoneFn)(void *userdata, uint64_t namespace_id);
void extent_store_on_namespace_gone(ExtentStore *store, ExtentNamespaceGoneFn fn, void *userdata);
/* Does `namespace_id` hold extents? */
bool extent_store_holds(const ExtentStore *store, uint64_t namespace_id);
bool extent_store_admits(const ExtentStore *store, uint64_t namespace_id);
/* Namespace records held (for tests and STATS: it returns to its start value). */
size_t extent_store_namespace_records(const ExtentStore *store);

/* The same figures for one namespace (all zero for one never seen). */
void extent_store_namespace_counters(const ExtentStore *store, uint64_t namespace_id, ExtentStoreCounters *out);
/* Bytes `namespace_id` holds on `device`. */
uint64_t extent_store_namespace_resident(const ExtentStore *store, uint64_t namespace_id, uint32_t device);
