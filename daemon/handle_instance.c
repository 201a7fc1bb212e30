/*
 * saged's instance requests: INSTANCE_REGISTER, INSTANCES, SUSPEND, RESUME
 * (docs/suspend.md).
 *
 * An instance is the registering connection's peer: its pid from
 * SO_PEERCRED and a pidfd (identity_peer_pidfd, as for containers) that
 * names that very process, never a pid the client claims. It lives as long
 * as its connection, and is forgotten earlier when its pidfd says the
 * process exited. Who may see, suspend or resume it: root on the main
 * socket, and its own namespace; everyone else gets NOT_FOUND, as for
 * extents.
 *
 * The driver's checkpoint and restore take hundreds of milliseconds to
 * seconds, so they never run on the event loop: each operation runs in a
 * thread of its own that touches nothing but the Gpu (whose checkpoint calls
 * are thread-safe) and its own InstanceOp, and signals an eventfd when done.
 * The loop then applies the result to the table and sends the deferred
 * reply; the rest of the server stays single-threaded. An instance has at
 * most one operation at a time (instances.c), resumes at most max_resumes.
 *
 * An instance whose libsage has the suspend gate (flag GATE) is suspended
 * and resumed through a handshake on its own connection (instance_gate.c):
 * SUSPEND_PREPARE first (it closes its gate, drains, unmaps and releases
 * the broker's extents, which the broker pins for it), the worker only once
 * it answered SUSPEND_PREPARED ok; after a restore (or a failed checkpoint,
 * unlocked again) INSTANCE_RESUMED, and the operation ends once it answered
 * INSTANCE_REMAPPED. Every path ends ACTIVE or FAILED.
 *
 * Never suspended (SAGE_ERR_REFUSED, the reason in the message and in
 * INSTANCES): a process whose connections hold broker extents (the driver
 * cannot restore imported memory), that exported or imported CUDA IPC
 * handles through the broker, that registered as keep-alive, multi-GPU,
 * MPS client or holding managed memory; and anyone while --suspend=off.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "instance_ops.h"
#include "instance_spool.h"
#include "log.h"
#include "pid_view.h"
#include "server_private.h"
#include "util.h"

/* epoll data of the operations' eventfd and of the handshakes' timer. */
static char tag_ops, tag_gate_timer;

static pthread_mutex_t ops_lock = PTHREAD_MUTEX_INITIALIZER; /* guards `done` of every op */

int server_instances_init(Server *s, const ServerConfig *config) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &tag_ops };

        s->suspend_off = config->suspend_off;
        s->instances.max_resumes = config->max_resumes ? config->max_resumes : SERVER_MAX_RESUMES;
        s->instances.max_per_namespace = config->max_instances_per_uid;
        s->prepare_timeout_ns =
                config->prepare_timeout_ms ? config->prepare_timeout_ms * 1000000ull : INSTANCE_PREPARE_TIMEOUT_NS;
        if (config->spool_dir && spool_open(&s->spool, config->spool_dir, config->spool_budget) < 0)
                return -EINVAL; /* said why */
        s->ops_event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->ops_event_fd < 0)
                return -errno;
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->ops_event_fd, &ev) < 0)
                return -errno;
        s->gate_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (s->gate_timer_fd < 0)
                return -errno;
        ev.data.ptr = &tag_gate_timer;
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->gate_timer_fd, &ev) < 0)
                return -errno;
        return server_policy_init(s, config);
}

void server_instances_free(Server *s) {
        while (s->ops) {
                InstanceOp *op = s->ops;
                /* Bounded: the lock has a timeout, checkpoint and restore end. */
                if (op->thread_started)
                        pthread_join(op->thread, NULL);
                if (op->spool) /* checkpointed meanwhile: its files stay for the next broker */
                        spool_plan_finish(s, op->instance, op->spool, op->instance && op->done && op->code == 0);
                s->ops = op->next;
                free(op);
        }
        server_policy_free(s);
        for (size_t i = 0; i < s->instances.n; i++) {
                instance_gate_unpin(s, s->instances.items[i]);
                spool_instance_drop(s->instances.items[i]); /* the files stay for the next broker */
        }
        instances_clear(&s->instances);
        s->spool = spool_close(s->spool);
        if (s->ops_event_fd >= 0)
                close(s->ops_event_fd);
        s->ops_event_fd = -1;
        if (s->gate_timer_fd >= 0)
                close(s->gate_timer_fd);
        s->gate_timer_fd = -1;
}

