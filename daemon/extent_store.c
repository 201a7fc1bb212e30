/*
 * Extent store: the broker's bookkeeping of shared GPU memory, with no
 * knowledge of the driver.
 *
 * An extent is keyed by (namespace, hash, size, device). Two chained hash
 * tables find it by key (LOOKUP, PUBLISH) and by id (RELEASE, EVICT); an
 * id-ordered list and search trees (extent_order.c) serve paged LIST
 * requests at O(log N + page), per namespace. Every extent whose reference
 * count is zero sits on the LRU list, least recently used at the head:
 * those, and only those, may be evicted. Budgets are per device because an
 * extent's memory lives on one GPU and evicting on another frees nothing
 * useful. What an extent holds (an imported VMM handle in saged, a marker
 * in tests) is an opaque payload handed to the injected release callback
 * when the extent leaves the store, so all of this is unit-testable.
 * Notes (an opaque blob a publisher attached) are the store's own copy,
 * freed with the extent; an extent costs its size plus its notes' length,
 * so budgets count everything the broker holds for a namespace.
 *
 * Budgets are shared by tenants: each namespace has its accounting
 * (ExtentNamespace) and may hold at most a share of each device's budget.
 * A namespace's record lives exactly as long as it holds extents, in a
 * chained hash table: a tenant that can take many uids (root in a container,
 * or behind a label) must not grow the broker, nor slow every request, with
 * namespaces that hold nothing. What an emptied namespace counted stays in
 * the store-wide counters. Namespaces holding extents are also capped per
 * label (the label half of the id; label 0, the host's uids, is exempt):
 * each label's count is a record of its own, keyed (label, uid -1), a uid
 * no process has. An insert first
 * plans its evictions (marking victims), and evicts only if the plan makes
 * room: a refused insert changes nothing.
 */
#include "extent_store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "extent_order.h"
#include "list.h"
#include "util.h"

#define NAMESPACE_BUCKETS 1024
#define LABEL_RECORD_UID 0xffffffffull

struct ExtentNamespace {
        uint64_t id;
        uint64_t resident[EXTENT_STORE_MAX_DEVICES];
        uint64_t planned; /* resident on the device being planned for, minus planned victims */
        ExtentStoreCounters counters;
        size_t members; /* a label's record: its namespaces holding extents */
        bool pinned;    /* an insert for it is under way: stays even if emptied */
        ExtentNamespace *next;
};

struct ExtentStore {
        ExtentReleaseFn release;
        ExtentClockFn clock;
        void *userdata;

        Extent **by_key;
        Extent **by_id;
        size_t n_buckets; /* power of two, shared by both tables */
        Extent *lru_head, *lru_tail;
        Extent *all_head, *all_tail;
        uint64_t next_id;

        uint64_t budget[EXTENT_STORE_MAX_DEVICES];
        uint64_t resident[EXTENT_STORE_MAX_DEVICES];
        uint64_t evictable[EXTENT_STORE_MAX_DEVICES]; /* bytes on the LRU list */
        ExtentStoreCounters counters;
        ExtentNamespace *namespaces[NAMESPACE_BUCKETS];
        size_t n_namespaces; /* records, label records included */
        size_t namespaces_per_label;
        ExtentNamespaceGoneFn namespace_gone;
        void *namespace_gone_userdata;
        unsigned share; /* percent of a device's budget one namespace may hold */
        ExtentOrder order;
};

static uint64_t mix(uint64_t x) {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdull;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ull;
        x ^= x >> 33;
        return x;
}

static size_t key_bucket(const ExtentStore *s, uint64_t ns, const SageExtentKey *k) {
        uint64_t h = mix(ns ^ mix(k->hash.low ^ mix(k->hash.high ^ mix(k->size ^ mix(k->device)))));
        return (size_t)(h & (s->n_buckets - 1));
}

static size_t id_bucket(const ExtentStore *s, uint64_t id) {
        return (size_t)(mix(id) & (s->n_buckets - 1));
}

static bool key_equal(const Extent *e, uint64_t ns, const SageExtentKey *k) {
        return e->namespace_id == ns && sage_hash_equal(e->key.hash, k->hash) && e->key.size == k->size &&
               e->key.device == k->device;
}

static uint64_t now(const ExtentStore *s) {
        return s->clock ? s->clock(s->userdata) : sage_now_ns();
}

