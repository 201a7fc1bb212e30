/*
 * saged's other requests: HELLO (and its feature bits), PING, STATS, LABEL,
 * DEVICES (the ordinals clients must use, found by UUID), and the CUDA-IPC
 * emulation (IPC_EXPORT, IPC_IMPORT, IPC_REVOKE).
 *
 * CUDA-IPC registrations (ipc_registry.c) follow the extents' rule:
 * IPC_IMPORT works within the exporter's namespace only, IPC_REVOKE for the
 * exporting connection only, and both answer "not found" otherwise.
 * IPC_EXPORT holds only CUDA shareable handles (ipc_handle.c), never a
 * socket that would keep a connection from EOF. STATS answers a tenant about
 * its own namespace (tally.c, the store's namespace counters); root on the
 * main socket gets broker-wide figures.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "ipc_handle.h"
#include "log.h"
#include "server_private.h"
#include "util.h"

int handle_hello(Server *s, Client *c, Request *rq) {
        const SageMessage *req = rq->msg;
        SageMessage *reply = &rq->reply;

        sage_proto_init(reply, SAGE_MSG_HELLO_REPLY, req->header.request_id);
        reply->hello_reply.broker_version = SAGE_PROTO_VERSION;
        reply->hello_reply.n_devices = gpu_device_count(s->gpu);
        reply->hello_reply.namespace_id = c->namespace_id;
        reply->hello_reply.granularity = gpu_granularity(s->gpu);
        /* What both speak: the client never asks for more (unknown bits are dropped here). */
        reply->hello_reply.features = req->hello.features & SAGE_FEATURES_ALL;
        return 0;
}

/* Broker-wide figures for root on the main socket; a tenant's namespace's own for everyone else. */
static void fill_stats(Server *s, const Client *c, SageStats *st) {
        ExtentStoreCounters counters;
        Tally t = { s->hits, s->misses, s->publishes, s->rejected_budget, s->rejected_content };
        uint64_t budget = 0, clients = s->n_clients;

        if (c->sees_all)
                extent_store_counters(s->store, &counters);
        else {
                extent_store_namespace_counters(s->store, c->namespace_id, &counters);
                t = tally_of(&s->tallies, c->namespace_id);
                clients = conn_table_namespace_count(s->conns, c->uid, c->label);
        }
        for (uint32_t d = 0; d < gpu_device_count(s->gpu); d++) {
                uint64_t b;
                if (!gpu_serves(s->gpu, d))
                        continue;
                b = c->sees_all ? extent_store_get_budget(s->store, d) : extent_store_namespace_cap(s->store, d);
                budget = (b == EXTENT_STORE_UNLIMITED || budget + b < budget) ? UINT64_MAX : budget + b;
        }
        memset(st, 0, sizeof(*st));
        st->extents = counters.extents;
        st->bytes_resident = counters.bytes_resident;
        st->budget = budget;
        st->hits = t.hits;
        st->misses = t.misses;
        st->clients = clients;
        st->refs = counters.refs;
        st->publishes = t.publishes;
        st->evictions = counters.evictions;
        st->rejected_budget = t.rejected_budget;
        st->rejected_content = t.rejected_content;
        st->uptime_ns = sage_now_ns() - s->started_ns;
        /* What a tenant taking uid after uid could grow: it must come back down. */
        if (c->sees_all)
                st->records = tally_count(&s->tallies) + extent_store_namespace_records(s->store);
}

/* A label's name, to those who can see its namespaces: its own clients, and root on the main socket. */
int handle_label(Server *s, Client *c, Request *rq) {
        const SageMessage *req = rq->msg;
        SageMessage *reply = &rq->reply;
        const char **why = &rq->why;
        const char *name = label_table_name(&s->labels, req->label);

        if (!name || (!c->sees_all && req->label != c->label)) {
                *why = "no such label";
                return SAGE_ERR_NOT_FOUND;
        }
        sage_proto_init(reply, SAGE_MSG_LABEL_REPLY, req->header.request_id);
        snprintf(reply->label_reply.name, sizeof(reply->label_reply.name), "%s", name);
        return 0;
}

