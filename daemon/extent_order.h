/* The extent store's id-ordered indexes, for paged LIST: private to extent_store.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "extent_store.h"

typedef struct OrderNamespace OrderNamespace;

#define EXTENT_ORDER_NS_BUCKETS 1024

typedef struct ExtentOrder {
        Extent *all_root;                                    /* every extent, by id */
        OrderNamespace *ns_buckets[EXTENT_ORDER_NS_BUCKETS]; /* namespace id -> its extents */
        OrderNamespace *spare;                               /* reserved for the next add */
        uint64_t steps;                                      /* the cost meter (extent_store_steps) */
} ExtentOrder;

/* Make sure an extent of `namespace_id` can be added without allocating: 0 or -ENOMEM. */
int extent_order_reserve(ExtentOrder *order, uint64_t namespace_id);
/* Add `e` (id and namespace set, a larger id than any before; reserved). */
void extent_order_add(ExtentOrder *order, Extent *e);
void extent_order_remove(ExtentOrder *order, Extent *e);
/* Free the namespace records (the extents are the store's). */
void extent_order_clear(ExtentOrder *order);

Extent *extent_order_next(ExtentOrder *order, uint64_t after_id);
size_t extent_order_page(ExtentOrder *order, bool all_namespaces, uint64_t namespace_id, uint64_t after_id,
                         Extent **out, size_t max, bool *more);