void server_instances_client_gone(Server *s, Client *c) {
        Instance *in = instances_find_owner(&s->instances, c);

        for (InstanceOp *op = s->ops; op; op = op->next) {
                if (op->requester == c)
                        op->requester = NULL;
                if (in && op->instance == in)
                        op->instance = NULL;
        }
        server_policy_client_gone(s, c, in);
        if (in) {
                if (in->state == SAGE_INSTANCE_SUSPENDED || in->state == SAGE_INSTANCE_FAILED)
                        sage_warn("instance pid %d went while %s", (int)in->pid, sage_instance_state_name(in->state));
                instance_gate_unpin(s, in);
                spool_instance_forget(s, in);
                instances_remove(&s->instances, in);
        }
        /* A handshake with an instance that went has nobody left to answer it: end it now. */
        for (InstanceOp *op = s->ops, *next; op; op = next) {
                next = op->next;
                if (op->instance || op->phase == OP_DRIVER)
                        continue;
                if (!op->code) {
                        op->code = SAGE_ERR_NOT_FOUND;
                        snprintf(op->why, sizeof(op->why), "the instance went");
                }
                instance_op_finish(s, op);
        }
}

/* A registration flagged CHECKPOINTED: a previous broker suspended it (handle_instance_register checked). */
static Instance *instance_adopt(Server *s, Instance *in) {
        if (in && instance_adopt_suspended(in)) {
                sage_info("instance pid %d adopted: checkpointed under a previous broker", (int)in->pid);
                spool_instance_adopted(s, in); /* the extents it parked, if they were spooled */
        }
        return in;
}

int handle_instance_register(Server *s, Client *c, Request *rq) {
        const SageMessage *req = rq->msg;
        int r, pidfd;

        if (c->pid <= 0) {
                rq->why = "the peer's pid is unknown";
                return SAGE_ERR_PERMISSION;
        }
        /* A broker restart: adopt only what the driver says is checkpointed (pid: SO_PEERCRED's). */
        if ((req->header.flags & SAGE_INSTANCE_CHECKPOINTED) && !gpu_process_checkpointed(s->gpu, c->pid)) {
                rq->why = "the driver does not say this process is checkpointed";
                return SAGE_ERR_REFUSED;
        }
        /* The connection may outlive its process (a child inherited it): that pid may be another's by now. */
        pidfd = identity_peer_pidfd(c->fd, &(struct ucred){ .pid = c->pid, .uid = c->uid, .gid = c->gid });
        if (pidfd < 0 || instance_exited(&(Instance){ .pidfd = pidfd })) {
                if (pidfd >= 0)
                        close(pidfd);
                rq->why = "the process that connected is gone";
                return SAGE_ERR_PERMISSION;
        }
        r = instances_add(&s->instances, c, c->pid, pidfd, c->namespace_id, req->instance_register.uuid,
                          req->header.flags, sage_now_ns(), NULL);
        if (r == 0)
                instances_find_owner(&s->instances, c)->idle_suspend_ms = req->instance_register.idle_suspend_ms;
        if (r == INSTANCES_E_EXISTS) {
                rq->why = "this process registered already";
                return SAGE_ERR_LIMIT;
        }
        if (r) {
                rq->why = r == INSTANCES_E_NAMESPACE ? "too many instances of this namespace (--max-instances-per-uid)"
                                                     : "too many instances";
                return SAGE_ERR_LIMIT;
        }
        sage_info("instance pid %d (namespace %llx) registered, flags %#x", (int)c->pid,
                  (unsigned long long)c->namespace_id, req->header.flags);
        sage_proto_init(&rq->reply, SAGE_MSG_INSTANCE_REGISTER_REPLY, req->header.request_id);
        server_policy_registered(s, instance_adopt(s, instances_find_owner(&s->instances, c)));
        return 0;
}