int extent_store_new(ExtentStore **out, ExtentReleaseFn release, ExtentClockFn clock, void *userdata) {
        ExtentStore *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->n_buckets = 64;
        s->by_key = calloc(s->n_buckets, sizeof(Extent *));
        s->by_id = calloc(s->n_buckets, sizeof(Extent *));
        if (!s->by_key || !s->by_id) {
                free(s->by_key);
                free(s->by_id);
                free(s);
                return -ENOMEM;
        }
        s->release = release;
        s->clock = clock;
        s->userdata = userdata;
        s->next_id = 1;
        s->share = 100;
        s->namespaces_per_label = EXTENT_STORE_NAMESPACES_PER_LABEL;
        for (size_t i = 0; i < EXTENT_STORE_MAX_DEVICES; i++)
                s->budget[i] = EXTENT_STORE_UNLIMITED;
        *out = s;
        return 0;
}

static void lru_remove(ExtentStore *s, Extent *e) {
        SAGE_LIST_UNLINK_TAIL(s->lru_head, s->lru_tail, e, lru_prev, lru_next);
        e->lru_prev = e->lru_next = NULL;
        s->evictable[e->key.device] -= e->cost;
}

static void lru_append(ExtentStore *s, Extent *e) {
        SAGE_LIST_APPEND(s->lru_head, s->lru_tail, e, lru_prev, lru_next);
        s->evictable[e->key.device] += e->cost;
}

static void unlink_chain(Extent **slot, Extent *e, bool by_key) {
        for (; *slot; slot = by_key ? &(*slot)->next_by_key : &(*slot)->next_by_id)
                if (*slot == e) {
                        *slot = by_key ? e->next_by_key : e->next_by_id;
                        return;
                }
}

static size_t namespace_bucket(uint64_t ns) {
        return (size_t)(mix(ns) & (NAMESPACE_BUCKETS - 1));
}

static ExtentNamespace **namespace_slot(const ExtentStore *s, uint64_t ns) {
        ExtentNamespace **p = (ExtentNamespace **)&s->namespaces[namespace_bucket(ns)];

        while (*p && (*p)->id != ns)
                p = &(*p)->next;
        return p;
}

static ExtentNamespace *namespace_find(const ExtentStore *s, uint64_t ns) {
        return *namespace_slot(s, ns);
}

static uint64_t label_record(uint64_t ns) {
        return (ns & ~0xffffffffull) | LABEL_RECORD_UID;
}

static ExtentNamespace *namespace_new(ExtentStore *s, uint64_t ns) {
        ExtentNamespace **p = namespace_slot(s, ns);

        *p = calloc(1, sizeof(**p));
        if (!*p)
                return NULL;
        (*p)->id = ns;
        s->n_namespaces++;
        return *p;
}

static void namespace_delete(ExtentStore *s, ExtentNamespace *n) {
        ExtentNamespace **p = namespace_slot(s, n->id);

        *p = n->next;
        free(n);
        s->n_namespaces--;
}

/* May namespace `ns` (holding nothing yet) hold extents? Not beyond its label's cap. */
static bool namespace_admissible(const ExtentStore *s, uint64_t ns) {
        const ExtentNamespace *l;

        if (sage_namespace_label(ns) == 0 || namespace_find(s, ns))
                return true;
        l = namespace_find(s, label_record(ns));
        return !l || l->members < s->namespaces_per_label;
}

/* The record of `ns`, created (and counted in its label's) if it holds nothing yet. */
static ExtentNamespace *namespace_get(ExtentStore *s, uint64_t ns) {
        ExtentNamespace *n = namespace_find(s, ns), *l = NULL;

        if (n)
                return n;
        if (sage_namespace_label(ns) != 0) {
                l = namespace_find(s, label_record(ns));
                if (!l && !(l = namespace_new(s, label_record(ns))))
                        return NULL;
        }
        n = namespace_new(s, ns);
        if (!n) {
                if (l && l->members == 0)
                        namespace_delete(s, l);
                return NULL;
        }
        if (l)
                l->members++;
        return n;
}

