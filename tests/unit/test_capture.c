/*
 * Unit test of intercept/capture.c: which stream captures libsage counts
 * open. The driver here is a table of captures this file keeps (what
 * cuStreamIsCapturing answers, per stream, and per thread for the
 * per-thread default stream). Checked: a begun capture is open until the
 * driver says its stream captures no more (at its end, or at any later
 * look: an invalidated or destroyed one); a begin the driver refused is not
 * counted; another thread's per-thread-stream capture stays open until that
 * thread ends it (only it can ask the driver about its per-thread stream);
 * past the table's room a capture counts open for good.
 */
#include <pthread.h>
#include <string.h>

#include "../../intercept/capture_mode.h"
#include "../../intercept/driver.h"
#include "../../intercept/hooks.h"
#include "check.h"

SageDriver sage_driver = { .loaded = true };

bool sage_driver_load(void) {
        return true;
}

#define STREAMS 80

/* The fake driver's capture state: streams 1..STREAMS-1 by handle value; the per-thread stream per thread. */
static bool capturing[STREAMS];
static _Thread_local bool capturing_per_thread;
static int is_capturing_calls;

static CUresult is_capturing(CUstream s, CUstreamCaptureStatus *st) {
        uintptr_t i = (uintptr_t)s;

        is_capturing_calls++;
        if (s == CU_STREAM_PER_THREAD)
                *st = capturing_per_thread ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
        else if (i > 0 && i < STREAMS)
                *st = capturing[i] ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
        else
                return CUDA_ERROR_INVALID_HANDLE;
        return CUDA_SUCCESS;
}

static CUresult begin(CUstream s, CUstreamCaptureMode mode) {
        (void)mode;
        if (s == CU_STREAM_PER_THREAD || !s) {
                capturing_per_thread = true;
                return CUDA_SUCCESS;
        }
        if ((uintptr_t)s >= STREAMS)
                return CUDA_ERROR_INVALID_HANDLE;
        capturing[(uintptr_t)s] = true;
        return CUDA_SUCCESS;
}

static CUresult end(CUstream s, CUgraph *g) {
        *g = NULL;
        if (s == CU_STREAM_PER_THREAD || !s)
                capturing_per_thread = false;
        else if ((uintptr_t)s < STREAMS)
                capturing[(uintptr_t)s] = false;
        return CUDA_SUCCESS;
}

#define S(i) ((CUstream)(uintptr_t)(i))

static void begin_on(CUstream s) {
        CHECK(sage_impl_cuStreamBeginCapture_v2(begin, s, CU_STREAM_CAPTURE_MODE_GLOBAL) == CUDA_SUCCESS);
}

static void end_on(CUstream s) {
        CUgraph g;
        CHECK(sage_impl_cuStreamEndCapture(end, s, &g) == CUDA_SUCCESS);
}

static void test_begin_end(void) {
        is_capturing_calls = 0;
        CHECK(!sage_capture_open() && is_capturing_calls == 0); /* nothing begun: one atomic load, no driver call */
        begin_on(S(1));
        CHECK(sage_capture_open());
        begin_on(S(2));
        end_on(S(1));
        CHECK(sage_capture_open()); /* 2 still captures */
        end_on(S(2));
        CHECK(!sage_capture_open());
        /* Refused by the driver: never open. */
        CHECK(sage_impl_cuStreamBeginCapture_v2(begin, S(STREAMS + 5), CU_STREAM_CAPTURE_MODE_GLOBAL) ==
              CUDA_ERROR_INVALID_HANDLE);
        CHECK(!sage_capture_open());
        /* Ended behind libsage's back (invalidated and ended through another entry, the stream destroyed): the
         * driver's answer drops it at the next look. */
        begin_on(S(3));
        capturing[3] = false;
        CHECK(!sage_capture_open());
}

/* ToGraph's real entry: as begin. */
static CUresult begin_to_graph(CUstream s, CUgraph graph, const CUgraphNode *deps, const CUgraphEdgeData *data,
                               size_t n, CUstreamCaptureMode mode) {
        (void)graph, (void)deps, (void)data, (void)n;
        return begin(s, mode);
}

static void test_to_graph_and_ptsz(void) {
        CUgraph g;

        CHECK(sage_impl_cuStreamBeginCaptureToGraph(begin_to_graph, S(4), NULL, NULL, NULL, 0,
                                                    CU_STREAM_CAPTURE_MODE_RELAXED) == CUDA_SUCCESS);
        CHECK(sage_capture_open());
        CHECK(sage_impl_cuStreamEndCapture_ptsz(end, S(4), &g) == CUDA_SUCCESS);
        CHECK(!sage_capture_open());
}

/* Another thread captures its per-thread default stream: open here until that thread ends it. */
typedef struct PerThread {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int step; /* 1: begun; 2: may end; 3: ended */
} PerThread;

static void step_to(PerThread *p, int step) {
        pthread_mutex_lock(&p->lock);
        p->step = step;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
}

static void wait_step(PerThread *p, int step) {
        pthread_mutex_lock(&p->lock);
        while (p->step < step)
                pthread_cond_wait(&p->cond, &p->lock);
        pthread_mutex_unlock(&p->lock);
}

static void *per_thread_main(void *arg) {
        PerThread *p = arg;
        CUgraph g;

        CHECK(sage_impl_cuStreamBeginCapture_v2_ptsz(begin, NULL, CU_STREAM_CAPTURE_MODE_GLOBAL) == CUDA_SUCCESS);
        CHECK(sage_capture_open()); /* asked on its own thread: of the per-thread stream, not the legacy one (0) */
        step_to(p, 1);
        wait_step(p, 2);
        CHECK(sage_impl_cuStreamEndCapture_ptsz(end, NULL, &g) == CUDA_SUCCESS);
        step_to(p, 3);
        return NULL;
}

static void test_per_thread(void) {
        PerThread p = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
        pthread_t t;

        CHECK(pthread_create(&t, NULL, per_thread_main, &p) == 0);
        wait_step(&p, 1);
        /* Asked here, the per-thread stream is this thread's, which captures nothing: still counted open. */
        CHECK(!capturing_per_thread);
        CHECK(sage_capture_open());
        step_to(&p, 2);
        wait_step(&p, 3);
        pthread_join(t, NULL);
        CHECK(!sage_capture_open());
}

/* Past the table's room: counted open for good (a synchronize is never made under a capture missed). */
static void test_overflow(void) {
        for (uintptr_t i = 1; i < STREAMS; i++)
                begin_on(S(i));
        for (uintptr_t i = 1; i < STREAMS; i++)
                end_on(S(i));
        CHECK(sage_capture_open());
}

int main(void) {
        sage_driver.extras.stream_is_capturing = is_capturing;
        test_begin_end();
        test_to_graph_and_ptsz();
        test_per_thread();
        test_overflow();
        puts("capture: ok");
        return 0;
}