/* Why the broker must not suspend `in` now (SAGE_INSTANCE_WHY_*, 0: it may). */
static uint32_t why_not(Server *s, Instance *in) {
        uint32_t why = instance_why_flags(in);

        if (s->suspend_off)
                why |= SAGE_INSTANCE_WHY_SWITCH;
        why |= server_policy_why_not(s, in);
        if (!gpu_can_checkpoint(s->gpu))
                why |= SAGE_INSTANCE_WHY_NO_DRIVER;
        /* Every connection of that process: libsage shares on one, registers on another. */
        for (const Client *c = s->clients; c; c = c->next) {
                if (c->pid != in->pid)
                        continue;
                /* The gate unmaps and releases them before the checkpoint (pinned meanwhile). */
                if (c->n_refs > 0 && !(in->flags & SAGE_INSTANCE_GATE))
                        why |= SAGE_INSTANCE_WHY_EXTENTS;
                if (c->ipc.n_exports > 0 || c->ipc_imports > 0)
                        why |= SAGE_INSTANCE_WHY_IPC;
        }
        return why;
}

uint32_t server_instance_why_not(Server *s, Instance *in) {
        return why_not(s, in);
}

/* The instance whose pid is `pid` in `c`'s pid namespace (pid_view.h). */
static Instance *find_for_caller(Server *s, const Client *c, uint32_t pid) {
        PidView view;

        if (pid == 0 || pid > INT32_MAX)
                return NULL;
        pid_view_of(&view, c->pid);
        if (view.same)
                return instances_find_pid(&s->instances, (pid_t)pid);
        for (size_t i = 0; i < s->instances.n; i++)
                if (pid_view_translate(&view, s->instances.items[i]->pid) == (pid_t)pid)
                        return s->instances.items[i];
        return NULL;
}

/* The instance `pid` as `c` may see it; forgets one whose process exited. */
static Instance *visible_instance(Server *s, const Client *c, uint32_t pid) {
        Instance *in = find_for_caller(s, c, pid);

        if (!in || (!c->sees_all && in->namespace_id != c->namespace_id))
                return NULL;
        if (instance_exited(in) && in->state != SAGE_INSTANCE_SUSPENDING && in->state != SAGE_INSTANCE_RESUMING) {
                server_policy_client_gone(s, NULL, in);
                instance_gate_unpin(s, in);
                spool_instance_forget(s, in);
                instances_remove(&s->instances, in);
                return NULL;
        }
        return in;
}

/* Forget instances whose process exited (none with an operation running: its end finds them). */
static void forget_exited(Server *s) {
        for (size_t i = 0; i < s->instances.n;) {
                Instance *in = s->instances.items[i];
                if (in->state != SAGE_INSTANCE_SUSPENDING && in->state != SAGE_INSTANCE_RESUMING &&
                    instance_exited(in)) {
                        server_policy_client_gone(s, NULL, in);
                        instance_gate_unpin(s, in);
                        spool_instance_forget(s, in);
                        instances_remove(&s->instances, in); /* the last one moved here: look at i again */
                } else
                        i++;
        }
}

/* An instance and its pid as the caller sees it. */
typedef struct SeenInstance {
        pid_t pid;
        Instance *instance;
} SeenInstance;

static int compare_seen(const void *a, const void *b) {
        const SeenInstance *x = a, *y = b;
        return (x->pid > y->pid) - (x->pid < y->pid);
}

int handle_instances(Server *s, Client *c, Request *rq) {
        SageInstancesReply *out = &rq->reply.instances_reply;
        uint64_t now = sage_now_ns();
        SeenInstance *seen;
        size_t n_seen = 0;
        PidView view;

        sage_proto_init(&rq->reply, SAGE_MSG_INSTANCES_REPLY, rq->msg->header.request_id);
        forget_exited(s);
        /* Pages in the caller's pid order: its pid namespace may number them otherwise. */
        seen = calloc(s->instances.n ? s->instances.n : 1, sizeof(*seen));
        if (!seen) {
                rq->why = "out of memory";
                return SAGE_ERR_INTERNAL;
        }
        pid_view_of(&view, c->pid);
        for (size_t i = 0; i < s->instances.n; i++) {
                Instance *in = s->instances.items[i];
                pid_t pid = pid_view_translate(&view, in->pid);
                if (pid > 0 && (uint32_t)pid > rq->msg->instances &&
                    (c->sees_all || in->namespace_id == c->namespace_id))
                        seen[n_seen++] = (SeenInstance){ pid, in };
        }
        qsort(seen, n_seen, sizeof(*seen), compare_seen);
        for (size_t i = 0; i < n_seen; i++) {
                Instance *in = seen[i].instance;
                SageInstanceEntry *e;

                if (out->n_entries == SAGE_PROTO_INSTANCES_MAX) {
                        out->more = 1;
                        break;
                }
                e = &out->entries[out->n_entries++];
                e->pid = (uint32_t)seen[i].pid;
                e->state = in->state;
                e->namespace_id = in->namespace_id;
                memcpy(e->uuid, in->uuid, sizeof(e->uuid));
                e->flags = in->flags;
                e->why_not = why_not(s, in);
                e->suspend_ms = in->suspend_ms;
                e->resume_ms = in->resume_ms;
                e->gpu_bytes = server_instance_gpu_bytes(s, in);
                e->idle_ns = now - in->changed_ns;
                e->host_bytes = in->state == SAGE_INSTANCE_SUSPENDED ? in->host_bytes : 0;
                e->activity = in->idle && in->state == SAGE_INSTANCE_ACTIVE ? SAGE_INSTANCE_ACTIVITY_IDLE : 0;
        }
        free(seen);
        return 0;
}