/* A namespace that holds nothing (and no insert is under way for) goes, with its label's count. */
static void namespace_put(ExtentStore *s, ExtentNamespace *n) {
        uint64_t id = n->id;
        ExtentNamespace *l;

        if (n->counters.extents > 0 || n->pinned)
                return;
        if (sage_namespace_label(n->id) != 0 && (l = namespace_find(s, label_record(n->id)))) {
                if (--l->members == 0)
                        namespace_delete(s, l);
        }
        namespace_delete(s, n);
        if (s->namespace_gone)
                s->namespace_gone(s->namespace_gone_userdata, id);
}

/* Take `e` out of every index and give its payload back. */
static void destroy(ExtentStore *s, Extent *e) {
        unlink_chain(&s->by_key[key_bucket(s, e->namespace_id, &e->key)], e, true);
        unlink_chain(&s->by_id[id_bucket(s, e->id)], e, false);
        if (e->refs == 0)
                lru_remove(s, e);
        SAGE_LIST_UNLINK_TAIL(s->all_head, s->all_tail, e, all_prev, all_next);
        extent_order_remove(&s->order, e);
        s->resident[e->key.device] -= e->cost;
        s->counters.extents--;
        s->counters.bytes_resident -= e->cost;
        s->counters.refs -= e->refs;
        e->owner->resident[e->key.device] -= e->cost;
        e->owner->counters.extents--;
        e->owner->counters.bytes_resident -= e->cost;
        e->owner->counters.refs -= e->refs;
        namespace_put(s, e->owner);
        if (s->release)
                s->release(s->userdata, e);
        free(e->notes);
        free(e);
}

ExtentStore *extent_store_free(ExtentStore *s) {
        if (!s)
                return NULL;
        while (s->all_head)
                destroy(s, s->all_head);
        extent_order_clear(&s->order);
        SAGE_BUCKETS_FREE(s->namespaces, NAMESPACE_BUCKETS, next);
        free(s->by_key);
        free(s->by_id);
        free(s);
        return NULL;
}

int extent_store_set_budget(ExtentStore *s, uint32_t device, uint64_t bytes) {
        if (device >= EXTENT_STORE_MAX_DEVICES)
                return EXTENT_STORE_E_DEVICE;
        s->budget[device] = bytes;
        return 0;
}

uint64_t extent_store_get_budget(const ExtentStore *s, uint32_t device) {
        return device < EXTENT_STORE_MAX_DEVICES ? s->budget[device] : 0;
}

uint64_t extent_store_resident(const ExtentStore *s, uint32_t device) {
        return device < EXTENT_STORE_MAX_DEVICES ? s->resident[device] : 0;
}

Extent *extent_store_lookup(ExtentStore *s, uint64_t ns, const SageExtentKey *key) {
        for (Extent *e = s->by_key[key_bucket(s, ns, key)]; e; e = e->next_by_key)
                if (key_equal(e, ns, key))
                        return e;
        return NULL;
}

Extent *extent_store_get(ExtentStore *s, uint64_t id) {
        for (Extent *e = s->by_id[id_bucket(s, id)]; e; e = e->next_by_id)
                if (e->id == id)
                        return e;
        return NULL;
}

int extent_store_set_namespace_share(ExtentStore *s, unsigned percent) {
        if (percent < 1 || percent > 100)
                return -EINVAL;
        s->share = percent;
        return 0;
}

uint64_t extent_store_namespace_cap(const ExtentStore *s, uint32_t device) {
        uint64_t b = extent_store_get_budget(s, device);
        if (b == EXTENT_STORE_UNLIMITED || s->share == 100)
                return b;
        return b / 100 * s->share + b % 100 * s->share / 100; /* b * share / 100 without overflow */
}

static void doom(Extent *e, uint64_t *resident, uint64_t *mine) {
        e->doomed = true;
        *resident -= e->cost;
        e->owner->planned -= e->cost;
        if (mine)
                *mine -= e->cost;
}

/*
 * Plan room for `cost` bytes of namespace `mine` (NULL: none yet) on
 * `dev`: mark victims (doomed) and say whether the plan makes room. The
 * caller evicts the marked ones, or unmarks them (clear_plan).
 */
