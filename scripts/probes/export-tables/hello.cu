// A static-cudart program (nvcc's default): the export tables cudart asks
// libcuda for on its way to a context, an allocation, a launch and a copy.
#include <cstdio>

__global__ void fill(float *out, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                out[i] = 0.5f * i;
}

int main() {
        const int n = 1 << 16;
        float *d = nullptr, h[4] = { 0 };
        if (cudaMalloc(&d, n * sizeof(float)) != cudaSuccess)
                return 2;
        fill<<<(n + 255) / 256, 256>>>(d, n);
        if (cudaMemcpy(h, d + 1000, sizeof(h), cudaMemcpyDeviceToHost) != cudaSuccess)
                return 3;
        cudaFree(d);
        printf("hello: %.1f %.1f %.1f %.1f\n", h[0], h[1], h[2], h[3]);
        return 0;
}
