/*
 * The broker's half of the suspend gate's handshake (docs/suspend.md,
 * "Handshake"), with an instance whose libsage registered with flag GATE:
 *
 *   suspend: SUSPEND_PREPARE -> (libsage: gate closed, calls drained,
 *            contexts synchronized, extents unmapped and RELEASEd: each
 *            RELEASE of that process is pinned for the instance) ->
 *            SUSPEND_PREPARED ok -> the worker locks and checkpoints ->
 *            SUSPENDED (pins kept). A failed checkpoint (unlocked again)
 *            goes on as a resume's end does.
 *   resume:  the worker restores and unlocks -> INSTANCE_RESUMED ok ->
 *            (libsage: LOOKUPs, maps at the same addresses, opens its
 *            gate) -> INSTANCE_REMAPPED -> ACTIVE, pins dropped.
 *
 * Pins are references the broker holds for the instance, so that nothing
 * it will map again is evicted while it does not map it; they are taken
 * from the RELEASEs its process sends while preparing (exactly what it
 * unmapped, whichever connection mapped it), and dropped once it mapped
 * them again, or when it goes.
 *
 * Notices are trusted only from the instance's own registration connection
 * and only with the request id of the handshake in flight: anything else
 * (unasked, another connection or pid, a stale id) changes nothing. Every
 * wait has a deadline (a timerfd): a silent instance ends the operation,
 * ACTIVE (prepare) or FAILED (re-map: its memory may not be what it was).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>

#include "instance_ops.h"
#include "log.h"
#include "util.h"

typedef struct InstancePins {
        Extent **items;
        size_t n, cap;
} InstancePins;

int instance_gate_notify(Server *s, Instance *in, unsigned type, uint32_t status, uint32_t handshake) {
        Client *c = (Client *)in->owner;
        SageMessage m;
        int r;

        sage_proto_init(&m, type, handshake);
        if (type == SAGE_MSG_INSTANCE_RESUMED)
                m.instance_resumed.status = status;
        r = client_send(c, &m, NULL, 0);
        if (r == 1) { /* queued: the loop flushes it */
                struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
                epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
                return 0;
        }
        return r < 0 ? -EPIPE : 0;
}

void instance_gate_unpin(Server *s, Instance *in) {
        InstancePins *p = in->pins;

        if (!p)
                return;
        for (size_t i = 0; i < p->n; i++)
                extent_store_unref(s->store, p->items[i]);
        free(p->items);
        free(p);
        in->pins = NULL;
}

bool instance_gate_pin(Server *s, Instance *in, Extent *e) {
        InstancePins *p = in->pins;

        if (!p && !(p = in->pins = calloc(1, sizeof(*p))))
                return false;
        /* Once each: a process that looks up and releases again while preparing pins nothing more. */
        for (size_t i = 0; i < p->n; i++)
                if (p->items[i] == e)
                        return true;
        if (p->n == p->cap) {
                size_t cap = p->cap ? 2 * p->cap : 16;
                Extent **items = realloc(p->items, cap * sizeof(*items));
                if (!items)
                        return false;
                p->items = items;
                p->cap = cap;
        }
        extent_store_ref(s->store, e);
        p->items[p->n++] = e;
        return true;
}

size_t instance_gate_pins(const Instance *in, Extent ***items) {
        *items = in->pins ? in->pins->items : NULL;
        return in->pins ? in->pins->n : 0;
}

/* The handshake of `in` now waiting in `phase`, or NULL. */
static InstanceOp *op_waiting(Server *s, const Instance *in, int phase) {
        for (InstanceOp *op = s->ops; op; op = op->next)
                if (op->instance == in && op->phase == phase)
                        return op;
        return NULL;
}

void server_instances_pin_release(Server *s, Client *c, uint64_t id) {
        Instance *in = c->pid > 0 ? instances_find_pid(&s->instances, c->pid) : NULL;

        if (!in || !(in->flags & SAGE_INSTANCE_GATE) || (!op_waiting(s, in, OP_PREPARING) && !in->late_prepare))
                return;
        for (size_t i = 0; i < c->n_refs; i++)
                if (c->refs[i].extent->id == id) {
                        if (!instance_gate_pin(s, in, c->refs[i].extent))
                                sage_warn("instance pid %d: cannot pin extent %llu", (int)in->pid,
                                          (unsigned long long)id);
                        return;
                }
}

void instance_gate_arm(Server *s) {
        uint64_t first = UINT64_MAX, now = sage_now_ns();
        struct itimerspec t = { 0 };

        for (InstanceOp *op = s->ops; op; op = op->next)
                if (op->phase != OP_DRIVER && op->deadline_ns < first)
                        first = op->deadline_ns;
        if (first != UINT64_MAX) {
                uint64_t in = first > now ? first - now : 1;
                t.it_value.tv_sec = (time_t)(in / 1000000000ull);
                t.it_value.tv_nsec = (long)(in % 1000000000ull);
        }
        timerfd_settime(s->gate_timer_fd, 0, &t, NULL);
}