static bool plan(const ExtentStore *s, ExtentNamespace *mine, uint32_t dev, uint64_t cost) {
        uint64_t cap = extent_store_namespace_cap(s, dev), budget = s->budget[dev], resident = s->resident[dev];
        uint64_t held = mine ? mine->resident[dev] : 0;

        if (cost > cap || cost > budget)
                return false;
        /* Only owners of evictable extents can lose any: prime theirs, not every namespace's. */
        for (Extent *v = s->lru_head; v; v = v->lru_next)
                v->owner->planned = v->owner->resident[dev];
        /* Over the namespace's share: its own least recently used go first. */
        for (Extent *v = s->lru_head; v && held > cap - cost; v = v->lru_next)
                if (v->key.device == dev && v->owner == mine)
                        doom(v, &resident, &held);
        if (held > cap - cost)
                return false;
        /* Over the device's budget: own ones, or a namespace holding more than the publisher will. */
        for (Extent *v = s->lru_head; v && resident > budget - cost; v = v->lru_next) {
                if (v->key.device != dev || v->doomed)
                        continue;
                if (v->owner == mine)
                        doom(v, &resident, &held);
                else if (v->owner->planned >= held + cost + v->cost)
                        doom(v, &resident, NULL);
        }
        return resident <= budget - cost;
}

static void clear_plan(const ExtentStore *s) {
        for (Extent *v = s->lru_head; v; v = v->lru_next)
                v->doomed = false;
}

bool extent_store_can_fit(const ExtentStore *s, uint64_t ns, uint32_t device, uint64_t cost) {
        bool fits;
        if (device >= EXTENT_STORE_MAX_DEVICES)
                return false;
        fits = plan(s, namespace_find(s, ns), device, cost);
        clear_plan(s);
        return fits;
}

static int grow(ExtentStore *s) {
        size_t n = s->n_buckets * 2;
        Extent **by_key = calloc(n, sizeof(Extent *));
        Extent **by_id = calloc(n, sizeof(Extent *));

        if (!by_key || !by_id) {
                free(by_key);
                free(by_id);
                return -ENOMEM;
        }
        free(s->by_key);
        free(s->by_id);
        s->by_key = by_key;
        s->by_id = by_id;
        s->n_buckets = n;
        for (Extent *e = s->all_head; e; e = e->all_next) {
                size_t kb = key_bucket(s, e->namespace_id, &e->key), ib = id_bucket(s, e->id);
                e->next_by_key = by_key[kb];
                by_key[kb] = e;
                e->next_by_id = by_id[ib];
                by_id[ib] = e;
        }
        return 0;
}

int extent_store_insert(ExtentStore *s, uint64_t ns, const SageExtentKey *key, uint32_t flags, uint32_t publisher_pid,
                        const void *notes, uint32_t notes_len, void *payload, Extent **out) {
        uint32_t dev = key->device;
        _cleanup_free_ uint8_t *notes_copy = NULL;
        uint64_t cost = key->size + notes_len;
        ExtentNamespace *owner;
        Extent *e;

        if (dev >= EXTENT_STORE_MAX_DEVICES)
                return EXTENT_STORE_E_DEVICE;
        if (extent_store_lookup(s, ns, key))
                return EXTENT_STORE_E_EXISTS;
        if (notes_len > SAGE_PROTO_NOTES_MAX || (notes_len > 0 && !notes))
                return -EINVAL;
        if (!extent_store_can_fit(s, ns, dev, cost))
                return EXTENT_STORE_E_BUDGET;
        if (!namespace_admissible(s, ns))
                return EXTENT_STORE_E_NAMESPACES;
        if (s->counters.extents >= s->n_buckets && grow(s) < 0)
                return -ENOMEM;
        if (notes_len > 0) {
                notes_copy = malloc(notes_len);
                if (!notes_copy)
                        return -ENOMEM;
                memcpy(notes_copy, notes, notes_len);
        }
        e = calloc(1, sizeof(*e));
        if (!e || extent_order_reserve(&s->order, ns) < 0) {
                free(e);
                return -ENOMEM;
        }
        owner = namespace_get(s, ns);
        if (!owner) {
                free(e);
                return -ENOMEM;
        }

        /* Make room as planned (the plan was checked above, nothing has changed since).
         * The owner may lose its last extent here: pinned, its record stays. */
        owner->pinned = true;
        plan(s, owner, dev, cost);
        for (Extent *victim = s->lru_head; victim;) {
                Extent *next = victim->lru_next;
                if (victim->doomed)
                        extent_store_evict(s, victim);
                victim = next;
        }
        owner->pinned = false;

        e->id = s->next_id++;
        e->namespace_id = ns;
        e->key = *key;
        e->flags = flags;
        e->publisher_pid = publisher_pid;
        e->payload = payload;
        e->notes = SAGE_TAKE_PTR(notes_copy);
        e->notes_len = notes_len;
        e->cost = cost;
        e->owner = owner;
        e->last_use_ns = now(s);
        size_t kb = key_bucket(s, ns, key), ib = id_bucket(s, e->id);
        e->next_by_key = s->by_key[kb];
        s->by_key[kb] = e;
        e->next_by_id = s->by_id[ib];
        s->by_id[ib] = e;
        SAGE_LIST_APPEND(s->all_head, s->all_tail, e, all_prev, all_next);
        extent_order_add(&s->order, e);
        lru_append(s, e);
        s->resident[dev] += cost;
        s->counters.extents++;
        s->counters.bytes_resident += cost;
        owner->resident[dev] += cost;
        owner->counters.extents++;
        owner->counters.bytes_resident += cost;
        *out = e;
        return 0;
}

