/*
 * Sharing's state object (share_state.h): turning sharing on (the broker,
 * the driver table the parts work through) and the broker as the parts'
 * publisher and extent owner.
 */
#include <cuda.h>

#include "share_state.h"
#include "suspend_gate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"
#include "hooks.h"
#include "log.h"
#include "options.h"
#include "share_assemble.h"
#include "share_key.h"
#include "share_publish.h"
#include "stats.h"
#include "util.h"

static SageShare share = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .ahead_done = PTHREAD_COND_INITIALIZER,
        .vmm = { .write_epoch = 1, .lo_va = UINT64_MAX },
};

SageShare *sage_share(void) {
        return &share;
}

void share_broker_lost(SageShare *s, int r) {
        if (r < 0 && s->broker) {
                sage_warn("share: broker connection lost (%s); sharing off", strerror(-r));
                s->broker = sage_broker_free(s->broker);
        }
}

/* A reference (share_take_ref): the extent's id below, the connection's generation above. */
#define REF_ID_BITS 48
#define REF_ID_MASK ((UINT64_C(1) << REF_ID_BITS) - 1)

int share_broker_connect(SageShare *s, char *why, size_t why_size) {
        int r = sage_broker_connect_why(&s->broker, NULL, 500, why, why_size);

        if (r < 0) {
                s->broker = NULL;
                return r;
        }
        s->broker_gen = s->broker_gen == UINT16_MAX ? 1 : s->broker_gen + 1; /* 0 tags nothing */
        return r;
}

int share_take_ref(const SageShare *s, int r, uint64_t *id, int *fd) {
        if (r != 0)
                return r;
        if (*id & ~REF_ID_MASK) {
                close(*fd);
                *fd = -1;
                return -EPROTO;
        }
        *id |= (uint64_t)s->broker_gen << REF_ID_BITS;
        return 0;
}

/* Only the current connection's references go back: an old broker's id may name another extent now. */
static void release_extent(void *ctx, uint64_t ref) {
        SageShare *s = ctx;

        if (s->broker && ref >> REF_ID_BITS == s->broker_gen)
                share_broker_lost(s, sage_broker_release(s->broker, ref & REF_ID_MASK));
}

/* The broker verifies the bytes against their content key: a file-keyed piece states it. */
static int broker_publish(void *ctx, const SageShareAlloc *a, const Piece *p, int fd, const void *notes,
                          uint32_t notes_len) {
        SageShare *s = ctx;
        uint64_t id;
        int existed = 0, r;

        if (!s->broker)
                return -ENOTCONN;
        if (sage_hash_equal(p->key, p->content))
                r = sage_broker_publish_noted(s->broker, p->key, p->len, a->broker_dev, SAGE_PUBLISH_SEALED, fd, notes,
                                              notes_len, &id, &existed);
        else
                r = sage_broker_publish_content(s->broker, p->key, p->content, p->len, a->broker_dev,
                                                SAGE_PUBLISH_SEALED, fd, notes, notes_len, &id, &existed);
        if (r == 0)
                sage_broker_release(s->broker, id); /* the broker keeps it; we hold no reference */
        else
                share_broker_lost(s, r);
        return r;
}

static int lookup_meanwhile(SageShare *s, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd,
                            const void **notes, uint32_t *notes_len, SageBrokerMeanwhile meanwhile, void *ctx) {
        int r;

        if (!s->broker) {
                if (meanwhile)
                        meanwhile(ctx);
                return -ENOTCONN;
        }
        r = sage_broker_lookup_noted_meanwhile(s->broker, key, len, device, id, fd, s->notes_buf, sizeof(s->notes_buf),
                                               notes_len, meanwhile, ctx);
        r = share_take_ref(s, r, id, fd);
        share_broker_lost(s, r);
        *notes = s->notes_buf;
        return r;
}

static int broker_lookup(void *ctx, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd,
                         const void **notes, uint32_t *notes_len) {
        return lookup_meanwhile(ctx, key, len, device, id, fd, notes, notes_len, NULL, NULL);
}

