/*
 * Sharing-based memory, client side (SAGE_SHARE=1, off by default).
 *
 * Allocations of at least SAGE_SHARE_MIN are backed by SAGE's own VMM
 * allocator: a reserved address range covered by a sorted list of pieces,
 * each one physical allocation (cuMemCreate, POSIX-fd exportable) mapped at
 * its offset. Pieces can be swapped one by one, at the granularity of the
 * device (2 MiB), because the driver unmaps whole mappings only.
 *
 * An upload (host to device, sync or async, every variant, cuMemcpy with a
 * host source too) into such an allocation is keyed on the part of it that
 * covers whole granules: by file identity when the source lies in a file
 * mapping (share_key.c), else by content hash. The broker is asked for an
 * extent with that key:
 * - hit: that part of the allocation becomes a piece mapping the broker's
 *   extent read-only, and only the bytes outside it (less than a granule at
 *   each end) are copied;
 * - miss: that part becomes a piece of its own ("candidate"), filled by the
 *   copy as usual. When the allocation is freed or the process exits, each
 *   candidate is read back and hashed: unchanged over the life of the
 *   process, it is published to the broker, sealed. Read-only is learned.
 * What no single upload covers whole (its ends, pools of small tensors) is
 * keyed later, at the first launch (share_assemble.c).
 *
 * Splitting a piece keeps the content of what remains of it, unless the
 * allocation is "fresh": nothing but tracked uploads may have written it
 * since it was allocated (no launch, memset, device copy in between), in
 * which case only the bytes those uploads wrote are kept.
 *
 * A write through the API (memset, device-to-device or peer copy, another
 * upload) into a shared piece first turns it private again (its content
 * copied), so it never reaches the extent other processes read; so does a
 * kernel launch that uses a piece in a way its publisher never did
 * (share_guard.c). CUDA IPC on these allocations is emulated through the
 * broker (share_ipc.c).
 *
 * Every failure falls back to the plain driver path: no broker means no VMM
 * backing at all; a failed step leaves private memory with the app's bytes.
 *
 * Modules, each depending only on those listed before it:
 *   common/vmm.c      VMM steps over a driver table (shared with saged)
 *   share_key.c       content keys
 *   share_file_key.c  file-identity keys (file_immutable.c, maps_watch.c)
 *   share_alloc.c     the allocator: allocations, pieces, write tracking
 *   share_backing.c   backing given later: deferred pieces, one piece for IPC
 *   share_guard.c     the launch guard and its notes
 *   share_publish.c   candidates read back, verified, published
 *   share_state.c     the one SageShare object, the broker, turning on
 *   share_assemble.c  keying what no single upload covers whole
 *   share_ipc.c       CUDA IPC emulation
 *   share_stage.c     misses copied through pinned staging, hashed on the way
 *   share_cost.c      does a hit pay? (copied instead when it would cost more)
 *   share_upload.c    uploads and API writes (entry points)
 *   share.c           allocation, free, launches (entry points)
 *   share_reach.c     pointer queries and batches: what they reach mapped first (entry points)
 */
#include <cuda.h>

#include "share.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capture_mode.h"
#include "driver.h"
#include "impl.h"
#include "log.h"
#include "options.h"
#include "share_ipc.h"
#include "share_state.h"
#include "stats.h"
#include "util.h"
#include "warmup.h"

/* ---------------------------------------------------------------- allocation */

/* An allocation whose app bytes start `lead` bytes into its reservation (learned placement, share_place.c). */
static CUresult alloc_placed(ShareVmm *v, size_t size, size_t lead, size_t gran, CUdevice dev, uint32_t broker_dev,
                             CUcontext ctx, SageShareAlloc **out) {
        CUresult r;

        if (lead >= gran || size > SIZE_MAX - 2 * gran)
                return CUDA_ERROR_OUT_OF_MEMORY;
        if ((r = share_vmm_alloc(v, lead + size, gran, dev, broker_dev, ctx, out)) == CUDA_SUCCESS)
                (*out)->lead = lead;
        return r;
}

