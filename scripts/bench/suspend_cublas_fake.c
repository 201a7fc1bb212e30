/*
 * The two cuBLAS entry points suspend_fn.py's sgemm calls, for the dry run on
 * the simulated driver (`bench suspend --fake`), whose device pointers are
 * host addresses: the same ctypes calls as on a GPU, computed on the CPU.
 * Column-major, no transposes (what suspend_fn.py asks for).
 */
#include <stddef.h>

__attribute__((visibility("default"))) int cublasCreate_v2(void **handle) {
        static int dummy;

        *handle = &dummy;
        return 0;
}

__attribute__((visibility("default"))) int cublasSgemm_v2(void *handle, int transa, int transb, int m, int n, int k,
                                                          const float *alpha, const float *a, int lda, const float *b,
                                                          int ldb, const float *beta, float *c, int ldc) {
        (void)handle;
        if (transa != 0 || transb != 0)
                return 7; /* CUBLAS_STATUS_INVALID_VALUE */
        for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) {
                        float s = 0;

                        for (int l = 0; l < k; l++)
                                s += a[i + (size_t)l * lda] * b[l + (size_t)j * ldb];
                        c[i + (size_t)j * ldc] = *alpha * s + *beta * c[i + (size_t)j * ldc];
                }
        return 0;
}
