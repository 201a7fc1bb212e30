/*
 * Instance suspend, libsage's side (suspend.h; docs/suspend.md).
 *
 * The observer in SAGE_OBSERVER_SUSPEND (the highest slot: it runs before
 * anything else looks at a call) passes every app call through the gate
 * (suspend_gate.h), watches for the first call that gives the process a
 * context, and then registers once over a broker connection of its own
 * (the sharing connection may be off, or come and go). It learns later
 * what makes the instance unsuspendable (a second device, managed memory,
 * CUDA IPC or shareable handles) and says so with INSTANCE_FLAGS.
 *
 * With a broker that speaks SAGE_FEATURE_SUSPEND_GATE a listener thread
 * (started only then, stopped by the process's exit) owns the connection's
 * reading side: it reports idleness (no call and none in flight for
 * SAGE_SUSPEND_IDLE, or 1 s), and serves the broker's handshake:
 *  - SUSPEND_PREPARE: close the gate, drain the calls in flight (at most
 *    PREPARE_DRAIN_MS: a call blocked longer, e.g. in cuStreamSynchronize,
 *    answers BUSY and the gate opens again), synchronize the context,
 *    unmap and release every broker extent (sage_share_park: the driver
 *    cannot restore imported memory) and answer SUSPEND_PREPARED;
 *  - INSTANCE_RESUMED: map the extents again at the same addresses
 *    (sage_share_unpark), open the gate, answer INSTANCE_REMAPPED.
 * A call that meets the closed gate while suspended asks INSTANCE_RESUME
 * itself (suspend_gate.c) and waits, bounded.
 *
 * If the broker goes while the process is suspended (a connection an app
 * thread closed, its INSTANCE_RESUME having failed on it, counts as the
 * broker gone), the listener decides (broker_gone). Nothing parked: it
 * restores and unlocks its own pid (SELF_RESTORE; measured on the H100,
 * probe `self`: from a thread that makes no other driver call, as this
 * one) and opens the gate. Extents parked: their bytes went with the
 * broker unless a restarted one spooled them (saged --spool), so it
 * connects and registers again for SAGE_SUSPEND_RECONNECT (flagged
 * CHECKPOINTED if the driver says so: the new broker adopts the instance,
 * loads what it spooled, and restores it at the next call's
 * INSTANCE_RESUME), the sharing connection too (the re-map's LOOKUPs);
 * a re-map that misses, or no broker in time, breaks the gate: calls fail
 * with SAGE_GATE_ERROR instead of computing on missing memory. An active
 * instance keeps running and registers again whenever a broker comes back.
 * The listener makes no driver call that blocks while checkpointed (it
 * kept the device's UUID).
 *
 * Without SAGE_SUSPEND nothing here is on: the observer is never activated.
 */
#include "suspend.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "broker_client.h"
#include "driver.h"
#include "log.h"
#include "options.h"
#include "share.h"
#include "spawn.h"
#include "suspend_gate.h"
#include "suspend_shrink.h"

/* The GPU probe `self` says a process can restore itself (H100, driver 580): 0 turns that off. */
#define SELF_RESTORE 1
/* How long SUSPEND_PREPARE waits for the calls in flight. */
#define PREPARE_DRAIN_MS 2000
/* Idleness is reported after this long when SAGE_SUSPEND_IDLE is 0. */
#define IDLE_REPORT_MS 1000
/* The listener's tick while runs wait for assembly at idleness. */
#define ASSEMBLE_TICK_MS 5
/* Longest pause between two attempts to reach a restarted broker. */
#define RECONNECT_MAX_DELAY_MS 1000

static pthread_mutex_t suspend_lock = PTHREAD_MUTEX_INITIALIZER;
/* The registration's connection: lives as long as the process (under suspend_lock until the listener runs). */
static SageBroker *suspend_broker;
/* The listener swaps suspend_broker for a new broker's (write) while app threads ask it for resumes (read). */
static pthread_rwlock_t broker_swap = PTHREAD_RWLOCK_INITIALIZER;
static CUuuid suspend_uuid;       /* kept: a re-registration must not ask a checkpointed driver */
static atomic_bool suspend_tried; /* read by every context-creating call without the lock */
static CUdevice suspend_device;
static atomic_uint learnt_flags; /* SAGE_INSTANCE_LATER bits seen */
static atomic_uint sent_flags;   /* those the broker was told */

