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

/* Content of 64-bit word i of the weight file (splitmix64 of i). */
static inline uint64_t weight_word(uint64_t i)
{
    uint64_t z = i * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Checksum term of word i: order-independent sum (mod 2^64) of these. */
__host__ __device__ static inline uint64_t term(uint64_t w, uint64_t i)
{
    return (w ^ (i * 0xD6E8FEB86659FD93ull)) * 0x2545F4914F6CDD1Dull;
}

__global__ void checksum_kernel(const uint64_t *w, uint64_t n, unsigned long long *out)
{
    uint64_t acc = 0;
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x)
        acc += term(w[i], i);
    /* Warp reduce, then one atomic per warp. */
    for (int off = 16; off > 0; off >>= 1)
        acc += __shfl_down_sync(0xffffffffu, acc, off);
    if ((threadIdx.x & 31) == 0)
        atomicAdd(out, (unsigned long long)acc);
}

static int generate(const char *path, uint64_t bytes)
{
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
            buf[k] = weight_word(base + k);
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

static double ms(uint64_t a, uint64_t b) { return (double)(b - a) / 1e6; }

int main(int argc, char **argv)
{
    uint64_t t_main = now_ns();
    const char *t0_env = getenv("SAGE_BENCH_T0_NS");
    uint64_t t0 = t0_env ? strtoull(t0_env, NULL, 10) : t_main;

    if (argc == 4 && strcmp(argv[1], "--gen") == 0)
        return generate(argv[2], strtoull(argv[3], NULL, 10));
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
    size_t done = 0;
    while (done < bytes) {
        size_t want = bytes - done > (64u << 20) ? (64u << 20) : bytes - done;
        ssize_t r = read(fd, host + done, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "read %s: %s\n", argv[1], r ? strerror(errno) : "short file");
            return 1;
        }
        done += (size_t)r;
    }
    close(fd);
    uint64_t t_read = now_ns();

    /* 2. GPU setup: the first runtime call, right after the read. */
    RT_CHECK(cudaFree(0));
    uint64_t t_setup = now_ns();

    /* 3. Upload. */
    uint64_t *dev = NULL;
    unsigned long long *dsum = NULL;
    RT_CHECK(cudaMalloc(&dev, bytes ? bytes : 8));
    RT_CHECK(cudaMalloc(&dsum, sizeof(*dsum)));
    RT_CHECK(cudaMemset(dsum, 0, sizeof(*dsum)));
    RT_CHECK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    uint64_t t_upload = now_ns();

    /* 4. One kernel: checksum of the weights. */
    checksum_kernel<<<1024, 256>>>(dev, bytes / 8, dsum);
    RT_CHECK(cudaGetLastError());
    unsigned long long sum = 0;
    RT_CHECK(cudaMemcpy(&sum, dsum, sizeof(sum), cudaMemcpyDeviceToHost));
    uint64_t t_kernel = now_ns();

    RT_CHECK(cudaFree(dev));
    RT_CHECK(cudaFree(dsum));
    free(host);
    uint64_t t_end = now_ns();

    printf("{\"pid\":%d,\"sage_loaded\":%s,\"t0_given\":%s,\"bytes\":%zu,"
           "\"main_ms\":%.3f,\"read_ms\":%.3f,\"setup_ms\":%.3f,\"upload_ms\":%.3f,"
           "\"kernel_ms\":%.3f,\"setup_done_ms\":%.3f,\"first_kernel_ms\":%.3f,\"total_ms\":%.3f,"
           "\"checksum\":\"%016llx\"}\n",
           (int)getpid(), sage_loaded() ? "true" : "false", t0_env ? "true" : "false", bytes,
           ms(t0, t_main), ms(t_main, t_read), ms(t_read, t_setup), ms(t_setup, t_upload),
           ms(t_upload, t_kernel), ms(t0, t_setup), ms(t0, t_kernel), ms(t0, t_end), sum);
    fflush(stdout);
    return 0;
}