/* Ask libsage to map again (after a restore, or a checkpoint that failed and was unlocked). */
static void start_remap(Server *s, InstanceOp *op) {
        op->phase = OP_REMAPPING;
        op->handshake = ++s->next_handshake;
        op->deadline_ns = sage_now_ns() + INSTANCE_REMAP_TIMEOUT_NS;
        if (instance_gate_notify(s, op->instance, SAGE_MSG_INSTANCE_RESUMED, SAGE_GATE_OK, op->handshake) < 0) {
                op->remap_failed = true; /* its connection is going: the instance goes with it */
                instance_op_finish(s, op);
                return;
        }
        instance_gate_arm(s);
}

void instance_gate_driver_done(Server *s, InstanceOp *op) {
        if (op->op == INSTANCE_OP_SUSPEND) {
                if (op->code == 0)
                        instance_op_finish(s, op); /* SUSPENDED, pins kept */
                else
                        start_remap(s, op); /* unlocked again: it maps what it released */
                return;
        }
        if (op->code) {
                /* The driver keeps it stuck: its gate fails the calls waiting there. */
                instance_gate_notify(s, op->instance, SAGE_MSG_INSTANCE_RESUMED, SAGE_GATE_FAILED, ++s->next_handshake);
                instance_op_finish(s, op);
                return;
        }
        if (op->reply_type == SAGE_MSG_INSTANCE_RESUME_REPLY)
                instance_op_answer_early(s, op); /* its call waits for the gate, not for us */
        start_remap(s, op);
}

void instance_gate_tick(Server *s) {
        uint64_t now = sage_now_ns();

        for (InstanceOp *op = s->ops, *next; op; op = next) {
                next = op->next;
                if (op->phase == OP_DRIVER || now < op->deadline_ns)
                        continue;
                if (op->phase == OP_PREPARING) {
                        op->code = SAGE_ERR_BUSY;
                        snprintf(op->why, sizeof(op->why), "the instance did not answer SUSPEND_PREPARE in time");
                        /* It may still be synchronizing (a kernel longer than our wait), then park: what it
                         * releases stays pinned until it answered and mapped again (handle_late_prepared). */
                        if (op->instance)
                                op->instance->late_prepare = op->handshake;
                } else {
                        op->remap_failed = true;
                        if (!op->code) {
                                op->code = SAGE_ERR_INTERNAL;
                                snprintf(op->why, sizeof(op->why), "the instance did not map its extents again");
                        }
                }
                instance_op_finish(s, op);
        }
        instance_gate_arm(s);
}

/* The gate instance registered on `c`, or NULL (a notice from anyone else changes nothing). */
static Instance *gate_owner(Server *s, Client *c, Request *rq) {
        Instance *in = instances_find_owner(&s->instances, c);

        if (!in || !(in->flags & SAGE_INSTANCE_GATE)) {
                rq->why = "not an instance's connection with a gate";
                return NULL;
        }
        return in;
}

/* The end of a late handshake: libsage maps what it has, so the pins can go. */
static void end_late(Server *s, Instance *in) {
        in->late_prepare = in->late_remap = 0;
        if (in->state == SAGE_INSTANCE_ACTIVE)
                instance_gate_unpin(s, in);
}

/*
 * SUSPEND_PREPARED for a prepare the broker gave up on. Parked (ok), the
 * instance would wait with its extents unmapped for a checkpoint that never
 * comes, and an evicted extent could not come back: have it map again at
 * once (INSTANCE_RESUMED), keeping the pins until it says INSTANCE_REMAPPED.
 * Anything else: it opened its gate again with nothing released.
 */
static int handle_late_prepared(Server *s, Instance *in, const SageGateStatus *st) {
        uint32_t id = ++s->next_handshake;

        if (st->status != SAGE_GATE_OK) {
                end_late(s, in);
                return 0;
        }
        sage_info("instance pid %d prepared after the broker gave up; told to map again", (int)in->pid);
        if (instance_gate_notify(s, in, SAGE_MSG_INSTANCE_RESUMED, SAGE_GATE_OK, id) < 0)
                return 0; /* its connection is going: the pins go with the instance */
        in->late_remap = id;
        return 0;
}

