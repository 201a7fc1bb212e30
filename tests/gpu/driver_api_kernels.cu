/*
 * Kernels of driver_api.cu. The GPU suite compiles this file alone with
 * `nvcc --fatbin` and driver_api.cu embeds the result, so that the program
 * loads its module the way driver-API users do (cuModuleLoadData).
 */
extern "C" __global__ void axpb(const float *x, float *y, float a, float b, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                y[i] = a * x[i] + b;
}

extern "C" __global__ void add_inplace(float *y, const float *x, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                y[i] += x[i];
}