static bool share_alloc(CUdeviceptr *dptr, size_t size, CUresult *result, uint64_t *cpu0) {
        SageShare *s = sage_share();
        CUmemAllocationProp prop;
        SageShareAlloc *a;
        CUdevice dev;
        CUcontext ctx;
        uint32_t broker_dev = 0, ordinal = 0;
        size_t gran = 0, lead;
        CUresult r;
        int known;
        bool predicted;

        if (!sage_options()->share || size < sage_options()->share_min || !dptr)
                return false;
        pthread_mutex_lock(&s->lock);
        if (!share_enabled(s) || !s->broker) {
                pthread_mutex_unlock(&s->lock);
                return false;
        }
        if (s->drv.ctx_get_device(&dev) != CUDA_SUCCESS || s->drv.ctx_get_current(&ctx) != CUDA_SUCCESS) {
                pthread_mutex_unlock(&s->lock);
                goto fail;
        }
        /* Extents are the broker's per GPU, named by UUID: a GPU it does not serve is not shared. */
        known = share_broker_device(s, dev, &broker_dev);
        pthread_mutex_unlock(&s->lock);
        if (known != 0) {
                sage_stats_count(SAGE_STAT_SHARE_UNKNOWN_GPU);
                return false;
        }
        *cpu0 = sage_clock_ns(CLOCK_THREAD_CPUTIME_ID); /* a system call: only once SAGE backs it */
        prop = sage_vmm_prop(dev);
        if (s->drv.granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS || !gran)
                goto fail;
        pthread_mutex_lock(&s->lock);
        lead = share_place_next(&s->place, size, gran, &ordinal);
        predicted = share_predict_alloc(s, size, ordinal, lead, gran, dev, broker_dev, ctx, &a);
        pthread_mutex_unlock(&s->lock);
        /* Out of memory: what was made ahead for other sizes given back, and made again. */
        r = predicted ? CUDA_SUCCESS
                      : SHARE_OOM_RETRY(alloc_placed(&s->vmm, size, lead, gran, dev, broker_dev, ctx, &a));
        /* Out of memory is the app's answer too: what cuMemAlloc would say. */
        if (r == CUDA_ERROR_OUT_OF_MEMORY)
                return false;
        if (r != CUDA_SUCCESS)
                goto fail;
        a->ordinal = ordinal;
        if (lead)
                sage_stats_count(SAGE_STAT_SHARE_PLACED);
        if (a->held)
                sage_stats_count(SAGE_STAT_SHARE_DEFERRED);
        pthread_mutex_lock(&s->lock);
        share_vmm_link(&s->vmm, a);
        pthread_mutex_unlock(&s->lock);
        /* The context must outlive cudart's own release at exit: publishing reads it back. */
        sage_warmup_note_held(dev);
        sage_stats_count(SAGE_STAT_SHARE_ALLOCS);
        *dptr = share_vmm_user_va(a);
        *result = CUDA_SUCCESS;
        return true;
fail:
        sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
        return false;
}

bool sage_share_alloc(CUdeviceptr *dptr, size_t size, CUresult *result) {
        uint64_t t = sage_now_ns(), cpu = 0;
        bool backed = share_alloc(dptr, size, result, &cpu);

        /* The app waits for SAGE's reserve, create, map and access where cuMemAlloc would allocate. */
        if (backed) { /* the CPU time read within the call's time */
                sage_stats_add(SAGE_STAT_SHARE_NS_ALLOC_CPU, sage_clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu);
                sage_stats_add(SAGE_STAT_SHARE_NS_ALLOC, sage_now_ns() - t);
        }
        return backed;
}

bool sage_share_free(CUdeviceptr va, CUresult *result) {
        SageShare *s = sage_share();
        SageShareAlloc *a;

        if (!atomic_load_explicit(&s->active, memory_order_relaxed))
                return false;
        pthread_mutex_lock(&s->lock);
        if ((a = share_vmm_unlink(&s->vmm, va))) {
                share_retire(s, a);
                s->drv.vmm.ctx_synchronize(); /* cuMemFree waits for the work using the memory */
                share_ipc_forget(s, a);
                share_vmm_release(&s->vmm, a);
        }
        pthread_mutex_unlock(&s->lock);
        if (!a)
                return false;
        *result = CUDA_SUCCESS;
        return true;
}