static void *run_op(void *userdata) {
        InstanceOp *op = userdata;
        Server *s = op->server;
        uint64_t start = sage_now_ns(), one = 1, elapsed;
        int code;

        if (op->op == INSTANCE_OP_SUSPEND)
                code = gpu_checkpoint_process(s->gpu, op->pid, SERVER_SUSPEND_LOCK_MS, op->why, sizeof(op->why));
        else
                code = gpu_restore_process(s->gpu, op->pid, op->why, sizeof(op->why));
        elapsed = sage_now_ns() - start;
        if (code == 0 && op->spool)
                spool_plan_write(s->gpu, op->spool); /* checkpointed: what it parked, against a restart */
        pthread_mutex_lock(&ops_lock);
        op->code = code;
        op->elapsed_ns = elapsed;
        op->done = true;
        pthread_mutex_unlock(&ops_lock);
        if (write(s->ops_event_fd, &one, sizeof(one)) < 0) {
                /* The counter cannot overflow here (one write per op); nothing to do. */
        }
        return NULL;
}

/*
 * Start `which` on `in` in a worker thread; its reply goes to `requester`
 * (NULL: the broker's own decision, nobody waits). 0, or a SageProtoError
 * with *why.
 */
int instance_op_start_driver(Server *s, InstanceOp *op) {
        /* The driver knows only the pid: never once the instance's process is gone (another may have it). */
        if (!op->instance || instance_exited(op->instance))
                return SAGE_ERR_NOT_FOUND;
        op->phase = OP_DRIVER;
        if (op->op == INSTANCE_OP_SUSPEND && !op->spool)
                op->spool = spool_plan(s, op->instance);
        if (pthread_create(&op->thread, NULL, run_op, op) != 0)
                return SAGE_ERR_INTERNAL;
        op->thread_started = true;
        return 0;
}

/* A gate instance's suspend begins with the handshake, anything else with the worker. */
static int launch_op(Server *s, Instance *in, int which, Client *requester, uint32_t request_id, unsigned reply_type,
                     const char **why) {
        InstanceOp *op = calloc(1, sizeof(*op));
        int r;

        if (!op) {
                *why = "out of memory";
                return SAGE_ERR_INTERNAL;
        }
        if (instance_exited(in)) { /* idle or room suspends come here without visible_instance's check */
                free(op);
                *why = "its process exited";
                return SAGE_ERR_NOT_FOUND;
        }
        r = instance_begin(&s->instances, in, which, sage_now_ns());
        if (r) {
                free(op);
                *why = r == INSTANCES_E_BUSY          ? "an operation runs (or too many resumes at once); try again"
                       : which == INSTANCE_OP_SUSPEND ? "not active"
                                                      : "not suspended";
                return r == INSTANCES_E_BUSY ? SAGE_ERR_BUSY : SAGE_ERR_REFUSED;
        }
        *op = (InstanceOp){ .server = s,
                            .op = which,
                            .pid = in->pid,
                            .instance = in,
                            .requester = requester,
                            .request_id = request_id,
                            .reply_type = reply_type,
                            .start_ns = sage_now_ns() };
        if (which == INSTANCE_OP_SUSPEND && (in->flags & SAGE_INSTANCE_GATE)) {
                op->phase = OP_PREPARING;
                op->handshake = ++s->next_handshake;
                op->deadline_ns = sage_now_ns() + s->prepare_timeout_ns;
                if (instance_gate_notify(s, in, SAGE_MSG_SUSPEND_PREPARE, SAGE_GATE_OK, op->handshake)) {
                        instance_cancel(&s->instances, in, which); /* nothing was tried */
                        free(op);
                        *why = "the instance's connection does not take SUSPEND_PREPARE";
                        return SAGE_ERR_BUSY;
                }
        } else if (instance_op_start_driver(s, op)) {
                instance_cancel(&s->instances, in, which); /* nothing was tried */
                free(op);
                *why = "no thread for the operation";
                return SAGE_ERR_INTERNAL;
        }
        op->next = s->ops;
        s->ops = op;
        if (op->phase == OP_PREPARING)
                instance_gate_arm(s); /* its deadline, now that it is listed */
        return 0;
}

