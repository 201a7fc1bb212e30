/*
 * A thread captures a CUDA graph (global mode) while another thread uploads
 * weights and launches a kernel: what a server that captures one model's
 * graphs while it loads another does. Natively the other thread's async copy
 * and launch on its own stream are allowed; under SAGE the upload may be
 * shared (hashed, looked up, re-mapped), assembly may follow at the launch,
 * and libsage's staging may be pinned meanwhile: none of it may break the
 * capture (the driver refuses cuCtxSynchronize in every capture mode, and
 * pinning or a stream wait in the global mode: scripts/probes/capture).
 * Three rounds (tests/integration/share_test.c capture-beside is the twin on
 * the simulated driver): the upload after the capture opened, over bytes a
 * memset wrote; the upload begun before it (racing the staging); two uploads
 * meeting inside a granule, then a kernel during the capture. After each
 * capture, the same weights again to new memory (shared again). Then a
 * kernel writing shared weights, captured (writer_round). Checksums
 * are verified against the host and printed, so stdout is the same natively
 * and under SAGE.
 */
#include <pthread.h>
#include <unistd.h>

#include "gpu_check.h"
#include "gpu_checksum.cuh"

#define WEIGHT_BYTES ((size_t)24 << 20)

typedef struct Beside {
        unsigned long long *w, *out;
        const unsigned long long *host;
        size_t bytes;
        bool launch; /* a kernel, not the copy */
        cudaStream_t own;
        cudaError_t r;
} Beside;

/* Waiting for its stream in the global mode would break the capture natively: the main thread waits, after. */
static void *beside_main(void *arg) {
        Beside *b = (Beside *)arg;

        if (b->launch) {
                checksum<<<264, 256, 0, b->own>>>(b->w, b->bytes / 8, b->out);
                b->r = cudaGetLastError();
        } else
                b->r = cudaMemcpyAsync(b->w, b->host, b->bytes, cudaMemcpyHostToDevice, b->own);
        return NULL;
}

static unsigned long long host_sum(const unsigned long long *w, size_t bytes) {
        unsigned long long s = 0;
        for (size_t i = 0; i < bytes / 8; i++)
                s += w[i] * (2 * i + 1);
        return s;
}

/* One round: `what` is first, late or assemble (above). */
static void round_of(const char *what, const unsigned long long *host, unsigned long long *d_out) {
        Beside b = { NULL, NULL, host, WEIGHT_BYTES, false, NULL, cudaSuccess };
        bool late = !strcmp(what, "late"), assemble = !strcmp(what, "assemble");
        unsigned long long want = host_sum(host, WEIGHT_BYTES), *after = NULL, *d_side = NULL;
        cudaStream_t s;
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        pthread_t t;

        RT_CHECK(cudaMalloc((void **)&b.w, WEIGHT_BYTES));
        RT_CHECK(cudaMalloc((void **)&d_side, sizeof(unsigned long long)));
        RT_CHECK(cudaMemset(d_side, 0, sizeof(unsigned long long)));
        b.out = d_side;
        if (!strcmp(what, "first"))
                RT_CHECK(cudaMemset(b.w, 0, WEIGHT_BYTES));
        if (assemble) { /* two uploads meeting inside a granule: assembled at the first launch */
                size_t half = WEIGHT_BYTES / 2 + 8192;
                RT_CHECK(cudaMemcpy(b.w, host, half, cudaMemcpyHostToDevice));
                RT_CHECK(cudaMemcpy((char *)b.w + half, (const char *)host + half, WEIGHT_BYTES - half,
                                    cudaMemcpyHostToDevice));
                b.launch = true;
        }
        RT_CHECK(cudaStreamCreateWithFlags(&b.own, cudaStreamNonBlocking));
        RT_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        FAIL_IF(late && pthread_create(&t, NULL, beside_main, &b) != 0, "pthread_create failed");
        RT_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        FAIL_IF(!late && pthread_create(&t, NULL, beside_main, &b) != 0, "pthread_create failed");
        pthread_join(t, NULL);
        RT_CHECK(b.r);
        usleep(20 * 1000); /* the capture stays open while libsage's threads may still work */
        RT_CHECK(cudaMemsetAsync(d_out, 0, sizeof(unsigned long long), s));
        checksum<<<264, 256, 0, s>>>(b.w, WEIGHT_BYTES / 8, d_out);
        LAUNCH_CHECK();
        RT_CHECK(cudaStreamEndCapture(s, &graph));
        RT_CHECK(cudaStreamSynchronize(b.own));
        RT_CHECK(cudaGraphInstantiate(&exec, graph, 0));
        RT_CHECK(cudaGraphLaunch(exec, s));
        RT_CHECK(cudaStreamSynchronize(s));
        unsigned long long got = 0, side = 0;
        RT_CHECK(cudaMemcpy(&got, d_out, sizeof(got), cudaMemcpyDeviceToHost));
        RT_CHECK(cudaMemcpy(&side, d_side, sizeof(side), cudaMemcpyDeviceToHost));
        FAIL_IF(got != want, "%s: the graph's checksum %llx, the host's %llx", what, got, want);
        FAIL_IF(assemble && side != want, "%s: the other thread's checksum %llx, the host's %llx", what, side, want);
        /* The capture over: the same weights to new memory. */
        RT_CHECK(cudaMalloc((void **)&after, WEIGHT_BYTES));
        RT_CHECK(cudaMemcpy(after, host, WEIGHT_BYTES, cudaMemcpyHostToDevice));
        FAIL_IF(sum_of(after, WEIGHT_BYTES, d_out) != want, "%s: the weights uploaded after the capture differ", what);
        printf("%s: captured beside, checksum %016llx\n", what, got);
        RT_CHECK(cudaGraphExecDestroy(exec));
        RT_CHECK(cudaGraphDestroy(graph));
        RT_CHECK(cudaStreamDestroy(s));
        RT_CHECK(cudaStreamDestroy(b.own));
        RT_FREE(b.w, after, d_side);
}

