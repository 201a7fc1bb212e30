/*
 * Id-ordered indexes of the extent store, so a LIST page costs O(log N +
 * page) instead of a scan from the first extent per entry (issue 11.3:
 * 9,995 extents made every LIST take 100 ms, even for a caller who sees
 * none of them, and a few looping clients stalled the broker).
 *
 * Two search trees find where a page starts: one over every extent (root's
 * LIST on the main socket) and one per namespace (everybody else's: their
 * page never visits another namespace's extents). From there a page walks
 * a list in id order: the store's all-list, or the namespace's own list.
 * Ids only grow, so every insertion appends at the right end of each.
 *
 * The trees are treaps whose priorities are a hash of the id: clients
 * choose neither ids nor priorities, so the expected depth is O(log N)
 * whatever they do; insertion (at the maximum) and removal are a few
 * rotations along one path. Namespace records live in a chained hash table
 * and go with their last extent.
 */
#include "extent_order.h"

#include <errno.h>
#include <stdlib.h>

#include "list.h"

struct OrderNamespace {
        uint64_t id;
        Extent *root;        /* treap over ns_left/ns_right */
        Extent *head, *tail; /* ns_prev/ns_next, in id order */
        OrderNamespace *next_in_bucket;
};

static uint64_t priority(const Extent *e) {
        uint64_t x = e->id * 0x9e3779b97f4a7c15ull;
        x ^= x >> 31;
        x *= 0xbf58476d1ce4e5b9ull;
        return x ^ (x >> 29);
}

/* Each tree links through its own pair of fields. */
typedef enum {
        TREE_ALL,
        TREE_NS
} Tree;

static Extent **left(Extent *e, Tree t) {
        return t == TREE_ALL ? &e->all_left : &e->ns_left;
}

static Extent **right(Extent *e, Tree t) {
        return t == TREE_ALL ? &e->all_right : &e->ns_right;
}

/* `e` has a larger id than everything in the tree. */
static Extent *tree_append(Extent *root, Extent *e, Tree t) {
        if (!root)
                return e;
        if (priority(e) > priority(root)) {
                *left(e, t) = root;
                return e;
        }
        *right(root, t) = tree_append(*right(root, t), e, t);
        return root;
}

/* Every id in `a` is smaller than every id in `b`. */
static Extent *tree_merge(Extent *a, Extent *b, Tree t) {
        if (!a)
                return b;
        if (!b)
                return a;
        if (priority(a) > priority(b)) {
                *right(a, t) = tree_merge(*right(a, t), b, t);
                return a;
        }
        *left(b, t) = tree_merge(a, *left(b, t), t);
        return b;
}

static Extent *tree_remove(Extent *root, const Extent *e, Tree t) {
        if (!root)
                return NULL;
        if (root == e)
                return tree_merge(*left(root, t), *right(root, t), t);
        if (e->id < root->id)
                *left(root, t) = tree_remove(*left(root, t), e, t);
        else
                *right(root, t) = tree_remove(*right(root, t), e, t);
        return root;
}

/* The extent with the smallest id > after_id, or NULL. */
static Extent *tree_seek(ExtentOrder *o, Extent *root, uint64_t after_id, Tree t) {
        Extent *best = NULL;

        while (root) {
                o->steps++;
                if (root->id > after_id) {
                        best = root;
                        root = *left(root, t);
                } else
                        root = *right(root, t);
        }
        return best;
}

static OrderNamespace **ns_slot(ExtentOrder *o, uint64_t id) {
        uint64_t h = id * 0x9e3779b97f4a7c15ull;
        OrderNamespace **p = &o->ns_buckets[(h >> 40) % EXTENT_ORDER_NS_BUCKETS];

        while (*p && (*p)->id != id)
                p = &(*p)->next_in_bucket;
        return p;
}

/* A spare record, kept whether or not the namespace has one now: evictions
 * between reserve and add may take its last extent, and its record. */
int extent_order_reserve(ExtentOrder *o, uint64_t namespace_id) {
        if (o->spare)
                return 0;
        o->spare = calloc(1, sizeof(*o->spare));
        return o->spare ? 0 : -ENOMEM;
}

void extent_order_add(ExtentOrder *o, Extent *e) {
        OrderNamespace **p = ns_slot(o, e->namespace_id), *ns = *p;

        if (!ns) {
                ns = *p = o->spare;
                o->spare = NULL;
                ns->id = e->namespace_id;
        }

        e->all_left = e->all_right = e->ns_left = e->ns_right = e->ns_next = NULL;
        o->all_root = tree_append(o->all_root, e, TREE_ALL);
        ns->root = tree_append(ns->root, e, TREE_NS);
        SAGE_LIST_APPEND(ns->head, ns->tail, e, ns_prev, ns_next);
}

void extent_order_remove(ExtentOrder *o, Extent *e) {
        OrderNamespace **p = ns_slot(o, e->namespace_id), *ns = *p;

        o->all_root = tree_remove(o->all_root, e, TREE_ALL);
        if (!ns)
                return;
        ns->root = tree_remove(ns->root, e, TREE_NS);
        SAGE_LIST_UNLINK_TAIL(ns->head, ns->tail, e, ns_prev, ns_next);
        if (!ns->head) {
                *p = ns->next_in_bucket;
                free(ns);
        }
}

void extent_order_clear(ExtentOrder *o) {
        SAGE_BUCKETS_FREE(o->ns_buckets, EXTENT_ORDER_NS_BUCKETS, next_in_bucket);
        free(o->spare);
        o->spare = NULL;
        o->all_root = NULL;
}

Extent *extent_order_next(ExtentOrder *o, uint64_t after_id) {
        return tree_seek(o, o->all_root, after_id, TREE_ALL);
}

size_t extent_order_page(ExtentOrder *o, bool all_namespaces, uint64_t namespace_id, uint64_t after_id, Extent **out,
                         size_t max, bool *more) {
        OrderNamespace *ns = all_namespaces ? NULL : *ns_slot(o, namespace_id);
        Extent *e;
        size_t n = 0;

        *more = false;
        if (all_namespaces)
                e = tree_seek(o, o->all_root, after_id, TREE_ALL);
        else
                e = ns ? tree_seek(o, ns->root, after_id, TREE_NS) : NULL;
        for (; e; e = all_namespaces ? e->all_next : e->ns_next) {
                o->steps++;
                if (n == max) {
                        *more = true;
                        break;
                }
                out[n++] = e;
        }
        return n;
}