int handle_suspend_prepared(Server *s, Client *c, Request *rq) {
        const SageGateStatus *st = &rq->msg->suspend_prepared;
        Instance *in = gate_owner(s, c, rq);
        InstanceOp *op = in ? op_waiting(s, in, OP_PREPARING) : NULL;

        if (!op && in && in->late_prepare && in->late_prepare == rq->msg->header.request_id && !in->late_remap)
                return handle_late_prepared(s, in, st);
        if (!op || op->handshake != rq->msg->header.request_id) {
                rq->why = "no SUSPEND_PREPARE of that id is waiting";
                return SAGE_ERR_NOT_FOUND;
        }
        if (st->status == SAGE_GATE_OK) {
                int r = instance_op_start_driver(s, op);
                if (r == 0)
                        return 0;
                /* libsage released its extents and waits: have it map them again. */
                op->code = r;
                snprintf(op->why, sizeof(op->why), "%s",
                         r == SAGE_ERR_NOT_FOUND ? "its process exited" : "no thread for the checkpoint");
                start_remap(s, op);
                instance_gate_arm(s);
                return 0;
        }
        /* Busy, refused or failed: libsage opened its gate again and maps what it had. */
        op->code = st->status == SAGE_GATE_BUSY      ? SAGE_ERR_BUSY
                   : st->status == SAGE_GATE_REFUSED ? SAGE_ERR_REFUSED
                                                     : SAGE_ERR_INTERNAL;
        snprintf(op->why, sizeof(op->why), "%s",
                 st->status == SAGE_GATE_BUSY      ? "calls stayed in flight; try again"
                 : st->status == SAGE_GATE_REFUSED ? sage_instance_why_name(st->why)
                                                   : "the instance could not release its extents");
        instance_op_finish(s, op);
        instance_gate_arm(s);
        return 0;
}

int handle_instance_remapped(Server *s, Client *c, Request *rq) {
        Instance *in = gate_owner(s, c, rq);
        InstanceOp *op = in ? op_waiting(s, in, OP_REMAPPING) : NULL;

        if (!op && in && in->late_remap && in->late_remap == rq->msg->header.request_id) {
                if (rq->msg->instance_remapped.status != SAGE_GATE_OK) {
                        sage_warn("instance pid %d could not map its extents again (its gate is broken)", (int)in->pid);
                        in->state = SAGE_INSTANCE_FAILED;
                }
                end_late(s, in);
                return 0;
        }
        if (!op || op->handshake != rq->msg->header.request_id) {
                rq->why = "no INSTANCE_RESUMED of that id is waiting";
                return SAGE_ERR_NOT_FOUND;
        }
        if (rq->msg->instance_remapped.status != SAGE_GATE_OK) {
                op->remap_failed = true;
                if (!op->code) {
                        op->code = SAGE_ERR_INTERNAL;
                        snprintf(op->why, sizeof(op->why), "the instance could not map its extents again");
                }
        }
        instance_op_finish(s, op);
        instance_gate_arm(s);
        return 0;
}

/*
 * INSTANCE_RESUME: the instance's own call found its gate closed. Only on
 * its registration connection. A suspended one is resumed through the
 * policy (now, or once there is room; the answer comes once restored and
 * unlocked, INSTANCE_RESUMED follows); an active one (a handshake that
 * timed out on our side) is told to map again at once.
 */
int handle_instance_resume(Server *s, Client *c, Request *rq) {
        Instance *in = instances_find_owner(&s->instances, c);
        int code;

        if (!in || !(in->flags & SAGE_INSTANCE_GATE)) {
                rq->why = "no instance with a gate on this connection";
                return SAGE_ERR_NOT_FOUND;
        }
        switch (in->state) {
        case SAGE_INSTANCE_SUSPENDED:
                code = server_policy_resume(s, in, c, rq->msg->header.request_id, SAGE_MSG_INSTANCE_RESUME_REPLY,
                                            &rq->why);
                if (code == 0)
                        rq->deferred = true;
                return code;
        case SAGE_INSTANCE_ACTIVE:
                if (instance_gate_notify(s, in, SAGE_MSG_INSTANCE_RESUMED, SAGE_GATE_OK, ++s->next_handshake)) {
                        rq->why = "cannot send INSTANCE_RESUMED";
                        return SAGE_ERR_INTERNAL;
                }
                if (in->late_prepare)
                        in->late_remap = s->next_handshake; /* its answer, the last one, ends the late prepare */
                sage_proto_init(&rq->reply, SAGE_MSG_INSTANCE_RESUME_REPLY, rq->msg->header.request_id);
                rq->reply.instance_resume_reply.state = in->state;
                return 0;
        case SAGE_INSTANCE_FAILED: rq->why = "its restore failed"; return SAGE_ERR_DRIVER;
        default: rq->why = "an operation runs; try again"; return SAGE_ERR_BUSY;
        }
}

/* INSTANCE_IDLE / INSTANCE_ACTIVE: the memory policy decides (an idle suspend when due, LRU order). */
int handle_instance_idle(Server *s, Client *c, Request *rq) {
        Instance *in = gate_owner(s, c, rq);

        if (!in)
                return SAGE_ERR_NOT_FOUND;
        server_instance_idle(s, in, true);
        return 0;
}

int handle_instance_active(Server *s, Client *c, Request *rq) {
        Instance *in = gate_owner(s, c, rq);

        if (!in)
                return SAGE_ERR_NOT_FOUND;
        server_instance_idle(s, in, false);
        return 0;
}

int handle_instance_flags(Server *s, Client *c, Request *rq) {
        Instance *in = gate_owner(s, c, rq);

        if (!in)
                return SAGE_ERR_NOT_FOUND;
        in->flags |= rq->msg->instance_flags & SAGE_INSTANCE_LATER;
        sage_info("instance pid %d: flags now %#x", (int)in->pid, in->flags);
        return 0;
}
