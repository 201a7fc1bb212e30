/*
 * A model's weights placed by PyTorch's caching allocator, against the
 * simulated driver (issue 14): what sharing covers when a framework's pool,
 * not the app, decides where tensors land.
 *   pool-test SEED
 * The pool behaves as CUDACachingAllocator does for a process that only
 * allocates: sizes rounded to 512 bytes; tensors up to 1 MiB from 2 MiB
 * segments ("small pool"), larger ones from 20 MiB segments (a request of
 * 10 MiB or more gets a segment of its own, rounded to 2 MiB); a request
 * takes the smallest free tail that fits (best fit), split off only when
 * more than 1 MiB (large pool) or 512 bytes (small pool) would remain.
 * Weights shaped like a small ResNet (3x3 and 1x1 convolutions, 4
 * BatchNorm vectors each, a classifier) are uploaded one by one, then a
 * "forward pass" allocates activations from the same pools (into the free
 * tails of the weights' segments) and writes them with kernels, and reads
 * every weight. Prints the uploaded bytes and one checksum of everything.
 * Every segment must answer cuMemGetAddressRange as cuMemAlloc gave it.
 * With POOL_TEST_IPC=1 (the command line stays the same: learned placement
 * is per command line), each large segment is then handed to a child
 * process through CUDA IPC, which prints its first word and writes one;
 * the parent prints what it sees there. With POOL_TEST_WRITE=1 a kernel
 * writes the classifier's weights in place after the forward pass. With
 * POOL_TEST_BERT=1 the weights are BERT base's instead (fp16, 219 MB).
 * With POOL_TEST_IDLE_MS=N the process then idles N ms, as a serverless
 * instance between calls, and checksums every weight again ("again"):
 * assembly at idleness (SAGE_SHARE_ASSEMBLE_IDLE) maps what it shares
 * meanwhile, and the kernels after it must read the same bytes.
 * POOL_TEST_FORK=MARK forks a child during the idleness (fork_during_a_map).
 * POOL_TEST_PREFORK=1 forks first, before any driver call: the child runs.
 * POOL_TEST_SEED=N uploads other weights; POOL_TEST_PAUSE_MS=N idles N ms
 * between its context and its first allocation.
 */
#include <cuda.h>

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checksum_kernel.h"
#include "cu_ok.h"
#include "fakecuda.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

typedef struct Segment {
        CUdeviceptr base;
        size_t size, used;
} Segment;

typedef struct Pool {
        Segment seg[64];
        int n;
        size_t seg_size, keep; /* a new segment's size; split only when more than `keep` remains */
} Pool;

static Pool small_pool = { .seg_size = 2 * MIB, .keep = 512 }, large_pool = { .seg_size = 20 * MIB, .keep = MIB };

static CUdeviceptr pool_alloc(size_t n) {
        Pool *p;
        Segment *best = NULL;

        n = n < 512 ? 512 : (n + 511) / 512 * 512;
        p = n <= MIB ? &small_pool : &large_pool;
        for (int i = 0; i < p->n; i++) {
                size_t free = p->seg[i].size - p->seg[i].used;
                if (free >= n && (!best || free < best->size - best->used))
                        best = &p->seg[i];
        }
        if (!best) {
                if (p->n == 64)
                        exit(2);
                best = &p->seg[p->n++];
                best->size =
                        p == &large_pool && n >= 10 * MIB ? (n + 2 * MIB - 1) / (2 * MIB) * (2 * MIB) : p->seg_size;
                best->used = 0;
                OK(cuMemAlloc(&best->base, best->size));
                CUdeviceptr base = 0;
                size_t size = 0;
                OK(cuMemGetAddressRange(&base, &size, best->base + best->size - 1));
                if (base != best->base || size != best->size) {
                        fprintf(stderr, "pool-test: cuMemGetAddressRange says %#llx+%zu for %#llx+%zu\n",
                                (unsigned long long)base, size, (unsigned long long)best->base, best->size);
                        exit(4);
                }
        }
        CUdeviceptr at = best->base + best->used;
        best->used = best->size - best->used - n > p->keep ? best->used + n : best->size;
        return at;
}

