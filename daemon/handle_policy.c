/*
 * The broker as the node's GPU memory manager for instances: the server's
 * side of instance_policy.h. It measures (NVML's bytes per instance, the
 * driver's free memory, the instance's cgroup), asks the pure policy, and
 * acts only through server_instance_suspend/resume (handle_instance.c).
 *
 * Time: one timerfd in the event loop, armed for the earliest idle deadline
 * or queued resume's bound; nothing polls. Re-evaluated when an operation
 * ends (room was made), an instance registers, reports idle or active, or
 * goes.
 *
 * A resume that does not fit (over --instance-memory, or the driver's free
 * memory would not hold its footprint plus POLICY_RESTORE_MARGIN) makes
 * room by suspending others and waits in a queue until their checkpoints
 * are done, or until the resume cap lets it start: never longer than
 * POLICY_RESUME_WAIT_NS, and not at all when nothing can be suspended for
 * it (SAGE_ERR_BUSY at once, the instance stays suspended: a restore into
 * too little memory would leave it stuck for good).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "cgroup_memory.h"
#include "instance_policy.h"
#include "log.h"
#include "nvml.h"
#include "server_private.h"
#include "util.h"

/* While a cap is set, how often what instances hold is measured again. */
#define POLICY_CAP_TICK_NS (1000ull * 1000000ull)
/* How long a resume waits for room before it answers BUSY. */
#define POLICY_RESUME_WAIT_NS (30ull * 1000000000ull)

/* epoll data of the policy's timerfd. */
static char tag_timer;

typedef struct PendingResume {
        Instance *instance;
        Client *requester; /* NULL once gone */
        uint32_t request_id;
        unsigned reply_type; /* RESUME_REPLY (an operator's), INSTANCE_RESUME_REPLY (its own) */
        uint64_t deadline_ns;
        struct PendingResume *next;
} PendingResume;

int server_policy_init(Server *s, const ServerConfig *config) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &tag_timer };

        s->cgroup_root = config->cgroup_root ? config->cgroup_root : CGROUP_MEMORY_ROOT;
        s->instance_memory = config->instance_memory;
        s->instance_evict = config->instance_evict;
        nvml_open(&s->nvml, config->nvml_library); /* none: bytes unknown, nothing else changes */
        s->policy_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (s->policy_timer_fd < 0)
                return -errno;
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->policy_timer_fd, &ev) < 0)
                return -errno;
        return 0;
}

void server_policy_free(Server *s) {
        while (s->pending) {
                PendingResume *p = s->pending;
                s->pending = p->next;
                free(p);
        }
        s->nvml = nvml_close(s->nvml);
        if (s->policy_timer_fd >= 0)
                close(s->policy_timer_fd);
        s->policy_timer_fd = -1;
}

uint64_t server_instance_gpu_bytes(Server *s, const Instance *in) {
        uint64_t bytes;

        if (nvml_process_bytes(s->nvml, in->uuid, in->pid, &bytes) == 0)
                return bytes;
        /* The driver gives a checkpointed process's memory back entirely. */
        return in->state == SAGE_INSTANCE_SUSPENDED ? 0 : SAGE_INSTANCE_BYTES_UNKNOWN;
}

uint32_t server_policy_why_not(Server *s, Instance *in) {
        uint64_t bytes, room;

        if (in->state != SAGE_INSTANCE_ACTIVE)
                return 0; /* only a suspend lands in host memory */
        bytes = server_instance_gpu_bytes(s, in);
        if (bytes == SAGE_INSTANCE_BYTES_UNKNOWN || cgroup_memory_room(s->cgroup_root, in->pid, &room) < 0)
                return 0;
        return instance_policy_host_fits(room, bytes) ? 0 : SAGE_INSTANCE_WHY_HOST_MEMORY;
}

static void send_error(Server *s, Client *c, uint32_t request_id, int code, const char *why) {
        SageMessage m;

        if (!c)
                return;
        sage_proto_error(&m, request_id, code, "%s", why);
        /* A requester that cannot take it is dropped by its next read (the loop sees EPOLLOUT). */
        if (client_send(c, &m, NULL, 0) == 1) {
                struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
                epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
        }
}

/* May the broker suspend `in` for room now? (an operation runs only in SUSPENDING/RESUMING) */
static bool suspendable(Server *s, Instance *in, uint64_t now) {
        return in->state == SAGE_INSTANCE_ACTIVE && now >= in->busy_until_ns && server_instance_why_not(s, in) == 0;
}

/*
 * Suspend instances on `uuid` until `need` more bytes fit under `limit`
 * (see instance_policy_victims). *leaving: bytes already on their way out.
 * Returns how many suspends it started.
 */