/* What the listener has to do, queued by the notice handler (under the broker's lock) and the gate. */
static struct {
        pthread_mutex_t lock;
        int event_fd;
        bool prepare, resumed, active;
        uint32_t prepare_id, resumed_id, resumed_status;
} todo = { .lock = PTHREAD_MUTEX_INITIALIZER, .event_fd = -1 };

static void wake_listener(void) {
        uint64_t one = 1;
        if (todo.event_fd >= 0 && write(todo.event_fd, &one, sizeof(one)) < 0) {
                /* The counter is full: the listener is awake anyway. */
        }
}

static bool creates_context(SageSym sym) {
        switch (sym) {
        case SAGE_SYM_cuDevicePrimaryCtxRetain:
        case SAGE_SYM_cuCtxCreate_v2:
        case SAGE_SYM_cuCtxCreate_v3:
        case SAGE_SYM_cuCtxCreate_v4: return true;
        default: return false;
        }
}

/* What a successful call tells about checkpointing (the driver cannot do these). */
static uint32_t flags_of_call(const SageCall *call) {
        switch (call->sym) {
        case SAGE_SYM_cuMemAllocManaged: return SAGE_INSTANCE_MANAGED;
        case SAGE_SYM_cuIpcGetMemHandle:
        case SAGE_SYM_cuIpcOpenMemHandle:
        case SAGE_SYM_cuIpcOpenMemHandle_v2:
        case SAGE_SYM_cuMemExportToShareableHandle:
        case SAGE_SYM_cuMemImportFromShareableHandle: return SAGE_INSTANCE_IPC;
        default: return 0;
        }
}

static uint32_t instance_flags(void) {
        uint32_t flags = atomic_load(&learnt_flags);
        if (sage_options()->suspend_keep_alive)
                flags |= SAGE_INSTANCE_KEEP_ALIVE;
        /* An MPS client: the driver cannot checkpoint it. */
        if (getenv("CUDA_MPS_PIPE_DIRECTORY"))
                flags |= SAGE_INSTANCE_MPS;
        return flags;
}

static void send_notice(unsigned type, uint32_t id, uint32_t status, uint32_t why) {
        SageMessage m;
        int r;

        sage_proto_init(&m, type, id);
        if (type == SAGE_MSG_SUSPEND_PREPARED)
                m.suspend_prepared = (SageGateStatus){ status, why };
        else if (type == SAGE_MSG_INSTANCE_REMAPPED)
                m.instance_remapped = (SageGateStatus){ status, 0 };
        else if (type == SAGE_MSG_INSTANCE_FLAGS)
                m.instance_flags = status;
        r = sage_broker_notify(suspend_broker, &m);
        if (r)
                sage_debug("suspend: %s not sent (%d)", sage_proto_type_name(type), r);
}

/* ---- the broker's notices (under the broker connection's lock: queue only) */
static void on_notice(void *userdata, const SageMessage *m) {
        pthread_mutex_lock(&todo.lock);
        if (m->header.type == SAGE_MSG_SUSPEND_PREPARE) {
                todo.prepare = true;
                todo.prepare_id = m->header.request_id;
        } else if (m->header.type == SAGE_MSG_INSTANCE_RESUMED) {
                todo.resumed = true;
                todo.resumed_id = m->header.request_id;
                todo.resumed_status = m->instance_resumed.status;
        }
        pthread_mutex_unlock(&todo.lock);
        wake_listener();
}

