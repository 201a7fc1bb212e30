/*
 * saged's extent requests: LOOKUP, PUBLISH (both carry the extent's notes),
 * RELEASE, LIST, EVICT.
 *
 * Authorisation lives here, next to the work: LOOKUP and PUBLISH act in the
 * caller's namespace only; RELEASE only on references the caller holds;
 * LIST and EVICT see the caller's namespace, or everything for root on the
 * unlabelled socket (root on a labelled socket is confined to its label:
 * that socket is a tenant's door). An extent of another namespace answers
 * exactly like a missing one. A published extent is the broker's own copy
 * (gpu_adopt), served only once server.c verified its bytes.
 */
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "server_private.h"
#include "util.h"

static int check_key(Server *s, const SageExtentKey *k, const char **why) {
        if (!s->gpu) {
                *why = "saged runs without a CUDA driver";
                return SAGE_ERR_NO_DRIVER;
        }
        if (!gpu_serves(s->gpu, k->device)) {
                *why = "device not served by this broker";
                return SAGE_ERR_BAD_DEVICE;
        }
        if (k->size == 0 || k->size % gpu_granularity(s->gpu) != 0) {
                *why = "size must be a nonzero multiple of the VMM granularity";
                return SAGE_ERR_SIZE_MISMATCH;
        }
        return 0;
}

/* LOOKUP: a hit answers the extent's fd and its notes. */
int handle_lookup(Server *s, Client *c, Request *rq) {
        const SageMessage *req = rq->msg;
        SageMessage *reply = &rq->reply;
        const char **why = &rq->why;
        int *fd = &rq->reply_fd;
        const SageExtentKey *k = &req->lookup;
        SageLookupReply *found = &reply->lookup_reply;
        Extent *e;
        int r = check_key(s, k, why);

        if (r)
                return r;
        sage_proto_init(reply, SAGE_MSG_LOOKUP_REPLY, req->header.request_id);
        e = extent_store_lookup(s->store, c->namespace_id, k);
        if (e && e->unverified)
                server_verify_now(s, &e);
        if (!e || e->unverified) { /* not verified yet: a miss, the client copies */
                s->misses++;
                server_tally(s, c->namespace_id)->misses++;
                return 0;
        }
        r = gpu_export(s->gpu, e->payload, fd);
        if (r) {
                *why = "export of the extent failed";
                return r;
        }
        r = client_ref(c, s->store, e);
        if (r) {
                close(*fd);
                *fd = -1;
                *why = "too many references held by this client";
                return r == CLIENT_E_LIMIT ? SAGE_ERR_LIMIT : SAGE_ERR_INTERNAL;
        }
        s->hits++;
        server_tally(s, c->namespace_id)->hits++;
        found->found = 1;
        found->extent_id = e->id;
        found->size = e->key.size;
        /* Encoded before this returns to the event loop: the extent (referenced
         * by this client now) outlives the pointer. */
        found->notes = (SageNotes){ .length = e->notes_len, .bytes = e->notes };
        return 0;
}

/* PUBLISH: the notes are kept only by the publish that creates the extent. */
int handle_publish(Server *s, Client *c, Request *rq) {
        const SageMessage *req = rq->msg;
        SageMessage *reply = &rq->reply;
        const char **why = &rq->why;
        int publish_fd = rq->fds[0];
        const SageExtentKey *k = &req->publish.key;
        const SageNotes *notes = &req->publish.notes;
        /* What the bytes must hash to: the key, or the content key a file-keyed publish states. */
        SageHash want = req->header.flags & SAGE_PUBLISH_CONTENT ? req->publish.content : k->hash;
        SagePublishReply *published = &reply->publish_reply;
        GpuExtent *x = NULL;
        Extent *e;
        int r = check_key(s, k, why);

        if (r)
                return r;
        /* Policy, for now: only content the publisher declares sealed (read-only
         * from here on) is accepted. Establishing read-only is libsage's job;
         * the broker never hands out a writable grant either way. */
        if (!(req->header.flags & SAGE_PUBLISH_SEALED)) {
                *why = "only sealed extents may be published";
                return SAGE_ERR_PERMISSION;
        }
        sage_proto_init(reply, SAGE_MSG_PUBLISH_REPLY, req->header.request_id);
        e = extent_store_lookup(s->store, c->namespace_id, k);
        if (e) {
                /* Sealed is immutable: the resident extent keeps its notes. */
                r = client_ref(c, s->store, e);
                if (r) {
                        *why = "too many references held by this client";
                        return SAGE_ERR_LIMIT;
                }
                published->extent_id = e->id;
                published->existed = 1;
                return 0;
        }
        if (!extent_store_can_fit(s->store, c->namespace_id, k->device, k->size + notes->length)) {
                s->rejected_budget++;
                server_tally(s, c->namespace_id)->rejected_budget++;
                *why = "the broker's memory budget (or this namespace's share of it) is exhausted";
                return SAGE_ERR_BUDGET;
        }
        if (!extent_store_admits(s->store, c->namespace_id)) {
                *why = "too many namespaces of this label hold extents";
                return SAGE_ERR_LIMIT;
        }
        if (s->n_verifying == s->cap_verifying) {
                size_t cap = s->cap_verifying ? 2 * s->cap_verifying : 64;
                uint64_t *grown = realloc(s->verifying, cap * sizeof(*grown));
                if (!grown) {
                        *why = "out of memory";
                        return SAGE_ERR_INTERNAL;
                }
                s->verifying = grown;
                s->cap_verifying = cap;
        }
        r = gpu_adopt(s->gpu, k->device, publish_fd, k->size, want, &x);
        if (r) {
                if (r == SAGE_ERR_BUDGET) {
                        s->rejected_budget++;
                        server_tally(s, c->namespace_id)->rejected_budget++;
                }
                *why = r == SAGE_ERR_SIZE_MISMATCH ? "the handle is not the announced size"
                       : r == SAGE_ERR_BUDGET      ? "no device memory for the broker's copy"
                                                   : "the driver refused the handle";
                return r;
        }
        r = extent_store_insert(s->store, c->namespace_id, k, req->header.flags, (uint32_t)c->pid, notes->bytes,
                                notes->length, x, &e);
        if (r) {
                gpu_release(s->gpu, x);
                if (r == EXTENT_STORE_E_BUDGET) {
                        s->rejected_budget++;
                        server_tally(s, c->namespace_id)->rejected_budget++;
                        *why = "the broker's memory budget is exhausted";
                        return SAGE_ERR_BUDGET;
                }
                if (r == EXTENT_STORE_E_NAMESPACES) {
                        *why = "too many namespaces of this label hold extents";
                        return SAGE_ERR_LIMIT;
                }
                *why = "cannot store the extent";
                return SAGE_ERR_INTERNAL;
        }
        e->unverified = true; /* served once verify_some checked it */
        s->verifying[s->n_verifying++] = e->id;
        r = client_ref(c, s->store, e);
        if (r) {
                *why = "too many references held by this client";
                return SAGE_ERR_LIMIT; /* the extent stays, unreferenced, evictable */
        }
        s->publishes++;
        server_tally(s, c->namespace_id)->publishes++;
        sage_info("extent %llu published by pid %d uid %u: %llu bytes on device %u, %u bytes of notes",
                  (unsigned long long)e->id, (int)c->pid, (unsigned)c->uid, (unsigned long long)k->size, k->device,
                  e->notes_len);
        published->extent_id = e->id;
        return 0;
}