int share_broker_device(SageShare *s, CUdevice dev, uint32_t *broker_dev) {
        char name[SAGE_UUID_STRING_SIZE];
        CUuuid uuid;
        int r;

        if (dev < 0 || dev >= SAGE_SHARE_MAX_DEVICES || !s->broker)
                return -ENODEV;
        if (s->device_state[dev] == 0) {
                if (!s->drv.device_get_uuid || s->drv.device_get_uuid(&uuid, dev) != CUDA_SUCCESS) {
                        sage_warn("share: device %d has no UUID; sharing off on it", (int)dev);
                        s->device_state[dev] = -1;
                        return -ENODEV;
                }
                r = sage_broker_device_of_uuid(s->broker, (const uint8_t *)uuid.bytes, &s->broker_device[dev]);
                share_broker_lost(s, r);
                if (r < 0)
                        return -ENODEV; /* the connection is gone; the state stays unknown */
                s->device_state[dev] = r == 0 ? 1 : -1;
                if (r != 0)
                        sage_warn("share: the broker does not serve %s (device %d here): %s; sharing off on it",
                                  sage_uuid_format((const uint8_t *)uuid.bytes, name, sizeof(name)), (int)dev,
                                  r == SAGE_ERR_UNKNOWN_TYPE ? "it cannot name its GPUs (an older saged)"
                                                             : "no such UUID in its table");
        }
        if (s->device_state[dev] < 0)
                return -ENODEV;
        *broker_dev = s->broker_device[dev];
        return 0;
}

int share_lookup(SageShare *s, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd, const void **notes,
                 uint32_t *notes_len) {
        sage_stats_count(SAGE_STAT_SHARE_LOOKUPS);
        return broker_lookup(s, key, len, device, id, fd, notes, notes_len);
}

int share_lookup_meanwhile(SageShare *s, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd,
                           const void **notes, uint32_t *notes_len, SageBrokerMeanwhile meanwhile, void *ctx) {
        sage_stats_count(SAGE_STAT_SHARE_LOOKUPS);
        return lookup_meanwhile(s, key, len, device, id, fd, notes, notes_len, meanwhile, ctx);
}

/* What the broker is asked for request `q`: its hit's notes into the request's room. */
static SageBrokerLookup lookup_of(const ShareLookupReq *q) {
        return (SageBrokerLookup){ .hash = q->key,
                                   .size = q->len,
                                   .device = q->device,
                                   .notes = q->notes,
                                   .notes_cap = SAGE_SHARE_NOTES_MAX };
}

/* The broker's answer `bl` into request `q`: a hit's reference tagged with the connection (share_take_ref). */
static void take_answer(SageShare *s, SageBrokerLookup *bl, ShareLookupReq *q) {
        /* A reply not understood (-EPROTO) loses the broker, as lookup's does: nothing after it is used. */
        bl->result = share_take_ref(s, bl->result, &bl->extent_id, &bl->fd);
        share_broker_lost(s, bl->result);
        q->result = s->broker ? bl->result : bl->result < 0 ? bl->result : -EPIPE;
        q->id = bl->extent_id;
        q->notes_len = bl->notes_len;
        q->fd = -1;
        if (q->result == 0)
                q->fd = bl->fd;
        else if (bl->fd >= 0)
                close(bl->fd);
}

/* ShareLookup's lookup_many: every key in one pipelined exchange, each hit's notes in its request. */
static void broker_lookup_many(void *ctx, ShareLookupReq *q, size_t n) {
        SageShare *s = ctx;
        SageBrokerLookup *bl = s->broker ? calloc(n, sizeof(*bl)) : NULL;

        for (size_t i = 0; i < n; i++) {
                q[i].result = s->broker ? -ENOMEM : -ENOTCONN;
                q[i].fd = -1;
                if (bl)
                        bl[i] = lookup_of(&q[i]);
        }
        if (!bl)
                return;
        share_broker_lost(s, sage_broker_lookup_many(s->broker, bl, n));
        for (size_t i = 0; i < n; i++)
                take_answer(s, &bl[i], &q[i]);
        free(bl);
}

void share_lookup_many(SageShare *s, ShareLookupReq *reqs, size_t n) {
        broker_lookup_many(s, reqs, n);
}

/* Assembly's lookups, sent as its runs are keyed (ShareLookup's begin/add/end over sage_broker_lookups_*). */
typedef struct LookupBatch {
        SageBrokerLookups *sent;
        SageBrokerLookup *bl;
        ShareLookupReq **q;
        size_t n, cap;
} LookupBatch;

static void batch_free(LookupBatch *b) {
        free(b->bl);
        free(b->q);
        free(b);
}