/* An activation from a weight: out[i] = w[i % n] + i. */
static void act_kernel(const FakeKernelLaunch *launch, void **params) {
        uint64_t *out = *(uint64_t **)params[0];
        size_t n = *(size_t *)params[1];
        const uint64_t *w = *(const uint64_t **)params[2];
        size_t wn = *(size_t *)params[3];

        (void)launch;
        for (size_t i = 0; i < n; i++)
                out[i] = w[i % wn] + i;
}
static const size_t act_params[] = { sizeof(void *), sizeof(size_t), sizeof(void *), sizeof(size_t), 0 };
static const FakeKernelEntry kernels[] = { { "checksum", checksum_kernel, checksum_params },
                                           { "act", act_kernel, act_params } };
static const FakeModuleImage image = { FAKECUDA_IMAGE_MAGIC, 2, kernels };

typedef struct Tensor {
        CUdeviceptr at;
        size_t bytes;
} Tensor;

static Tensor weights[512], acts[64];
static int nweights, nacts;
static size_t uploaded;

static void upload(size_t bytes, uint64_t seed) {
        uint64_t *host = malloc(bytes);

        if (!host || nweights == 512)
                exit(2);
        for (size_t i = 0; i < bytes / 8; i++)
                host[i] = (i + seed * 7919 + (uint64_t)nweights * 104729) * 0x9e3779b97f4a7c15ull;
        weights[nweights].bytes = bytes;
        weights[nweights].at = pool_alloc(bytes);
        OK(cuMemcpyHtoD(weights[nweights].at, host, bytes));
        uploaded += bytes;
        nweights++;
        free(host);
}

/* A convolution of cin -> cout channels, k x k, fp32, and its BatchNorm (4 vectors and a counter). */
static void conv_bn(size_t cin, size_t cout, size_t k, uint64_t seed) {
        upload(cin * cout * k * k * 4, seed);
        for (int i = 0; i < 4; i++)
                upload(cout * 4, seed);
        upload(8, seed);
}

static void resnet(uint64_t seed) {
        conv_bn(3, 64, 7, seed);
        for (size_t stage = 0, c = 64; stage < 4; stage++, c *= 2)
                for (int block = 0; block < 2; block++) {
                        conv_bn(block ? 4 * c : c * 2, c, 1, seed);
                        conv_bn(c, c, 3, seed);
                        conv_bn(c, 4 * c, 1, seed);
                }
        upload(1000 * 2048 * 4, seed);
        upload(1000 * 4, seed);
}

/* A dense layer of fp16 weights (out x in) and its bias. */
static void dense(size_t in, size_t out, uint64_t seed) {
        upload(out * in * 2, seed);
        upload(out * 2, seed);
}

/*
 * BERT base in fp16 as its state dict lists it (POOL_TEST_BERT=1): per
 * layer 4 attention matrices of 1.125 MiB (no whole granule), an MLP of
 * two 4.5 MiB ones, biases and LayerNorms in the small pool.
 */
static void bert(uint64_t seed) {
        upload(30522 * 768 * 2, seed);
        upload(512 * 768 * 2, seed);
        upload(2 * 768 * 2, seed);
        upload(768 * 2, seed);
        upload(768 * 2, seed);
        for (int layer = 0; layer < 12; layer++) {
                for (int k = 0; k < 4; k++)
                        dense(768, 768, seed);
                upload(768 * 2, seed);
                upload(768 * 2, seed);
                dense(768, 3072, seed);
                dense(3072, 768, seed);
                upload(768 * 2, seed);
                upload(768 * 2, seed);
        }
        dense(768, 768, seed);
}