/* ---- the gate's side: a waiting call asks for the resume */
static int ask_resume(uint64_t deadline_ns) {
        unsigned delay_ms = 10;

        for (;;) {
                uint64_t now = sage_now_ns();
                SageInstanceOpReply reply;
                int r;

                if (now >= deadline_ns)
                        return -ETIMEDOUT;
                pthread_rwlock_rdlock(&broker_swap);
                r = sage_broker_instance_resume(suspend_broker, (int)((deadline_ns - now) / 1000000) + 1, &reply);
                /* A failure that closed the connection is the listener's to see, now rather than at its tick. */
                if (r < 0 && sage_broker_fd(suspend_broker) < 0)
                        wake_listener();
                pthread_rwlock_unlock(&broker_swap);
                if (r != SAGE_ERR_BUSY)
                        return r;
                /* Over the broker's cap of resumes at once, or its checkpoint still runs: ask again. */
                poll(NULL, 0, (int)delay_ms);
                delay_ms = delay_ms < 100 ? delay_ms * 2 : 100;
        }
}

static void on_active(void) {
        pthread_mutex_lock(&todo.lock);
        todo.active = true;
        pthread_mutex_unlock(&todo.lock);
        wake_listener();
}

/* ---- the listener's work */
static void synchronize_context(void) {
        const SageDriverExtras *x = &sage_driver_extras;
        CUcontext ctx = NULL, popped;

        if (!x->primary_retain || !x->ctx_push || !x->ctx_pop || !x->ctx_synchronize ||
            x->primary_retain(&ctx, suspend_device) != CUDA_SUCCESS)
                return;
        if (x->ctx_push(ctx) == CUDA_SUCCESS) {
                x->ctx_synchronize();
                x->ctx_pop(&popped);
        }
        if (x->primary_release)
                x->primary_release(suspend_device);
}

static void prepare(uint32_t id) {
        uint32_t refuse =
                atomic_load(&learnt_flags) & (SAGE_INSTANCE_MANAGED | SAGE_INSTANCE_IPC | SAGE_INSTANCE_MULTI_GPU);
        long parked;

        if (refuse) {
                uint32_t why = (refuse & SAGE_INSTANCE_MANAGED ? SAGE_INSTANCE_WHY_MANAGED : 0) |
                               (refuse & SAGE_INSTANCE_IPC ? SAGE_INSTANCE_WHY_IPC : 0) |
                               (refuse & SAGE_INSTANCE_MULTI_GPU ? SAGE_INSTANCE_WHY_MULTI_GPU : 0);
                send_notice(SAGE_MSG_SUSPEND_PREPARED, id, SAGE_GATE_REFUSED, why);
                return;
        }
        /* Extents of a broker that died are mapped: nobody could give them back after a restore. */
        if (sage_share_orphaned()) {
                send_notice(SAGE_MSG_SUSPEND_PREPARED, id, SAGE_GATE_REFUSED, SAGE_INSTANCE_WHY_EXTENTS);
                return;
        }
        /* The warm-up thread's import of an extent asked ahead is in flight too (a restore fails on it). */
        if (!sage_gate_close_and_drain(sage_now_ns() + PREPARE_DRAIN_MS * 1000000ull) || !sage_share_park_ready()) {
                sage_info("suspend: calls stayed in flight; not suspended now");
                if (sage_gate_phase() == SAGE_GATE_PREPARING)
                        sage_gate_set_phase(SAGE_GATE_OPEN);
                send_notice(SAGE_MSG_SUSPEND_PREPARED, id, SAGE_GATE_BUSY, 0);
                return;
        }
        synchronize_context();
        sage_suspend_shrink(suspend_device); /* local memory is scratch now: the driver copies less */
        parked = sage_share_park();
        sage_gate_set_phase(SAGE_GATE_SUSPENDED);
        sage_info("suspend: prepared (%ld broker extents released)", parked < 0 ? 0 : parked);
        send_notice(SAGE_MSG_SUSPEND_PREPARED, id, SAGE_GATE_OK, 0);
}