static unsigned make_room(Server *s, const uint8_t uuid[16], const Instance *exclude, uint64_t limit, uint64_t need,
                          const uint64_t *bytes, bool *enough) {
        size_t n = s->instances.n;
        bool *ok = calloc(n ? n : 1, sizeof(*ok));
        Instance *victims[POLICY_VICTIMS_MAX];
        unsigned started = 0;
        uint64_t now = sage_now_ns();
        size_t k;

        *enough = false;
        if (!ok)
                return 0;
        for (size_t i = 0; i < n; i++)
                ok[i] = memcmp(s->instances.items[i]->uuid, uuid, 16) == 0 &&
                        suspendable(s, s->instances.items[i], now);
        k = instance_policy_victims(&s->instances, bytes, ok, uuid, exclude, limit, need, s->instance_evict, victims,
                                    POLICY_VICTIMS_MAX, enough);
        free(ok);
        for (size_t i = 0; i < k; i++) {
                const char *why = NULL;
                if (server_instance_suspend(s, victims[i], SERVER_SUSPEND_ROOM, &why) == 0) {
                        sage_info("instance pid %d: suspending, for room", (int)victims[i]->pid);
                        started++;
                } else
                        sage_debug("instance pid %d not suspended for room: %s", (int)victims[i]->pid, why);
        }
        return started;
}

/* NVML's bytes for every instance, in table order (NULL: out of memory). */
static uint64_t *measure(Server *s) {
        uint64_t *bytes = calloc(s->instances.n ? s->instances.n : 1, sizeof(*bytes));

        for (size_t i = 0; bytes && i < s->instances.n; i++)
                bytes[i] = server_instance_gpu_bytes(s, s->instances.items[i]);
        return bytes;
}

/* Start `in`'s restore if it fits, else make room. 0: started; 1: wait; else a SageProtoError and *why. */
static int admit(Server *s, Instance *in, Client *requester, uint32_t request_id, unsigned reply_type,
                 const char **why) {
        uint64_t *bytes, leaving, held, limit;
        unsigned started = 0;
        bool enough;
        int r;

        if (in->state != SAGE_INSTANCE_SUSPENDED || !gpu_can_checkpoint(s->gpu))
                return server_instance_resume_for(s, in, requester, request_id, reply_type, why); /* says why not */
        bytes = measure(s);
        if (!bytes) {
                *why = "out of memory";
                return SAGE_ERR_INTERNAL;
        }
        held = instance_policy_held(&s->instances, bytes, in->uuid, &leaving);
        limit = instance_policy_limit(s->instance_memory, held, gpu_free_memory(s->gpu, in->uuid));
        if (held + in->footprint <= limit) {
                free(bytes);
                r = server_instance_resume_for(s, in, requester, request_id, reply_type, why);
                /* Over the cap of resumes at once: its turn comes when one ends. */
                return r == SAGE_ERR_BUSY && s->instances.resuming > 0 ? 1 : r;
        }
        started = make_room(s, in->uuid, in, limit, in->footprint, bytes, &enough);
        free(bytes);
        if (started || leaving)
                return 1;
        *why = s->instance_memory && held + in->footprint > s->instance_memory
                       ? "no room under --instance-memory, and nothing to suspend for it; try again"
                       : "not enough free GPU memory for its restore, and nothing to suspend for it; try again";
        return SAGE_ERR_BUSY;
}

int server_policy_resume(Server *s, Instance *in, Client *requester, uint32_t request_id, unsigned reply_type,
                         const char **why) {
        PendingResume *p;
        int r;

        for (p = s->pending; p; p = p->next)
                if (p->instance == in) {
                        *why = "a resume waits for room already; try again";
                        return SAGE_ERR_BUSY;
                }
        r = admit(s, in, requester, request_id, reply_type, why);
        if (r != 1)
                return r;
        p = calloc(1, sizeof(*p));
        if (!p) {
                *why = "out of memory";
                return SAGE_ERR_INTERNAL;
        }
        *p = (PendingResume){ .instance = in,
                              .requester = requester,
                              .request_id = request_id,
                              .reply_type = reply_type,
                              .deadline_ns = sage_now_ns() + POLICY_RESUME_WAIT_NS,
                              .next = s->pending };
        s->pending = p;
        sage_info("instance pid %d: resume waits for room", (int)in->pid);
        server_policy_changed(s); /* arms the bound */
        return 0;
}

void server_policy_registered(Server *s, Instance *in) {
        uint64_t *bytes;
        bool enough;

        if (!in || !s->instance_memory)
                return;
        bytes = measure(s);
        if (!bytes)
                return;
        /* It holds its memory already: make room for it after the fact. */
        make_room(s, in->uuid, in, s->instance_memory, 0, bytes, &enough);
        free(bytes);
        server_policy_changed(s);
}

