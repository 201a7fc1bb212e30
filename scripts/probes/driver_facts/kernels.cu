/*
 * The kernels driver_facts loads (as a cubin, as PTX and as a cubin whose
 * parameter layout records were taken out). extern "C": looked up by name.
 */
extern "C" __global__ void two_params(int *out, int value) {
        if (blockIdx.x == 0 && threadIdx.x == 0)
                *out = value;
}

extern "C" __global__ void no_params(void) {
}