static void remap(uint32_t id, uint32_t status) {
        uint64_t t0 = sage_now_ns();
        size_t failed;

        if (status != SAGE_GATE_OK) {
                sage_warn("suspend: the broker could not resume this process");
                sage_gate_set_phase(SAGE_GATE_BROKEN);
                return; /* nothing to answer: the broker is done with us */
        }
        if (sage_gate_phase() == SAGE_GATE_OPEN) {
                send_notice(SAGE_MSG_INSTANCE_REMAPPED, id, SAGE_GATE_OK, 0);
                return;
        }
        failed = sage_share_unpark();
        if (failed) {
                sage_warn("suspend: %zu broker extents could not be mapped again; calls will fail", failed);
                sage_gate_set_phase(SAGE_GATE_BROKEN);
                send_notice(SAGE_MSG_INSTANCE_REMAPPED, id, SAGE_GATE_FAILED, 0);
                return;
        }
        sage_suspend_shrink_undo(suspend_device);
        sage_gate_set_phase(SAGE_GATE_OPEN);
        sage_info("suspend: resumed (re-map %.1f ms)", (double)(sage_now_ns() - t0) / 1e6);
        send_notice(SAGE_MSG_INSTANCE_REMAPPED, id, SAGE_GATE_OK, 0);
}

/* Suspended with nothing parked and no broker: restore ourselves (SELF_RESTORE), the gate opens or breaks. */
static void restore_self(void) {
        const SageDriverExtras *x = &sage_driver_extras;
        CUprocessState state = CU_PROCESS_STATE_RUNNING;
        int pid = (int)getpid();

        if (!SELF_RESTORE || !x->ckpt_get_state || !x->ckpt_restore || !x->ckpt_unlock ||
            x->ckpt_get_state(pid, &state) != CUDA_SUCCESS) {
                sage_gate_set_phase(SAGE_GATE_BROKEN);
                return;
        }
        if (state == CU_PROCESS_STATE_CHECKPOINTED && x->ckpt_restore(pid, NULL) != CUDA_SUCCESS) {
                sage_gate_set_phase(SAGE_GATE_BROKEN);
                return;
        }
        if (x->ckpt_get_state(pid, &state) == CUDA_SUCCESS && state == CU_PROCESS_STATE_LOCKED &&
            x->ckpt_unlock(pid, NULL) != CUDA_SUCCESS) {
                sage_gate_set_phase(SAGE_GATE_BROKEN);
                return;
        }
        if (sage_share_unpark() > 0) {
                sage_gate_set_phase(SAGE_GATE_BROKEN);
                return;
        }
        sage_suspend_shrink_undo(suspend_device);
        sage_info("suspend: restored by itself");
        sage_gate_set_phase(SAGE_GATE_OPEN);
}

/*
 * A new connection (*out) registered as this instance with the gate, the
 * broker told `flags`; the notice handler is set first where `notices`
 * (a SUSPEND_PREPARE may follow the reply at once). No broker: *out NULL,
 * the connection's -errno (`why` says it). Else the registration's
 * result, *out kept either way (the caller frees it on failure, after
 * reading its last error); 0: *gate says if the broker speaks the gate,
 * and the flags it was told are recorded.
 */
static int register_with(SageBroker **out, uint32_t flags, bool notices, bool *gate, char *why, size_t why_size) {
        int r = sage_broker_connect_why(out, NULL, 500, why, why_size);

        if (r) {
                *out = NULL;
                return r;
        }
        if (notices)
                sage_broker_on_notice(*out, on_notice, NULL);
        r = sage_broker_instance_register_gate(*out, (const uint8_t *)suspend_uuid.bytes, flags,
                                               (uint32_t)sage_options()->suspend_idle, gate);
        if (r == 0)
                atomic_store(&sent_flags, atomic_load(&learnt_flags) & flags);
        return r;
}

