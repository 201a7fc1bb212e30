/*
 * What saged's server files share (server.c: the loop, dispatch, verification;
 * listener.c: sockets and admission; handle_extent.c, handle_info.c: the
 * request handlers). Private to daemon/.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "access.h"
#include "client.h"
#include "conn_table.h"
#include "identity.h"
#include "instances.h"
#include "ipc_registry.h"
#include "label.h"
#include "metrics_http.h"
#include "proto.h"
#include "server.h"
#include "tally.h"

/* Out of fds: how long the listeners rest before accept is tried again
 * (sooner when a client leaves and gives one back). */
#define SERVER_ACCEPT_PAUSE_NS (100 * 1000000ull)

/* One listening socket: the main one (label 0) or a labelled one. */
typedef struct Listener {
        char *path;
        int fd;
        uint32_t label;
        bool labelled;      /* access applies */
        LabelAccess access; /* who may connect */
        AccessWarnings warnings;
        bool inherited; /* passed by systemd (activation.c): its file stays at shutdown */
} Listener;

struct Server {
        Listener *listeners; /* [0]: the main socket */
        size_t n_listeners;
        /* ServerConfig's inherited_fds, during server_new only. */
        int *inherited_fds;
        size_t n_inherited_fds;
        LabelTable labels;
        IdentityTable *identities; /* containers on the main socket (identity.c) */
        int epoll_fd;
        ConnTable *conns; /* per-namespace, per-label and broker-wide connection caps */
        ExtentStore *store;
        Gpu *gpu;
        IpcRegistry *ipc;
        Client *clients;
        size_t n_clients;
        uint64_t started_ns;
        uint64_t hits, misses, publishes, rejected_budget, rejected_content;
        TallyTable tallies;  /* the same, per namespace */
        uint64_t *verifying; /* ids of extents not verified yet, oldest first */
        size_t n_verifying, cap_verifying;
        uint8_t *rx; /* one receive buffer, SAGE_PROTO_MAX_MESSAGE */
        /* accept failed for want of fds: listeners are out of the epoll set's
         * interest until accept_resume_ns or until a client goes. */
        bool accept_paused;
        uint64_t accept_resume_ns;
        SageListEntry *list; /* LIST reply scratch, SAGE_PROTO_LIST_MAX */
        /* Instances (handle_instance.c): the table, the checkpoint/restore
         * operations running in worker threads, and the eventfd they signal. */
        InstanceTable instances;
        struct InstanceOp *ops;
        int ops_event_fd;
        int gate_timer_fd; /* instance_gate.c: deadlines of the suspend handshakes */
        uint32_t next_handshake;
        uint64_t prepare_timeout_ns; /* --suspend-prepare-timeout: how long SUSPEND_PREPARED is waited for */
        struct Spool *spool;         /* --spool: parked extents kept across a restart (instance_spool.c); NULL: off */
        bool suspend_off;
        /* The memory policy (handle_policy.c): NVML, the cap, the idle
         * deadlines' timerfd, resumes waiting for room. */
        struct Nvml *nvml;
        const char *cgroup_root;
        uint64_t instance_memory; /* --instance-memory per GPU; 0: no cap */
        int instance_evict;       /* PolicyEvict */
        int policy_timer_fd;
        struct PendingResume *pending;
        MetricsHttp *metrics; /* --metrics-listen; NULL: off */
        /* --exit-idle: the loop ends once no client has been connected since
         * idle_since_ns for exit_idle_ms and the lock on idle_lock_fd is had. */
        bool exit_idle;
        uint64_t exit_idle_ms;
        uint64_t idle_since_ns, idle_retry_ns;
        int idle_lock_fd;
};

/*
 * One request being served. A handler fills `reply` (and may set
 * `reply_fd`, which goes with it) and returns 0, or returns a positive
 * SageProtoError with `why` saying it in a few words. `fds` are those the
 * request carried (proto.def says how many); a handler that keeps one sets
 * its slot to -1, the server closes the rest.
 */
typedef struct Request {
        const SageMessage *msg;
        int *fds;
        size_t n_fds;
        SageMessage reply;
        int reply_fd;
        const char *why;
        bool deferred; /* the handler replies later (handle_instance.c); nothing is sent now */
} Request;

/* Every request type's handler has this signature (proto.def names them). */
typedef int (*ServerHandler)(Server *s, Client *c, Request *r);

#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        int handle_##HANDLER(Server *s, Client *c, Request *r);
/* Notices to the broker are served by the same signature; nothing is ever sent back. */
#define SAGE_NOTICE_HANDLER_TO_BROKER(HANDLER) int handle_##HANDLER(Server *s, Client *c, Request *r);
#define SAGE_NOTICE_HANDLER_TO_CLIENT(HANDLER)
#define SAGE_NOTICE(NAME, NUMBER, PAYLOAD, FLAGS, FDS, DIRECTION, FEATURE, HANDLER) \
        SAGE_NOTICE_HANDLER_##DIRECTION(HANDLER)
