/*
 * Which stream captures the app has open (capture_mode.h). The driver
 * refuses cuCtxSynchronize while any stream of the context captures, in
 * every capture mode, and invalidates that capture (scripts/probes/capture):
 * so libsage, whose sharing synchronizes before it replaces backing or
 * assembles, must know whether a capture is open on any thread, which no
 * driver call says. The begin and end entry points are hooked; an entry is
 * dropped once the driver says its stream captures no more (an ended or
 * invalidated-and-ended capture, a destroyed stream). A capture of a
 * thread's per-thread default stream can be asked about only on that thread:
 * it is dropped at that thread's end of it.
 */
#include <cuda.h>

#include "capture_mode.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "driver.h"
#include "hooks.h"

#define CAPTURE_SLOTS 64

typedef struct OpenCapture {
        CUstream stream;
        pthread_t thread; /* per-thread stream: the thread it belongs to */
        bool per_thread;
} OpenCapture;

static struct {
        pthread_mutex_t lock;
        OpenCapture open[CAPTURE_SLOTS];
        unsigned n;
        unsigned lost;   /* begun past CAPTURE_SLOTS: counted open for good (no synchronize ever skipped wrongly) */
        atomic_uint any; /* n + lost, read without the lock */
} captures = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void (*_Atomic on_close)(void);

void sage_capture_on_close(void (*fn)(void)) {
        atomic_store(&on_close, fn);
}

/* After an end of capture: prune what ended (this thread's per-thread stream is asked about here). */
static void ended(void) {
        void (*fn)(void) = atomic_load(&on_close);

        if (!sage_capture_open() && fn)
                fn();
}

static bool is_per_thread(CUstream s, bool ptsz) {
        return s == CU_STREAM_PER_THREAD || (ptsz && !s);
}

/*
 * Does `c` still capture? Under the lock. Asked of the driver (an error:
 * the stream is gone), except another thread's per-thread stream: that
 * thread's own end of it says.
 */
static bool still_open(const OpenCapture *c) {
        CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
        CUresult (*is_capturing)(CUstream, CUstreamCaptureStatus *) = sage_driver_extras.stream_is_capturing;

        if (c->per_thread && !pthread_equal(c->thread, pthread_self()))
                return true;
        if (!is_capturing)
                return true;
        return is_capturing(c->stream, &st) == CUDA_SUCCESS && st != CU_STREAM_CAPTURE_STATUS_NONE;
}

/* Entries whose capture ended dropped. Under the lock. */
static void prune(void) {
        for (unsigned i = 0; i < captures.n;)
                if (still_open(&captures.open[i]))
                        i++;
                else
                        captures.open[i] = captures.open[--captures.n];
        atomic_store(&captures.any, captures.n + captures.lost);
}

static void note_begin(CUresult r, CUstream s, bool ptsz) {
        bool per_thread = is_per_thread(s, ptsz);

        if (r != CUDA_SUCCESS)
                return;
        pthread_mutex_lock(&captures.lock);
        if (captures.n < CAPTURE_SLOTS)
                captures.open[captures.n++] = (OpenCapture){ .stream = per_thread ? CU_STREAM_PER_THREAD : s,
                                                             .thread = pthread_self(),
                                                             .per_thread = per_thread };
        else
                captures.lost++;
        atomic_store(&captures.any, captures.n + captures.lost);
        pthread_mutex_unlock(&captures.lock);
}

bool sage_capture_open(void) {
        bool open;

        if (!atomic_load_explicit(&captures.any, memory_order_relaxed))
                return false;
        pthread_mutex_lock(&captures.lock);
        prune();
        open = captures.n + captures.lost > 0;
        pthread_mutex_unlock(&captures.lock);
        return open;
}

CUresult sage_impl_cuStreamBeginCapture_v2(sage_fn_cuStreamBeginCapture_v2_t real, CUstream s,
                                           CUstreamCaptureMode mode) {
        CUresult r = real(s, mode);
        note_begin(r, s, false);
        return r;
}

CUresult sage_impl_cuStreamBeginCapture_v2_ptsz(sage_fn_cuStreamBeginCapture_v2_ptsz_t real, CUstream s,
                                                CUstreamCaptureMode mode) {
        CUresult r = real(s, mode);
        note_begin(r, s, true);
        return r;
}

CUresult sage_impl_cuStreamBeginCaptureToGraph(sage_fn_cuStreamBeginCaptureToGraph_t real, CUstream s, CUgraph g,
                                               const CUgraphNode *deps, const CUgraphEdgeData *data, size_t n,
                                               CUstreamCaptureMode mode) {
        CUresult r = real(s, g, deps, data, n, mode);
        note_begin(r, s, false);
        return r;
}

CUresult sage_impl_cuStreamBeginCaptureToGraph_ptsz(sage_fn_cuStreamBeginCaptureToGraph_ptsz_t real, CUstream s,
                                                    CUgraph g, const CUgraphNode *deps, const CUgraphEdgeData *data,
                                                    size_t n, CUstreamCaptureMode mode) {
        CUresult r = real(s, g, deps, data, n, mode);
        note_begin(r, s, true);
        return r;
}

CUresult sage_impl_cuStreamEndCapture(sage_fn_cuStreamEndCapture_t real, CUstream s, CUgraph *g) {
        CUresult r = real(s, g);
        ended();
        return r;
}

CUresult sage_impl_cuStreamEndCapture_ptsz(sage_fn_cuStreamEndCapture_ptsz_t real, CUstream s, CUgraph *g) {
        CUresult r = real(s, g);
        ended();
        return r;
}
