// Lean-context trade-off probe: a recursive kernel, whose stack need the driver
// cannot know (nvcc: "stack size cannot be statically determined"), run at a
// given recursion depth with a given stack limit. One depth per process: a
// stack overflow is a sticky error that loses the context.
//   recursion DEPTH STACK   (STACK 0: the driver's default)
// stdout: `ok DEPTH SUM static_frame=N limit=N` or `fail DEPTH ERROR`.
#include <cstdio>
#include <cstdlib>

__device__ unsigned long long walk(const unsigned *in, int depth, int i) {
        volatile unsigned frame[32]; // volatile: the frame stays in local memory
        for (int k = 0; k < 32; k++)
                frame[k] = in[(i + k + depth) & 1023];
        unsigned long long s = 0;
        for (int k = 0; k < 32; k++)
                s += frame[(k * 5 + depth) & 31];
        return depth == 0 ? s : s + walk(in, depth - 1, i + 1);
}

__global__ void run(const unsigned *in, int depth, unsigned long long *out) {
        atomicAdd(out, walk(in, depth, threadIdx.x + blockIdx.x * blockDim.x));
}

int main(int argc, char **argv) {
        int depth = argc > 1 ? atoi(argv[1]) : 1;
        size_t stack = argc > 2 ? strtoull(argv[2], NULL, 0) : 0, limit = 0;
        unsigned h[1024], *d;
        unsigned long long *out, sum = 0;
        cudaFuncAttributes attr;
        for (int i = 0; i < 1024; i++)
                h[i] = i * 2654435761u;
        if (stack)
                cudaDeviceSetLimit(cudaLimitStackSize, stack);
        cudaMalloc(&d, sizeof(h));
        cudaMalloc(&out, sizeof(*out));
        cudaMemcpy(d, h, sizeof(h), cudaMemcpyHostToDevice);
        cudaMemset(out, 0, sizeof(*out));
        cudaFuncGetAttributes(&attr, run);
        run<<<132, 128>>>(d, depth, out);
        cudaError_t e = cudaMemcpy(&sum, out, sizeof(sum), cudaMemcpyDeviceToHost);
        cudaDeviceGetLimit(&limit, cudaLimitStackSize);
        if (e != cudaSuccess) {
                printf("fail %d %s\n", depth, cudaGetErrorName(e));
                return 1;
        }
        printf("ok %d %llu static_frame=%zu limit=%zu\n", depth, sum, attr.localSizeBytes, limit);
        return 0;
}