/* The child: open the handle (hex), print its first word, write one. */
static int ipc_open(const char *hex) {
        CUipcMemHandle h;
        CUdeviceptr p;
        uint64_t word = 0, mark = 0x5a5a5a5a5a5a5a5aull;

        for (size_t i = 0; i < sizeof(h.reserved); i++) {
                unsigned v;
                if (sscanf(hex + 2 * i, "%2x", &v) != 1)
                        return 2;
                h.reserved[i] = (char)v;
        }
        OK(cuIpcOpenMemHandle(&p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
        OK(cuMemcpyDtoH(&word, p, sizeof(word)));
        printf("child reads %016llx\n", (unsigned long long)word);
        fflush(stdout);
        OK(cuMemcpyHtoD(p, &mark, sizeof(mark)));
        OK(cuIpcCloseMemHandle(p));
        return 0;
}

static void ipc_segments(const char *self) {
        for (int i = 0; i < large_pool.n; i++) {
                CUipcMemHandle h;
                char hex[2 * sizeof(h.reserved) + 1];
                uint64_t word = 0;
                int status;
                pid_t pid;

                OK(cuIpcGetMemHandle(&h, large_pool.seg[i].base));
                for (size_t k = 0; k < sizeof(h.reserved); k++)
                        sprintf(hex + 2 * k, "%02x", (unsigned char)h.reserved[k]);
                fflush(stdout);
                if ((pid = fork()) == 0) {
                        execl(self, self, "ipc-open", hex, (char *)NULL);
                        _exit(127);
                }
                if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
                        exit(5);
                OK(cuMemcpyDtoH(&word, large_pool.seg[i].base, sizeof(word)));
                printf("parent sees %016llx\n", (unsigned long long)word);
        }
}

/*
 * POOL_TEST_FORK=MARK: the idleness forks a child as soon as a cuMemMap is
 * in progress (the simulated driver creates MARK: SAGE_FAKE_MAP_MARK, maps
 * slowed by SAGE_FAKE_MAP_MS), that is during sharing's idle pass, its lock
 * held; or at the end of the idleness plus 3 s, if no map came. The child
 * allocates (which takes sharing's lock in a process that shares) and
 * exits. No CUDA in a fork()ed child: it gets the driver's error, at once,
 * whatever its parent's threads held when it was forked.
 */
static void fork_a_caller(void) {
        int status = 0;
        pid_t pid;

        fflush(stdout);
        if ((pid = fork()) == 0) {
                CUdeviceptr p;
                _exit((int)cuMemAlloc(&p, 4 * MIB));
        }
        for (int i = 0; i < 500 && pid > 0 && waitpid(pid, &status, WNOHANG) == 0; i++)
                usleep(10000);
        if (pid > 0 && waitpid(pid, &status, WNOHANG) == 0) {
                kill(pid, SIGKILL);
                printf("forked child: hung\n");
        } else {
                printf("forked child: %d\n", pid > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
}

static void fork_during_a_map(const char *mark, const struct timespec *idle) {
        long waited_ms = 0, limit_ms = idle->tv_sec * 1000 + idle->tv_nsec / 1000000 + 3000;

        unlink(mark);
        while (access(mark, F_OK) != 0 && waited_ms++ < limit_ms)
                usleep(1000);
        if (access(mark, F_OK) == 0) { /* told apart from a map after the fork: MARK.seen */
                char seen[4096];
                int fd;
                snprintf(seen, sizeof(seen), "%s.seen", mark);
                if ((fd = open(seen, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) >= 0)
                        close(fd);
        }
        fork_a_caller();
}

int main(int argc, char **argv) {
        uint64_t seed = argc > 1 ? (uint64_t)atoll(argv[1]) : 1, sum = 0;
        CUdevice dev;
        CUcontext ctx;
        CUmodule module;
        CUfunction checksum, act;
        CUdeviceptr out;
        static const size_t act_sizes[] = { 800 * KIB, 300 * KIB, 3 * MIB, 6 * MIB, 96 * KIB, 2 * MIB + 4 * KIB };

        if (getenv("POOL_TEST_PREFORK")) { /* a server that forks before it uses the GPU: the child does it all */
                pid_t child = fork();
                int status = 0;
                if (child > 0)
                        return waitpid(child, &status, 0) == child && WIFEXITED(status) ? WEXITSTATUS(status) : 9;
        }
        OK(cuInit(0));
        OK(cuDeviceGet(&dev, 0));
        OK(cuDevicePrimaryCtxRetain(&ctx, dev));
        OK(cuCtxSetCurrent(ctx));
        if (argc > 2 && !strcmp(argv[1], "ipc-open"))
                return ipc_open(argv[2]);
        OK(cuModuleLoadData(&module, &image));
        OK(cuModuleGetFunction(&checksum, module, "checksum"));
        OK(cuModuleGetFunction(&act, module, "act"));
        OK(cuMemAlloc(&out, 8)); /* below SAGE_SHARE_MIN: plain memory */

        if (getenv("POOL_TEST_SEED")) /* other weights, the same command line (the same hint files) */
                seed = (uint64_t)atoll(getenv("POOL_TEST_SEED"));
        if (getenv("POOL_TEST_PAUSE_MS")) { /* idle before the uploads: a Python function reading its weights */
                long ms = atol(getenv("POOL_TEST_PAUSE_MS"));
                struct timespec pause = { ms / 1000, ms % 1000 * 1000000L };
                nanosleep(&pause, NULL);
        }
        if (getenv("POOL_TEST_BERT"))
                bert(seed);
        else
                resnet(seed);

        /*
         * Before any kernel: the first BatchNorm vector read back (a small
         * tensor, assembled with others) must hold what was uploaded, wherever
         * SAGE kept it (a predicted run's uploads stay on the host until then).
         */
        if (getenv("POOL_TEST_READ")) {
                size_t n = weights[1].bytes / 8;
                uint64_t *got = malloc(weights[1].bytes);
                if (!got)
                        exit(2);
                OK(cuMemcpyDtoH(got, weights[1].at, weights[1].bytes));
                for (size_t i = 0; i < n; i++)
                        if (got[i] != (i + seed * 7919 + 104729) * 0x9e3779b97f4a7c15ull) {
                                printf("read back: word %zu differs\n", i);
                                break;
                        }
                free(got);
        }
        /* The forward pass: activations where the pools put them, each written by a kernel. */
        for (size_t i = 0; i < sizeof(act_sizes) / sizeof(act_sizes[0]); i++) {
                const Tensor *w = &weights[(i * 37) % (size_t)nweights];
                size_t n = act_sizes[i] / 8, wn = w->bytes / 8;
                acts[nacts] = (Tensor){ pool_alloc(act_sizes[i]), act_sizes[i] };
                void *params[] = { &acts[nacts].at, &n, (void *)&w->at, &wn };
                OK(cuLaunchKernel(act, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
                nacts++;
        }
        if (getenv("POOL_TEST_WRITE")) /* a kernel writes the classifier's weights and bias in place */
                for (int i = nweights - 2; i < nweights; i++) {
                        size_t n = weights[i].bytes / 8, wn = weights[0].bytes / 8;
                        void *params[] = { &weights[i].at, &n, &weights[0].at, &wn };
                        OK(cuLaunchKernel(act, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
                }
        for (int i = 0; i < nweights + nacts; i++) {
                const Tensor *t = i < nweights ? &weights[i] : &acts[i - nweights];
                sum = sum * 31 + checksum_of(checksum, t->at, t->bytes / 8, out);
        }
        printf("uploaded %zu bytes in %d tensors, %d activations, checksum %016llx\n", uploaded, nweights, nacts,
               (unsigned long long)sum);
        if (getenv("POOL_TEST_IDLE_MS") && atol(getenv("POOL_TEST_IDLE_MS")) > 0) {
                struct timespec idle = { 0, atol(getenv("POOL_TEST_IDLE_MS")) * 1000000L };
                while (idle.tv_nsec >= 1000000000L) {
                        idle.tv_sec++;
                        idle.tv_nsec -= 1000000000L;
                }
                if (getenv("POOL_TEST_FORK"))
                        fork_during_a_map(getenv("POOL_TEST_FORK"), &idle);
                else
                        nanosleep(&idle, NULL);
                sum = 0;
                /* Copies first (no launch: the gate, not the sharing lock, must hold them during a remap). */
                for (int i = 0; i < nweights; i++) {
                        uint64_t *host = malloc(weights[i].bytes);
                        if (!host)
                                exit(2);
                        OK(cuMemcpyDtoH(host, weights[i].at, weights[i].bytes));
                        for (size_t k = 0; k < weights[i].bytes / 8; k++)
                                sum = sum * 1099511628211ull + host[k];
                        free(host);
                }
                for (int i = 0; i < nweights; i++)
                        sum = sum * 31 + checksum_of(checksum, weights[i].at, weights[i].bytes / 8, out);
                printf("again %016llx\n", (unsigned long long)sum);
        }
        if (getenv("POOL_TEST_IPC"))
                ipc_segments(argv[0]);
        for (int i = 0; i < small_pool.n + large_pool.n; i++)
                OK(cuMemFree(i < small_pool.n ? small_pool.seg[i].base : large_pool.seg[i - small_pool.n].base));
        return 0;
}
