/*
 * Wire codec of the instance messages (INSTANCE_REGISTER, INSTANCES,
 * SUSPEND, RESUME: docs/suspend.md), apart from proto_codec.c for size, under
 * the same strict rules: exact lengths, known states and flag bits only.
 */
#include "proto_rw.h"

void put_instance_register(Writer *w, const SageMessage *m) {
        put_bytes(w, m->instance_register.uuid, sizeof(m->instance_register.uuid));
}

int get_instance_register(Reader *r, SageMessage *m, SageListEntry *list) {
        if (r->size - r->pos != sizeof(m->instance_register.uuid))
                return SAGE_ERR_MALFORMED;
        memcpy(m->instance_register.uuid, r->p + r->pos, sizeof(m->instance_register.uuid));
        r->pos += sizeof(m->instance_register.uuid);
        return 0;
}

/* Payloads of one u32 (INSTANCES' after_pid, SUSPEND's and RESUME's pid). */
VALUE_CODEC(, instances, put_u32_of, get_u32_into)
VALUE_CODEC(, suspend, put_u32_of, get_u32_into)
VALUE_CODEC(, resume, put_u32_of, get_u32_into)

#define OP_REPLY_CODEC(member)                                                               \
        void put_##member(Writer *w, const SageMessage *m) {                                 \
                put_u32(w, m->member.state);                                                 \
                put_u32(w, m->member.elapsed_ms);                                            \
        }                                                                                    \
        int get_##member(Reader *r, SageMessage *m, SageListEntry *list) {                   \
                m->member.state = get_u32(r);                                                \
                m->member.elapsed_ms = get_u32(r);                                           \
                return m->member.state >= _SAGE_INSTANCE_STATE_MAX ? SAGE_ERR_MALFORMED : 0; \
        }
OP_REPLY_CODEC(suspend_reply)
OP_REPLY_CODEC(resume_reply)

static void put_instance_entry(Writer *w, const SageInstanceEntry *e) {
        size_t start = w->pos;
        put_u32(w, e->pid);
        put_u32(w, e->state);
        put_u64(w, e->namespace_id);
        put_bytes(w, e->uuid, sizeof(e->uuid));
        put_u32(w, e->flags);
        put_u32(w, e->why_not);
        put_u32(w, e->suspend_ms);
        put_u32(w, e->resume_ms);
        put_u64(w, e->gpu_bytes);
        put_u64(w, e->idle_ns);
        put_u64(w, e->host_bytes);
        put_u32(w, e->activity);
        put_u32(w, 0);
        if (!w->failed && w->pos - start != SAGE_PROTO_INSTANCE_ENTRY_SIZE)
                w->failed = true;
}

static int get_instance_entry(Reader *r, SageInstanceEntry *e) {
        e->pid = get_u32(r);
        e->state = get_u32(r);
        e->namespace_id = get_u64(r);
        if (r->failed || r->size - r->pos < sizeof(e->uuid))
                return SAGE_ERR_MALFORMED;
        memcpy(e->uuid, r->p + r->pos, sizeof(e->uuid));
        r->pos += sizeof(e->uuid);
        e->flags = get_u32(r);
        e->why_not = get_u32(r);
        e->suspend_ms = get_u32(r);
        e->resume_ms = get_u32(r);
        e->gpu_bytes = get_u64(r);
        e->idle_ns = get_u64(r);
        e->host_bytes = get_u64(r);
        e->activity = get_u32(r);
        e->reserved = get_u32(r);
        if (e->state >= _SAGE_INSTANCE_STATE_MAX || (e->flags & ~SAGE_INSTANCE_FLAGS_ALL) ||
            (e->why_not & ~SAGE_INSTANCE_WHY_ALL) || (e->activity & ~SAGE_INSTANCE_ACTIVITY_ALL) || e->reserved)
                return SAGE_ERR_MALFORMED;
        return 0;
}

void put_instances_reply(Writer *w, const SageMessage *m) {
        if (m->instances_reply.n_entries > SAGE_PROTO_INSTANCES_MAX) {
                w->failed = true;
                return;
        }
        put_u32(w, m->instances_reply.n_entries);
        put_u8(w, m->instances_reply.more);
        for (uint32_t i = 0; i < m->instances_reply.n_entries; i++)
                put_instance_entry(w, &m->instances_reply.entries[i]);
}

int get_instances_reply(Reader *r, SageMessage *m, SageListEntry *list) {
        uint32_t n = get_u32(r);

        m->instances_reply.more = get_u8(r);
        if (r->failed)
                return 0;
        if (n > SAGE_PROTO_INSTANCES_MAX || m->instances_reply.more > 1 ||
            r->size - r->pos != (size_t)n * SAGE_PROTO_INSTANCE_ENTRY_SIZE)
                return SAGE_ERR_MALFORMED;
        m->instances_reply.n_entries = n;
        for (uint32_t i = 0; i < n; i++) {
                int code = get_instance_entry(r, &m->instances_reply.entries[i]);
                if (code)
                        return code;
        }
        return 0;
}
