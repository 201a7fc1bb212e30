/* fake_stream.c: streams, events, stream capture and graphs.
 *
 * Work submitted to a stream is queued (fake_queue.c) and runs when the
 * program synchronizes: stream and event synchronize and query drain the
 * queue. An event is a timestamp taken at submission. Capture: between
 * cuStreamBeginCapture and cuStreamEndCapture, launches, copies and memsets
 * submitted to it are appended to a graph (a flat list of FakeOps, in
 * submission order) instead of running. cuGraphInstantiate copies the list;
 * cuGraphLaunch replays it. Dependencies are implied by order: a fake has
 * nothing to overlap.
 *
 * Capture modes, as the driver: a thread's mode (cuThreadExchangeStreamCaptureMode,
 * global by default) decides whether it may make a call the driver deems
 * unsafe while a capture goes on (allocating or freeing device or pinned
 * host memory, registering host memory, synchronizing a stream, even one
 * nothing captures: fake_capture_unsafe_call). Global: not while this
 * thread captures in a mode other than relaxed, nor while another thread
 * captures in the global mode; thread-local: only the first; relaxed:
 * always allowed. A prohibited call fails with STREAM_CAPTURE_UNSUPPORTED
 * and invalidates the capture it offends. cuCtxSynchronize is refused and
 * invalidates every capture in any mode; creating streams, async copies,
 * synchronous uploads, event records and VMM calls are allowed in any mode
 * (scripts/probes/capture on the H100, docs/results/2026-12-06-h100-a1a1a1d).
 */
#include "fake_internal.h"

#include <stdlib.h>
#include <string.h>

static bool is_default_stream(CUstream s) {
        return s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD;
}

CUresult fake_stream_check(CUstream s, struct CUgraph_st **capture) {
        FAKE_REQUIRE_INIT();
        *capture = NULL;
        if (is_default_stream(s))
                return CUDA_SUCCESS;
        fake_lock();
        bool alive = fake_listed_locked(fake.streams, s);
        if (alive)
                *capture = s->capture;
        fake_unlock();
        return alive ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult fake_stream_check_uncaptured(CUstream s) {
        struct CUgraph_st *capture;
        CUresult r = fake_stream_check(s, &capture);
        return r == CUDA_SUCCESS && capture ? CUDA_ERROR_NOT_SUPPORTED : r;
}

static _Thread_local CUstreamCaptureMode thread_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

/* Does a capture going on forbid this thread's unsafe calls (the mode rules above)? */
static bool prohibits(const struct CUgraph_st *c) {
        bool own = pthread_equal(c->thread, pthread_self());

        if (thread_mode == CU_STREAM_CAPTURE_MODE_RELAXED || c->invalidated)
                return false;
        if (own)
                return c->mode != CU_STREAM_CAPTURE_MODE_RELAXED;
        return thread_mode == CU_STREAM_CAPTURE_MODE_GLOBAL && c->mode == CU_STREAM_CAPTURE_MODE_GLOBAL;
}

CUresult fake_capture_unsafe_call(void) {
        CUresult r = CUDA_SUCCESS;

        fake_lock();
        for (CUstream p = fake.streams; p; p = p->next)
                if (p->capture && prohibits(p->capture)) {
                        p->capture->invalidated = true;
                        r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
                }
        fake_unlock();
        return r;
}

FAKE_EXPORT CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!mode || (*mode != CU_STREAM_CAPTURE_MODE_GLOBAL &&
                                         *mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
                                         *mode != CU_STREAM_CAPTURE_MODE_RELAXED));
        CUstreamCaptureMode old = thread_mode;
        thread_mode = *mode;
        *mode = old;
        return CUDA_SUCCESS;
}

bool fake_invalidate_captures(void) {
        bool any = false;
        fake_lock();
        for (CUstream p = fake.streams; p; p = p->next)
                if (p->capture) {
                        p->capture->invalidated = true;
                        any = true;
                }
        fake_unlock();
        return any;
}

/* ------------------------------------------------------------ ops & graphs */
void fake_op_release(FakeOp *op) {
        if (op->kind == FAKE_OP_KERNEL) {
                if (op->u.kernel.nparams) /* else borrowed from the caller, see fake_module.c */
                        free(op->u.kernel.params);
                free(op->u.kernel.arg_store);
                op->u.kernel.params = NULL;
                op->u.kernel.arg_store = NULL;
        }
}

CUresult fake_op_run(const FakeOp *op) {
        return fake_op_run_in(op, fake_current_context());
}

