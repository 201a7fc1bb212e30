/*
 * The sharing-coverage benchmark's C function for its dry run on the
 * simulated driver (tests/fakecuda; driver API, no nvcc): share_cfunc.cu's
 * shape. It maps its weight file, allocates and uploads it in TENSORS
 * parts (one cuMemcpyHtoD each, a state dict's shape when > 1), reads it
 * back and prints one line `SAGE_BENCH {json}` with share_cfunc's keys the
 * harness reads: bytes, upload_ms, upload_cpu_ms (the process's CPU time
 * over the upload, every thread), checksum, sage_loaded.
 *
 *   sharing_coverage_fake --gen FILE BYTES      deterministic weights
 *   sharing_coverage_fake FILE [TENSORS]
 */
#include <cuda.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x)                                                                        \
        do {                                                                            \
                CUresult r_ = (x);                                                      \
                if (r_ != CUDA_SUCCESS) {                                               \
                        fprintf(stderr, "%s failed: %d (line %d)\n", #x, r_, __LINE__); \
                        exit(1);                                                        \
                }                                                                       \
        } while (0)
#define MAX_TENSORS 64

static double now_ms(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Is libsage mapped into this process (a preload ld.so ignored is not)? */
static int sage_loaded(void) {
        char line[512];
        FILE *f = fopen("/proc/self/maps", "r");
        int found = 0;

        while (f && !found && fgets(line, sizeof(line), f))
                found = strstr(line, "libsage") != NULL;
        if (f)
                fclose(f);
        return found;
}

static int generate(const char *path, size_t bytes) {
        FILE *f = fopen(path, "wb");
        uint64_t x = 0x9e3779b97f4a7c15ull;

        if (!f)
                return 1;
        for (size_t i = 0; i < bytes / 8; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                if (fwrite(&x, 8, 1, f) != 1)
                        return 1;
        }
        return fclose(f) != 0;
}

int main(int argc, char **argv) {
        CUdeviceptr dev[MAX_TENSORS];
        size_t bytes, part, tensors = argc > 2 ? strtoul(argv[2], NULL, 10) : 1;
        uint64_t sum = 0, *back;
        double t0, t1, c0, c1;
        struct stat st;
        const char *host;
        CUcontext ctx;
        CUdevice d;
        int fd;

        if (argc == 4 && !strcmp(argv[1], "--gen"))
                return generate(argv[2], strtoull(argv[3], NULL, 10));
        if (argc < 2 || tensors < 1 || tensors > MAX_TENSORS || (fd = open(argv[1], O_RDONLY)) < 0 ||
            fstat(fd, &st) < 0 || st.st_size < (off_t)(8 * tensors)) {
                fprintf(stderr, "usage: %s FILE [TENSORS] | --gen FILE BYTES\n", argv[0]);
                return 2;
        }
        bytes = (size_t)st.st_size & ~(size_t)7;
        part = bytes / tensors & ~(size_t)7;
        host = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (host == MAP_FAILED || !(back = malloc(part + bytes % part + 8)))
                return 1;
        CHECK(cuInit(0));
        CHECK(cuDeviceGet(&d, 0));
        CHECK(cuDevicePrimaryCtxRetain(&ctx, d));
        CHECK(cuCtxSetCurrent(ctx));
        for (size_t i = 0; i < tensors; i++)
                CHECK(cuMemAlloc(&dev[i], i + 1 < tensors ? part : bytes - i * part));
        t0 = now_ms(CLOCK_MONOTONIC), c0 = now_ms(CLOCK_PROCESS_CPUTIME_ID);
        for (size_t i = 0; i < tensors; i++)
                CHECK(cuMemcpyHtoD(dev[i], host + i * part, i + 1 < tensors ? part : bytes - i * part));
        t1 = now_ms(CLOCK_MONOTONIC), c1 = now_ms(CLOCK_PROCESS_CPUTIME_ID);
        for (size_t i = 0; i < tensors; i++) {
                size_t n = i + 1 < tensors ? part : bytes - i * part;
                CHECK(cuMemcpyDtoH(back, dev[i], n));
                for (size_t w = 0; w < n / 8; w++)
                        sum = sum * 1099511628211ull + back[w];
        }
        printf("SAGE_BENCH {\"kind\":\"cfunc\",\"tensors\":%zu,\"bytes\":%zu,\"upload_ms\":%.3f,\"upload_cpu_ms\":%.3f,"
               "\"checksum\":\"%016" PRIx64 "\",\"sage_loaded\":%s}\n",
               tensors, bytes, t1 - t0, c1 - c0, sum, sage_loaded() ? "true" : "false");
        for (size_t i = 0; i < tensors; i++)
                CHECK(cuMemFree(dev[i]));
        return 0;
}
