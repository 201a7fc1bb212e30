/*
 * Per-connection state of saged.
 *
 * A client's identity is fixed at accept time from SO_PEERCRED; everything
 * it may see or touch follows from that namespace. References are counted
 * per (client, extent) so that a client that disconnects — politely or by
 * SIGKILL — gives all of them back in client_free(), and nothing leaks.
 * Replies are written non-blocking; a client that stops reading gets at most
 * one queued reply and no more requests served until it drains it, so it
 * can neither block the broker nor grow its memory.
 */
#include "client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

uint64_t client_namespace(uid_t uid, uint32_t label) {
        return (uint64_t)label << 32 | (uint32_t)uid;
}

int client_new(Client **out, int fd, const struct ucred *cred, uint32_t label) {
        Client *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->fd = fd;
        c->uid = cred->uid;
        c->gid = cred->gid;
        c->pid = cred->pid;
        c->label = label;
        c->sees_all = cred->uid == 0 && label == 0;
        c->namespace_id = client_namespace(cred->uid, label);
        *out = c;
        return 0;
}

static void close_pending(Client *c) {
        for (size_t i = 0; i < c->n_pending_fds; i++)
                close(c->pending_fds[i]);
        c->n_pending_fds = 0;
        free(c->pending);
        c->pending = NULL;
        c->pending_len = 0;
}

Client *client_free(Client *c, ExtentStore *store) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_refs; i++)
                while (c->refs[i].count-- > 0)
                        extent_store_unref(store, c->refs[i].extent);
        free(c->refs);
        close_pending(c);
        if (c->fd >= 0)
                close(c->fd);
        free(c);
        return NULL;
}

static ClientRef *find_ref(Client *c, uint64_t id, size_t *index) {
        for (size_t i = 0; i < c->n_refs; i++)
                if (c->refs[i].extent->id == id) {
                        if (index)
                                *index = i;
                        return &c->refs[i];
                }
        return NULL;
}

int client_ref(Client *c, ExtentStore *store, Extent *e) {
        ClientRef *r = find_ref(c, e->id, NULL);

        if (r) {
                if (r->count == UINT32_MAX)
                        return CLIENT_E_LIMIT;
                r->count++;
                extent_store_ref(store, e);
                return 0;
        }
        if (c->n_refs >= CLIENT_MAX_REFS)
                return CLIENT_E_LIMIT;
        if (c->n_refs == c->cap_refs) {
                size_t cap = c->cap_refs ? c->cap_refs * 2 : 8;
                ClientRef *n = realloc(c->refs, cap * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                c->refs = n;
                c->cap_refs = cap;
        }
        c->refs[c->n_refs++] = (ClientRef){ .extent = e, .count = 1 };
        extent_store_ref(store, e);
        return 0;
}

int client_unref(Client *c, ExtentStore *store, uint64_t id) {
        size_t i;
        ClientRef *r = find_ref(c, id, &i);

        if (!r)
                return CLIENT_E_NOT_HELD;
        extent_store_unref(store, r->extent);
        if (--r->count == 0)
                c->refs[i] = c->refs[--c->n_refs];
        return 0;
}

void client_forget(Client *c, ExtentStore *store, uint64_t id) {
        size_t i;
        ClientRef *r = find_ref(c, id, &i);

        if (!r)
                return;
        for (; r->count > 0; r->count--)
                extent_store_unref(store, r->extent);
        c->refs[i] = c->refs[--c->n_refs];
}

uint64_t client_ref_total(const Client *c) {
        uint64_t n = 0;
        for (size_t i = 0; i < c->n_refs; i++)
                n += c->refs[i].count;
        return n;
}

int client_send(Client *c, const SageMessage *m, int *fds, size_t n_fds) {
        uint8_t buf[SAGE_PROTO_MAX_MESSAGE];
        ssize_t len;
        int r;

        len = sage_proto_encode(m, buf, sizeof(buf));
        if (len < 0) {
                for (size_t i = 0; i < n_fds; i++)
                        close(fds[i]);
                return (int)len;
        }
        r = sage_proto_send(c->fd, buf, (size_t)len, fds, n_fds);
        if (r == -EAGAIN && !c->pending) {
                c->pending = malloc((size_t)len);
                if (c->pending) {
                        memcpy(c->pending, buf, (size_t)len);
                        c->pending_len = (size_t)len;
                        memcpy(c->pending_fds, fds, n_fds * sizeof(int));
                        c->n_pending_fds = n_fds;
                        return 1;
                }
                r = -ENOMEM;
        }
        for (size_t i = 0; i < n_fds; i++)
                close(fds[i]);
        return r;
}

int client_flush(Client *c) {
        int r;
        if (!c->pending)
                return 0;
        r = sage_proto_send(c->fd, c->pending, c->pending_len, c->pending_fds, c->n_pending_fds);
        if (r == -EAGAIN)
                return 1;
        close_pending(c);
        return r;
}
