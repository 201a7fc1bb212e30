/*
 * The memory policy's decisions (instance_policy.h). Linear over the table:
 * it is bounded (INSTANCES_MAX) and decisions are taken per registration,
 * resume or idle deadline, never per driver call.
 */
#include "instance_policy.h"

#include <errno.h>
#include <string.h>

#include "options.h"

uint64_t instance_policy_idle_deadline(const Instance *in) {
        uint64_t due;

        if (!in->idle || in->idle_suspend_ms == 0 || in->state != SAGE_INSTANCE_ACTIVE ||
            (in->flags & SAGE_INSTANCE_KEEP_ALIVE))
                return 0;
        due = in->idle_since_ns + (uint64_t)in->idle_suspend_ms * 1000000ull;
        /* A suspend that failed waits out its back-off: a short idle period must not make it a spin. */
        return due > in->busy_until_ns ? due : in->busy_until_ns;
}

uint64_t instance_policy_next_deadline(const InstanceTable *t) {
        uint64_t next = 0;

        for (size_t i = 0; i < t->n; i++) {
                uint64_t d = instance_policy_idle_deadline(t->items[i]);
                if (d && (!next || d < next))
                        next = d;
        }
        return next;
}

static uint64_t known(uint64_t bytes) {
        return bytes == POLICY_BYTES_UNKNOWN ? 0 : bytes;
}

uint64_t instance_policy_held(const InstanceTable *t, const uint64_t *bytes, const uint8_t uuid[16],
                              uint64_t *leaving) {
        uint64_t held = 0, going = 0;

        for (size_t i = 0; i < t->n; i++) {
                const Instance *in = t->items[i];
                uint64_t b = known(bytes[i]);

                if (memcmp(in->uuid, uuid, sizeof(in->uuid)) != 0 || in->state == SAGE_INSTANCE_SUSPENDED)
                        continue;
                if (in->state == SAGE_INSTANCE_RESUMING && b < in->footprint)
                        b = in->footprint; /* still coming back */
                if (in->state == SAGE_INSTANCE_SUSPENDING)
                        going += b;
                held += b;
        }
        if (leaving)
                *leaving = going;
        return held;
}

/* Do `held + need` bytes pass `cap` by more than `freed`? (no overflow for cap UINT64_MAX) */
static bool over(uint64_t held, uint64_t need, uint64_t cap, uint64_t freed) {
        uint64_t want = held + need;
        return want > cap && want - cap > freed;
}

size_t instance_policy_victims(const InstanceTable *t, const uint64_t *bytes, const bool *suspendable,
                               const uint8_t uuid[16], const Instance *exclude, uint64_t cap, uint64_t need,
                               PolicyEvict evict, Instance **out, size_t max, bool *enough) {
        uint64_t leaving, held = instance_policy_held(t, bytes, uuid, &leaving), freed = leaving;
        size_t n = 0;

        /* Idle ones first (pass 0), then active ones (pass 1); least recently used first within each. */
        for (int pass = 0; pass < (evict == POLICY_EVICT_ANY ? 2 : 1); pass++) {
                while (n < max && over(held, need, cap, freed)) {
                        size_t best = t->n;
                        for (size_t i = 0; i < t->n; i++) {
                                const Instance *in = t->items[i];
                                bool taken = false;
                                if (in == exclude || !suspendable[i] || in->state != SAGE_INSTANCE_ACTIVE ||
                                    memcmp(in->uuid, uuid, sizeof(in->uuid)) != 0 || in->idle != (pass == 0) ||
                                    known(bytes[i]) == 0)
                                        continue;
                                for (size_t j = 0; j < n && !taken; j++)
                                        taken = out[j] == in;
                                if (!taken && (best == t->n || in->used_ns < t->items[best]->used_ns))
                                        best = i;
                        }
                        if (best == t->n)
                                break;
                        out[n++] = t->items[best];
                        freed += known(bytes[best]);
                }
        }
        *enough = !over(held, need, cap, freed);
        return n;
}

uint64_t instance_policy_limit(uint64_t cap, uint64_t held, uint64_t free_bytes) {
        uint64_t limit = cap ? cap : UINT64_MAX;

        if (free_bytes != POLICY_BYTES_UNKNOWN) {
                uint64_t room = free_bytes > POLICY_RESTORE_MARGIN ? free_bytes - POLICY_RESTORE_MARGIN : 0;
                if (held + room < limit)
                        limit = held + room;
        }
        return limit;
}

bool instance_policy_restore_fits(uint64_t cap, uint64_t held, uint64_t footprint, uint64_t free_bytes) {
        return held + footprint <= instance_policy_limit(cap, held, free_bytes);
}

bool instance_policy_host_fits(uint64_t room, uint64_t footprint) {
        return room == POLICY_BYTES_UNKNOWN || footprint <= room;
}

int instance_policy_parse_cap(const char *text, uint64_t total, uint64_t *bytes) {
        size_t len = strlen(text);
        uint64_t v;

        if (len > 1 && text[len - 1] == '%') {
                char buf[8];
                if (len - 1 >= sizeof(buf))
                        return -EINVAL;
                memcpy(buf, text, len - 1);
                buf[len - 1] = 0;
                if (sage_parse_uint(buf, &v) < 0 || v < 1 || v > 100)
                        return -EINVAL;
                *bytes = total / 100 * v;
                return 0;
        }
        if (sage_parse_size(text, &v) < 0 || v == 0)
                return -EINVAL;
        *bytes = v;
        return 0;
}
