/*
 * Parallel-setup benchmark, workload (a): a CUDA C "function" that starts by
 * reading its weights from a file, then initialises CUDA, uploads them and
 * runs one kernel that checksums them. With SAGE the context warm-up runs
 * while the file is read, so the first CUDA call (cudaFree(0), issued right
 * after the read) should block for almost nothing.
 *
 * Times are CLOCK_MONOTONIC, relative to SAGE_BENCH_T0_NS (set by
 * startup_launch right before exec). Prints one JSON line on stdout.
 *
 *   parallel_setup_cfunc WEIGHTS          run the function
 *   parallel_setup_cfunc --gen PATH BYTES write deterministic weights and
 *                                         print their checksum (no GPU used)
 *
 * Static cudart (nvcc's default), like most deployed functions.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_common.h"
#include "bench_weights.h"

#define WEIGHT_SEED 0x632BE59BD9B4E019ull /* this program's weight file (bench_weights.h) */

int main(int argc, char **argv) {
        uint64_t t_main = now_ns();
        const char *t0_env = getenv("SAGE_BENCH_T0_NS");
        uint64_t t0 = t0_env ? strtoull(t0_env, NULL, 10) : t_main;

        if (argc == 4 && strcmp(argv[1], "--gen") == 0)
                return generate_weights(argv[2], strtoull(argv[3], NULL, 10), WEIGHT_SEED);
        if (argc != 2) {
                fprintf(stderr, "usage: %s WEIGHTS | --gen PATH BYTES\n", argv[0]);
                return 2;
        }

        /* 1. Read the weights into host memory (pageable, as an app would). */
        int fd = open(argv[1], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
                fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
                return 1;
        }
        size_t bytes = (size_t)st.st_size & ~(size_t)7;
        char *host = (char *)malloc(bytes ? bytes : 8);
        if (!host) {
                fprintf(stderr, "malloc %zu failed\n", bytes);
                return 1;
        }
        if (read_weights(fd, host, bytes, argv[1]) != 0)
                return 1;
        close(fd);
        uint64_t t_read = now_ns();

        /* 2. GPU setup: the first runtime call, right after the read. */
        RT_CHECK(cudaFree(0));
        uint64_t t_setup = now_ns();

        /* 3. Upload. */
        uint64_t *dev = NULL;
        RT_CHECK(cudaMalloc(&dev, bytes ? bytes : 8));
        unsigned long long *dsum = device_sum();
        RT_CHECK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
        uint64_t t_upload = now_ns();

        /* 4. One kernel: checksum of the weights. */
        unsigned long long sum = device_checksum(dev, bytes, dsum, 1024);
        uint64_t t_kernel = now_ns();

        RT_CHECK(cudaFree(dev));
        RT_CHECK(cudaFree(dsum));
        free(host);
        uint64_t t_end = now_ns();

        printf("{\"pid\":%d,\"sage_loaded\":%s,\"t0_given\":%s,\"bytes\":%zu,"
               "\"main_ms\":%.3f,\"read_ms\":%.3f,\"setup_ms\":%.3f,\"upload_ms\":%.3f,"
               "\"kernel_ms\":%.3f,\"setup_done_ms\":%.3f,\"first_kernel_ms\":%.3f,\"total_ms\":%.3f,"
               "\"checksum\":\"%016llx\"}\n",
               (int)getpid(), sage_loaded() ? "true" : "false", t0_env ? "true" : "false", bytes, ms(t0, t_main),
               ms(t_main, t_read), ms(t_read, t_setup), ms(t_setup, t_upload), ms(t_upload, t_kernel), ms(t0, t_setup),
               ms(t0, t_kernel), ms(t0, t_end), sum);
        fflush(stdout);
        return 0;
}
