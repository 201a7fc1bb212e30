/*
 * Sharing-based memory on the GPU (scripts/gpu-test.sh runs it natively and
 * twice under SAGE_SHARE=1 with a broker: the first run publishes, the
 * second maps). Its uploads cover the shapes SAGE must handle:
 *   A  a 256 MiB weight file, mmap()ed, one cudaMemcpy (file-identity key);
 *   P  a 64 MiB "pool" with three tensors at 512-byte offsets, uploaded with
 *      cudaMemcpyAsync from pageable memory, cudaMemcpy and cudaMemcpyAsync
 *      with cudaMemcpyDefault (content keys, partial granules at the ends);
 *   B, C  A's bytes again from anonymous memory (content key), twice; a
 *      kernel then scales B in place. The first SAGE run publishes C only
 *      (B changed); in the second both map C's extent, and the launch guard
 *      must give B a private copy before the kernel writes it (no fault);
 * then checksums each with a read-only kernel. stdout: the checksums.
 *   share_weights [FILE]   (default: $TMPDIR/sage-share-weights.bin)
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpu_check.h"
#include "gpu_checksum.cuh"

#define A_BYTES (256ull << 20)
#define P_BYTES (64ull << 20)

__global__ void scale(unsigned long long *w, size_t n) {
        for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                w[i] = w[i] * 3 + 1;
}

static const unsigned long long *map_weights(const char *path) {
        struct stat st;
        if (stat(path, &st) != 0 || (unsigned long long)st.st_size != A_BYTES) {
                unsigned long long *w = (unsigned long long *)malloc(A_BYTES);
                char tmp[4096];
                snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
                FILE *f = fopen(tmp, "wb");
                if (!w || !f) {
                        fprintf(stderr, "cannot write %s\n", tmp);
                        exit(1);
                }
                fill_words(w, A_BYTES, 11);
                if (fwrite(w, 1, A_BYTES, f) != A_BYTES || fclose(f) != 0 || rename(tmp, path) != 0) {
                        fprintf(stderr, "cannot write %s\n", path);
                        exit(1);
                }
                free(w);
        }
        int fd = open(path, O_RDONLY);
        void *p = fd < 0 ? MAP_FAILED : mmap(NULL, A_BYTES, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
                fprintf(stderr, "cannot map %s\n", path);
                exit(1);
        }
        close(fd);
        return (const unsigned long long *)p;
}

int main(int argc, char **argv) {
        char path[4096];
        const char *dir = getenv("TMPDIR");
        if (argc > 1)
                snprintf(path, sizeof(path), "%s", argv[1]);
        else
                snprintf(path, sizeof(path), "%s/sage-share-weights.bin", dir && *dir ? dir : "/tmp");
        const unsigned long long *file = map_weights(path);

        unsigned long long *d_out, *a, *b, *c;
        char *pool;
        RT_CHECK(cudaMalloc(&d_out, sizeof(unsigned long long)));

        /* A: the file, one synchronous upload. */
        RT_CHECK(cudaMalloc(&a, A_BYTES));
        RT_CHECK(cudaMemcpy(a, file, A_BYTES, cudaMemcpyHostToDevice));

        /* P: three tensors packed into one pool segment, three kinds of copy. */
        size_t t0 = 0, n0 = 20ull << 20, t1 = ((n0 + 511) / 512) * 512, n1 = (24ull << 20) + 4096;
        size_t t2 = ((t1 + n1 + 511) / 512) * 512, n2 = P_BYTES - t2 - (1 << 20);
        unsigned long long *host = (unsigned long long *)malloc(P_BYTES);
        if (!host)
                return 1;
        fill_words(host, P_BYTES, 5);
        cudaStream_t s;
        RT_CHECK(cudaStreamCreate(&s));
        RT_CHECK(cudaMalloc(&pool, P_BYTES));
        RT_CHECK(cudaMemset(pool, 0, P_BYTES));
        RT_CHECK(cudaMemcpyAsync(pool + t0, (char *)host + t0, n0, cudaMemcpyHostToDevice, s));
        RT_CHECK(cudaStreamSynchronize(s));
        RT_CHECK(cudaMemcpy(pool + t1, (char *)host + t1, n1, cudaMemcpyHostToDevice));
        RT_CHECK(cudaMemcpyAsync(pool + t2, (char *)host + t2, n2, cudaMemcpyDefault, s));
        RT_CHECK(cudaStreamSynchronize(s));

        /* B: A's bytes again (from anonymous memory this time), then written by a kernel. */
        unsigned long long *copy = (unsigned long long *)malloc(A_BYTES);
        if (!copy)
                return 1;
        memcpy(copy, file, A_BYTES);
        RT_CHECK(cudaMalloc(&b, A_BYTES));
        RT_CHECK(cudaMemcpy(b, copy, A_BYTES, cudaMemcpyHostToDevice));
        RT_CHECK(cudaMalloc(&c, A_BYTES));
        RT_CHECK(cudaMemcpy(c, copy, A_BYTES, cudaMemcpyHostToDevice));

        printf("A %016llx\n", sum_of(a, A_BYTES, d_out));
        printf("P0 %016llx\n", sum_of(pool + t0, n0 / 8 * 8, d_out));
        printf("P1 %016llx\n", sum_of(pool + t1, n1 / 8 * 8, d_out));
        printf("P2 %016llx\n", sum_of(pool + t2, n2 / 8 * 8, d_out));
        printf("P %016llx\n", sum_of(pool, P_BYTES, d_out));
        printf("B %016llx\n", sum_of(b, A_BYTES, d_out));
        scale<<<264, 256>>>(b, A_BYTES / 8);
        LAUNCH_CHECK();
        RT_CHECK(cudaDeviceSynchronize());
        printf("B scaled %016llx\n", sum_of(b, A_BYTES, d_out));
        printf("C %016llx\n", sum_of(c, A_BYTES, d_out));
        printf("A again %016llx\n", sum_of(a, A_BYTES, d_out));

        RT_FREE(c, b, pool, a, d_out);
        RT_CHECK(cudaStreamDestroy(s));
        free(copy);
        free(host);
        return 0;
}