static void *batch_begin(void *ctx, size_t max) {
        SageShare *s = ctx;
        LookupBatch *b = s->broker ? calloc(1, sizeof(*b)) : NULL;

        if (!b)
                return NULL;
        if (!(b->bl = calloc(max ? max : 1, sizeof(*b->bl))) || !(b->q = calloc(max ? max : 1, sizeof(*b->q))) ||
            !(b->sent = sage_broker_lookups_begin(s->broker, max))) {
                batch_free(b);
                return NULL;
        }
        b->cap = max;
        return b;
}

static void batch_add(void *ctx, void *batch, ShareLookupReq *q) {
        LookupBatch *b = batch;

        q->result = -ENOBUFS; /* more than begin was told: not asked */
        q->fd = -1;
        if (b->n == b->cap)
                return;
        b->bl[b->n] = lookup_of(q);
        b->q[b->n] = q;
        sage_broker_lookups_add(b->sent, &b->bl[b->n++]);
}

/*
 * The answers; where assembly's wait went (SHARE_NS_ASSEMBLE_LOOKUP_FIRST,
 * _SLOWEST). Not the wait for the connection: every user of it holds the
 * sharing lock first, as assembly does, so it is never taken here.
 */
static void batch_end(void *ctx, void *batch) {
        SageShare *s = ctx;
        LookupBatch *b = batch;
        SageBrokerWaits waits;
        int r = sage_broker_lookups_end(b->sent);

        sage_broker_many_waits(s->broker, &waits); /* before a failure can lose the broker */
        sage_stats_add(SAGE_STAT_SHARE_NS_ASSEMBLE_LOOKUP_FIRST, waits.first_answer_ns);
        sage_stats_add(SAGE_STAT_SHARE_NS_ASSEMBLE_LOOKUP_SLOWEST, waits.slowest_ns);
        sage_stats_add(SAGE_STAT_SHARE_ASSEMBLE_LOOKUP_SLOWEST_AT, waits.slowest_ns ? waits.slowest_at + 1 : 0);
        share_broker_lost(s, r);
        for (size_t i = 0; i < b->n; i++)
                take_answer(s, &b->bl[i], b->q[i]);
        batch_free(b);
}

/*
 * Assemble the allocations `take` picks: at the first launch (idle false)
 * or idleness's due runs. Under the lock. Assembly reads back, hashes and
 * remaps bytes already copied: it saves memory, never time. So while this
 * process finds that hits cost more than copies (share_cost.h), the first
 * launch assembles nothing: it only leaves for idleness what is due then.
 */
static void assemble_picked(SageShare *s, bool (*take)(const SageShare *, const SageShareAlloc *), bool idle) {
        ShareLookup lk = { .lookup = broker_lookup,
                           .lookup_many = broker_lookup_many,
                           .ctx = s,
                           .begin = batch_begin,
                           .add = batch_add,
                           .end = batch_end };
        SageShareAlloc **todo = NULL, **grown;
        size_t n = 0, cap = 0;

        for (SageShareAlloc *a = s->vmm.allocs; a && s->broker; a = a->next) {
                if (!take(s, a))
                        continue;
                if (n == cap) {
                        if (!(grown = realloc(todo, (cap * 2 + 8) * sizeof(*todo))))
                                break;
                        todo = grown;
                        cap = cap * 2 + 8;
                }
                todo[n++] = a;
        }
        if (n) {
                if (idle)
                        share_assemble_due(&s->vmm, todo, n, &lk, &s->readback);
                else if (share_copying(s))
                        share_assemble_defer_only(&s->vmm, todo, n);
                else
                        share_assemble_allocations(&s->vmm, todo, n, &lk, &s->readback);
                atomic_store(&s->guarding, true);
        }
        free(todo);
}

static bool fresh_uploads(const SageShare *s, const SageShareAlloc *a) {
        return share_vmm_fresh(&s->vmm, a) && a->nwritten && !a->no_share;
}

void share_assemble(SageShare *s) {
        uint64_t t;

        if (!atomic_exchange(&s->vmm.pending, false))
                return;
        t = sage_now_ns();
        pthread_mutex_lock(&s->lock);
        assemble_picked(s, fresh_uploads, false);
        pthread_mutex_unlock(&s->lock);
        if (atomic_load(&s->vmm.idle_due))
                share_idle_wake();
        sage_stats_add(SAGE_STAT_SHARE_NS_ASSEMBLE, sage_now_ns() - t);
}

static bool holds_due(const SageShare *s, const SageShareAlloc *a) {
        (void)s;
        return a->ndue;
}