/* 1: registered with a broker over a new connection (now suspend_broker); 0: no broker yet; -1: it refused us. */
static int reregister(bool checkpointed) {
        uint32_t flags = instance_flags() | (checkpointed ? SAGE_INSTANCE_CHECKPOINTED : 0);
        SageBroker *b, *old;
        bool gate = false;
        int r = register_with(&b, flags, true, &gate, NULL, 0);

        if (!b)
                return 0;
        if (r || !gate) {
                sage_info("suspend: a new broker: registration %s %s", r > 0 ? sage_proto_error_name(r) : "failed",
                          r > 0 ? sage_broker_last_error(b) : "");
                sage_broker_free(b);
                return r < 0 ? 0 : -1;
        }
        pthread_rwlock_wrlock(&broker_swap);
        old = suspend_broker;
        suspend_broker = b;
        pthread_rwlock_unlock(&broker_swap);
        sage_broker_free(old);
        sage_info("suspend: registered again with a new broker%s", checkpointed ? " (checkpointed)" : "");
        return 1;
}

/* Register again, trying with back-off until `deadline_ns`: true once registered. */
static bool reconnect(uint64_t deadline_ns, bool checkpointed) {
        unsigned delay_ms = 20;

        for (;;) {
                int r = reregister(checkpointed);
                uint64_t now = sage_now_ns();

                if (r != 0)
                        return r > 0;
                if (now >= deadline_ns)
                        return false;
                poll(NULL, 0,
                     (int)(deadline_ns - now < delay_ms * 1000000ull ? (deadline_ns - now) / 1000000 + 1 : delay_ms));
                delay_ms = delay_ms * 2 < RECONNECT_MAX_DELAY_MS ? delay_ms * 2 : RECONNECT_MAX_DELAY_MS;
        }
}

/*
 * The broker went away (or closed our connection). True once a broker took
 * the instance again (the listener serves the new connection); false: the
 * listener ends (the gate broke, or a broker refused us).
 */
static bool broker_gone(void) {
        const SageDriverExtras *x = &sage_driver_extras;
        CUprocessState state = CU_PROCESS_STATE_RUNNING;
        int pid = (int)getpid();

        sage_info("suspend: the broker went away");
        /* What the old broker asked is void: a stale SUSPEND_PREPARE would park us with nobody to checkpoint. */
        pthread_mutex_lock(&todo.lock);
        todo.prepare = todo.resumed = false;
        pthread_mutex_unlock(&todo.lock);
        if (sage_gate_phase() == SAGE_GATE_SUSPENDED && sage_share_parked() == 0)
                restore_self();
        if (sage_gate_phase() == SAGE_GATE_BROKEN)
                return false;
        /* Active: keep running; registered again whenever a broker comes back, so it may be suspended again. */
        if (sage_gate_phase() == SAGE_GATE_OPEN) {
                if (!reconnect(UINT64_MAX, false))
                        return false;
                sage_share_reconnect(); /* -EBUSY: extents of the old broker mapped, sharing stays off */
                return true;
        }
        /* Extents parked. Locked, never checkpointed (the broker died in between): unlock, nobody else will. */
        if (!x->ckpt_get_state || x->ckpt_get_state(pid, &state) != CUDA_SUCCESS ||
            (state == CU_PROCESS_STATE_LOCKED && (!x->ckpt_unlock || x->ckpt_unlock(pid, NULL) != CUDA_SUCCESS ||
                                                  x->ckpt_get_state(pid, &state) != CUDA_SUCCESS))) {
                sage_gate_set_phase(SAGE_GATE_BROKEN);
                return false;
        }
        if (!reconnect(sage_now_ns() + sage_options()->suspend_reconnect * 1000000ull,
                       state == CU_PROCESS_STATE_CHECKPOINTED) ||
            sage_share_reconnect() != 0) {
                sage_warn("suspend: no broker took this process again; calls will fail");
                sage_gate_set_phase(SAGE_GATE_BROKEN);
                return false;
        }
        if (state == CU_PROCESS_STATE_CHECKPOINTED) {
                sage_gate_resume_again(); /* a call asks the new broker: it restores, INSTANCE_RESUMED re-maps */
                return true;
        }
        /* Running (prepared, never checkpointed; or restored, never re-mapped): map from the new broker now. */
        if (sage_share_unpark() > 0) {
                sage_warn("suspend: broker extents could not be mapped again; calls will fail");
                sage_gate_set_phase(SAGE_GATE_BROKEN);
        } else {
                sage_suspend_shrink_undo(suspend_device);
                sage_gate_set_phase(SAGE_GATE_OPEN);
        }
        return true;
}