CUresult fake_op_run_in(const FakeOp *op, CUcontext ctx) {
        switch (op->kind) {
        case FAKE_OP_KERNEL: return fake_kernel_run(ctx, op->u.kernel.entry, &op->u.kernel.launch, op->u.kernel.params);
        case FAKE_OP_COPY: return fake_copy_checked(op->u.copy.dst, op->u.copy.src, op->u.copy.bytes);
        case FAKE_OP_COPY3D: return fake_copy3d_checked(&op->u.copy3d);
        case FAKE_OP_MEMSET: {
                char *d = op->u.memset.dst;
                unsigned v = op->u.memset.value;
                for (size_t i = 0; i < op->u.memset.count; i++) {
                        if (op->u.memset.elem_size == 1)
                                d[i] = (char)v;
                        else if (op->u.memset.elem_size == 2)
                                ((uint16_t *)(void *)d)[i] = (uint16_t)v;
                        else
                                ((uint32_t *)(void *)d)[i] = (uint32_t)v;
                }
                return CUDA_SUCCESS;
        }
        }
        return CUDA_ERROR_INVALID_VALUE;
}

/* Deep copy, so that a graph and its executable instances own their args. */
static bool op_clone(FakeOp *dst, const FakeOp *src) {
        *dst = *src;
        size_t n = src->kind == FAKE_OP_KERNEL ? src->u.kernel.nparams : 0;
        if (n == 0)
                return true; /* nothing owned: params, if any, are borrowed */
        dst->u.kernel.arg_store = NULL;
        dst->u.kernel.params = malloc(n * sizeof(void *));
        if (!dst->u.kernel.params)
                return false;
        memcpy(dst->u.kernel.params, src->u.kernel.params, n * sizeof(void *));
        if (src->u.kernel.arg_store) {
                dst->u.kernel.arg_store = malloc(src->u.kernel.arg_bytes);
                if (!dst->u.kernel.arg_store) {
                        free(dst->u.kernel.params);
                        return false;
                }
                memcpy(dst->u.kernel.arg_store, src->u.kernel.arg_store, src->u.kernel.arg_bytes);
                for (size_t i = 0; i < n; i++)
                        dst->u.kernel.params[i] =
                                dst->u.kernel.arg_store + ((char *)src->u.kernel.params[i] - src->u.kernel.arg_store);
        }
        return true;
}

static CUresult graph_push(struct CUgraph_st *g, const FakeOp *op) {
        if (g->count == g->capacity) {
                size_t cap = g->capacity ? 2 * g->capacity : 8;
                FakeOp *ops = realloc(g->ops, cap * sizeof *ops);
                if (!ops)
                        return CUDA_ERROR_OUT_OF_MEMORY;
                g->ops = ops;
                g->capacity = cap;
        }
        g->ops[g->count++] = *op;
        return CUDA_SUCCESS;
}

CUresult fake_graph_append(struct CUgraph_st *g, const FakeOp *op) {
        fake_lock();
        CUresult r = graph_push(g, op);
        fake_unlock();
        if (r != CUDA_SUCCESS) {
                FakeOp copy = *op;
                fake_op_release(&copy);
        }
        return r;
}

static void graph_clear(struct CUgraph_st *g) {
        for (size_t i = 0; i < g->count; i++)
                fake_op_release(&g->ops[i]);
        free(g->ops);
        g->ops = NULL;
        g->count = g->capacity = 0;
}

static void graph_free(void *g) {
        if (g)
                graph_clear(g);
        free(g);
}

static void exec_free(void *e) {
        graph_clear(&((CUgraphExec)e)->graph);
        free(e);
}

FAKE_EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph, unsigned long long flags) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!phGraphExec || !hGraph);
        CUgraphExec exec = calloc(1, sizeof *exec);
        if (!exec)
                return CUDA_ERROR_OUT_OF_MEMORY;
        CUresult r = CUDA_SUCCESS;
        fake_lock();
        bool found = fake_listed_locked(fake.graphs, hGraph);
        for (size_t i = 0; found && r == CUDA_SUCCESS && i < hGraph->count; i++) {
                FakeOp op;
                if (!op_clone(&op, &hGraph->ops[i]))
                        r = CUDA_ERROR_OUT_OF_MEMORY;
                else if ((r = graph_push(&exec->graph, &op)) != CUDA_SUCCESS)
                        fake_op_release(&op);
        }
        if (!found)
                r = CUDA_ERROR_INVALID_VALUE;
        if (r == CUDA_SUCCESS) {
                exec->next = fake.execs;
                fake.execs = exec;
        }
        fake_unlock();
        if (r != CUDA_SUCCESS) {
                graph_clear(&exec->graph);
                free(exec);
                return r;
        }
        *phGraphExec = exec;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream) {
        FAKE_GATE();
        FAKE_TRY(fake_stream_check_uncaptured(hStream)); /* graphs inside captures are not simulated */
        if (!fake_listed(&fake.execs, hGraphExec))
                return CUDA_ERROR_INVALID_VALUE;
        fake_queue_drain(); /* graphs run at once, after what came before */
        for (size_t i = 0; i < hGraphExec->graph.count; i++)
                FAKE_TRY(fake_op_run(&hGraphExec->graph.ops[i]));
        return CUDA_SUCCESS;
}