void sage_share_prestage(CUcontext ctx) {
        SageShare *s = sage_share();
        ShareReadback rb = { 0 };
        CUcontext popped;
        size_t staged;
        bool pushed, readback, kept = false;

        if (!ctx || !sage_options()->share) {
                share_stage_ahead_drop(); /* no context, no sharing: the pages made ahead go */
                return;
        }
        pthread_mutex_lock(&s->lock);
        pushed = share_enabled(s) && s->drv.ctx_push(ctx) == CUDA_SUCCESS;
        readback = pushed && sage_options()->share_assemble && !s->readback.host;
        pthread_mutex_unlock(&s->lock);
        if (!pushed) {
                share_stage_ahead_drop();
                return;
        }
        /*
         * Outside the lock (under it, assembly's read-back held a C function's cuMemAlloc). A program that ran
         * before: its hits' keys and imports first; the miss path's staging (a C function uploads within ms of
         * its context) only where they may miss: else a first miss makes its own.
         */
        if (share_ahead_prepare(s))
                share_stage_ahead_drop(); /* 128 MiB pinned per process for nothing, 16 processes starting */
        else if ((staged = share_upload_prestage(s, ctx)))
                sage_info("share: the miss path's staging made ahead (%zu MiB pinned, %s)", staged >> 20,
                          s->stage.no_register ? "by cuMemAllocHost" : "registered");
        if (readback && share_readback_prepare(&rb, &s->drv, ctx)) {
                pthread_mutex_lock(&s->lock);
                if (!s->readback.host) { /* else the first read-back made its own meanwhile */
                        s->readback = rb;
                        kept = true;
                }
                pthread_mutex_unlock(&s->lock);
                if (kept)
                        sage_info("share: assembly's read-back staging made ahead (%s)",
                                  rb.pinned ? "pinned" : "not pinned");
                else
                        share_readback_release(&rb, &s->drv);
        }
        s->drv.ctx_pop(&popped);
}

/* ---------------------------------------------------------------- hooks */

/*
 * Deferred pieces' backing (share_backing.c): all of them, or the granules
 * of [dst, dst+n). The app's thread may be capturing a stream (a launch
 * recorded into a graph): in the global mode the driver refuses calls it
 * deems unsafe there and spoils the capture; VMM calls touch no stream, so
 * they run in the relaxed mode.
 */
typedef enum BackWhat {
        BACK_RANGE,
        BACK_ALLOC,
        BACK_ALL
} BackWhat;

static CUresult back(SageShare *s, CUdeviceptr dst, size_t n, BackWhat what) {
        CUstreamCaptureMode mode;
        CUresult r = CUDA_SUCCESS;
        SageShareAlloc *a;
        bool unbacked;
        uint64_t t;

        if (!atomic_load_explicit(&s->vmm.unbacked, memory_order_relaxed) ||
            !atomic_load_explicit(&s->active, memory_order_relaxed))
                return CUDA_SUCCESS;
        if (what == BACK_ALLOC) { /* a query about other memory, or a backed allocation: no driver call */
                pthread_mutex_lock(&s->lock);
                a = share_vmm_find(&s->vmm, dst, 1);
                unbacked = a && share_vmm_has_unbacked(a);
                pthread_mutex_unlock(&s->lock);
                if (!unbacked)
                        return CUDA_SUCCESS;
        }
        t = sage_now_ns();
        mode = sage_capture_relax(s->drv.exchange_capture_mode);
        pthread_mutex_lock(&s->lock);
        if (what == BACK_ALL)
                r = share_vmm_back_all(&s->vmm) ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
        else if (what == BACK_ALLOC && (a = share_vmm_find(&s->vmm, dst, 1)))
                r = share_vmm_back(&s->vmm, a, 0, a->padded);
        else if (what == BACK_RANGE && (a = share_vmm_find(&s->vmm, dst, n)))
                r = share_vmm_back(&s->vmm, a, dst - a->va, n);
        pthread_mutex_unlock(&s->lock);
        sage_capture_restore(s->drv.exchange_capture_mode, mode);
        /* An upload's ends: part of its re-mapping; the rest: where the first launch pays for the uploads. */
        sage_stats_add(what != BACK_RANGE ? SAGE_STAT_SHARE_NS_BACK : SAGE_STAT_SHARE_NS_REMAP, sage_now_ns() - t);
        return r;
}

void sage_share_back_all(void) {
        back(sage_share(), 0, 0, BACK_ALL);
}

CUresult sage_share_back(CUdeviceptr dst, size_t n) {
        return back(sage_share(), dst, n, BACK_RANGE);
}

/* A pointer query (share_reach.c): all of the allocation `p` falls in, as the eager allocation had it (one mapping
 * from its held memory when no hit reached it), so the driver answers as for mapped memory; nothing else when
 * nothing is deferred (one atomic load). */
