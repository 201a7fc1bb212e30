/*
 * A GPT-2-like model load against the simulated driver, for predicted
 * remap (SAGE_SHARE_PREDICT, predict_checks.sh):
 *   predict-test SEED
 * A pool of 20 MiB segments (a tensor over 10 MiB gets one of its own,
 * rounded to 2 MiB) takes per layer the attention's qkv (6 MiB) and
 * projection (2 MiB) and two MLP matrices (4 MiB), all granule multiples,
 * then one tensor with ends (3 MiB + 4 KiB), every tensor uploaded by
 * cuMemcpyHtoD; then a kernel checksums each. Prints the uploaded bytes,
 * the tensors with a whole granule, and the checksum. The command line
 * stays the same between the variants (hints are per command line):
 *   PREDICT_TEST_CHANGE=K  tensor K's bytes differ (new weights)
 *   PREDICT_TEST_EARLY=K   before tensor K's upload a kernel writes its
 *                          memory, its address read from device memory (as
 *                          through a pointer array); the app reads a word of
 *                          it back (printed)
 *   PREDICT_TEST_FILL=1    a kernel writes every tensor's memory before its
 *                          upload, as PyTorch's deterministic mode does
 *                          (torch.use_deterministic_algorithms fills each
 *                          new tensor, fill_uninitialized_memory)
 *   PREDICT_TEST_SLEEP_MS=N  sleeps N ms before its first CUDA call (a
 *                          Python function importing its framework): the
 *                          warm-up thread's work is done by then
 *   PREDICT_TEST_SETUP_MS=N  a set-up kernel first (PyTorch's
 *                          torch.zeros(1, device="cuda")), then N ms before
 *                          the weights (a framework's set-up)
 *   PREDICT_TEST_PAUSE=K:N  N ms before tensor K's allocation
 *   PREDICT_TEST_BFC=1     every tensor in one 128 MiB region, one after the
 *                          other (XLA's BFC allocator), then an activation
 *                          after them that a kernel reads
 *   PREDICT_TEST_APPVMM=1  the same, the region the app's own VMM memory
 *                          (cuMemCreate + cuMemMap: XLA's allocator on CUDA 12+)
 *   PREDICT_TEST_PROBE=1   before the weights, 1 MiB pieces (below
 *                          SAGE_SHARE_MIN: the driver's) until one runs out
 *                          of memory, freed again (a framework's probe of the
 *                          free memory): their number printed; =2 the same
 *                          with cuMemAllocManaged (a call SAGE only passes on)
 */
#include <cuda.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "checksum_kernel.h"
#include "cu_ok.h"
#include "fakecuda.h"

#define MIB ((size_t)1 << 20)
#define GRAN (2 * MIB)

/* Writes the tensor whose address device memory holds: a pointer the launch guard cannot see. */
static void fill_kernel(const FakeKernelLaunch *launch, void **params) {
        uint64_t *const *table = *(uint64_t *const **)params[0];
        size_t n = *(size_t *)params[1];
        uint64_t *w = table[0];

        (void)launch;
        for (size_t i = 0; i < n; i++)
                w[i] = 0xfeedull + i;
}
static const size_t fill_params[] = { sizeof(void *), sizeof(size_t), 0 };
static const FakeKernelEntry kernels[] = { { "checksum", checksum_kernel, checksum_params },
                                           { "fill", fill_kernel, fill_params } };
static const FakeModuleImage image = { FAKECUDA_IMAGE_MAGIC, 2, kernels };

static CUdeviceptr seg_base;
static size_t seg_size, seg_used;

static bool bfc, app_vmm; /* PREDICT_TEST_BFC, PREDICT_TEST_APPVMM */

/* XLA's region: 128 MiB of the app's own VMM memory (cuMemCreate, reserved, mapped, access set), or cuMemAlloc'd. */
static void region(void) {
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 } };
        CUmemAccessDesc access = { .location = prop.location, .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        CUmemGenericAllocationHandle h;

        seg_size = 128 * MIB;
        if (!app_vmm) {
                OK(cuMemAlloc(&seg_base, seg_size));
                return;
        }
        OK(cuMemCreate(&h, seg_size, &prop, 0));
        OK(cuMemAddressReserve(&seg_base, seg_size, 0, 0, 0));
        OK(cuMemMap(seg_base, seg_size, 0, h, 0));
        OK(cuMemSetAccess(seg_base, seg_size, &access, 1));
        OK(cuMemRelease(h)); /* the mapping keeps it */
}

static CUdeviceptr pool_alloc(size_t n) {
        n = (n + 511) / 512 * 512;
        if (bfc && !seg_size) {
                region();
        } else if (!bfc && (!seg_size || n > 10 * MIB || seg_used + n > seg_size)) {
                seg_size = n > 10 * MIB ? (n + GRAN - 1) / GRAN * GRAN : 20 * MIB;
                OK(cuMemAlloc(&seg_base, seg_size));
                seg_used = 0;
        }
        seg_used += n;
        return seg_base + seg_used - n;
}

