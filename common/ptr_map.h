/*
 * A map from a pointer (a driver entry point) to a small number, by open
 * addressing over the caller's array: no allocation and no lock of its own,
 * so it serves on the preload's early paths. The array's size is a power of
 * two and the caller keeps it at most half full (a _Static_assert next to
 * it), so a probe always ends at an empty slot.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct SagePtrMapSlot {
        const void *key; /* NULL: empty */
        uint32_t value;
} SagePtrMapSlot;

static inline size_t sage_ptr_map_start(const void *key, size_t n_slots) {
        uintptr_t h = (uintptr_t)key;
        h ^= h >> 17;
        h *= 0x9e3779b97f4a7c15ull;
        return (size_t)(h >> 40) & (n_slots - 1);
}

/* The value of `key`, or -1. */
static inline int64_t sage_ptr_map_find(const SagePtrMapSlot *slots, size_t n_slots, const void *key) {
        for (size_t i = sage_ptr_map_start(key, n_slots);; i = (i + 1) & (n_slots - 1)) {
                if (!slots[i].key)
                        return -1;
                if (slots[i].key == key)
                        return slots[i].value;
        }
}

/* A key already there keeps its value (an alias: two names of one function, the first keeps it). */
static inline void sage_ptr_map_insert(SagePtrMapSlot *slots, size_t n_slots, const void *key, uint32_t value) {
        for (size_t i = sage_ptr_map_start(key, n_slots);; i = (i + 1) & (n_slots - 1)) {
                if (!slots[i].key) {
                        slots[i] = (SagePtrMapSlot){ key, value };
                        return;
                }
                if (slots[i].key == key)
                        return;
        }
}