void sage_share_back_alloc(CUdeviceptr p) {
        back(sage_share(), p, 1, BACK_ALLOC);
}

void sage_share_note_write(void) {
        share_vmm_note_write(&sage_share()->vmm);
}

/*
 * Pieces made private_due (share_guard.h) become private before a graph
 * call made while no capture is open. While one is, the synchronize that
 * takes would be refused and break that capture: they stay due (a graph
 * launched then that writes one faults), made private when it ends.
 */
static void share_graph_settle(void) {
        if (atomic_load_explicit(&sage_share()->vmm.private_due, memory_order_relaxed) && !sage_capture_open())
                sage_share_captures_closed(); /* what the end of the last capture does */
}

/*
 * Before an API write SAGE's own logic does not handle: shared pieces it
 * touches get private backing first, as the launch guard does for kernels
 * (the driver refuses an API write into a read-only mapping). A declared or
 * computed range privatizes what it covers; an unknown one everything in
 * the allocation it starts in, or everywhere when even that is unknown.
 * Not here: IMPL hooks (uploads, sets, device copies: share_upload.c, which
 * privatizes in its own logic, an upload replacing whole granules instead)
 * and launches and graphs (the launch guard, which knows what a kernel uses).
 */
static void share_before(SageCall *call) {
        const SageSymInfo *info = &sage_sym_info[call->sym];

        /*
         * Deferred pieces before anything may reach them; the copy IMPLs back
         * what they copy themselves, the launch IMPLs all of it, after the
         * assembly that backs while its read-back waits (sage_share_guard_launch).
         */
        if (!call->own && (info->category == SAGE_CAT_GRAPH || info->category == SAGE_CAT_IPC ||
                           (info->category == SAGE_CAT_COPY && !info->impl))) {
                sage_share_settle_runs(); /* a predicted run's uploads are on the host still */
                sage_share_back_all();
        }
        if (!call->own && info->category == SAGE_CAT_GRAPH) { /* a graph's kernels may write what no upload confirmed */
                share_predict_settle(sage_share());
                share_graph_settle();
        }
        if (call->own || info->impl || info->category == SAGE_CAT_LAUNCH || info->category == SAGE_CAT_GRAPH)
                return;
        if (call->writes == SAGE_WRITES_RANGE && call->write_bytes)
                sage_share_before_write(call->write_dst, call->write_bytes);
        else if (call->writes == SAGE_WRITES_UNKNOWN)
                sage_share_before_unknown_write(call->write_dst);
}

/* After the call: what may have written memory ends the "fresh" state of allocations (share_alloc.c). */
static void share_after(SageCall *call) {
        if (!call->own)
                sage_share_after_call(call->sym);
}

const SageObserver sage_share_observer = { .before = share_before, .after = share_after, .reclaim = share_predict_oom };

void sage_share_after_call(SageSym sym) {
        SageCategory cat = sage_sym_info[sym].category;

        if (cat == SAGE_CAT_LAUNCH || cat == SAGE_CAT_GRAPH)
                sage_share_note_write();
        else if (sage_sym_writes_unknown(sym)) /* hooks.def: SAGE_W_UNKNOWN (launches, graphs) */
                sage_share_note_write(); /* the other copies and sets say where they write (before, or their impl) */
}

CUresult sage_impl_cuMemAlloc_v2(sage_fn_cuMemAlloc_v2_t real, CUdeviceptr *dptr, size_t bytesize) {
        CUresult r;
        return sage_share_alloc(dptr, bytesize, &r) ? r : SHARE_OOM_RETRY(real(dptr, bytesize));
}

CUresult sage_impl_cuMemFree_v2(sage_fn_cuMemFree_v2_t real, CUdeviceptr dptr) {
        CUresult r;
        return sage_share_free(dptr, &r) ? r : real(dptr);
}

CUresult sage_impl_cuMemGetAddressRange_v2(sage_fn_cuMemGetAddressRange_v2_t real, CUdeviceptr *pbase, size_t *psize,
                                           CUdeviceptr dptr) {
        SageShare *s = sage_share();
        SageShareAlloc *a;

        if (atomic_load_explicit(&s->active, memory_order_relaxed)) {
                pthread_mutex_lock(&s->lock);
                a = share_vmm_find(&s->vmm, dptr, 1);
                if (a) {
                        if (pbase)
                                *pbase = share_vmm_user_va(a);
                        if (psize)
                                *psize = a->size - a->lead;
                }
                pthread_mutex_unlock(&s->lock);
                if (a)
                        return CUDA_SUCCESS;
        }
        return real(pbase, psize, dptr);
}

