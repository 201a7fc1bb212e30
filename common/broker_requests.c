/*
 * Broker client: one function per request, over broker_client.c's
 * transport. A broker that did not offer a feature at HELLO is never asked
 * for it: a content-keyed publish and the IPC, LABEL and instance requests
 * answer SAGE_ERR_UNKNOWN_TYPE without a round trip, and libsage does
 * without. Notes ride on every PUBLISH and LOOKUP (the _noted calls pass
 * them; the plain ones send none and drop what comes).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_client_private.h"

int sage_broker_ping(SageBroker *b) {
        SageMessage req, reply;
        sage_proto_init(&req, SAGE_MSG_PING, 0);
        return sage_broker_call(b, &req, NULL, 0, &reply, NULL, NULL);
}

/* What a LOOKUP's reply says of a key of `size` bytes: 0 (a hit), SAGE_ERR_NOT_FOUND, or -EPROTO (another size). */
static int lookup_answer(const SageMessage *reply, uint64_t size) {
        if (!reply->lookup_reply.found)
                return SAGE_ERR_NOT_FOUND;
        return reply->lookup_reply.size == size ? 0 : -EPROTO;
}

/* LOOKUP; the extent's notes go to `sink` (NULL: dropped). */
static int lookup(SageBroker *b, SageHash hash, uint64_t size, uint32_t device, uint64_t *extent_id, int *fd_out,
                  NotesSink *sink, SageBrokerMeanwhile meanwhile, void *ctx) {
        SageMessage req, reply;
        int fd = -1, r;

        *fd_out = -1;
        sage_proto_init(&req, SAGE_MSG_LOOKUP, 0);
        req.lookup = (SageExtentKey){ .hash = hash, .size = size, .device = device };
        r = sage_broker_call_noted_meanwhile(b, &req, &reply, &fd, sink, meanwhile, ctx);
        if (r != 0)
                return r;
        if ((r = lookup_answer(&reply, size)) != 0) {
                if (fd >= 0)
                        close(fd);
                return r;
        }
        if (sink && sink->length > sink->capacity) {
                /* No fd, and the reference the hit took goes back at once. */
                close(fd);
                sage_broker_release(b, reply.lookup_reply.extent_id);
                sage_broker_set_error(b, "notes of %u bytes do not fit in %u", (unsigned)sink->length,
                                      (unsigned)sink->capacity);
                return -ENOBUFS;
        }
        if (extent_id)
                *extent_id = reply.lookup_reply.extent_id;
        *fd_out = fd;
        return 0;
}

int sage_broker_lookup(SageBroker *b, SageHash hash, uint64_t size, uint32_t device, uint64_t *extent_id, int *fd_out) {
        return lookup(b, hash, size, device, extent_id, fd_out, NULL, NULL, NULL);
}

int sage_broker_lookup_noted(SageBroker *b, SageHash hash, uint64_t size, uint32_t device, uint64_t *extent_id,
                             int *fd_out, void *notes, uint32_t notes_cap, uint32_t *notes_len) {
        return sage_broker_lookup_noted_meanwhile(b, hash, size, device, extent_id, fd_out, notes, notes_cap, notes_len,
                                                  NULL, NULL);
}

int sage_broker_lookup_noted_meanwhile(SageBroker *b, SageHash hash, uint64_t size, uint32_t device,
                                       uint64_t *extent_id, int *fd_out, void *notes, uint32_t notes_cap,
                                       uint32_t *notes_len, SageBrokerMeanwhile meanwhile, void *ctx) {
        NotesSink sink = { .bytes = notes, .capacity = notes ? notes_cap : 0 };
        int r = lookup(b, hash, size, device, extent_id, fd_out, &sink, meanwhile, ctx);

        /* A hit's notes, or the size they need (-ENOBUFS). */
        *notes_len = r == 0 || r == -ENOBUFS ? sink.length : 0;
        return r;
}