void share_assemble_idle(SageShare *s) {
        pthread_mutex_lock(&s->lock);
        assemble_picked(s, holds_due, true);
        /* Left (no broker, no memory): private for good, their hints learned afresh at exit. */
        for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next)
                share_vmm_drop_due(a);
        atomic_store(&s->vmm.idle_due, false);
        pthread_mutex_unlock(&s->lock);
}

bool share_learn_placement(SageShare *s, const SageShareAlloc *a) {
        size_t lead;

        if (!s->place.path || a->app_vmm || !a->tail_seen || !share_place_lead_for(a->tail_use, a->gran, &lead))
                return false;
        share_place_learn(&s->place, a->size - a->lead, a->ordinal, lead);
        return lead != a->lead;
}

void share_retire(SageShare *s, SageShareAlloc *a) {
        /*
         * An allocation that starts elsewhere from the next invocation on
         * has granules no one will ask for again: not worth the broker's
         * memory, unless the hints could not be written.
         */
        if (share_learn_placement(s, a) && share_place_save(&s->place) == 0) {
                for (size_t i = 0; i < a->npieces; i++)
                        share_vmm_drop_candidate(a, &a->pieces[i], "it starts elsewhere from now on (placement)");
                return;
        }
        share_hints_learn(&s->hints, a); /* before publishing: it tells candidates by their flag */
        share_publish(s, a);
}

void share_publish(SageShare *s, SageShareAlloc *a) {
        SharePublisher pub = { broker_publish, s };

        if (s->broker)
                share_publish_candidates(&s->vmm, a, &pub);
}

static void share_at_exit(void) {
        SageShare *s = sage_share();

        /* A fork()ed child (its CUDA is not the parent's; its broker connection is): nothing of its own. */
        if (s->pid != getpid())
                return;
        /* Publishing reads the device: a suspended process resumes first (or, if it cannot, skips it). */
        if (sage_hooks_active(SAGE_OBSERVER_SUSPEND) && sage_gate_enter() != CUDA_SUCCESS)
                return;
        pthread_mutex_lock(&s->lock);
        share_idle_stop(s); /* due runs stay as they are: no idle pass from here on */
        for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next)
                share_retire(s, a);
        share_hints_save(&s->hints);
        share_ahead_drop(s);
        pthread_mutex_unlock(&s->lock);
        if (sage_hooks_active(SAGE_OBSERVER_SUSPEND))
                sage_gate_leave();
}

/* The driver through libsage's table of real entry points. */
static void fill_driver(SageShareDriver *d) {
        const SageDriverExtras *x = &sage_driver_extras;

        *d = (SageShareDriver){
                .vmm = { .create = SAGE_REAL(cuMemCreate),
                         .release = SAGE_REAL(cuMemRelease),
                         .address_reserve = SAGE_REAL(cuMemAddressReserve),
                         .address_free = SAGE_REAL(cuMemAddressFree),
                         .map = SAGE_REAL(cuMemMap),
                         .unmap = SAGE_REAL(cuMemUnmap),
                         .set_access = SAGE_REAL(cuMemSetAccess),
                         .copy_dtod = SAGE_REAL(cuMemcpyDtoD_v2),
                         .ctx_synchronize = x->ctx_synchronize },
                .ctx_push = x->ctx_push,
                .ctx_pop = x->ctx_pop,
                .ctx_get_device = x->ctx_get_device,
                .ctx_get_current = x->ctx_get_current,
                .granularity = x->mem_granularity,
                .import_fd = SAGE_REAL(cuMemImportFromShareableHandle),
                .export_fd = SAGE_REAL(cuMemExportToShareableHandle),
                .copy_dtoh = SAGE_REAL(cuMemcpyDtoH_v2),
                .copy_htod = SAGE_REAL(cuMemcpyHtoD_v2),
                .copy_htod_async = SAGE_REAL(cuMemcpyHtoDAsync_v2),
                .alloc_host = SAGE_REAL(cuMemAllocHost_v2),
                .free_host = SAGE_REAL(cuMemFreeHost),
                .stream_is_capturing = x->stream_is_capturing,
                .stream_create = SAGE_REAL(cuStreamCreate),
                .stream_destroy = SAGE_REAL(cuStreamDestroy_v2),
                .stream_synchronize = SAGE_REAL(cuStreamSynchronize),
                .copy_dtoh_async = SAGE_REAL(cuMemcpyDtoHAsync_v2),
                .stream_query = x->stream_query,
                .pointer_get_attribute = x->pointer_get_attribute,
                .func_get_param_info = x->func_get_param_info,
                .func_get_name = x->func_get_name,
                .kernel_get_param_info = x->kernel_get_param_info,
                .kernel_get_name = x->kernel_get_name,
                .device_get_uuid = x->device_get_uuid,
                .host_register = SAGE_REAL(cuMemHostRegister_v2),
                .host_unregister = SAGE_REAL(cuMemHostUnregister),
                .exchange_capture_mode = x->exchange_capture_mode,
        };
}

