/*
 * The kernel of the suspend benchmark's C function (suspend_fn.py cfunc):
 * sums the weights as 64-bit words into *out. Integer atomics make the sum
 * exact and independent of the order blocks run in, so every invocation of
 * every instance, resumed or not, must print the same checksum. Built by
 * suspend.sh with nvcc --cubin and loaded with cuModuleLoad.
 */
extern "C" __global__ void sage_wsum(const unsigned long long *w, unsigned long long n, unsigned long long *out) {
        unsigned long long s = 0;
        for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
             i += (unsigned long long)gridDim.x * blockDim.x)
                s += w[i];
        atomicAdd(out, s);
}