struct SageBrokerLookups {
        SageBrokerWindow w;   /* w.b: the connection */
        SageBrokerLookup **l; /* the caller's entries, in the order sent */
        SageMessage *reqs, *replies;
        NotesSink *sinks;
        int *fds, *results;
        size_t n, cap;
};

static void lookups_free(SageBrokerLookups *p) {
        if (!p)
                return;
        free(p->l);
        free(p->reqs);
        free(p->replies);
        free(p->sinks);
        free(p->fds);
        free(p->results);
        free(p);
}

SageBrokerLookups *sage_broker_lookups_begin(SageBroker *b, size_t max) {
        size_t m = max ? max : 1;
        SageBrokerLookups *p = calloc(1, sizeof(*p));

        if (!p || !(p->l = calloc(m, sizeof(*p->l))) || !(p->reqs = calloc(m, sizeof(*p->reqs))) ||
            !(p->replies = calloc(m, sizeof(*p->replies))) || !(p->sinks = calloc(m, sizeof(*p->sinks))) ||
            !(p->fds = calloc(m, sizeof(*p->fds))) || !(p->results = calloc(m, sizeof(*p->results))) ||
            sage_broker_window_open(b, &p->w, p->reqs, p->replies, p->fds, p->results, p->sinks) != 0) {
                lookups_free(p);
                return NULL;
        }
        p->cap = m;
        return p;
}

void sage_broker_lookups_add(SageBrokerLookups *p, SageBrokerLookup *l) {
        size_t i = p->n;

        if (i == p->cap) { /* more than begin was told: not asked */
                *l = (SageBrokerLookup){
                        .hash = l->hash, .size = l->size, .device = l->device, .result = -ENOBUFS, .fd = -1
                };
                return;
        }
        p->l[p->n++] = l;
        sage_proto_init(&p->reqs[i], SAGE_MSG_LOOKUP, 0);
        p->reqs[i].lookup = (SageExtentKey){ .hash = l->hash, .size = l->size, .device = l->device };
        p->sinks[i] = (NotesSink){ .bytes = l->notes, .capacity = l->notes ? l->notes_cap : 0 };
        sage_broker_window_send(&p->w);
}

int sage_broker_lookups_end(SageBrokerLookups *p) {
        int r = sage_broker_window_close(&p->w);

        for (size_t i = 0; i < p->n; i++) {
                SageBrokerLookup *l = p->l[i];
                int ri = p->results[i], fd = p->fds[i];

                if (ri == 0)
                        ri = lookup_answer(&p->replies[i], l->size);
                /* Notes that do not fit: no hit (as lookup's); the reference it took goes back below. */
                if (ri == 0 && l->notes && p->sinks[i].length > p->sinks[i].capacity)
                        ri = -ENOBUFS;
                l->result = ri;
                l->extent_id = ri == 0 ? p->replies[i].lookup_reply.extent_id : 0;
                l->fd = ri == 0 ? fd : -1;
                l->notes_len = ri == 0 && l->notes ? p->sinks[i].length : 0;
                if (ri != 0 && fd >= 0)
                        close(fd);
        }
        for (size_t i = 0; i < p->n; i++)
                if (p->l[i]->result == -ENOBUFS && p->results[i] == 0)
                        sage_broker_release(p->w.b, p->replies[i].lookup_reply.extent_id);
        lookups_free(p);
        return r;
}