/* Serve the registration's connection: true when it closed (the broker went), false when the listener stops. */
static bool serve(void) {
        uint64_t idle_ms = sage_options()->suspend_idle ? sage_options()->suspend_idle : IDLE_REPORT_MS;
        int tick_ms = (int)(idle_ms / 4 < 10 ? 10 : idle_ms / 4 > 250 ? 250 : idle_ms / 4);
        uint64_t last_calls = sage_gate_calls(), quiet_since = sage_now_ns();
        bool idle_reported = false;

        for (;;) {
                struct pollfd p[2] = { { .fd = sage_broker_fd(suspend_broker), .events = POLLIN },
                                       { .fd = todo.event_fd, .events = POLLIN } };
                bool do_prepare, do_resumed, do_active;
                uint32_t prepare_id, resumed_id, resumed_status, flags;
                uint64_t calls, now, n;

                /* Assembly at idleness waits: its time is measured finer (share_idle.c). */
                int wait_ms = sage_share_idle_due() ? ASSEMBLE_TICK_MS : tick_ms;

                if (poll(p, 2, wait_ms) < 0 && errno != EINTR)
                        return false;
                if ((p[1].revents & POLLIN) && read(todo.event_fd, &n, sizeof(n)) < 0) {
                        /* EAGAIN: someone else's wake-up already read */
                }
                /* A connection an app thread closed (its INSTANCE_RESUME failed) is gone too: poll skips fd -1. */
                if (sage_broker_fd(suspend_broker) < 0 ||
                    ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && sage_broker_pump(suspend_broker) < 0))
                        return true;
                pthread_mutex_lock(&todo.lock);
                do_prepare = todo.prepare, prepare_id = todo.prepare_id;
                do_resumed = todo.resumed, resumed_id = todo.resumed_id, resumed_status = todo.resumed_status;
                do_active = todo.active;
                todo.prepare = todo.resumed = todo.active = false;
                pthread_mutex_unlock(&todo.lock);

                flags = atomic_load(&learnt_flags);
                if (flags != atomic_load(&sent_flags)) {
                        atomic_store(&sent_flags, flags);
                        send_notice(SAGE_MSG_INSTANCE_FLAGS, 0, flags, 0);
                }
                if (do_active && idle_reported) {
                        idle_reported = false;
                        send_notice(SAGE_MSG_INSTANCE_ACTIVE, 0, 0, 0);
                }
                if (do_resumed)
                        remap(resumed_id, resumed_status);
                if (do_prepare)
                        prepare(prepare_id);

                /* Idleness: no new call, none in flight, for idle_ms. */
                calls = sage_gate_calls();
                now = sage_now_ns();
                if (calls != last_calls || sage_gate_in_flight() || sage_gate_phase() != SAGE_GATE_OPEN) {
                        last_calls = calls;
                        quiet_since = now;
                } else if (!idle_reported && now - quiet_since >= idle_ms * 1000000ull) {
                        idle_reported = true;
                        sage_gate_note_idle();
                        send_notice(SAGE_MSG_INSTANCE_IDLE, 0, 0, 0);
                }
                sage_share_idle_step(now - quiet_since); /* its own driver calls are not the app's */
        }
}

static void *listener(void *unused) {
        (void)unused;
        while (serve() && broker_gone()) {
        }
        sage_share_idle_wake_with(NULL); /* no more idle passes: runs are assembled at their first launch */
        return NULL;
}

/*
 * The child of a fork() of a registered process is no instance: the
 * parent's listener, connection and gate are not its own. The child of one
 * that did not register (a server forking before it uses the GPU) may
 * register itself.
 */
void sage_suspend_forked(void) {
        pthread_mutex_init(&suspend_lock, NULL); /* a registration under way in the parent: not the child's */
        if (!suspend_broker)
                return;
        sage_hooks_deactivate(SAGE_OBSERVER_SUSPEND);
        sage_gate_forked();
        sage_share_idle_wake_with(NULL); /* the listener's eventfd is the parent's too */
        suspend_broker = NULL;           /* the parent's: left alone, never freed here */
}

