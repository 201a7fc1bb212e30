/* A CUDA process that holds MiB of device memory (argv[1]) with a known
 * pattern, prints "ready", and on every line on stdin checks the pattern
 * (a driver call: through libsage's gate, it resumes a suspended process)
 * and prints "ok" or "bad". The policy probe (run.sh) runs it under libsage. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
        size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256, size = mib << 20;
        unsigned char *want = malloc(size), *got = malloc(size);
        char line[64];
        CUdeviceptr p;
        CUcontext ctx;
        CUdevice dev;

        for (size_t i = 0; want && i < size; i++)
                want[i] = (unsigned char)(i * 2654435761u >> 24);
        if (!want || !got || cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) ||
            cuCtxSetCurrent(ctx) || cuMemAlloc(&p, size) || cuMemcpyHtoD(p, want, size)) {
                printf("setup failed\n");
                return 1;
        }
        printf("ready\n");
        fflush(stdout);
        while (fgets(line, sizeof(line), stdin)) {
                memset(got, 0, size);
                printf("%s\n",
                       cuMemcpyDtoH(got, p, size) == CUDA_SUCCESS && memcmp(got, want, size) == 0 ? "ok" : "bad");
                fflush(stdout);
        }
        return 0;
}