FAKE_ENTRY(cuGraphLaunch_ptsz, (CUgraphExec e, CUstream s), cuGraphLaunch(e, s))

FAKE_ENTRY(cuGraphExecDestroy, (CUgraphExec e), fake_destroy(&fake.execs, e, CUDA_ERROR_INVALID_VALUE, exec_free))
FAKE_ENTRY(cuGraphDestroy, (CUgraph g), fake_destroy(&fake.graphs, g, CUDA_ERROR_INVALID_VALUE, graph_free))

/* ------------------------------------------------------------ streams */
static CUresult stream_create(CUstream *ph, unsigned flags, int priority) {
        CUcontext ctx;
        FAKE_TRY(fake_require_context_args(&ctx, !ph));
        CUstream s = fake_list_add(
                &fake.streams, &(struct CUstream_st){ .ctx = ctx, .flags = flags, .priority = priority }, sizeof *s);
        if (s)
                *ph = s;
        return s ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

FAKE_ENTRY(cuStreamCreate, (CUstream * phStream, unsigned int Flags), stream_create(phStream, Flags, 0))
FAKE_ENTRY(cuStreamCreateWithPriority, (CUstream * phStream, unsigned int flags, int priority),
           stream_create(phStream, flags, priority))

static void stream_free_locked(CUstream s) {
        LIST_REMOVE(fake.streams, s);
        graph_free(s->capture);
        free(s);
}

FAKE_EXPORT CUresult cuStreamDestroy_v2(CUstream hStream) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        fake_queue_drain();
        fake_lock();
        bool alive = fake_listed_locked(fake.streams, hStream);
        if (alive)
                stream_free_locked(hStream);
        fake_unlock();
        return alive ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

/*
 * A synchronize (`wait`) is an unsafe call, even of a stream nothing
 * captures; a query is not modelled so. A query of work not run yet says
 * so (CUDA_ERROR_NOT_READY) and lets it run: the one queue holds every
 * stream's work, so any pending work counts (a valid answer for streams
 * the program orders among themselves).
 */
static CUresult stream_wait(CUstream s, bool wait) {
        struct CUgraph_st *capture;
        CUresult r = fake_stream_check(s, &capture);
        if (r == CUDA_SUCCESS && capture)
                r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        if (r == CUDA_SUCCESS && wait)
                r = fake_capture_unsafe_call();
        if (r == CUDA_SUCCESS && !wait && fake_queue_pending())
                return CUDA_ERROR_NOT_READY;
        if (r == CUDA_SUCCESS) {
                fake_queue_drain();
                CUcontext ctx; /* a fault of the work waited for shows here */
                r = fake_require_context(&ctx);
        }
        return r;
}

FAKE_ENTRY_PTSZ(cuStreamSynchronize, (CUstream s), stream_wait(s, true))
FAKE_ENTRY_PTSZ(cuStreamQuery, (CUstream s), stream_wait(s, false))

static CUresult stream_wait_event(CUstream s, CUevent e) {
        struct CUgraph_st *capture;
        FAKE_TRY(fake_stream_check(s, &capture));
        return fake_listed(&fake.events, e) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

FAKE_ENTRY_PTSZ(cuStreamWaitEvent, (CUstream s, CUevent e, unsigned int flags), stream_wait_event(s, e))

static CUresult begin_capture(CUstream s, CUstreamCaptureMode mode) {
        FAKE_REQUIRE_INIT();
        if (mode != CU_STREAM_CAPTURE_MODE_GLOBAL && mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
            mode != CU_STREAM_CAPTURE_MODE_RELAXED)
                return CUDA_ERROR_INVALID_VALUE;
        if (is_default_stream(s))
                return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        CUresult r = CUDA_SUCCESS;
        fake_lock();
        if (!fake_listed_locked(fake.streams, s))
                r = CUDA_ERROR_INVALID_HANDLE;
        else if (s->capture)
                r = CUDA_ERROR_ILLEGAL_STATE;
        else if (!(s->capture = calloc(1, sizeof *s->capture)))
                r = CUDA_ERROR_OUT_OF_MEMORY;
        else {
                s->capture->mode = mode;
                s->capture->thread = pthread_self();
        }
        fake_unlock();
        return r;
}

/* The first entry point (CUDA 10.0) has no mode: the global one. */
FAKE_ENTRY(fake_cuStreamBeginCapture, (CUstream s), begin_capture(s, CU_STREAM_CAPTURE_MODE_GLOBAL))
FAKE_ENTRY(cuStreamBeginCapture_ptsz, (CUstream s), begin_capture(s, CU_STREAM_CAPTURE_MODE_GLOBAL))
FAKE_ENTRY_PTSZ(cuStreamBeginCapture_v2, (CUstream s, CUstreamCaptureMode mode), begin_capture(s, mode))

FAKE_EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph *phGraph) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!phGraph);
        if (is_default_stream(s))
                return CUDA_ERROR_ILLEGAL_STATE;
        CUresult r = CUDA_SUCCESS;
        fake_lock();
        if (!fake_listed_locked(fake.streams, s)) {
                r = CUDA_ERROR_INVALID_HANDLE;
        } else if (!s->capture) {
                r = CUDA_ERROR_ILLEGAL_STATE;
        } else if (s->capture->invalidated) {
                graph_free(s->capture);
                s->capture = NULL;
                r = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        } else {
                CUgraph g = s->capture;
                s->capture = NULL;
                g->next = fake.graphs;
                fake.graphs = g;
                *phGraph = g;
        }
        fake_unlock();
        return r;
}