/* ---------------------------------------------------------------- launches */

/* Every launch entry point: assembly first, the deferred backing, then the guard (share_guard.c). */
void sage_share_guard_launch(CUstream stream, CUfunction f, void **params, void **extra) {
        SageShare *s = sage_share();
        bool open;
        ShareGuardWhen when;
        uint64_t t;

        if (!atomic_load_explicit(&s->active, memory_order_relaxed)) /* off (a fork()ed child: the parent's state) */
                return;
        open = sage_capture_open(); /* none open (the rule): no driver call */

        /*
         * Before the kernel can write what the uploads left. Not while the
         * launch is captured, nor while any thread has a capture open:
         * assembly synchronizes the context, which the driver refuses then
         * and which breaks the capture (those allocations are then not
         * assembled at all).
         */
        share_predict_settle(s); /* the launch guard knows only pieces an upload spans */
        if (atomic_load_explicit(&s->vmm.pending, memory_order_relaxed) && !open && !share_capturing(s, stream))
                share_assemble(s);
        sage_share_back_all(); /* what assembly's read-back left: nothing may reach an unbacked piece */
        if (!atomic_load_explicit(&s->guarding, memory_order_relaxed) || !f)
                return;
        t = sage_now_ns();
        when = !open ? SHARE_GUARD_NOW : share_capturing(s, stream) ? SHARE_GUARD_CAPTURED : SHARE_GUARD_DEFER;
        pthread_mutex_lock(&s->lock);
        /* The captures over: what was left due (a graph may run next). */
        if (!open && atomic_load_explicit(&s->vmm.private_due, memory_order_relaxed))
                share_guard_settle(&s->vmm);
        share_guard_scan(&s->guard, &s->vmm, f, params, extra, when);
        pthread_mutex_unlock(&s->lock);
        sage_stats_count(SAGE_STAT_SHARE_GUARD_LAUNCHES);
        sage_stats_add(SAGE_STAT_SHARE_NS_GUARD, sage_now_ns() - t);
}

void sage_share_forked(void) {
        share_forked(sage_share());
}

void sage_share_captures_closed(void) {
        SageShare *s = sage_share();

        if (!atomic_load_explicit(&s->vmm.private_due, memory_order_relaxed) ||
            !atomic_load_explicit(&s->active, memory_order_relaxed))
                return;
        pthread_mutex_lock(&s->lock);
        share_guard_settle(&s->vmm);
        pthread_mutex_unlock(&s->lock);
}

CUresult sage_impl_cuLaunchKernel(sage_fn_cuLaunchKernel_t real, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                  unsigned bx, unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params,
                                  void **extra) {
        sage_share_guard_launch(s, f, params, extra);
        return real(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra);
}

CUresult sage_impl_cuLaunchKernel_ptsz(sage_fn_cuLaunchKernel_ptsz_t real, CUfunction f, unsigned gx, unsigned gy,
                                       unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem, CUstream s,
                                       void **params, void **extra) {
        sage_share_guard_launch(sage_share_stream_of(s, true), f, params, extra);
        return real(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra);
}

CUresult sage_impl_cuLaunchCooperativeKernel(sage_fn_cuLaunchCooperativeKernel_t real, CUfunction f, unsigned gx,
                                             unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                             unsigned shmem, CUstream s, void **params) {
        sage_share_guard_launch(s, f, params, NULL);
        return real(f, gx, gy, gz, bx, by, bz, shmem, s, params);
}

CUresult sage_impl_cuLaunchCooperativeKernel_ptsz(sage_fn_cuLaunchCooperativeKernel_ptsz_t real, CUfunction f,
                                                  unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                                  unsigned bz, unsigned shmem, CUstream s, void **params) {
        sage_share_guard_launch(sage_share_stream_of(s, true), f, params, NULL);
        return real(f, gx, gy, gz, bx, by, bz, shmem, s, params);
}

CUresult sage_impl_cuLaunchKernelEx(sage_fn_cuLaunchKernelEx_t real, const CUlaunchConfig *config, CUfunction f,
                                    void **params, void **extra) {
        sage_share_guard_launch(config ? config->hStream : NULL, f, params, extra);
        return real(config, f, params, extra);
}