static bool visible(const Client *c, const Extent *e) {
        return c->sees_all || e->namespace_id == c->namespace_id;
}

/* LIST. A page costs O(log N + page): only the caller's namespace is walked (all for root on main). */
int handle_list(Server *s, Client *c, Request *rq) {
        const SageMessage *req = rq->msg;
        SageMessage *reply = &rq->reply;
        uint64_t now = sage_now_ns();
        Extent *page[SAGE_PROTO_LIST_MAX];
        bool more;
        uint32_t n = (uint32_t)extent_store_page(s->store, c->sees_all, c->namespace_id, req->list.after_id, page,
                                                 SAGE_PROTO_LIST_MAX, &more);

        sage_proto_init(reply, SAGE_MSG_LIST_REPLY, req->header.request_id);
        reply->list_reply.more = more;
        for (uint32_t i = 0; i < n; i++) {
                const Extent *e = page[i];
                s->list[i] = (SageListEntry){
                        .id = e->id,
                        .namespace_id = e->namespace_id,
                        .hash = e->key.hash,
                        .size = e->key.size,
                        .device = e->key.device,
                        .refs = e->refs,
                        /* A host pid means nothing (or too much) in another pid namespace. */
                        .publisher_pid = c->label == 0 ? e->publisher_pid : 0,
                        .flags = e->flags | (e->unverified ? SAGE_LIST_UNVERIFIED : 0),
                        .idle_ns = e->refs || now < e->last_use_ns ? 0 : now - e->last_use_ns,
                };
        }
        reply->list_reply.n_entries = n;
        reply->list_reply.entries = s->list;
        return 0;
}

int handle_evict(Server *s, Client *c, Request *rq) {
        const SageMessage *req = rq->msg;
        SageMessage *reply = &rq->reply;
        const char **why = &rq->why;
        sage_proto_init(reply, SAGE_MSG_EVICT_REPLY, req->header.request_id);
        if (req->header.flags & SAGE_EVICT_ALL_UNREFERENCED) {
                reply->evict_reply.evicted = extent_store_evict_unreferenced(s->store, c->sees_all, c->namespace_id,
                                                                             &reply->evict_reply.bytes);
                return 0;
        }
        Extent *e = extent_store_get(s->store, req->evict.extent_id);
        if (!e || !visible(c, e)) {
                *why = "no such extent";
                return SAGE_ERR_NOT_FOUND;
        }
        uint64_t size = e->key.size;
        if (extent_store_evict(s->store, e) == EXTENT_STORE_E_BUSY) {
                *why = "the extent is referenced";
                return SAGE_ERR_BUSY;
        }
        reply->evict_reply.evicted = 1;
        reply->evict_reply.bytes = size;
        return 0;
}

/* RELEASE: only references the caller holds. */
int handle_release(Server *s, Client *c, Request *rq) {
        if (client_unref(c, s->store, rq->msg->release)) {
                rq->why = "no reference held on that extent";
                return SAGE_ERR_NOT_FOUND;
        }
        sage_proto_init(&rq->reply, SAGE_MSG_RELEASE_REPLY, rq->msg->header.request_id);
        return 0;
}
