/*
 * The weight file of the benchmarks' C functions (parallel_setup_cfunc.cu,
 * share_cfunc.cu): deterministic 64-bit words (splitmix64 of the index,
 * with a seed of each program's own), the exact checksum both the host and
 * a kernel compute over them (an order-independent sum mod 2^64 of
 * position-dependent terms), the generator, and a whole-file read.
 * Include after bench_common.h, from .cu files.
 */
#ifndef SAGE_BENCH_WEIGHTS_H
#define SAGE_BENCH_WEIGHTS_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <unistd.h>

#include "bench_common.h" /* RT_CHECK */

/* Content of 64-bit word i of a weight file generated with `seed`. */
static inline uint64_t weight_word(uint64_t i, uint64_t seed) {
        uint64_t z = i * 0x9E3779B97F4A7C15ull + seed;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
}

/* Checksum term of word i: order-independent sum (mod 2^64) of these. */
__host__ __device__ static inline uint64_t term(uint64_t w, uint64_t i) {
        return (w ^ (i * 0xD6E8FEB86659FD93ull)) * 0x2545F4914F6CDD1Dull;
}

__global__ void checksum_kernel(const uint64_t *w, uint64_t n, unsigned long long *out) {
        uint64_t acc = 0;
        for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
                acc += term(w[i], i);
        /* Warp reduce, then one atomic per warp. */
        for (int off = 16; off > 0; off >>= 1)
                acc += __shfl_down_sync(0xffffffffu, acc, off);
        if ((threadIdx.x & 31) == 0)
                atomicAdd(out, (unsigned long long)acc);
}

/* The device word checksum_kernel adds into, zeroed. */
static unsigned long long *device_sum(void) {
        unsigned long long *dsum = NULL;
        RT_CHECK(cudaMalloc(&dsum, sizeof(*dsum)));
        RT_CHECK(cudaMemset(dsum, 0, sizeof(*dsum)));
        return dsum;
}

/* checksum_kernel (`blocks` blocks of 256 threads) over the device copy into dsum, read back. */
static unsigned long long device_checksum(const uint64_t *dev, size_t bytes, unsigned long long *dsum,
                                          unsigned blocks) {
        unsigned long long sum = 0;
        checksum_kernel<<<blocks, 256>>>(dev, bytes / 8, dsum);
        RT_CHECK(cudaGetLastError());
        RT_CHECK(cudaMemcpy(&sum, dsum, sizeof(sum), cudaMemcpyDeviceToHost));
        return sum;
}

/* Write BYTES (rounded down to 8) of weights to PATH and print
 * {"bytes":N,"checksum":"..."}: the reference every run is checked against. */
static int generate_weights(const char *path, uint64_t bytes, uint64_t seed) {
        const uint64_t chunk_words = 8u << 20; /* 64 MiB */
        uint64_t words = bytes / 8, sum = 0;
        uint64_t *buf = (uint64_t *)malloc(chunk_words * 8);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (!buf || fd < 0) {
                fprintf(stderr, "gen: %s: %s\n", path, strerror(errno));
                return 1;
        }
        for (uint64_t base = 0; base < words; base += chunk_words) {
                uint64_t n = words - base < chunk_words ? words - base : chunk_words;
                for (uint64_t k = 0; k < n; k++) {
                        buf[k] = weight_word(base + k, seed);
                        sum += term(buf[k], base + k);
                }
                const char *p = (const char *)buf;
                size_t left = n * 8;
                while (left) {
                        ssize_t w = write(fd, p, left);
                        if (w < 0) {
                                if (errno == EINTR)
                                        continue;
                                fprintf(stderr, "gen: write %s: %s\n", path, strerror(errno));
                                return 1;
                        }
                        p += w;
                        left -= (size_t)w;
                }
        }
        if (close(fd) != 0) {
                fprintf(stderr, "gen: close %s: %s\n", path, strerror(errno));
                return 1;
        }
        free(buf);
        printf("{\"bytes\":%" PRIu64 ",\"checksum\":\"%016" PRIx64 "\"}\n", words * 8, sum);
        return 0;
}

/* Read exactly `bytes` of fd into host (pageable, as an app would), 64 MiB at a time. */
static int read_weights(int fd, char *host, size_t bytes, const char *path) {
        size_t done = 0;
        while (done < bytes) {
                size_t want = bytes - done > (64u << 20) ? (64u << 20) : bytes - done;
                ssize_t r = read(fd, host + done, want);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0) {
                        fprintf(stderr, "read %s: %s\n", path, r ? strerror(errno) : "short file");
                        return 1;
                }
                done += (size_t)r;
        }
        return 0;
}

#endif /* SAGE_BENCH_WEIGHTS_H */
