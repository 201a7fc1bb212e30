/*
 * The broker as the node's GPU memory manager for instances
 * (docs/suspend.md, "Memory policy"): which instance to suspend when, and
 * whether a restore may start. Pure decisions over the instance table and
 * the figures the server measured (NVML's bytes per instance, the driver's
 * free memory, the cgroup's host memory), so every rule is unit tested
 * without a driver (tests/unit/test_instance_policy.c); the server
 * (handle_policy.c) measures, asks, and acts through the suspend/resume
 * sequences.
 *
 * - Idle: an instance idle (no call, nothing in flight: libsage's
 *   INSTANCE_IDLE, sent after that much quiet) for its idle_suspend_ms is
 *   suspended, unless it registered keep-alive; a refused or busy one is
 *   tried again one idle_suspend_ms later.
 * - Cap (saged --instance-memory): what ACTIVE, SUSPENDING and RESUMING
 *   instances hold on one GPU stays under the cap. Room is made by
 *   suspending idle instances, least recently used first, then (with
 *   --instance-evict any) active ones the same way.
 * - Restore: only into memory that is free (the driver's own figure) for
 *   the instance's footprint plus POLICY_RESTORE_MARGIN: the driver leaves
 *   a process stuck for good when its restore runs out of memory.
 * - Host memory: the checkpoint lands in the instance's host memory, charged
 *   to its cgroup; a suspend that would pass the cgroup's limit is refused.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "instances.h"

/* Bytes nobody could measure (no NVML, or NVML would not say). */
#define POLICY_BYTES_UNKNOWN UINT64_MAX
/* Free memory a restore needs beyond the instance's footprint: the driver's
 * own staging and the context's growth while it restores. */
#define POLICY_RESTORE_MARGIN (256ull << 20)
/* How long libsage waits without a call before INSTANCE_IDLE when SAGE_SUSPEND_IDLE is unset. */
#define POLICY_IDLE_REPORT_MS 1000u
/* Instances considered for room at once (victims per decision). */
#define POLICY_VICTIMS_MAX 64

typedef enum PolicyEvict {
        POLICY_EVICT_IDLE = 0, /* only instances libsage reported idle (default) */
        POLICY_EVICT_ANY = 1,  /* then any suspendable active one (its calls in flight make it busy) */
} PolicyEvict;

/* When `in` is due for its idle suspend (ns on sage_now_ns's clock), 0 if it is not. */
uint64_t instance_policy_idle_deadline(const Instance *in);
/* The earliest idle deadline of the table, 0 if none. */
uint64_t instance_policy_next_deadline(const InstanceTable *t);
/*
 * Bytes the instances on GPU `uuid` hold or are about to hold. bytes[i] is
 * NVML's figure for t->items[i] (POLICY_BYTES_UNKNOWN: not counted). A
 * suspended instance holds nothing; a resuming one its footprint at least.
 * *leaving: the part held by instances being suspended now (freed soon).
 */
uint64_t instance_policy_held(const InstanceTable *t, const uint64_t *bytes, const uint8_t uuid[16], uint64_t *leaving);
/*
 * Instances on `uuid` to suspend so that `need` more bytes fit under `cap`
 * once they and those already being suspended are gone: idle ones least
 * recently used first, then (POLICY_EVICT_ANY) active ones. suspendable[i]
 * says whether t->items[i] may be suspended now (why_not is 0 and nothing
 * runs on it); `exclude` is never chosen (the one making the request).
 * Returns how many it wrote to `out` (at most max); *enough says whether
 * that makes room.
 */
size_t instance_policy_victims(const InstanceTable *t, const uint64_t *bytes, const bool *suspendable,
                               const uint8_t uuid[16], const Instance *exclude, uint64_t cap, uint64_t need,
                               PolicyEvict evict, Instance **out, size_t max, bool *enough);
/*
 * The most the instances on one GPU may hold for a restore to start: the
 * cap (0: none), and what they hold plus the driver's free memory less
 * POLICY_RESTORE_MARGIN (free_bytes POLICY_BYTES_UNKNOWN: not checked).
 */
uint64_t instance_policy_limit(uint64_t cap, uint64_t held, uint64_t free_bytes);
/* May a restore of `footprint` bytes start now (instance_policy_limit's terms)? */
bool instance_policy_restore_fits(uint64_t cap, uint64_t held, uint64_t footprint, uint64_t free_bytes);
/* May a checkpoint of `footprint` bytes land in a cgroup with `room` bytes left (POLICY_BYTES_UNKNOWN: no limit)? */
bool instance_policy_host_fits(uint64_t room, uint64_t footprint);
/* --instance-memory: "8G" or "40%" of `total`. 0 and *bytes, or -EINVAL. */
int instance_policy_parse_cap(const char *text, uint64_t total, uint64_t *bytes);
