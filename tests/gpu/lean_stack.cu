/*
 * Lean contexts (SAGE_CTX_STACK_LIMIT): kernels whose frames the compiler
 * knows, from a few bytes to 2 KiB of local memory, must give the same
 * results with a 16-byte stack limit as with the driver's default, because
 * the driver grows the stack at launch to each kernel's static frame size.
 * (Recursion and indirect calls, whose need the driver cannot know, are
 * measured by scripts/probes/checkpoint, not run here: the suite asserts
 * what must hold.)
 *
 * stdout: exact checksums. stderr (logged, not compared): the stack limit
 * the app sees before its first launch (`stack_limit_at_start=`), after the
 * launches (`stack_limit_after=`), and this process's GPU memory as
 * nvidia-smi reports it, before the first launch (`gpu_mib_at_start=`: the
 * context's footprint) and after them (`gpu_mib_after=`: the stack grown).
 */
#include "gpu_check.h"

#include <unistd.h>

#define N (1 << 16)
#define BLOCK 128

/* A frame of FRAME ints in local memory (dynamic indexing keeps it there). */
template <int FRAME> __global__ void local_frame(const unsigned *in, unsigned long long *out, int n) {
        unsigned scratch[FRAME];
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= n)
                return;
        for (int k = 0; k < FRAME; k++)
                scratch[k] = in[(i + k) % n] * (unsigned)(k + 1);
        unsigned long long acc = 0;
        for (int k = 0; k < FRAME; k++)
                acc += scratch[(k * 7 + i) % FRAME];
        atomicAdd(out, acc);
}

template <int FRAME> static unsigned long long run(const unsigned *d_in, unsigned long long *d_out) {
        unsigned long long h = 0;
        RT_CHECK(cudaMemset(d_out, 0, sizeof(*d_out)));
        local_frame<FRAME><<<(N + BLOCK - 1) / BLOCK, BLOCK>>>(d_in, d_out, N);
        LAUNCH_CHECK();
        RT_CHECK(cudaMemcpy(&h, d_out, sizeof(h), cudaMemcpyDeviceToHost));
        return h;
}

static void report_gpu_mib(const char *when) {
        char cmd[160], line[256];
        FILE *p;
        /* nvidia-smi is no CUDA program: it runs without the preload. */
        snprintf(cmd, sizeof(cmd),
                 "env -u LD_PRELOAD nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits "
                 "2>/dev/null");
        p = popen(cmd, "r");
        if (!p)
                return;
        while (fgets(line, sizeof(line), p))
                if (atol(line) == (long)getpid())
                        fprintf(stderr, "gpu_mib_%s=%s", when, strchr(line, ',') ? strchr(line, ',') + 2 : line);
        pclose(p);
}

int main(void) {
        size_t limit = 0;
        unsigned *d_in;
        unsigned long long *d_out;
        static unsigned h_in[N];

        RT_CHECK(cudaFree(0));
        RT_CHECK(cudaDeviceGetLimit(&limit, cudaLimitStackSize));
        fprintf(stderr, "stack_limit_at_start=%zu\n", limit);
        report_gpu_mib("at_start");
        for (int i = 0; i < N; i++)
                h_in[i] = (unsigned)(i * 2654435761u);
        RT_CHECK(cudaMalloc(&d_in, sizeof(h_in)));
        RT_CHECK(cudaMalloc(&d_out, sizeof(*d_out)));
        RT_CHECK(cudaMemcpy(d_in, h_in, sizeof(h_in), cudaMemcpyHostToDevice));
        printf("frame 4: %llu\n", run<4>(d_in, d_out));
        printf("frame 64: %llu\n", run<64>(d_in, d_out));
        printf("frame 512: %llu\n", run<512>(d_in, d_out));
        printf("frame 64 again: %llu\n", run<64>(d_in, d_out));
        RT_CHECK(cudaDeviceGetLimit(&limit, cudaLimitStackSize));
        fprintf(stderr, "stack_limit_after=%zu\n", limit);
        report_gpu_mib("after");
        RT_FREE(d_in, d_out);
        return 0;
}