void extent_store_ref(ExtentStore *s, Extent *e) {
        if (e->refs++ == 0)
                lru_remove(s, e);
        s->counters.refs++;
        e->owner->counters.refs++;
        e->last_use_ns = now(s);
}

void extent_store_unref(ExtentStore *s, Extent *e) {
        if (e->refs == 0)
                return;
        s->counters.refs--;
        e->owner->counters.refs--;
        e->last_use_ns = now(s);
        if (--e->refs == 0)
                lru_append(s, e);
}

int extent_store_evict(ExtentStore *s, Extent *e) {
        if (e->refs > 0)
                return EXTENT_STORE_E_BUSY;
        s->counters.evictions++;
        s->counters.evicted_bytes += e->cost;
        e->owner->counters.evictions++;
        e->owner->counters.evicted_bytes += e->cost;
        destroy(s, e);
        return 0;
}

uint64_t extent_store_evict_unreferenced(ExtentStore *s, bool all_namespaces, uint64_t ns, uint64_t *bytes) {
        uint64_t count = 0, freed = 0;
        for (Extent *e = s->lru_head; e;) {
                Extent *next = e->lru_next;
                if (all_namespaces || e->namespace_id == ns) {
                        count++;
                        freed += e->cost;
                        extent_store_evict(s, e);
                }
                e = next;
        }
        if (bytes)
                *bytes = freed;
        return count;
}

Extent *extent_store_next(ExtentStore *s, uint64_t after_id) {
        return extent_order_next(&s->order, after_id);
}

size_t extent_store_page(ExtentStore *s, bool all_namespaces, uint64_t ns, uint64_t after_id, Extent **out, size_t max,
                         bool *more) {
        return extent_order_page(&s->order, all_namespaces, ns, after_id, out, max, more);
}

uint64_t extent_store_steps(const ExtentStore *s) {
        return s->order.steps;
}

void extent_store_counters(const ExtentStore *s, ExtentStoreCounters *out) {
        *out = s->counters;
}

bool extent_store_admits(const ExtentStore *s, uint64_t ns) {
        return namespace_admissible(s, ns);
}

int extent_store_set_namespaces_per_label(ExtentStore *s, size_t max) {
        if (max == 0)
                return -EINVAL;
        s->namespaces_per_label = max;
        return 0;
}

void extent_store_on_namespace_gone(ExtentStore *s, ExtentNamespaceGoneFn fn, void *userdata) {
        s->namespace_gone = fn;
        s->namespace_gone_userdata = userdata;
}

bool extent_store_holds(const ExtentStore *s, uint64_t ns) {
        return namespace_find(s, ns) != NULL;
}

size_t extent_store_namespace_records(const ExtentStore *s) {
        return s->n_namespaces;
}

void extent_store_namespace_counters(const ExtentStore *s, uint64_t ns, ExtentStoreCounters *out) {
        const ExtentNamespace *n = namespace_find(s, ns);
        *out = n ? n->counters : (ExtentStoreCounters){ 0 };
}

uint64_t extent_store_namespace_resident(const ExtentStore *s, uint64_t ns, uint32_t device) {
        const ExtentNamespace *n = namespace_find(s, ns);
        return n && device < EXTENT_STORE_MAX_DEVICES ? n->resident[device] : 0;
}