FAKE_ENTRY(cuStreamEndCapture_ptsz, (CUstream s, CUgraph *g), cuStreamEndCapture(s, g))

FAKE_EXPORT CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus *status) {
        FAKE_GATE();
        if (!status)
                return CUDA_ERROR_INVALID_VALUE;
        struct CUgraph_st *capture;
        CUresult r = fake_stream_check(s, &capture);
        if (r == CUDA_SUCCESS)
                *status = capture ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
        return r;
}

FAKE_ENTRY(cuStreamIsCapturing_ptsz, (CUstream s, CUstreamCaptureStatus *st), cuStreamIsCapturing(s, st))

/* ------------------------------------------------------------ events */
FAKE_EXPORT CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags) {
        FAKE_GATE();
        CUcontext ctx;
        FAKE_TRY(fake_require_context_args(&ctx, !phEvent));
        CUevent e = fake_list_add(&fake.events, &(struct CUevent_st){ .ctx = ctx, .flags = Flags }, sizeof *e);
        if (e)
                *phEvent = e;
        return e ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

FAKE_EXPORT CUresult cuEventRecord(CUevent hEvent, CUstream hStream) {
        FAKE_GATE();
        struct CUgraph_st *capture;
        FAKE_TRY(fake_stream_check(hStream, &capture));
        fake_lock();
        bool alive = fake_listed_locked(fake.events, hEvent);
        if (alive && !capture) {
                hEvent->recorded = true;
                hEvent->time_ms = fake_now_ms();
        }
        fake_unlock();
        return alive ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

FAKE_ENTRY(cuEventRecord_ptsz, (CUevent e, CUstream s), cuEventRecord(e, s))

static CUresult event_check(CUevent e) {
        FAKE_REQUIRE_INIT();
        fake_queue_drain();
        return fake_listed(&fake.events, e) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

FAKE_ENTRY(cuEventSynchronize, (CUevent e), event_check(e))
FAKE_ENTRY(cuEventQuery, (CUevent e), event_check(e))

FAKE_EXPORT CUresult cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!pMilliseconds);
        CUresult r = CUDA_SUCCESS;
        fake_lock();
        if (!fake_listed_locked(fake.events, hStart) || !fake_listed_locked(fake.events, hEnd) || !hStart->recorded ||
            !hEnd->recorded || ((hStart->flags | hEnd->flags) & CU_EVENT_DISABLE_TIMING))
                r = CUDA_ERROR_INVALID_HANDLE;
        else
                *pMilliseconds = (float)(hEnd->time_ms - hStart->time_ms);
        fake_unlock();
        return r;
}

FAKE_ENTRY(fake_cuEventElapsedTime, (float *ms, CUevent start, CUevent end), cuEventElapsedTime_v2(ms, start, end))

FAKE_ENTRY(cuEventDestroy_v2, (CUevent e), fake_destroy(&fake.events, e, CUDA_ERROR_INVALID_HANDLE, free))

void fake_stream_free_context_locked(CUcontext ctx) {
        for (CUstream s = fake.streams, next; s; s = next) {
                next = s->next;
                if (s->ctx == ctx)
                        stream_free_locked(s);
        }
        for (CUevent e = fake.events, next; e; e = next) {
                next = e->next;
                if (e->ctx == ctx) {
                        LIST_REMOVE(fake.events, e);
                        free(e);
                }
        }
}
