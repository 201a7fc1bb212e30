/*
 * CUDA graphs: a stream capture of H2D copy, kernels and D2H copy becomes a
 * graph, which is instantiated and launched 10 times (cuGraphLaunch). The
 * kernels inside a graph reach the GPU without cuLaunchKernel, so SAGE must
 * see them at capture time; results are verified after every launch.
 */
#include "gpu_check.h"

#define N (1 << 18)
#define LAUNCHES 10

__global__ void step(float *x, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                x[i] = x[i] * 2.0f - 1.0f;
}

__global__ void add(float *acc, const float *x, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                acc[i] += x[i];
}

int main(void) {
        size_t bytes = (size_t)N * sizeof(float);
        float *h_in = NULL, *h_out = NULL;
        RT_CHECK(cudaMallocHost((void **)&h_in, bytes));
        RT_CHECK(cudaMallocHost((void **)&h_out, bytes));
        for (int i = 0; i < N; i++)
                h_in[i] = det_value(i, 3);

        float *d_x = NULL, *d_acc = NULL;
        RT_CHECK(cudaMalloc((void **)&d_x, bytes));
        RT_CHECK(cudaMalloc((void **)&d_acc, bytes));
        RT_CHECK(cudaMemset(d_acc, 0, bytes));
        /* The capture stream is non-blocking: it does not wait for the legacy
     * stream's memset by itself. */
        RT_CHECK(cudaDeviceSynchronize());

        cudaStream_t stream;
        RT_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

        cudaGraph_t graph;
        RT_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        RT_CHECK(cudaMemcpyAsync(d_x, h_in, bytes, cudaMemcpyHostToDevice, stream));
        for (int k = 0; k < 3; k++) {
                step<<<(N + 255) / 256, 256, 0, stream>>>(d_x, N);
                LAUNCH_CHECK();
        }
        add<<<(N + 255) / 256, 256, 0, stream>>>(d_acc, d_x, N);
        LAUNCH_CHECK();
        RT_CHECK(cudaMemcpyAsync(h_out, d_acc, bytes, cudaMemcpyDeviceToHost, stream));
        RT_CHECK(cudaStreamEndCapture(stream, &graph));

        size_t nodes = 0;
        RT_CHECK(cudaGraphGetNodes(graph, NULL, &nodes));
        FAIL_IF(nodes != 6, "graph has %zu nodes, want 6", nodes);

        cudaGraphExec_t exec;
        RT_CHECK(cudaGraphInstantiate(&exec, graph, 0));
        for (int l = 1; l <= LAUNCHES; l++) {
                RT_CHECK(cudaGraphLaunch(exec, stream));
                RT_CHECK(cudaStreamSynchronize(stream));
                for (int i = 0; i < N; i++) {
                        float v = h_in[i];
                        for (int k = 0; k < 3; k++)
                                v = v * 2.0f - 1.0f;
                        FAIL_IF(h_out[i] != v * (float)l, "launch %d: acc[%d] = %g, want %g", l, i, (double)h_out[i],
                                (double)(v * (float)l));
                }
                printf("launch %d checksum=%016llx\n", l, (unsigned long long)checksum_bytes(h_out, bytes));
        }

        RT_CHECK(cudaGraphExecDestroy(exec));
        RT_CHECK(cudaGraphDestroy(graph));
        RT_CHECK(cudaStreamDestroy(stream));
        RT_FREE(d_x, d_acc);
        RT_FREE_HOST(h_in, h_out);
        printf("ok\n");
        return 0;
}