static bool driver_complete(const SageShareDriver *d) {
        return sage_vmm_ops_complete(&d->vmm) && d->ctx_push && d->ctx_pop && d->ctx_get_device && d->ctx_get_current &&
               d->granularity && d->import_fd && d->export_fd && d->copy_dtoh && d->copy_htod && d->alloc_host &&
               d->free_host;
}

const SageShareDriver *share_driver(SageShare *s) {
        if (!s->drv_ready && sage_driver_handle()) {
                fill_driver(&s->drv);
                s->drv_ready = driver_complete(&s->drv);
        }
        return s->drv_ready ? &s->drv : NULL;
}

/*
 * In the child of a fork() (registered once, at libsage's start: a
 * registration made later, on a thread that holds sharing's lock, could
 * meet a fork already under way): sharing is off. The child cannot use the
 * parent's CUDA (the driver fails its calls: so do ours, through the plain
 * path), must not speak on the parent's broker connection, and may have
 * been forked while another thread (an idle pass) held the lock. A child
 * of a process that did not share is left to share on its own.
 */
void share_forked(SageShare *s) {
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->ahead_done, NULL);
        share_ahead_forget(s); /* the parent's answers: their fds closed, no driver or broker call */
        if (s->state != 1)     /* the parent did not share (a server forking before it uses the GPU): the child may */
                return;
        sage_hooks_deactivate(SAGE_OBSERVER_SHARE);
        atomic_store(&s->active, false);
        atomic_store(&s->guarding, false);
        s->state = -1;    /* share_at_exit checks the pid: a raw clone() runs no atfork handler */
        s->broker = NULL; /* the parent's: left alone, never freed here */
}

bool share_enabled(SageShare *s) {
        char why[320];
        int r;

        if (s->state)
                return s->state > 0;
        s->state = -1;
        if (!sage_options()->share || !share_driver(s))
                return false;
        if (!share_guard_available(&s->drv)) {
                sage_info("share: the driver cannot describe kernel parameters (cuFuncGetParamInfo); sharing off");
                return false;
        }
        r = share_broker_connect(s, why, sizeof(why));
        if (r == -EPERM || r == -EPROTONOSUPPORT) {
                /* Someone else's process on the broker's path, or a broker of another
                 * SAGE release (version skew): worth a warning, never our uploads. */
                sage_warn("share: %s; sharing off", why);
                return false;
        }
        if (r < 0) {
                sage_info("share: no broker (%s); sharing off", sage_options()->socket);
                return false;
        }
        share_vmm_init(&s->vmm, &s->drv, release_extent, s);
        s->vmm.due_over = share_guard_due_over;
        s->vmm.track_pending = sage_options()->share_assemble;
        s->vmm.defer = sage_options()->share_defer;
        share_place_open(&s->place, sage_options()->share_place);
        share_hints_open(&s->hints, sage_options()->share_predict || sage_options()->share_ahead || share_idle_on()
                                            ? sage_options()->share_place
                                            : NULL);
        if (share_idle_on()) {
                s->vmm.defer_run = share_idle_defer_run;
                s->vmm.defer_ctx = s;
        }
        s->pid = getpid();
        atexit(share_at_exit);
        s->state = 1;
        atomic_store(&s->active, true);
        /* Launches and pitched copies must bump the write epoch: sharing's observer does it. */
        sage_hooks_activate(SAGE_OBSERVER_SHARE);
        return true;
}

bool share_capturing(SageShare *s, CUstream stream) {
        CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
        CUresult (*is_capturing)(CUstream, CUstreamCaptureStatus *) = s->drv.stream_is_capturing;

        if (!is_capturing)
                return false;
        /* An error (the legacy stream while another captures: "implicit") counts as capturing. */
        return is_capturing(stream, &st) != CUDA_SUCCESS || st != CU_STREAM_CAPTURE_STATUS_NONE;
}
