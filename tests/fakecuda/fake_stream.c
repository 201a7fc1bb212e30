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
 */
#include "fake_internal.h"

#include <stdlib.h>
#include <string.h>

static bool stream_alive_locked(CUstream s) {
        for (CUstream p = fake.streams; p; p = p->next)
                if (p == s)
                        return true;
        return false;
}

static bool is_default_stream(CUstream s) {
        return s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD;
}

CUresult fake_stream_check(CUstream s, struct CUgraph_st **capture) {
        FAKE_REQUIRE_INIT();
        *capture = NULL;
        if (is_default_stream(s))
                return CUDA_SUCCESS;
        fake_lock();
        bool alive = stream_alive_locked(s);
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

#define LIST_REMOVE(head, item)                                                    \
        do {                                                                       \
                for (__typeof__(head) *pp_ = &(head); *pp_; pp_ = &(*pp_)->next) { \
                        if (*pp_ == (item)) {                                      \
                                *pp_ = (item)->next;                               \
                                break;                                             \
                        }                                                          \
                }                                                                  \
        } while (0)

FAKE_EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph, unsigned long long flags) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (!phGraphExec || !hGraph)
                return CUDA_ERROR_INVALID_VALUE;
        CUgraphExec exec = calloc(1, sizeof *exec);
        if (!exec)
                return CUDA_ERROR_OUT_OF_MEMORY;
        CUresult r = CUDA_SUCCESS;
        fake_lock();
        bool found = false;
        for (CUgraph g = fake.graphs; g; g = g->next)
                found |= g == hGraph;
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
        CUresult r = fake_stream_check_uncaptured(hStream); /* graphs inside captures are not simulated */
        if (r != CUDA_SUCCESS)
                return r;
        fake_lock();
        bool found = false;
        for (CUgraphExec e = fake.execs; e; e = e->next)
                found |= e == hGraphExec;
        fake_unlock();
        if (!found)
                return CUDA_ERROR_INVALID_VALUE;
        fake_queue_drain(); /* graphs run at once, after what came before */
        for (size_t i = 0; i < hGraphExec->graph.count; i++)
                if ((r = fake_op_run(&hGraphExec->graph.ops[i])) != CUDA_SUCCESS)
                        return r;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec e, CUstream s) {
        FAKE_GATE();
        return cuGraphLaunch(e, s);
}

FAKE_EXPORT CUresult cuGraphExecDestroy(CUgraphExec hGraphExec) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        fake_lock();
        bool found = false;
        for (CUgraphExec e = fake.execs; e; e = e->next)
                found |= e == hGraphExec;
        if (found)
                LIST_REMOVE(fake.execs, hGraphExec);
        fake_unlock();
        if (!found)
                return CUDA_ERROR_INVALID_VALUE;
        graph_clear(&hGraphExec->graph);
        free(hGraphExec);
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGraphDestroy(CUgraph hGraph) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        fake_lock();
        bool found = false;
        for (CUgraph g = fake.graphs; g; g = g->next)
                found |= g == hGraph;
        if (found)
                LIST_REMOVE(fake.graphs, hGraph);
        fake_unlock();
        if (!found)
                return CUDA_ERROR_INVALID_VALUE;
        graph_clear(hGraph);
        free(hGraph);
        return CUDA_SUCCESS;
}

/* ------------------------------------------------------------ streams */
static CUresult stream_create(CUstream *ph, unsigned flags, int priority) {
        CUcontext ctx;
        CUresult r = fake_require_context(&ctx);
        if (r != CUDA_SUCCESS)
                return r;
        if (!ph)
                return CUDA_ERROR_INVALID_VALUE;
        CUstream s = calloc(1, sizeof *s);
        if (!s)
                return CUDA_ERROR_OUT_OF_MEMORY;
        s->ctx = ctx;
        s->flags = flags;
        s->priority = priority;
        fake_lock();
        s->next = fake.streams;
        fake.streams = s;
        fake_unlock();
        *ph = s;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags) {
        FAKE_GATE();
        return stream_create(phStream, Flags, 0);
}

FAKE_EXPORT CUresult cuStreamCreateWithPriority(CUstream *phStream, unsigned int flags, int priority) {
        FAKE_GATE();
        return stream_create(phStream, flags, priority);
}

static void stream_free_locked(CUstream s) {
        LIST_REMOVE(fake.streams, s);
        if (s->capture) {
                graph_clear(s->capture);
                free(s->capture);
        }
        free(s);
}

FAKE_EXPORT CUresult cuStreamDestroy_v2(CUstream hStream) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        fake_queue_drain();
        fake_lock();
        bool alive = stream_alive_locked(hStream);
        if (alive)
                stream_free_locked(hStream);
        fake_unlock();
        return alive ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

static CUresult stream_sync(CUstream s) {
        struct CUgraph_st *capture;
        CUresult r = fake_stream_check(s, &capture);
        if (r == CUDA_SUCCESS && capture)
                r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        if (r == CUDA_SUCCESS) {
                fake_queue_drain();
                CUcontext ctx; /* a fault of the work waited for shows here */
                r = fake_require_context(&ctx);
        }
        return r;
}

FAKE_EXPORT CUresult cuStreamSynchronize(CUstream s) {
        FAKE_GATE();
        return stream_sync(s);
}
FAKE_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream s) {
        FAKE_GATE();
        return stream_sync(s);
}
FAKE_EXPORT CUresult cuStreamQuery(CUstream s) {
        FAKE_GATE();
        return stream_sync(s);
}
FAKE_EXPORT CUresult cuStreamQuery_ptsz(CUstream s) {
        FAKE_GATE();
        return stream_sync(s);
}