__global__ void scale(unsigned long long *w, size_t n) {
        for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                w[i] = w[i] * 3 + 1;
}

/*
 * A kernel that writes shared weights, captured into a graph: B and C get
 * the same bytes (other than the rounds'); a graph captured in the global
 * mode scales B in place. The first SAGE run publishes C only (B changed);
 * in the second both map C's extent, the captured launch is a use C's notes
 * do not allow, and B must be made private before the graph runs without
 * breaking the capture (making it private synchronizes the context). B is
 * uploaded again between the capture and the replay: that hit too must be
 * private before the graph runs (the graph is not scanned when launched).
 */
static void writer_round(unsigned long long *d_out) {
        unsigned long long *host = (unsigned long long *)malloc(WEIGHT_BYTES), *b = NULL, *c = NULL;
        unsigned long long want_c, want_b, got;
        cudaStream_t s;
        cudaGraph_t graph;
        cudaGraphExec_t exec;

        FAIL_IF(!host, "out of host memory");
        fill_words(host, WEIGHT_BYTES, 29);
        want_c = host_sum(host, WEIGHT_BYTES);
        RT_CHECK(cudaMalloc((void **)&b, WEIGHT_BYTES));
        RT_CHECK(cudaMalloc((void **)&c, WEIGHT_BYTES));
        RT_CHECK(cudaMemcpy(b, host, WEIGHT_BYTES, cudaMemcpyHostToDevice));
        RT_CHECK(cudaMemcpy(c, host, WEIGHT_BYTES, cudaMemcpyHostToDevice));
        FAIL_IF(sum_of(c, WEIGHT_BYTES, d_out) != want_c, "writer: C's checksum before the graph");
        RT_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        RT_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        scale<<<264, 256, 0, s>>>(b, WEIGHT_BYTES / 8);
        LAUNCH_CHECK();
        RT_CHECK(cudaStreamEndCapture(s, &graph));
        RT_CHECK(cudaGraphInstantiate(&exec, graph, 0));
        /* The weights again before the replay: a hit over what the captured writer uses (due at once). */
        RT_CHECK(cudaMemcpy(b, host, WEIGHT_BYTES, cudaMemcpyHostToDevice));
        RT_CHECK(cudaGraphLaunch(exec, s));
        RT_CHECK(cudaStreamSynchronize(s));
        for (size_t i = 0; i < WEIGHT_BYTES / 8; i++)
                host[i] = host[i] * 3 + 1;
        want_b = host_sum(host, WEIGHT_BYTES);
        got = sum_of(b, WEIGHT_BYTES, d_out);
        FAIL_IF(got != want_b, "writer: B after the graph %llx, the host's %llx", got, want_b);
        FAIL_IF(sum_of(c, WEIGHT_BYTES, d_out) != want_c, "writer: C changed with B");
        printf("writer: captured, B %016llx\n", got);
        RT_CHECK(cudaGraphExecDestroy(exec));
        RT_CHECK(cudaGraphDestroy(graph));
        RT_CHECK(cudaStreamDestroy(s));
        RT_FREE(b, c);
        free(host);
}

int main(void) {
        unsigned long long *host = (unsigned long long *)malloc(WEIGHT_BYTES), *d_out = NULL;
        FAIL_IF(!host, "out of host memory");
        fill_words(host, WEIGHT_BYTES, 11);
        RT_CHECK(cudaMalloc((void **)&d_out, sizeof(unsigned long long)));
        round_of("first", host, d_out);
        round_of("late", host, d_out);
        round_of("assemble", host, d_out);
        writer_round(d_out);
        RT_FREE(d_out);
        free(host);
        return 0;
}