static void start_listener(void) {
        todo.event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (todo.event_fd < 0)
                return;
        sage_gate_init(ask_resume, on_active);
        sage_share_idle_wake_with(wake_listener); /* runs left due: the listener measures idleness finer */
        sage_broker_on_notice(suspend_broker, on_notice, NULL);
        if (sage_spawn_thread(listener, NULL, NULL) != 0)
                sage_warn("suspend: no listener thread; the broker cannot suspend this process");
}

/* Registered: true if the gate stays on (the broker speaks it). */
static bool register_instance(CUdevice dev) {
        CUuuid uuid;
        char why[320];
        bool gate = false;
        int r;

        memset(&uuid, 0, sizeof(uuid));
        if (!sage_driver_extras.device_get_uuid || sage_driver_extras.device_get_uuid(&uuid, dev) != CUDA_SUCCESS) {
                sage_info("suspend: no device UUID; not registered");
                return false;
        }
        suspend_uuid = uuid;
        r = register_with(&suspend_broker, instance_flags(), false, &gate, why, sizeof(why));
        if (!suspend_broker) {
                if (r == -EPROTONOSUPPORT)
                        sage_warn("suspend: %s; not registered", why);
                else
                        sage_info("suspend: no broker (%s); not registered", why[0] ? why : "not running");
                return false;
        }
        if (r) {
                sage_info("suspend: registration refused: %s %s", r > 0 ? sage_proto_error_name(r) : strerror(-r),
                          sage_broker_last_error(suspend_broker));
                suspend_broker = sage_broker_free(suspend_broker);
                return false;
        }
        sage_info("suspend: registered as an instance (device %d)%s", (int)dev,
                  gate ? "" : "; the broker has no suspend gate");
        if (gate)
                start_listener();
        return gate;
}

static void suspend_before(SageCall *call) {
        if (call->own)
                return;
        call->result = sage_gate_enter(); /* an error vetoes the call: it never reaches the driver */
}

/* libsage's own calls (the warm-up's, reported) never passed the gate, but may register. */
static void suspend_after(SageCall *call) {
        if (!call->own)
                sage_gate_leave();
        if (call->result != CUDA_SUCCESS)
                return;
        if (!call->own)
                atomic_fetch_or(&learnt_flags, flags_of_call(call));
        /* The app's own contexts, shrunk with the primary one (traced arguments, hooks.def: "ctx"). */
        if (!call->own && call->sym != SAGE_SYM_cuDevicePrimaryCtxRetain && creates_context(call->sym))
                sage_suspend_shrink_track((CUcontext)(uintptr_t)call->args[2], true);
        else if (!call->own && call->sym == SAGE_SYM_cuCtxDestroy_v2)
                sage_suspend_shrink_track((CUcontext)(uintptr_t)call->args[0], false);
        if (!creates_context(call->sym))
                return;
        /* The device is the call's first traced argument (hooks.def: "device"). */
        if (atomic_load(&suspend_tried) && !call->own && (CUdevice)call->args[0] != suspend_device)
                atomic_fetch_or(&learnt_flags, SAGE_INSTANCE_MULTI_GPU);
        if (atomic_load(&suspend_tried))
                return;
        pthread_mutex_lock(&suspend_lock);
        if (!atomic_load(&suspend_tried)) {
                suspend_device = (CUdevice)call->args[0];
                if (!register_instance(suspend_device)) {
                        sage_hooks_deactivate(SAGE_OBSERVER_SUSPEND);
                        sage_gate_never_closes(); /* the trampolines still count: without a fence */
                }
                atomic_store(&suspend_tried, true); /* after suspend_device: readers see it set */
        }
        pthread_mutex_unlock(&suspend_lock);
}

const SageObserver sage_suspend_observer = { .before = suspend_before, .after = suspend_after };

void sage_suspend_start(void) {
        if (sage_options()->suspend)
                sage_hooks_activate(SAGE_OBSERVER_SUSPEND);
}