/* Takes the fd (sets *fd to -1) once it is registered. */
int handle_ipc_export(Server *s, Client *c, Request *rq) {
        const SageMessage *req = rq->msg;
        SageMessage *reply = &rq->reply;
        const char **why = &rq->why;
        int *fd = &rq->fds[0];
        IpcExport *e;
        int r;

        if (req->ipc_export.size == 0) {
                *why = "size must be nonzero";
                return SAGE_ERR_MALFORMED;
        }
        r = ipc_handle_check(s->gpu, *fd, &req->ipc_export, why);
        if (r)
                return r;
        r = ipc_registry_add(s->ipc, &c->ipc, c->namespace_id, *fd, &req->ipc_export, c->pid, &e);
        switch (r) {
        case 0: break;
        case IPC_REGISTRY_E_OWNER_LIMIT: *why = "too many IPC exports on this connection"; return SAGE_ERR_LIMIT;
        case IPC_REGISTRY_E_TOTAL_LIMIT: *why = "too many IPC exports in the broker"; return SAGE_ERR_LIMIT;
        default: *why = "cannot register the IPC export"; return SAGE_ERR_INTERNAL;
        }
        *fd = -1;
        sage_debug("IPC export by pid %d uid %u: %llu bytes on device %u (%zu held)", (int)c->pid, (unsigned)c->uid,
                   (unsigned long long)e->allocation.size, e->allocation.device, c->ipc.n_exports);
        sage_proto_init(reply, SAGE_MSG_IPC_EXPORT_REPLY, req->header.request_id);
        reply->ipc_export_reply = e->token;
        return 0;
}

int handle_ipc_import(Server *s, Client *c, Request *rq) {
        const IpcExport *e = ipc_registry_find(s->ipc, &rq->msg->ipc_import, c->namespace_id);

        if (!e) {
                rq->why = "no such IPC handle";
                return SAGE_ERR_NOT_FOUND;
        }
        /* The registration keeps its fd; the importer gets its own. */
        rq->reply_fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 3);
        if (rq->reply_fd < 0) {
                rq->why = "the broker is out of file descriptors";
                return SAGE_ERR_LIMIT;
        }
        sage_proto_init(&rq->reply, SAGE_MSG_IPC_IMPORT_REPLY, rq->msg->header.request_id);
        rq->reply.ipc_import_reply = e->allocation;
        c->ipc_imports++; /* the driver cannot restore imported memory: never suspended (handle_instance.c) */
        return 0;
}

/* The driver's table as the broker sees it: clients find their GPU in it by UUID (proto.h, "Devices"). */
int handle_devices(Server *s, Client *c, Request *rq) {
        SageDevicesReply *d = &rq->reply.devices_reply;

        sage_proto_init(&rq->reply, SAGE_MSG_DEVICES_REPLY, rq->msg->header.request_id);
        d->n_devices = gpu_device_count(s->gpu);
        if (d->n_devices > SAGE_PROTO_DEVICES_MAX)
                d->n_devices = SAGE_PROTO_DEVICES_MAX;
        for (uint32_t i = 0; i < d->n_devices; i++) {
                bool named = gpu_device_uuid(s->gpu, i, d->devices[i].uuid);
                d->devices[i].memory = gpu_total_memory(s->gpu, i);
                d->devices[i].flags = named && gpu_serves(s->gpu, i) ? SAGE_DEVICE_SERVED : 0;
        }
        return 0;
}

int handle_ping(Server *s, Client *c, Request *rq) {
        sage_proto_init(&rq->reply, SAGE_MSG_PONG, rq->msg->header.request_id);
        return 0;
}

int handle_stats(Server *s, Client *c, Request *rq) {
        sage_proto_init(&rq->reply, SAGE_MSG_STATS_REPLY, rq->msg->header.request_id);
        fill_stats(s, c, &rq->reply.stats_reply);
        return 0;
}

/* Only the exporting connection may revoke. */
int handle_ipc_revoke(Server *s, Client *c, Request *rq) {
        if (ipc_registry_revoke(s->ipc, &c->ipc, &rq->msg->ipc_revoke)) {
                rq->why = "no such IPC handle exported by this connection";
                return SAGE_ERR_NOT_FOUND;
        }
        sage_proto_init(&rq->reply, SAGE_MSG_IPC_REVOKE_REPLY, rq->msg->header.request_id);
        return 0;
}