/* 1 MiB pieces of the driver's until it has no more, then freed: how many it gave. */
static void probe_free(bool managed) {
        enum {
                MOST = 1 << 16
        };
        CUdeviceptr *piece = calloc(MOST, sizeof(*piece));
        size_t n = 0;
        CUresult r = CUDA_SUCCESS;

        if (!piece)
                exit(2);
        while (n < MOST && (r = managed ? cuMemAllocManaged(&piece[n], MIB, CU_MEM_ATTACH_GLOBAL)
                                        : cuMemAlloc(&piece[n], MIB)) == CUDA_SUCCESS)
                n++;
        if (r != CUDA_ERROR_OUT_OF_MEMORY && n < MOST) {
                fprintf(stderr, "probe: cuMemAlloc returned %d\n", (int)r);
                exit(1);
        }
        printf("probed %zu MiB free\n", n);
        while (n)
                OK(cuMemFree(piece[--n]));
        free(piece);
}

int main(int argc, char **argv) {
        uint64_t seed = argc > 1 ? (uint64_t)atoll(argv[1]) : 1, sum = 0;
        long change = getenv("PREDICT_TEST_CHANGE") ? atol(getenv("PREDICT_TEST_CHANGE")) : -1;
        long early = getenv("PREDICT_TEST_EARLY") ? atol(getenv("PREDICT_TEST_EARLY")) : -1;
        bool fill_all = getenv("PREDICT_TEST_FILL") && atoi(getenv("PREDICT_TEST_FILL"));
        long pause_at = -1, pause_ms = 0;
        size_t sizes[16], n = 0, uploaded = 0, whole = 0;
        CUdeviceptr at[16], out, table;
        CUdevice dev;
        CUcontext ctx;
        CUmodule module;
        CUfunction checksum, fill;

        app_vmm = getenv("PREDICT_TEST_APPVMM") && atoi(getenv("PREDICT_TEST_APPVMM"));
        bfc = app_vmm || (getenv("PREDICT_TEST_BFC") && atoi(getenv("PREDICT_TEST_BFC")));
        if (getenv("PREDICT_TEST_SLEEP_MS"))
                usleep((useconds_t)atoi(getenv("PREDICT_TEST_SLEEP_MS")) * 1000);
        OK(cuInit(0));
        OK(cuDeviceGet(&dev, 0));
        OK(cuDevicePrimaryCtxRetain(&ctx, dev));
        OK(cuCtxSetCurrent(ctx));
        OK(cuModuleLoadData(&module, &image));
        OK(cuModuleGetFunction(&checksum, module, "checksum"));
        OK(cuModuleGetFunction(&fill, module, "fill"));
        OK(cuMemAlloc(&out, 8)); /* below SAGE_SHARE_MIN: plain memory */
        OK(cuMemAlloc(&table, 8));
        if (getenv("PREDICT_TEST_PROBE") && atoi(getenv("PREDICT_TEST_PROBE")))
                probe_free(atoi(getenv("PREDICT_TEST_PROBE")) == 2);
        if (getenv("PREDICT_TEST_SETUP_MS")) { /* a kernel writes plain memory (out): not in the output */
                (void)checksum_of(checksum, table, 1, out);
                usleep((useconds_t)atoi(getenv("PREDICT_TEST_SETUP_MS")) * 1000);
        }
        if (getenv("PREDICT_TEST_PAUSE") && sscanf(getenv("PREDICT_TEST_PAUSE"), "%ld:%ld", &pause_at, &pause_ms) != 2)
                return 2;
        sizes[n++] = 12 * MIB; /* the embeddings: a segment of their own */
        for (int l = 0; l < 3; l++) {
                sizes[n++] = 6 * MIB;
                sizes[n++] = 2 * MIB;
                sizes[n++] = 4 * MIB;
                sizes[n++] = 4 * MIB;
        }
        sizes[n++] = 3 * MIB + 4096;
        for (size_t t = 0; t < n; t++) {
                uint64_t *host = malloc(sizes[t]);
                if (!host)
                        return 2;
                for (size_t i = 0; i < sizes[t] / 8; i++)
                        host[i] = (i + (seed + ((long)t == change)) * 7919 + t * 104729) * 0x9e3779b97f4a7c15ull;
                if ((long)t == pause_at)
                        usleep((useconds_t)pause_ms * 1000);
                at[t] = pool_alloc(sizes[t]);
                if ((long)t == early || fill_all) { /* a kernel writes the tensor's memory before its upload */
                        size_t words = sizes[t] / 8;
                        void *params[] = { &table, &words };
                        OK(cuMemcpyHtoD(table, &at[t], sizeof(at[t])));
                        OK(cuLaunchKernel(fill, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
                }
                if ((long)t == early) {
                        uint64_t word = 0;
                        OK(cuMemcpyDtoH(&word, at[t] + sizes[t] / 2, 8));
                        printf("before its upload tensor %zu holds %016llx\n", t, (unsigned long long)word);
                }
                OK(cuMemcpyHtoD(at[t], host, sizes[t]));
                uploaded += sizes[t];
                whole += (seg_used - (sizes[t] + 511) / 512 * 512 + sizes[t]) / GRAN >
                         (seg_used - (sizes[t] + 511) / 512 * 512 + GRAN - 1) / GRAN; /* offsets in the segment */
                free(host);
        }
        if (bfc) /* an activation after the weights, in the region's granule where they end: a kernel reads it */
                (void)checksum_of(checksum, pool_alloc(4096), 4096 / 8, out); /* never written: not in the output */
        for (size_t t = 0; t < n; t++)
                sum = sum * 31 + checksum_of(checksum, at[t], sizes[t] / 8, out);
        printf("uploaded %zu bytes in %zu tensors, %zu with whole granules, checksum %016llx\n", uploaded, n, whole,
               (unsigned long long)sum);
        return 0;
}