#include "proto.def"
#undef SAGE_NOTICE
#undef SAGE_NOTICE_HANDLER_TO_BROKER
#undef SAGE_NOTICE_HANDLER_TO_CLIENT
#undef SAGE_MESSAGE

/* listener.c */
int server_add_listener(Server *s, const char *path, uint32_t label, const LabelAccess *access);
void server_close_listeners(Server *s);
/* Listeners in the epoll set (true) or out of it for SERVER_ACCEPT_PAUSE_NS (false). */
void server_set_accepting(Server *s, bool on);
/* Accept what is waiting on `l`: admitted clients join s->clients. */
void server_accept_clients(Server *s, Listener *l);
/* The listener `tag` (epoll data) is, or NULL for a client. */
Listener *server_find_listener(const Server *s, const void *tag);
/* Undo admission: a container's client count. */
void server_unadmit(Server *s, uint32_t label);

/* handle_instance.c */
int server_instances_init(Server *s, const ServerConfig *config);
/* Waits for operations in flight, forgets every instance. */
void server_instances_free(Server *s);
/* A client goes: its instance is forgotten, replies owed to it are dropped. */
void server_instances_client_gone(Server *s, Client *c);
/* Is `tag` (epoll data) the operations' eventfd? Then finish what is done. */
bool server_instances_event(Server *s, const void *tag);
/* A RELEASE by `c` of extent `id` it holds: an instance preparing to suspend pins it (instance_gate.c). */
void server_instances_pin_release(Server *s, Client *c, uint64_t id);

/* handle_instance.c: the only ways to start a suspend or a resume (the
 * operator's requests, the instance's own, the memory policy). */
enum {
        SERVER_SUSPEND_OPERATOR = 0,
        SERVER_SUSPEND_IDLE = 1, /* idle past its idle_suspend_ms */
        SERVER_SUSPEND_ROOM = 2, /* room for another instance (the cap, a restore) */
};
/* Start a suspend or resume of `in` with nobody to answer: 0, or a SageProtoError with *why saying it. */
int server_instance_suspend(Server *s, Instance *instance, int reason, const char **why);
int server_instance_resume(Server *s, Instance *instance, const char **why);
/* The same, answering `requester` with `reply_type` (RESUME_REPLY, INSTANCE_RESUME_REPLY) when done. */
int server_instance_resume_for(Server *s, Instance *instance, Client *requester, uint32_t request_id,
                               unsigned reply_type, const char **why);
/* SAGE_INSTANCE_WHY_* that forbid suspending it now (0: none). */
uint32_t server_instance_why_not(Server *s, Instance *instance);

/* handle_policy.c: the broker as the GPU memory manager (instance_policy.h) */
int server_policy_init(Server *s, const ServerConfig *config);
void server_policy_free(Server *s);
/* Is `tag` the policy's timerfd? Then act on what is due. */
bool server_policy_event(Server *s, const void *tag);
/* Something that matters changed: start queued resumes that fit, idle suspends that are due, re-arm. */
void server_policy_changed(Server *s);
/* A registration: over the cap, suspend others (least recently used first). */
void server_policy_registered(Server *s, Instance *instance);
/* A requester went (its replies are dropped), and/or an instance is being forgotten (its queued resume too). */
void server_policy_client_gone(Server *s, Client *c, Instance *instance);
/* A resume: started now, queued until room is made (0 both: the reply comes later), or refused. */
int server_policy_resume(Server *s, Instance *instance, Client *requester, uint32_t request_id, unsigned reply_type,
                         const char **why);
/* Extra reasons not to suspend (SAGE_INSTANCE_WHY_HOST_MEMORY). */
uint32_t server_policy_why_not(Server *s, Instance *instance);
/* Device bytes it uses (NVML), SAGE_INSTANCE_BYTES_UNKNOWN if nobody can say. */
uint64_t server_instance_gpu_bytes(Server *s, const Instance *instance);
/* libsage reported it idle (INSTANCE_IDLE) or active again (INSTANCE_ACTIVE). */
void server_instance_idle(Server *s, Instance *instance, bool idle);
/* metrics.c: the /metrics page (a MetricsRenderFn over the Server). */
void server_render_metrics(void *userdata, MetricsBuf *out);

/* server.c */
/* Finish verifying a pending extent that is at most SERVER_VERIFY_ON_LOOKUP_MAX
 * bytes from verified, now (a LOOKUP wants it). True: verified; false: still
 * pending (too much left), or rejected and gone (`e` is then freed). */
bool server_verify_now(Server *s, Extent **e);
/* The caller's namespace's counters (STATS answers tenants about their own); never NULL. */
Tally *server_tally(Server *s, uint64_t namespace_id);