static bool event_alive_locked(CUevent e) {
        for (CUevent p = fake.events; p; p = p->next)
                if (p == e)
                        return true;
        return false;
}

FAKE_EXPORT CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int flags) {
        FAKE_GATE();
        struct CUgraph_st *capture;
        CUresult r = fake_stream_check(s, &capture);
        if (r != CUDA_SUCCESS)
                return r;
        fake_lock();
        bool alive = event_alive_locked(e);
        fake_unlock();
        return alive ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

FAKE_EXPORT CUresult cuStreamWaitEvent_ptsz(CUstream s, CUevent e, unsigned int flags) {
        FAKE_GATE();
        return cuStreamWaitEvent(s, e, flags);
}

static CUresult begin_capture(CUstream s) {
        FAKE_REQUIRE_INIT();
        if (is_default_stream(s))
                return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        CUresult r = CUDA_SUCCESS;
        fake_lock();
        if (!stream_alive_locked(s))
                r = CUDA_ERROR_INVALID_HANDLE;
        else if (s->capture)
                r = CUDA_ERROR_ILLEGAL_STATE;
        else if (!(s->capture = calloc(1, sizeof *s->capture)))
                r = CUDA_ERROR_OUT_OF_MEMORY;
        fake_unlock();
        return r;
}

FAKE_EXPORT CUresult fake_cuStreamBeginCapture(CUstream s) {
        FAKE_GATE();
        return begin_capture(s);
}
FAKE_EXPORT CUresult cuStreamBeginCapture_ptsz(CUstream s) {
        FAKE_GATE();
        return begin_capture(s);
}
FAKE_EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode) {
        FAKE_GATE();
        return begin_capture(s);
}
FAKE_EXPORT CUresult cuStreamBeginCapture_v2_ptsz(CUstream s, CUstreamCaptureMode mode) {
        FAKE_GATE();
        return begin_capture(s);
}

FAKE_EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph *phGraph) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (!phGraph)
                return CUDA_ERROR_INVALID_VALUE;
        if (is_default_stream(s))
                return CUDA_ERROR_ILLEGAL_STATE;
        CUresult r = CUDA_SUCCESS;
        fake_lock();
        if (!stream_alive_locked(s)) {
                r = CUDA_ERROR_INVALID_HANDLE;
        } else if (!s->capture) {
                r = CUDA_ERROR_ILLEGAL_STATE;
        } else if (s->capture->invalidated) {
                CUgraph g = s->capture;
                s->capture = NULL;
                graph_clear(g);
                free(g);
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

FAKE_EXPORT CUresult cuStreamEndCapture_ptsz(CUstream s, CUgraph *g) {
        FAKE_GATE();
        return cuStreamEndCapture(s, g);
}

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

FAKE_EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream s, CUstreamCaptureStatus *st) {
        FAKE_GATE();
        return cuStreamIsCapturing(s, st);
}

/* ------------------------------------------------------------ events */
FAKE_EXPORT CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags) {
        FAKE_GATE();
        CUcontext ctx;
        CUresult r = fake_require_context(&ctx);
        if (r != CUDA_SUCCESS)
                return r;
        if (!phEvent)
                return CUDA_ERROR_INVALID_VALUE;
        CUevent e = calloc(1, sizeof *e);
        if (!e)
                return CUDA_ERROR_OUT_OF_MEMORY;
        e->ctx = ctx;
        e->flags = Flags;
        fake_lock();
        e->next = fake.events;
        fake.events = e;
        fake_unlock();
        *phEvent = e;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuEventRecord(CUevent hEvent, CUstream hStream) {
        FAKE_GATE();
        struct CUgraph_st *capture;
        CUresult r = fake_stream_check(hStream, &capture);
        if (r != CUDA_SUCCESS)
                return r;
        fake_lock();
        bool alive = event_alive_locked(hEvent);
        if (alive && !capture) {
                hEvent->recorded = true;
                hEvent->time_ms = fake_now_ms();
        }
        fake_unlock();
        return alive ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

FAKE_EXPORT CUresult cuEventRecord_ptsz(CUevent e, CUstream s) {
        FAKE_GATE();
        return cuEventRecord(e, s);
}

static CUresult event_check(CUevent e) {
        FAKE_REQUIRE_INIT();
        fake_queue_drain();
        fake_lock();
        bool alive = event_alive_locked(e);
        fake_unlock();
        return alive ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

FAKE_EXPORT CUresult cuEventSynchronize(CUevent e) {
        FAKE_GATE();
        return event_check(e);
}
FAKE_EXPORT CUresult cuEventQuery(CUevent e) {
        FAKE_GATE();
        return event_check(e);
}

FAKE_EXPORT CUresult cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (!pMilliseconds)
                return CUDA_ERROR_INVALID_VALUE;
        CUresult r = CUDA_SUCCESS;
        fake_lock();
        if (!event_alive_locked(hStart) || !event_alive_locked(hEnd) || !hStart->recorded || !hEnd->recorded ||
            ((hStart->flags | hEnd->flags) & CU_EVENT_DISABLE_TIMING))
                r = CUDA_ERROR_INVALID_HANDLE;
        else
                *pMilliseconds = (float)(hEnd->time_ms - hStart->time_ms);
        fake_unlock();
        return r;
}

FAKE_EXPORT CUresult fake_cuEventElapsedTime(float *ms, CUevent start, CUevent end) {
        FAKE_GATE();
        return cuEventElapsedTime_v2(ms, start, end);
}

FAKE_EXPORT CUresult cuEventDestroy_v2(CUevent hEvent) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        fake_lock();
        bool alive = event_alive_locked(hEvent);
        if (alive)
                LIST_REMOVE(fake.events, hEvent);
        fake_unlock();
        if (alive)
                free(hEvent);
        return alive ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

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