int sage_broker_lookup_many(SageBroker *b, SageBrokerLookup *l, size_t n) {
        SageBrokerLookups *p = sage_broker_lookups_begin(b, n);

        if (!p) {
                for (size_t i = 0; i < n; i++) {
                        l[i].result = -ENOMEM;
                        l[i].fd = -1;
                        l[i].extent_id = 0;
                        l[i].notes_len = 0;
                }
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                sage_broker_lookups_add(p, &l[i]);
        return sage_broker_lookups_end(p);
}

/* A publish may take the connection's timeout plus 1 ms per MiB copied, and at least 5 s. */
static int publish_timeout_ms(const SageBroker *b, uint64_t size) {
        uint64_t ms = (uint64_t)b->timeout_ms + (size >> 20);

        return ms < 5000 ? 5000 : ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* PUBLISH, with `content` (not NULL) as the content key of a file-identity `hash`. */
static int publish(SageBroker *b, SageHash hash, const SageHash *content, uint64_t size, uint32_t device,
                   uint32_t flags, int fd, const void *notes, uint32_t notes_len, uint64_t *extent_id, int *existed) {
        SageMessage req, reply;
        int r;

        /* The broker would refuse these too (MALFORMED), without saying why. */
        if (notes_len > SAGE_PROTO_NOTES_MAX) {
                sage_broker_set_error(b, "notes of %u bytes exceed the %u allowed", (unsigned)notes_len,
                                      (unsigned)SAGE_PROTO_NOTES_MAX);
                return SAGE_ERR_MALFORMED;
        }
        if (notes_len > 0 && !notes) {
                sage_broker_set_error(b, "notes of %u bytes given without their bytes", (unsigned)notes_len);
                return SAGE_ERR_MALFORMED;
        }
        if (content && !(b->hello.features & SAGE_FEATURE_CONTENT)) {
                sage_broker_set_error(b, "the broker does not verify by content key");
                return SAGE_ERR_UNKNOWN_TYPE;
        }
        sage_proto_init(&req, SAGE_MSG_PUBLISH, 0);
        req.header.flags = flags;
        req.publish.key = (SageExtentKey){ .hash = hash, .size = size, .device = device };
        req.publish.notes = (SageNotes){ .length = notes_len, .bytes = notes };
        if (content) {
                req.header.flags |= SAGE_PUBLISH_CONTENT;
                req.publish.content = *content;
        }
        /* The broker copies the extent before it answers (its own copy, verified later): under a loaded
         * node that outlasts the connection's short timeout for lookups, and a publish given up on is
         * lost for the whole process (the broker counts as gone). */
        r = sage_broker_call_timeout(b, &req, &fd, 1, &reply, publish_timeout_ms(b, size));
        if (r != 0)
                return r;
        if (extent_id)
                *extent_id = reply.publish_reply.extent_id;
        if (existed)
                *existed = reply.publish_reply.existed;
        return 0;
}

int sage_broker_publish(SageBroker *b, SageHash hash, uint64_t size, uint32_t device, uint32_t flags, int fd,
                        uint64_t *extent_id, int *existed) {
        return publish(b, hash, NULL, size, device, flags, fd, NULL, 0, extent_id, existed);
}

int sage_broker_publish_noted(SageBroker *b, SageHash hash, uint64_t size, uint32_t device, uint32_t flags, int fd,
                              const void *notes, uint32_t notes_len, uint64_t *extent_id, int *existed) {
        return publish(b, hash, NULL, size, device, flags, fd, notes, notes_len, extent_id, existed);
}

int sage_broker_publish_content(SageBroker *b, SageHash key, SageHash content, uint64_t size, uint32_t device,
                                uint32_t flags, int fd, const void *notes, uint32_t notes_len, uint64_t *extent_id,
                                int *existed) {
        return publish(b, key, &content, size, device, flags, fd, notes, notes_len, extent_id, existed);
}

int sage_broker_release(SageBroker *b, uint64_t extent_id) {
        SageMessage req, reply;
        sage_proto_init(&req, SAGE_MSG_RELEASE, 0);
        req.release = extent_id;
        return sage_broker_call(b, &req, NULL, 0, &reply, NULL, NULL);
}

int sage_broker_stats(SageBroker *b, SageStats *out) {
        SageMessage req, reply;
        int r;
        sage_proto_init(&req, SAGE_MSG_STATS, 0);
        r = sage_broker_call(b, &req, NULL, 0, &reply, NULL, NULL);
        if (r == 0)
                *out = reply.stats_reply;
        return r;
}

int sage_broker_list(SageBroker *b, uint64_t after_id, SageListEntry *entries, uint32_t *n_entries, int *more) {
        SageMessage req, reply;
        int r;
        sage_proto_init(&req, SAGE_MSG_LIST, 0);
        req.list.after_id = after_id;
        r = sage_broker_call(b, &req, NULL, 0, &reply, entries, NULL);
        if (r != 0)
                return r;
        *n_entries = reply.list_reply.n_entries;
        *more = reply.list_reply.more;
        return 0;
}

int sage_broker_evict(SageBroker *b, uint64_t extent_id, uint32_t flags, SageEvictReply *out) {
        SageMessage req, reply;
        int r;
        sage_proto_init(&req, SAGE_MSG_EVICT, 0);
        req.header.flags = flags;
        req.evict.extent_id = extent_id;
        r = sage_broker_call(b, &req, NULL, 0, &reply, NULL, NULL);
        if (r == 0 && out)
                *out = reply.evict_reply;
        return r;
}

int sage_broker_ipc_export(SageBroker *b, int fd, uint64_t size, uint32_t device, uint8_t token[SAGE_IPC_TOKEN_SIZE]) {
        SageMessage req, reply;
        int r;

        sage_proto_init(&req, SAGE_MSG_IPC_EXPORT, 0);
        req.ipc_export = (SageIpcAllocation){ .size = size, .device = device };
        r = sage_broker_call(b, &req, &fd, 1, &reply, NULL, NULL);
        if (r == 0)
                memcpy(token, reply.ipc_export_reply.bytes, SAGE_IPC_TOKEN_SIZE);
        return r;
}

int sage_broker_ipc_import(SageBroker *b, const uint8_t token[SAGE_IPC_TOKEN_SIZE], int *fd_out, uint64_t *size,
                           uint32_t *device) {
        SageMessage req, reply;
        int fd = -1, r;

        *fd_out = -1;
        sage_proto_init(&req, SAGE_MSG_IPC_IMPORT, 0);
        memcpy(req.ipc_import.bytes, token, SAGE_IPC_TOKEN_SIZE);
        r = sage_broker_call(b, &req, NULL, 0, &reply, NULL, &fd);
        if (r != 0)
                return r;
        if (size)
                *size = reply.ipc_import_reply.size;
        if (device)
                *device = reply.ipc_import_reply.device;
        *fd_out = fd;
        return 0;
}

int sage_broker_ipc_revoke(SageBroker *b, const uint8_t token[SAGE_IPC_TOKEN_SIZE]) {
        SageMessage req, reply;

        sage_proto_init(&req, SAGE_MSG_IPC_REVOKE, 0);
        memcpy(req.ipc_revoke.bytes, token, SAGE_IPC_TOKEN_SIZE);
        return sage_broker_call(b, &req, NULL, 0, &reply, NULL, NULL);
}

/* LABEL, INSTANCES, SUSPEND, RESUME: a request of one u32; its reply goes to *reply. */
static int call_u32(SageBroker *b, unsigned type, uint32_t value, SageMessage *reply) {
        SageMessage req;

        sage_proto_init(&req, type, 0);
        switch (type) {
        case SAGE_MSG_LABEL: req.label = value; break;
        case SAGE_MSG_INSTANCES: req.instances = value; break;
        case SAGE_MSG_SUSPEND: req.suspend = value; break;
        default: req.resume = value;
        }
        return sage_broker_call(b, &req, NULL, 0, reply, NULL, NULL);
}

int sage_broker_label_name(SageBroker *b, uint32_t label, char name[SAGE_PROTO_LABEL_MAX + 1]) {
        SageMessage reply;
        int r = call_u32(b, SAGE_MSG_LABEL, label, &reply);

        if (r == 0)
                memcpy(name, reply.label_reply.name, sizeof(reply.label_reply.name));
        return r;
}

int sage_broker_instance_register(SageBroker *b, const uint8_t uuid[16], uint32_t flags) {
        SageMessage req, reply;

        sage_proto_init(&req, SAGE_MSG_INSTANCE_REGISTER, 0);
        req.header.flags = flags;
        memcpy(req.instance_register.uuid, uuid, sizeof(req.instance_register.uuid));
        return sage_broker_call(b, &req, NULL, 0, &reply, NULL, NULL);
}

int sage_broker_instance_register_gate(SageBroker *b, const uint8_t uuid[16], uint32_t flags, uint32_t idle_suspend_ms,
                                       bool *gate) {
        SageMessage req, reply;

        *gate = (sage_broker_hello(b)->features & SAGE_FEATURE_SUSPEND_GATE) != 0;
        sage_proto_init(&req, SAGE_MSG_INSTANCE_REGISTER, 0);
        req.header.flags = flags | (*gate ? SAGE_INSTANCE_GATE : 0);
        req.instance_register.idle_suspend_ms = *gate ? idle_suspend_ms : 0;
        memcpy(req.instance_register.uuid, uuid, sizeof(req.instance_register.uuid));
        return sage_broker_call(b, &req, NULL, 0, &reply, NULL, NULL);
}

int sage_broker_instance_resume(SageBroker *b, int timeout_ms, SageInstanceOpReply *out) {
        SageMessage req, reply;
        int r;

        sage_proto_init(&req, SAGE_MSG_INSTANCE_RESUME, 0);
        r = sage_broker_call_timeout(b, &req, NULL, 0, &reply, timeout_ms);
        if (r == 0 && out)
                *out = reply.instance_resume_reply;
        return r;
}

int sage_broker_instances(SageBroker *b, uint32_t after_pid, SageInstancesReply *out) {
        SageMessage reply;
        int r = call_u32(b, SAGE_MSG_INSTANCES, after_pid, &reply);

        if (r == 0)
                *out = reply.instances_reply;
        return r;
}

static int instance_op(SageBroker *b, unsigned type, uint32_t pid, SageInstanceOpReply *out) {
        SageMessage reply;
        int r = call_u32(b, type, pid, &reply);

        if (r == 0 && out)
                *out = type == SAGE_MSG_SUSPEND ? reply.suspend_reply : reply.resume_reply;
        return r;
}

int sage_broker_suspend(SageBroker *b, uint32_t pid, SageInstanceOpReply *out) {
        return instance_op(b, SAGE_MSG_SUSPEND, pid, out);
}

int sage_broker_resume(SageBroker *b, uint32_t pid, SageInstanceOpReply *out) {
        return instance_op(b, SAGE_MSG_RESUME, pid, out);
}

/* The table cannot change while the broker runs (its driver's ordinals and
 * UUIDs are fixed): asked once. A caller that shares the connection between
 * threads asks under its own lock (libsage: the sharing lock). */
int sage_broker_devices(SageBroker *b, const SageDevicesReply **out) {
        SageMessage req, reply;
        int r;

        if (!b->devices) {
                sage_proto_init(&req, SAGE_MSG_DEVICES, 0);
                r = sage_broker_call(b, &req, NULL, 0, &reply, NULL, NULL);
                if (r != 0)
                        return r;
                b->devices = malloc(sizeof(*b->devices));
                if (!b->devices)
                        return -ENOMEM;
                *b->devices = reply.devices_reply;
        }
        *out = b->devices;
        return 0;
}

int sage_broker_device_of_uuid(SageBroker *b, const uint8_t uuid[16], uint32_t *device) {
        const SageDevicesReply *table;
        int r = sage_broker_devices(b, &table);

        if (r != 0)
                return r;
        for (uint32_t i = 0; i < table->n_devices; i++)
                if ((table->devices[i].flags & SAGE_DEVICE_SERVED) && !memcmp(table->devices[i].uuid, uuid, 16)) {
                        *device = i;
                        return 0;
                }
        return SAGE_ERR_NOT_FOUND;
}