/* Why `in` must not be suspended now, or 0; takes its footprint for the policy. */
static int suspend_refused(Server *s, Instance *in, const char **why) {
        uint32_t bits = why_not(s, in);

        if (bits) {
                *why = sage_instance_why_name(bits);
                return SAGE_ERR_REFUSED;
        }
        if (in->late_prepare) {
                in->busy_until_ns = sage_now_ns() + INSTANCE_BUSY_BACKOFF_NS; /* not picked for room meanwhile */
                *why = "it has not yet answered a SUSPEND_PREPARE given up on (a long kernel?); try again";
                return SAGE_ERR_BUSY;
        }
        in->footprint = server_instance_gpu_bytes(s, in);
        if (in->footprint == SAGE_INSTANCE_BYTES_UNKNOWN)
                in->footprint = 0;
        return 0;
}

int server_instance_suspend(Server *s, Instance *in, int reason, const char **why) {
        int r = suspend_refused(s, in, why);

        (void)reason; /* the caller's (idle, room): for its own log */
        return r ? r : launch_op(s, in, INSTANCE_OP_SUSPEND, NULL, 0, 0, why);
}

int server_instance_resume(Server *s, Instance *in, const char **why) {
        return server_instance_resume_for(s, in, NULL, 0, SAGE_MSG_RESUME_REPLY, why);
}

int server_instance_resume_for(Server *s, Instance *in, Client *requester, uint32_t request_id, unsigned reply_type,
                               const char **why) {
        if (!gpu_can_checkpoint(s->gpu)) {
                *why = sage_instance_why_name(SAGE_INSTANCE_WHY_NO_DRIVER);
                return SAGE_ERR_REFUSED;
        }
        return launch_op(s, in, INSTANCE_OP_RESUME, requester, request_id, reply_type, why);
}

static int start_op(Server *s, Client *c, Request *rq, int which, uint32_t pid) {
        Instance *in = visible_instance(s, c, pid);
        int r;

        if (!in) {
                rq->why = "no such instance";
                return SAGE_ERR_NOT_FOUND;
        }
        if (which == INSTANCE_OP_SUSPEND) {
                r = suspend_refused(s, in, &rq->why);
                if (r == 0)
                        r = launch_op(s, in, which, c, rq->msg->header.request_id, SAGE_MSG_SUSPEND_REPLY, &rq->why);
        } else {
                /* The policy starts it now, queues it until there is room, or says why not. */
                r = server_policy_resume(s, in, c, rq->msg->header.request_id, SAGE_MSG_RESUME_REPLY, &rq->why);
        }
        if (r == 0)
                rq->deferred = true;
        return r;
}

int handle_suspend(Server *s, Client *c, Request *rq) {
        return start_op(s, c, rq, INSTANCE_OP_SUSPEND, rq->msg->suspend);
}

int handle_resume(Server *s, Client *c, Request *rq) {
        return start_op(s, c, rq, INSTANCE_OP_RESUME, rq->msg->resume);
}