CUresult sage_impl_cuLaunchKernelEx_ptsz(sage_fn_cuLaunchKernelEx_ptsz_t real, const CUlaunchConfig *config,
                                         CUfunction f, void **params, void **extra) {
        sage_share_guard_launch(sage_share_stream_of(config ? config->hStream : NULL, true), f, params, extra);
        return real(config, f, params, extra);
}

/* unpark's lookups, all in one exchange: the extents only (the pieces kept their notes). */
static void unpark_lookup(void *ctx, ShareParkedLookup *ls, size_t n) {
        SageShare *s = ctx;
        SageBrokerLookup *bl;

        if (!s->broker || !(bl = calloc(n, sizeof(*bl))))
                return;
        for (size_t i = 0; i < n; i++)
                bl[i] = (SageBrokerLookup){ .hash = ls[i].key, .size = ls[i].len, .device = ls[i].device };
        share_broker_lost(s, sage_broker_lookup_many(s->broker, bl, n));
        for (size_t i = 0; i < n; i++) {
                /* A reply we do not understand (-EPROTO) loses the broker, as lookup's did; what came
                 * after it is not trusted either: those pieces stay parked. */
                bl[i].result = share_take_ref(s, bl[i].result, &bl[i].extent_id, &bl[i].fd);
                share_broker_lost(s, bl[i].result);
                if (!s->broker) {
                        if (bl[i].fd >= 0)
                                close(bl[i].fd);
                        continue;
                }
                ls[i].extent_id = bl[i].extent_id;
                ls[i].fd = bl[i].fd;
        }
        free(bl);
}

long sage_share_park(void) {
        SageShare *s = sage_share();
        long n = -1;

        pthread_mutex_lock(&s->lock);
        if (s->state == 1 && s->drv_ready) {
                /* Nothing in flight may read what goes away. */
                for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next)
                        share_vmm_sync(&s->vmm, a);
                /* Memory made but not mapped yet (deferred) is not known to restore: mapped, it is like any. */
                share_vmm_back_all(&s->vmm);
                if (share_app_privatize_unmapped(s))
                        sage_warn("share: an app's unmapped VMM handle keeps a broker extent; its restore will fail");
                n = (long)share_vmm_park(&s->vmm);
        }
        pthread_mutex_unlock(&s->lock);
        return n;
}

size_t sage_share_parked(void) {
        SageShare *s = sage_share();
        size_t n = 0;

        pthread_mutex_lock(&s->lock);
        for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next)
                for (size_t i = 0; i < a->npieces; i++)
                        n += a->pieces[i].parked;
        pthread_mutex_unlock(&s->lock);
        return n;
}

size_t sage_share_unpark(void) {
        SageShare *s = sage_share();
        size_t failed = 0;

        pthread_mutex_lock(&s->lock);
        if (s->state == 1 && s->drv_ready)
                failed = share_vmm_unpark(&s->vmm, unpark_lookup, s);
        pthread_mutex_unlock(&s->lock);
        return failed;
}

/* Pieces mapped from a broker now. Under s->lock. */
static size_t mapped_pieces(SageShare *s) {
        size_t n = 0;

        for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next)
                for (size_t i = 0; i < a->npieces; i++)
                        n += a->pieces[i].extent_id != 0;
        return n;
}

/* No connection, or its broker hung up (the socket says so without a request). */
static bool connection_dead(const SageBroker *b) {
        struct pollfd p = { .fd = b ? sage_broker_fd(b) : -1, .events = POLLIN | POLLRDHUP };

        return p.fd < 0 || (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)));
}

int sage_share_reconnect(void) {
        SageShare *s = sage_share();
        char why[320];
        int r = 0;

        pthread_mutex_lock(&s->lock);
        if (s->state == 1 && connection_dead(s->broker)) {
                s->broker = sage_broker_free(s->broker);
                if (mapped_pieces(s) > 0)
                        r = -EBUSY;
                else if ((r = share_broker_connect(s, why, sizeof(why))) >= 0)
                        sage_info("share: connected to the broker again");
        }
        pthread_mutex_unlock(&s->lock);
        return r;
}

bool sage_share_orphaned(void) {
        SageShare *s = sage_share();
        bool orphaned;

        pthread_mutex_lock(&s->lock);
        orphaned = s->state == 1 && mapped_pieces(s) > 0 && connection_dead(s->broker);
        pthread_mutex_unlock(&s->lock);
        return orphaned;
}