void server_instance_idle(Server *s, Instance *in, bool idle) {
        uint64_t now = sage_now_ns();
        /* libsage reports after that much quiet (SAGE_SUSPEND_IDLE, else 1 s): the quiet began then, and an
         * instance registered with idle_suspend_ms is due at once. */
        uint64_t quiet = (in->idle_suspend_ms ? in->idle_suspend_ms : POLICY_IDLE_REPORT_MS) * 1000000ull;

        if (idle && !in->idle)
                in->idle_since_ns = now > quiet ? now - quiet : 0;
        if (!idle)
                in->used_ns = now;
        in->idle = idle;
        server_policy_changed(s);
}

void server_policy_client_gone(Server *s, Client *c, Instance *in) {
        for (PendingResume **pp = &s->pending; *pp;) {
                PendingResume *p = *pp;
                if (p->requester == c)
                        p->requester = NULL;
                if (in && p->instance == in) {
                        send_error(s, p->requester, p->request_id, SAGE_ERR_NOT_FOUND, "the instance went");
                        *pp = p->next;
                        free(p);
                        continue;
                }
                pp = &p->next;
        }
}

/*
 * Instances grow after they register (libsage registers at the first
 * context, before the app allocates): hold every GPU to the cap again, on
 * every change and on a tick while a cap is set.
 */
static void enforce_cap(Server *s) {
        uint64_t *bytes;

        if (!s->instance_memory || s->instances.n == 0 || !(bytes = measure(s)))
                return;
        for (size_t i = 0; i < s->instances.n; i++) {
                const Instance *in = s->instances.items[i];
                bool first = true, enough;
                for (size_t j = 0; j < i && first; j++) /* each GPU once */
                        first = memcmp(s->instances.items[j]->uuid, in->uuid, 16) != 0;
                if (first && instance_policy_held(&s->instances, bytes, in->uuid, NULL) > s->instance_memory)
                        make_room(s, in->uuid, NULL, s->instance_memory, 0, bytes, &enough);
        }
        free(bytes);
}

/* Suspend instances idle past their deadline; the next deadline or 0. */
static void idle_suspends(Server *s, uint64_t now) {
        for (size_t i = 0; i < s->instances.n; i++) {
                Instance *in = s->instances.items[i];
                uint64_t due = instance_policy_idle_deadline(in);
                if (!due || due > now || s->suspend_off)
                        continue;
                const char *why = NULL;
                /* Tried once per idle period: a refusal or a busy process waits for the next one. */
                in->idle_since_ns = now;
                if (server_instance_suspend(s, in, SERVER_SUSPEND_IDLE, &why) == 0)
                        sage_info("instance pid %d: suspending, idle for %u ms", (int)in->pid, in->idle_suspend_ms);
                else {
                        sage_debug("instance pid %d idle, not suspended: %s", (int)in->pid, why);
                        in->busy_until_ns = now + INSTANCE_BUSY_BACKOFF_NS; /* refused: not again at once */
                }
        }
}

void server_policy_changed(Server *s) {
        uint64_t now = sage_now_ns(), next;
        struct itimerspec its = { 0 };

        for (PendingResume **pp = &s->pending; *pp;) {
                PendingResume *p = *pp;
                const char *why = NULL;
                int r = admit(s, p->instance, p->requester, p->request_id, p->reply_type, &why);
                if (r == 1 && now >= p->deadline_ns) {
                        why = "no room for its restore in time; try again";
                        r = SAGE_ERR_BUSY;
                }
                if (r == 1) {
                        pp = &p->next;
                        continue;
                }
                if (r)
                        send_error(s, p->requester, p->request_id, r, why);
                *pp = p->next;
                free(p);
        }
        idle_suspends(s, now);
        enforce_cap(s);
        next = s->suspend_off ? 0 : instance_policy_next_deadline(&s->instances);
        if (s->instance_memory && s->instances.n && !s->suspend_off && (!next || next > now + POLICY_CAP_TICK_NS))
                next = now + POLICY_CAP_TICK_NS;
        for (PendingResume *p = s->pending; p; p = p->next)
                if (!next || p->deadline_ns < next)
                        next = p->deadline_ns;
        if (next) {
                its.it_value.tv_sec = (time_t)(next / 1000000000ull);
                its.it_value.tv_nsec = (long)(next % 1000000000ull);
        }
        timerfd_settime(s->policy_timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

bool server_policy_event(Server *s, const void *tag) {
        uint64_t expirations;

        if (tag != &tag_timer)
                return false;
        if (read(s->policy_timer_fd, &expirations, sizeof(expirations)) < 0) {
                /* EAGAIN: re-armed meanwhile; look anyway. */
        }
        server_policy_changed(s);
        return true;
}