/* Answer `op`'s requester (if any is left) with the outcome. */
static void answer_op(Server *s, InstanceOp *op, unsigned state) {
        SageMessage m;

        if (!op->requester)
                return;
        if (op->code)
                sage_proto_error(&m, op->request_id, op->code, "%s", op->why);
        else {
                unsigned type = op->reply_type                  ? op->reply_type
                                : op->op == INSTANCE_OP_SUSPEND ? SAGE_MSG_SUSPEND_REPLY
                                                                : SAGE_MSG_RESUME_REPLY;
                SageInstanceOpReply *reply = type == SAGE_MSG_SUSPEND_REPLY  ? &m.suspend_reply
                                             : type == SAGE_MSG_RESUME_REPLY ? &m.resume_reply
                                                                             : &m.instance_resume_reply;
                sage_proto_init(&m, type, op->request_id);
                reply->state = state;
                reply->elapsed_ms = (uint32_t)((op->elapsed_ns + 999999) / 1000000);
        }
        /* A requester that cannot take it is dropped by its next read (the loop sees EPOLLOUT). */
        if (client_send(op->requester, &m, NULL, 0) == 1) {
                struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = op->requester };
                epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, op->requester->fd, &ev);
        }
        op->requester = NULL;
}

void instance_op_answer_early(Server *s, InstanceOp *op) {
        answer_op(s, op, SAGE_INSTANCE_RESUMING);
}

/* Apply a finished operation to its instance, answer its requester, unlink and free it. */
void instance_op_finish(Server *s, InstanceOp *op) {
        unsigned state = SAGE_INSTANCE_ACTIVE;

        for (InstanceOp **p = &s->ops; *p; p = &(*p)->next)
                if (*p == op) {
                        *p = op->next;
                        break;
                }
        if (op->instance) {
                instance_finish(&s->instances, op->instance, op->op, op->code == 0, op->elapsed_ns, sage_now_ns());
                if (op->remap_failed)
                        op->instance->state = SAGE_INSTANCE_FAILED; /* its memory is not what it was */
                /* A prepare given up on keeps its pins: libsage may be parking now (instance_gate.c). */
                if (op->instance->state != SAGE_INSTANCE_SUSPENDED && !op->instance->late_prepare)
                        instance_gate_unpin(s, op->instance);
                if (op->spool)
                        spool_plan_finish(s, op->instance, op->spool, op->instance->state == SAGE_INSTANCE_SUSPENDED);
                if (op->instance->state != SAGE_INSTANCE_SUSPENDED)
                        spool_instance_forget(s, op->instance);
                state = op->instance->state;
        } else if (op->spool) /* forgotten meanwhile; a resume's slot went back with it (instances_remove) */
                spool_plan_finish(s, NULL, op->spool, false);
        if (op->code)
                sage_warn("instance pid %d: %s failed: %s%s", (int)op->pid,
                          op->op == INSTANCE_OP_SUSPEND ? "suspend" : "resume", op->why,
                          state == SAGE_INSTANCE_FAILED ? " (the process is stuck)" : "");
        else
                sage_info("instance pid %d %s in %llu ms", (int)op->pid,
                          op->op == INSTANCE_OP_SUSPEND ? "suspended" : "resumed",
                          (unsigned long long)(op->elapsed_ns / 1000000));
        answer_op(s, op, state);
        free(op);
        server_policy_changed(s); /* room made, or an idle deadline moved */
}

bool server_instances_event(Server *s, const void *tag) {
        uint64_t n;

        if (server_policy_event(s, tag))
                return true;
        if (tag == &tag_gate_timer) {
                if (read(s->gate_timer_fd, &n, sizeof(n)) < 0) {
                        /* EAGAIN: a spurious wake-up; look anyway. */
                }
                instance_gate_tick(s);
                return true;
        }
        if (tag != &tag_ops)
                return false;
        if (read(s->ops_event_fd, &n, sizeof(n)) < 0) {
                /* EAGAIN: nothing new; look anyway. */
        }
        for (InstanceOp *op = s->ops, *next; op; op = next) {
                bool done;

                next = op->next;
                if (!op->thread_started)
                        continue;
                pthread_mutex_lock(&ops_lock);
                done = op->done;
                pthread_mutex_unlock(&ops_lock);
                if (!done)
                        continue;
                pthread_join(op->thread, NULL);
                op->thread_started = false;
                op->done = false;
                /* A gate instance goes on with the handshake; the rest ends here. May free op. */
                if (op->instance && (op->instance->flags & SAGE_INSTANCE_GATE))
                        instance_gate_driver_done(s, op);
                else
                        instance_op_finish(s, op);
        }
        server_policy_changed(s);
        return true;
}
