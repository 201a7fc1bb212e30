/*
 * Sharing-based memory benchmark, workload (a) of scripts/bench/density.sh:
 * a CUDA C "function" whose weights are one file. It maps the file (or reads
 * it), cudaMallocs its size, uploads it with ONE cudaMemcpy host->device and
 * runs a kernel that checksums the device copy exactly. Under SAGE_SHARE=1
 * with a broker holding the same content, the upload should map the broker's
 * read-only extent instead of copying.
 *
 *   share_cfunc --gen FILE BYTES     write deterministic pseudo-random bytes
 *                                    (BYTES rounded down to 8) and print
 *                                    {"bytes":N,"checksum":"..."} (no GPU)
 *   share_cfunc FILE [--read] [--hold]
 *       default: mmap(PROT_READ, MAP_PRIVATE) the file and upload from the
 *       mapping; --read: read() it into a malloc'ed buffer instead.
 *       Prints one line `SAGE_BENCH {json}`: pid, sage_loaded, source, bytes,
 *       read_ms (open + mmap, or the read), setup_ms (cudaFree(0)), upload_ms
 *       (the cudaMemcpy), kernel_ms, total_ms (SAGE_BENCH_T0_NS, or main, to
 *       the checksum back on the host), checksum, gpu_free_bytes and
 *       gpu_total_bytes (cudaMemGetInfo after the upload: device-wide, not
 *       per process; per-process figures come from nvidia-smi).
 *       --hold: after printing, release the host copy, keep the device copy
 *       and block reading stdin until EOF (the harness closes it), then
 *       free and exit.
 *
 * Checksum: sum mod 2^64 over 64-bit words w_i of term(w_i, i) (position
 * dependent, order independent, exact); --gen prints the same figure
 * computed on the host, so every invocation can be checked against it.
 * Static cudart (nvcc's default), like most deployed functions.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_common.h"
#include "bench_weights.h"

#define WEIGHT_SEED 0x5A6E5EC0FFEE1234ull /* this program's weight file (bench_weights.h) */

static int usage(const char *argv0) {
        fprintf(stderr, "usage: %s FILE [--read] [--hold] | --gen FILE BYTES\n", argv0);
        return 2;
}

int main(int argc, char **argv) {
        uint64_t t_main = now_ns();
        const char *t0_env = getenv("SAGE_BENCH_T0_NS");
        uint64_t t0 = t0_env ? strtoull(t0_env, NULL, 10) : t_main;
        const char *path = NULL;
        int use_read = 0, hold = 0;

        if (argc == 4 && strcmp(argv[1], "--gen") == 0)
                return generate_weights(argv[2], strtoull(argv[3], NULL, 10), WEIGHT_SEED);
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--read") == 0)
                        use_read = 1;
                else if (strcmp(argv[i], "--hold") == 0)
                        hold = 1;
                else if (argv[i][0] == '-' || path)
                        return usage(argv[0]);
                else
                        path = argv[i];
        }
        if (!path)
                return usage(argv[0]);

        /* 1. The weights on the host: a private read-only mapping of the file
     *    (as safetensors does), or a pageable buffer filled by read(). */
        int fd = open(path, O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return 1;
        }
        size_t bytes = (size_t)st.st_size & ~(size_t)7;
        if (bytes == 0) {
                fprintf(stderr, "%s: empty file\n", path);
                return 1;
        }
        void *host = NULL;
        if (use_read) {
                host = malloc(bytes);
                if (!host) {
                        fprintf(stderr, "malloc %zu failed\n", bytes);
                        return 1;
                }
                if (read_weights(fd, (char *)host, bytes, path) != 0)
                        return 1;
        } else {
                host = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
                if (host == MAP_FAILED) {
                        fprintf(stderr, "mmap %s: %s\n", path, strerror(errno));
                        return 1;
                }
        }
        close(fd);
        uint64_t t_read = now_ns();

        /* 2. GPU set-up. */
        RT_CHECK(cudaFree(0));
        uint64_t t_setup = now_ns();

        /* 3. Upload: one allocation, one synchronous copy of the whole file. */
        unsigned long long *dsum = device_sum();
        uint64_t *dev = NULL;
        RT_CHECK(cudaMalloc(&dev, bytes));
        struct timespec cpu0, cpu1; /* the process's CPU time (every thread: SAGE's staging too) */
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu0);
        uint64_t t_up0 = now_ns();
        RT_CHECK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
        uint64_t t_upload = now_ns();
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu1);
        double upload_cpu_ms = (cpu1.tv_sec - cpu0.tv_sec) * 1e3 + (cpu1.tv_nsec - cpu0.tv_nsec) / 1e6;

        /* 4. One kernel: exact checksum of the device copy. */
        unsigned long long sum = device_checksum(dev, bytes, dsum, 1056);
        uint64_t t_kernel = now_ns();

        size_t gpu_free = 0, gpu_total = 0;
        RT_CHECK(cudaMemGetInfo(&gpu_free, &gpu_total));

        /* The host copy is not needed any more: a resident instance keeps only
     * its device memory (density counts instances, not host buffers). */
        if (use_read)
                free(host);
        else
                munmap(host, bytes);

        printf("SAGE_BENCH {\"kind\":\"cfunc\",\"pid\":%d,\"sage_loaded\":%s,\"t0_given\":%s,"
               "\"source\":\"%s\",\"bytes\":%zu,\"hold\":%s,"
               "\"main_ms\":%.3f,\"read_ms\":%.3f,\"setup_ms\":%.3f,\"alloc_ms\":%.3f,\"upload_ms\":%.3f,"
               "\"upload_cpu_ms\":%.3f,"
               "\"kernel_ms\":%.3f,\"total_ms\":%.3f,\"checksum\":\"%016llx\","
               "\"gpu_free_bytes\":%zu,\"gpu_total_bytes\":%zu}\n",
               (int)getpid(), sage_loaded() ? "true" : "false", t0_env ? "true" : "false", use_read ? "read" : "mmap",
               bytes, hold ? "true" : "false", ms(t0, t_main), ms(t_main, t_read), ms(t_read, t_setup),
               ms(t_setup, t_up0), ms(t_up0, t_upload), upload_cpu_ms, ms(t_upload, t_kernel), ms(t0, t_kernel), sum,
               gpu_free, gpu_total);
        fflush(stdout);

        if (hold) {
                printf("SAGE_HOLDING\n");
                fflush(stdout);
                char buf[256];
                for (;;) {
                        ssize_t r = read(0, buf, sizeof(buf));
                        if (r == 0 || (r < 0 && errno != EINTR))
                                break;
                }
        }

        /* Under SAGE_SHARE=1 the free of a copied (missed) upload is where it is
     * verified and published: outside total_ms, inside the process's wall. */
        RT_CHECK(cudaFree(dev));
        RT_CHECK(cudaFree(dsum));
        return 0;
}
