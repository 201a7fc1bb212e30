/*
 * A GPU function for the deploy probe (run.sh): uploads SIZE_MIB of a
 * seeded pattern, reads it back and prints a checksum.
 *   function once SIZE_MIB SEED    once, then frees and exits
 *   function serve SIZE_MIB SEED   prints "ready CHECKSUM", then a checksum
 *                                  read back from the device per stdin line
 * Exit 1 with the failing call on stderr.
 */
#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call)                                                               \
        do {                                                                    \
                CUresult r_ = (call);                                           \
                if (r_ != CUDA_SUCCESS) {                                       \
                        fprintf(stderr, "function: %s: error %d\n", #call, r_); \
                        exit(1);                                                \
                }                                                               \
        } while (0)

static uint64_t checksum(const uint64_t *p, size_t n) {
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < n; i++)
                h = (h ^ p[i]) * 1099511628211ull;
        return h;
}

int main(int argc, char **argv) {
        CUdevice dev;
        CUcontext ctx;
        CUdeviceptr d;
        size_t size, n;
        uint64_t *host, x;
        char line[64];

        if (argc != 4) {
                fprintf(stderr, "usage: function once|serve SIZE_MIB SEED\n");
                return 2;
        }
        size = (size_t)strtoul(argv[2], NULL, 10) << 20;
        x = strtoull(argv[3], NULL, 10) | 1;
        n = size / sizeof(uint64_t);
        host = malloc(size);
        if (!host)
                return 1;
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                host[i] = x;
        }
        TRY(cuInit(0));
        TRY(cuDeviceGet(&dev, 0));
        TRY(cuDevicePrimaryCtxRetain(&ctx, dev));
        TRY(cuCtxSetCurrent(ctx));
        TRY(cuMemAlloc(&d, size));
        TRY(cuMemcpyHtoD(d, host, size));
        memset(host, 0, size);
        TRY(cuMemcpyDtoH(host, d, size));
        if (strcmp(argv[1], "serve") == 0) {
                printf("ready %016llx\n", (unsigned long long)checksum(host, n));
                fflush(stdout);
                while (fgets(line, sizeof(line), stdin)) {
                        memset(host, 0, size);
                        TRY(cuMemcpyDtoH(host, d, size));
                        printf("%016llx\n", (unsigned long long)checksum(host, n));
                        fflush(stdout);
                }
        } else
                printf("%016llx\n", (unsigned long long)checksum(host, n));
        TRY(cuMemFree(d));
        TRY(cuDevicePrimaryCtxRelease(dev));
        free(host);
        return 0;
}
