/*
 * A function that uploads "weights" and runs a kernel that only reads them,
 * against the simulated driver. Under SAGE_SHARE=1 with a broker, a first
 * run publishes the weights and later runs map them instead of copying: the
 * output must never change.
 *   share-test SIZE_MIB SEED [MODE [ARG]]
 * MODE:
 *   whole       one allocation, one synchronous upload (default)
 *   pieces      a framework pool: one allocation holding three "tensors" at
 *               unaligned offsets, uploaded synchronously, asynchronously and
 *               through unified cuMemcpy
 *   file PATH   the weights come from PATH, mmap()ed (generated if missing)
 *   write       after the upload, the app overwrites 1 MiB in the middle
 *               through the API (memset) and checksums
 *   kernel-write after the upload, a kernel multiplies the weights in place
 *   kernel-write-ex as kernel-write, launched by cuLaunchKernelEx_ptsz
 *   kernel-write-captured as kernel-write, the launch captured into a graph
 *               (global mode) that is then launched once
 *   unknown-layout-captured the same with unknown-layout's kernel
 *   kernel-write-captured-reupload as kernel-write-captured, the weights
 *               uploaded again between the capture and the graph's launch
 *   kernel-write-captured-beside as kernel-write-captured, another stream
 *               capturing (relaxed mode) while the graph is launched
 *   read-beside-capture after the upload, a kernel the publisher never ran
 *               reads the weights while another stream captures (global)
 *   tensors     a 1 MiB tensor uploaded 4 times to an allocation of its own,
 *               then the weights as tensors of 4 MiB + 4 KiB, one upload each
 *   inflight    the upload comes while an asynchronous memset of the
 *               allocation is still queued on a stream
 *   unknown-layout as kernel-write, by a kernel whose parameter layout the
 *               driver cannot tell (cuFuncGetParamInfo fails)
 *   hidden-write as kernel-write, by a kernel that finds the weights through
 *               a pointer in device memory (no parameter shows it); a fault
 *               is reported as "hidden write faulted: CODE"
 *   write2d     after the upload, the app writes rectangles into the weights
 *               with cuMemcpy2D and cuMemcpy2DAsync (from host rows)
 *   set2d       as write2d, with cuMemsetD2D32Async, then cuMemsetD2D8
 *   write3d     as write2d, with cuMemcpy3DAsync, then cuMemcpy3D (boxes)
 *   file2 P1 P2 weights from P1 (mmap()ed), unmapped, then other weights from
 *               P2 mapped (at the same address, as a rule): both keyed by
 *               their own file
 *   packed      a pool segment of SIZE_MIB whose first 3/4 hold small
 *               "tensors" at 512-byte aligned offsets, each uploaded on its
 *               own, checksummed tensor by tensor (the rest stays free)
 *   packed-gapwrite as packed, then a kernel writes the free rest of the
 *               segment (zeros times 3: the bytes do not change)
 *   packed-reach the tensors start 8 KiB into the second granule; a kernel
 *               writes a buffer from 4 KiB before that granule to 4 KiB into it
 *   capture     the upload starts 4 KiB into the allocation (its ends are
 *               left for assembly); the first launch after it is captured
 *               into a graph on a stream, which is then replayed
 *   ipc-export  as whole, then hands a CUDA IPC handle to a child process
 *               (this program, ipc-open) which checksums the weights, writes
 *               one word; the parent must see the write
 */
#include <cuda.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cu_ok.h"
#include "fakecuda.h"

static void checksum_kernel(const FakeKernelLaunch *launch, void **params) {
        const uint64_t *w = *(const uint64_t **)params[0];
        size_t n = *(size_t *)params[1];
        uint64_t *out = *(uint64_t **)params[2];
        uint64_t s = 0;

        (void)launch;
        for (size_t i = 0; i < n; i++)
                s = s * 1099511628211ull + w[i];
        *out = s;
}
/* Multiplies the weights by 3 in place: a kernel that writes them. */
static void scale_kernel(const FakeKernelLaunch *launch, void **params) {
        uint64_t *w = *(uint64_t **)params[0];
        size_t n = *(size_t *)params[1];

        (void)launch;
        for (size_t i = 0; i < n; i++)
                w[i] *= 3;
}
/* Multiplies by 3 the weights a pointer in device memory names: a write no
 * launch parameter shows. */
static void scale_indirect_kernel(const FakeKernelLaunch *launch, void **params) {
        uint64_t *w = **(uint64_t ***)params[0];
        size_t n = *(size_t *)params[1];

        (void)launch;
        for (size_t i = 0; i < n; i++)
                w[i] *= 3;
}
static const size_t checksum_params[] = { sizeof(void *), sizeof(size_t), sizeof(void *), 0 };
static const size_t scale_params[] = { sizeof(void *), sizeof(size_t), 0 };
/* "scale_unknown" declares no sizes: the driver cannot tell its parameter layout. */
static const FakeKernelEntry kernels[] = { { "checksum", checksum_kernel, checksum_params },
                                           { "scale", scale_kernel, scale_params },
                                           { "scale_unknown", scale_kernel, NULL },
                                           { "scale_indirect", scale_indirect_kernel, scale_params },
                                           { "checksum_again", checksum_kernel, checksum_params } };
static const FakeModuleImage image = { FAKECUDA_IMAGE_MAGIC, 5, kernels };

static CUfunction fn, scale_fn, scale_unknown_fn, scale_indirect_fn, again_fn;

/* cuda.h names it only under CUDA_API_PER_THREAD_DEFAULT_STREAM. */
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **params, void **extra);
static CUdeviceptr out;

static uint64_t checksum(CUdeviceptr p, size_t bytes) {
        size_t n = bytes / sizeof(uint64_t);
        uint64_t result = 0;
        void *params[] = { &p, &n, &out };

        OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        OK(cuMemcpyDtoH(&result, out, sizeof(result)));
        return result;
}

static void fill(uint64_t *host, size_t bytes, uint64_t seed) {
        for (size_t i = 0; i < bytes / sizeof(uint64_t); i++)
                host[i] = (i + seed) * 0x9e3779b97f4a7c15ull;
}

/* The weights from a file: generated the first time, then mmap()ed read-only. */
static uint64_t *map_file(const char *path, size_t bytes, uint64_t seed) {
        struct stat st;
        void *p;
        int fd;

        if (stat(path, &st) < 0 || (size_t)st.st_size != bytes) {
                uint64_t *host = malloc(bytes);
                FILE *f = fopen(path, "wb");
                if (!host || !f)
                        exit(2);
                fill(host, bytes, seed);
                if (fwrite(host, 1, bytes, f) != bytes || fclose(f) != 0)
                        exit(2);
                free(host);
        }
        if ((fd = open(path, O_RDONLY)) < 0)
                exit(2);
        p = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        return p == MAP_FAILED ? NULL : p;
}

/*
 * Small tensors packed into one pool segment, as a caching allocator does:
 * from `first` up to 3/4 of it, the rest free. `reach`: a kernel writes a
 * buffer that starts before `first` (in memory no upload touched) and ends
 * inside the tensors' first granule, before them.
 */
static int packed(size_t bytes, uint64_t seed, size_t first, bool gap_write, bool reach) {
        size_t off[4096], len[4096], end = first, total = 0;
        uint64_t *host, sum = 0;
        CUdeviceptr seg;
        int n = 0;

        while (n < 4096) {
                size_t l = 8 * (1000 + 97 * (size_t)(n % 40)); /* not multiples of 512: padding between tensors */
                if (end + l > bytes / 4 * 3)
                        break;
                off[n] = end;
                len[n] = l;
                total += l;
                end = (end + l + 511) / 512 * 512;
                n++;
        }
        if (!(host = malloc(end)))
                return 2;
        fill(host, end, seed);
        OK(cuMemAlloc(&seg, bytes));
        for (int i = 0; i < n; i++)
                OK(cuMemcpyHtoD(seg + off[i], (char *)host + off[i], len[i]));
        if (reach) {
                CUdeviceptr from = seg + first - 12288; /* 4 KiB before the granule, 4 KiB into it */
                size_t words = 8192 / sizeof(uint64_t);
                void *params[] = { &from, &words };
                OK(cuLaunchKernel(scale_fn, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        }
        if (gap_write) {
                CUdeviceptr gap = seg + end;
                size_t words = (bytes - end) / sizeof(uint64_t);
                void *params[] = { &gap, &words };
                OK(cuLaunchKernel(scale_fn, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        }
        for (int i = 0; i < n; i++)
                sum = sum * 31 + checksum(seg + off[i], len[i]);
        if (reach) {
                uint64_t word = 1;
                OK(cuMemcpyDtoH(&word, seg + first - 8192, sizeof(word)));
                sum = sum * 31 + word;
        }
        printf("packed %d tensors, %zu bytes, checksum %016llx\n", n, total, (unsigned long long)sum);
        OK(cuMemFree(seg));
        free(host);
        return 0;
}

/* Ends the capture on `s`: its graph, or NULL where the capture broke (said on stderr). */
static CUgraph end_capture(CUstream s, const char *what) {
        CUgraph g = NULL;
        CUresult r = cuStreamEndCapture(s, &g);

        if (r == CUDA_SUCCESS)
                return g;
        fprintf(stderr, "share-test: the capture %s broke: %d\n", what, (int)r);
        return NULL;
}

/* Replays graph `g` once on `s` and prints what it left in `out` as "LABEL: checksum ...". */
static void replay(CUstream s, CUgraph g, const char *label) {
        CUgraphExec exec;
        uint64_t result = 0;

        OK(cuGraphInstantiateWithFlags(&exec, g, 0));
        OK(cuGraphLaunch(exec, s));
        OK(cuStreamSynchronize(s));
        OK(cuMemcpyDtoH(&result, out, sizeof(result)));
        printf("%s checksum %016llx\n", label, (unsigned long long)result);
        OK(cuGraphExecDestroy(exec));
        OK(cuGraphDestroy(g));
}

/* The first launch after an upload is captured into a graph: sharing must not break the capture. */
static int capture(size_t bytes, uint64_t seed) {
        size_t n = (bytes - 8192) / sizeof(uint64_t);
        uint64_t *host = malloc(bytes);
        CUdeviceptr w, at;
        CUstream s;
        CUgraph g;
        void *params[] = { &at, &n, &out };

        if (!host)
                return 2;
        fill(host, bytes, seed);
        OK(cuMemAlloc(&w, bytes));
        at = w + 4096;
        OK(cuMemcpyHtoD(at, host, n * sizeof(uint64_t)));
        OK(cuStreamCreate(&s, 0));
        OK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
        OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
        if (!(g = end_capture(s, "of a launch")))
                return 5;
        replay(s, g, "captured");
        OK(cuStreamDestroy(s));
        OK(cuMemFree(w));
        free(host);
        return 0;
}

/*
 * A capture that holds a copy from pinned host memory (MODE capture-copy,
 * tests/gpu/graphs.cu's order): the copy is recorded, not run, so sharing
 * leaves it to the graph and the capture holds.
 */
static int capture_copy(size_t bytes, uint64_t seed) {
        size_t n = bytes / sizeof(uint64_t);
        uint64_t *host = NULL;
        CUdeviceptr w, acc;
        CUstream s;
        CUgraph g;
        void *params[] = { &w, &n, &out };

        OK(cuMemAllocHost((void **)&host, bytes));
        fill(host, bytes, seed);
        OK(cuMemAlloc(&w, bytes));
        OK(cuMemAlloc(&acc, bytes));
        OK(cuMemsetD8(acc, 0, bytes));
        OK(cuCtxSynchronize());
        OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
        OK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
        OK(cuMemcpyHtoDAsync(w, host, bytes, s));
        OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
        if (!(g = end_capture(s, "of a copy")))
                return 5;
        replay(s, g, "captured copy:");
        OK(cuStreamDestroy(s));
        OK(cuMemFree(w));
        OK(cuMemFree(acc));
        OK(cuMemFreeHost(host));
        return 0;
}

/*
 * Uploads on another thread while this one captures in the global mode
 * (MODE capture-beside HOLD_MS WHAT; HOLD_MS: how long the capture stays
 * open after the other thread is done). The driver refuses, and invalidates
 * the capture over, cuCtxSynchronize in any mode and pinning or a stream
 * wait in the global mode (scripts/probes/capture). WHAT:
 *   first: the capture opens, then the upload comes, over bytes a memset
 *          wrote (replacing them would synchronize): a plain copy;
 *   late: the upload comes first and is still pinning its staging (the
 *         driver slowed) when the capture opens: it pins and waits relaxed;
 *   assemble: two uploads (this thread's) meet inside a granule, the
 *             capture opens, the other thread launches a kernel: no
 *             assembly (it synchronizes), as for a captured launch.
 * The warm-up's staging made during the capture is run with `first`. After
 * the capture, an upload of the same bytes to new memory (shared again).
 */
enum {
        BESIDE_FIRST,
        BESIDE_LATE,
        BESIDE_ASSEMBLE
};

typedef struct Beside {
        CUcontext ctx;
        CUdeviceptr w;
        CUstream own;
        const uint64_t *host;
        size_t off, bytes;
        int what;
        CUresult r;
} Beside;

/* The copy, or for `assemble` a kernel; waiting for it in the global mode would break the capture natively too. */
static void *upload_beside(void *arg) {
        Beside *b = arg;
        CUdeviceptr at = b->w + b->off;
        size_t words = b->bytes / sizeof(uint64_t);
        void *params[] = { &at, &words, &out };

        if (!(b->r = cuCtxSetCurrent(b->ctx)) && b->what != BESIDE_ASSEMBLE)
                b->r = cuMemcpyHtoDAsync(at, b->host, b->bytes, b->own);
        if (!b->r && b->what == BESIDE_ASSEMBLE)
                b->r = cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, b->own, params, NULL);
        return NULL;
}

static int capture_beside(size_t bytes, uint64_t seed, unsigned hold_ms, const char *what) {
        uint64_t *host = malloc(bytes);
        char label[64];
        Beside b = { .bytes = bytes };
        size_t n = bytes / sizeof(uint64_t);
        CUdeviceptr after;
        CUstream s;
        CUgraph g;
        pthread_t t;
        void *params[] = { &b.w, &n, &out };

        if (!host)
                return 2;
        b.what = !strcmp(what, "late") ? BESIDE_LATE : !strcmp(what, "assemble") ? BESIDE_ASSEMBLE : BESIDE_FIRST;
        fill(host, bytes, seed);
        b.host = host;
        OK(cuCtxGetCurrent(&b.ctx));
        OK(cuMemAlloc(&b.w, bytes));
        if (b.what == BESIDE_FIRST)
                OK(cuMemsetD8(b.w, 0, bytes));
        if (b.what ==
            BESIDE_ASSEMBLE) { /* two uploads meeting inside a granule: assembled; the kernel in the capture */
                size_t half = bytes / 2 + 8192;
                OK(cuMemcpyHtoD(b.w, host, half));
                OK(cuMemcpyHtoD(b.w + half, (const char *)host + half, bytes - half));
        }
        OK(cuStreamCreate(&b.own, CU_STREAM_NON_BLOCKING));
        OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
        if (b.what == BESIDE_LATE && pthread_create(&t, NULL, upload_beside, &b) != 0)
                return 2;
        if (b.what == BESIDE_LATE)
                usleep(50 * 1000); /* inside the upload: its staging takes 100 ms a buffer (SAGE_FAKE_PIN_MS) */
        /* Open, nothing recorded yet: work recorded would make the upload's allocation look used. */
        OK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
        if (b.what != BESIDE_LATE && pthread_create(&t, NULL, upload_beside, &b) != 0)
                return 2;
        pthread_join(t, NULL);
        OK(b.r);
        usleep(hold_ms * 1000u);
        OK(cuMemsetD8Async(out, 0, sizeof(uint64_t), s));
        OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
        if (!(g = end_capture(s, "beside an upload")))
                return 5;
        OK(cuStreamSynchronize(b.own));
        OK(cuStreamDestroy(b.own));
        /* The capture over: uploads are shared again. */
        OK(cuMemAlloc(&after, bytes));
        OK(cuMemcpyHtoD(after, host, bytes));
        snprintf(label, sizeof(label), "captured beside an upload (%s):", what);
        replay(s, g, label);
        OK(cuStreamDestroy(s));
        OK(cuMemFree(b.w));
        OK(cuMemFree(after));
        free(host);
        return 0;
}

/*
 * Pitched writes into uploaded weights (MODE write2d, set2d, write3d): rows
 * far apart, so the range they span crosses several granules and leaves
 * gaps the call does not write.
 */
static void pitched_write(const char *mode, CUdeviceptr weights, size_t bytes) {
        unsigned char rows[64 * 1000];
        CUstream s;

        for (size_t i = 0; i < sizeof(rows); i++)
                rows[i] = (unsigned char)(i * 7 + 1);
        OK(cuStreamCreate(&s, 0));
        if (!strcmp(mode, "write2d")) {
                CUDA_MEMCPY2D c = { .srcMemoryType = CU_MEMORYTYPE_HOST,
                                    .srcHost = rows,
                                    .srcPitch = 1000,
                                    .dstMemoryType = CU_MEMORYTYPE_DEVICE,
                                    .dstDevice = weights + bytes / 2,
                                    .dstXInBytes = 24,
                                    .dstY = 5,
                                    .dstPitch = 65536,
                                    .WidthInBytes = 1000,
                                    .Height = 64 };
                OK(cuMemcpy2D(&c));
                c.dstDevice = weights + bytes / 4 + 3;
                c.Height = 16;
                OK(cuMemcpy2DAsync(&c, s));
        } else if (!strcmp(mode, "set2d")) {
                /* The asynchronous form first: the first write is the one that finds the piece shared. */
                OK(cuMemsetD2D32Async(weights + bytes / 4, 8192, 0xdeadbeef, 100, 300, s));
                OK(cuMemsetD2D8(weights + bytes / 2 + 100, 65536, 0x5a, 3000, 40));
        } else {
                CUDA_MEMCPY3D c = { .srcMemoryType = CU_MEMORYTYPE_HOST,
                                    .srcHost = rows,
                                    .srcPitch = 500,
                                    .srcHeight = 10,
                                    .dstMemoryType = CU_MEMORYTYPE_DEVICE,
                                    .dstDevice = weights + bytes / 2,
                                    .dstXInBytes = 16,
                                    .dstY = 3,
                                    .dstZ = 1,
                                    .dstPitch = 8192,
                                    .dstHeight = 64,
                                    .WidthInBytes = 500,
                                    .Height = 10,
                                    .Depth = 4 };
                OK(cuMemcpy3DAsync(&c, s));
                c.dstDevice = weights + bytes / 4;
                c.Depth = 2;
                OK(cuMemcpy3D(&c));
        }
        OK(cuStreamSynchronize(s));
        OK(cuStreamDestroy(s));
}

static int ipc_open(const char *hex, size_t bytes) {
        CUipcMemHandle h;
        CUdeviceptr p;
        uint64_t mark = 0x5a5a5a5a5a5a5a5aull;

        for (size_t i = 0; i < sizeof(h.reserved); i++) {
                unsigned v;
                if (sscanf(hex + 2 * i, "%2x", &v) != 1)
                        return 2;
                h.reserved[i] = (char)v;
        }
        CUresult r = cuIpcOpenMemHandle(&p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
        if (r != CUDA_SUCCESS) {
                /* Another GPU's memory (devices_checks.sh): what the driver answered is the output. */
                const char *name = NULL;
                cuGetErrorName(r, &name);
                printf("child open: %s\n", name ? name : "?");
                return 0;
        }
        printf("child checksum %016llx\n", (unsigned long long)checksum(p, bytes));
        OK(cuMemcpyHtoD(p, &mark, sizeof(mark)));
        OK(cuIpcCloseMemHandle(p));
        return 0;
}

/*
 * Deferred backing (SAGE_SHARE_DEFER, share_backing.c): an allocation is
 * mapped only where something reaches it, so each way in must find it
 * mapped, each on an allocation nothing else reached first: a device-to-host
 * copy (a PASS hook), a device copy's source (an IMPL write guard), a
 * unified copy to the host, a kernel (the launch guard); then weights with
 * unaligned ends (a hit from the second run: the app's copies of the ends).
 * Never-written bytes are read, not printed (the GPU's are garbage).
 */
static int deferred(size_t bytes, const uint64_t *host) {
        CUdeviceptr a, b, c, d, w;
        uint64_t word;
        size_t n = bytes / sizeof(uint64_t), lo = 4096;
        void *params[] = { &d, &n, &out };

        OK(cuMemAlloc(&a, bytes));
        OK(cuMemcpyDtoH(&word, a + bytes / 2, sizeof(word)));
        OK(cuMemAlloc(&b, bytes));
        OK(cuMemcpyDtoD(out, b + bytes / 2, sizeof(word)));
        OK(cuMemAlloc(&c, bytes));
        OK(cuMemcpy((CUdeviceptr)(uintptr_t)&word, c + bytes / 2, sizeof(word)));
        OK(cuMemAlloc(&d, bytes));
        OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        OK(cuCtxSynchronize());
        OK(cuMemAlloc(&w, bytes));
        OK(cuMemcpyHtoD(w + lo, host, bytes - 2 * lo));
        printf("deferred weights %016llx\n", (unsigned long long)checksum(w + lo, bytes - 2 * lo));
        OK(cuMemFree(a));
        OK(cuMemFree(b));
        OK(cuMemFree(c));
        OK(cuMemFree(d));
        OK(cuMemFree(w));
        return 0;
}

/*
 * Deferred backing's other ways in (share_reach.c): each reaches first an
 * allocation made after the first launch, where natively it finds mapped
 * memory: a pointer query (Triton asks CU_POINTER_ATTRIBUTE_DEVICE_POINTER
 * of every argument before a launch), the query of several attributes, a
 * stream write of a word, a batch of memory operations (writes, then a wait
 * for one of them: satisfied natively). Then the same writes into weights a
 * run maps read-only (published by an earlier run), two mappings of them,
 * one written by each: they must turn private first.
 */
static uint32_t word_at(CUdeviceptr p) {
        uint32_t v = 0;
        OK(cuCtxSynchronize());
        OK(cuMemcpyDtoH(&v, p, sizeof(v)));
        return v;
}

static void batch_write(CUdeviceptr p, uint32_t v) {
        CUstreamBatchMemOpParams ops[3] = { 0 };

        ops[0].writeValue.operation = CU_STREAM_MEM_OP_WRITE_VALUE_32;
        ops[0].writeValue.address = p;
        ops[0].writeValue.value = v;
        ops[1].writeValue.operation = CU_STREAM_MEM_OP_WRITE_VALUE_64;
        ops[1].writeValue.address = p + 8;
        ops[1].writeValue.value64 = (uint64_t)v << 32 | v;
        ops[2].waitValue.operation = CU_STREAM_MEM_OP_WAIT_VALUE_32;
        ops[2].waitValue.address = p;
        ops[2].waitValue.value = v;
        ops[2].waitValue.flags = CU_STREAM_WAIT_VALUE_EQ;
        OK(cuStreamBatchMemOp(NULL, 3, ops, 0));
}

static int reach(size_t bytes, const uint64_t *host) {
        CUpointer_attribute attrs[] = { CU_POINTER_ATTRIBUTE_DEVICE_POINTER, CU_POINTER_ATTRIBUTE_MEMORY_TYPE };
        CUdeviceptr d, q, qs, w, b, weights, batched, dp = 0, dps = 0;
        unsigned type = 0;
        void *data[] = { &dps, &type };

        OK(cuMemAlloc(&d, bytes));
        OK(cuMemsetD8(d, 1, bytes));
        printf("first launch %016llx\n", (unsigned long long)checksum(d, bytes));
        OK(cuMemAlloc(&q, bytes));
        OK(cuPointerGetAttribute(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, q + 8));
        OK(cuMemAlloc(&qs, bytes));
        OK(cuPointerGetAttributes(2, attrs, data, qs + 8));
        printf("query %d attributes %d %u\n", dp == q + 8, dps == qs + 8, type);
        OK(cuMemAlloc(&w, bytes));
        OK(cuStreamWriteValue32(NULL, w + 64, 0x5a5a1234u, 0));
        printf("write value %08x\n", word_at(w + 64));
        OK(cuMemAlloc(&b, bytes));
        batch_write(b + 128, 0x77u);
        printf("batch %08x %08x\n", word_at(b + 128), word_at(b + 140));
        OK(cuMemAlloc(&weights, bytes));
        OK(cuMemcpyHtoD(weights, host, bytes));
        OK(cuStreamWriteValue32(NULL, weights + 64, 0x5a5a1234u, 0));
        printf("written weights %016llx\n", (unsigned long long)checksum(weights, bytes));
        OK(cuMemAlloc(&batched, bytes)); /* the same extent mapped again, written by a batch only */
        OK(cuMemcpyHtoD(batched, host, bytes));
        batch_write(batched + bytes / 2, 0x99u);
        printf("batch-written weights %016llx\n", (unsigned long long)checksum(batched, bytes));
        for (CUdeviceptr *p = (CUdeviceptr[]){ d, q, qs, w, b, weights, batched, 0 }; *p; p++)
                OK(cuMemFree(*p));
        return 0;
}

int main(int argc, char **argv) {
        size_t bytes = (argc > 1 ? (size_t)atol(argv[1]) : 96) << 20;
        uint64_t seed = argc > 2 ? (uint64_t)atoll(argv[2]) : 1;
        const char *mode = argc > 3 ? argv[3] : "whole";
        uint64_t *host;
        CUdeviceptr weights;
        CUmodule module;

        ok_primary_context(cuInit, cuDeviceGet, cuDevicePrimaryCtxRetain, cuCtxSetCurrent);
        OK(cuModuleLoadData(&module, &image));
        OK(cuModuleGetFunction(&fn, module, "checksum"));
        OK(cuModuleGetFunction(&scale_fn, module, "scale"));
        OK(cuModuleGetFunction(&scale_unknown_fn, module, "scale_unknown"));
        OK(cuModuleGetFunction(&scale_indirect_fn, module, "scale_indirect"));
        OK(cuModuleGetFunction(&again_fn, module, "checksum_again"));
        OK(cuMemAlloc(&out, sizeof(uint64_t)));
        if (!strcmp(mode, "ipc-open"))
                return argc > 4 ? ipc_open(argv[4], bytes) : 2;
        if (!strcmp(mode, "idle")) /* CUDA up, nothing uploaded: no assembly ever (share_checks.sh) */
                return cuMemFree(out) == CUDA_SUCCESS ? 0 : 1;
        if (!strcmp(mode, "file2")) {
                CUdeviceptr w1, w2;
                uint64_t *h1, *h2;
                if (argc < 6 || !(h1 = map_file(argv[4], bytes, seed)))
                        return 2;
                OK(cuMemAlloc(&w1, bytes));
                OK(cuMemcpyHtoD(w1, h1, bytes));
                munmap(h1, bytes);
                if (!(h2 = map_file(argv[5], bytes, seed + 1)))
                        return 2;
                fprintf(stderr, "share-test: second mapping %s the first one's address\n",
                        h2 == h1 ? "reuses" : "does not reuse");
                OK(cuMemAlloc(&w2, bytes));
                OK(cuMemcpyHtoD(w2, h2, bytes));
                printf("first %016llx\n", (unsigned long long)checksum(w1, bytes));
                printf("second %016llx\n", (unsigned long long)checksum(w2, bytes));
                OK(cuMemFree(w1));
                OK(cuMemFree(w2));
                return 0;
        }
        if (!strcmp(mode, "capture"))
                return capture(bytes, seed);
        if (!strcmp(mode, "capture-copy"))
                return capture_copy(bytes, seed);
        if (!strcmp(mode, "capture-beside"))
                return capture_beside(bytes, seed, argc > 4 ? (unsigned)atoi(argv[4]) : 0,
                                      argc > 5 ? argv[5] : "first");
        if (!strcmp(mode, "packed-reach")) /* the tensors start 8 KiB past the second granule */
                return packed(bytes, seed, (2u << 20) + 8192, false, true);
        if (!strncmp(mode, "packed", 6))
                return packed(bytes, seed, 0, !strcmp(mode, "packed-gapwrite"), false);
        if (!strcmp(mode, "file")) {
                if (argc < 5 || !(host = map_file(argv[4], bytes, seed)))
                        return 2;
        } else {
                if (!(host = malloc(bytes)))
                        return 2;
                fill(host, bytes, seed);
        }
        if (!strcmp(mode, "deferred"))
                return deferred(bytes, host);
        if (!strcmp(mode, "reach"))
                return reach(bytes, host);
        OK(cuMemAlloc(&weights, bytes));
        if (!strcmp(mode, "pieces")) {
                /* Three tensors packed as a caching allocator would: 512-byte aligned. */
                size_t a = bytes / 3 + 512, b = bytes / 3 - 4096;
                CUstream s;
                OK(cuStreamCreate(&s, 0));
                OK(cuMemcpyHtoD(weights, host, a));
                OK(cuMemcpyHtoDAsync(weights + a, (char *)host + a, b, s));
                OK(cuStreamSynchronize(s));
                OK(cuMemcpy(weights + a + b, (CUdeviceptr)(uintptr_t)((char *)host + a + b), bytes - a - b));
                OK(cuStreamDestroy(s));
        } else if (!strcmp(mode, "tensors")) {
                /* A 1 MiB bias uploaded 4 times (copies whose cost libsage learns), then tensors one by one. */
                size_t t = (4 << 20) + 4096;
                CUdeviceptr bias;
                OK(cuMemAlloc(&bias, 1 << 20));
                for (int i = 0; i < 4; i++)
                        OK(cuMemcpyHtoD(bias, host, 1 << 20));
                for (size_t off = 0; off < bytes; off += t)
                        OK(cuMemcpyHtoD(weights + off, (char *)host + off, bytes - off < t ? bytes - off : t));
                OK(cuMemFree(bias));
        } else if (!strcmp(mode, "inflight")) {
                /* Zeroing still queued on a stream when the upload comes: the
                 * upload (legacy default stream) waits for it, so must SAGE
                 * before it replaces the backing. */
                CUstream s;
                OK(cuStreamCreate(&s, 0));
                OK(cuMemsetD8Async(weights, 0, bytes, s));
                OK(cuMemcpyHtoD(weights, host, bytes));
                OK(cuStreamDestroy(s));
        } else if (!strcmp(mode, "async-order")) {
                /* Queued on one stream of the app's: a memset, the upload, a kernel reading it.
                 * Each must see the one before, whoever makes the copy (share_stage.c). */
                size_t n = bytes / sizeof(uint64_t);
                uint64_t sum = 0;
                void *params[] = { &weights, &n, &out };
                CUstream s;
                OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
                OK(cuMemsetD8Async(weights, 0x5a, bytes, s));
                OK(cuMemcpyHtoDAsync(weights, host, bytes, s));
                OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
                OK(cuStreamSynchronize(s));
                OK(cuMemcpyDtoH(&sum, out, sizeof(sum)));
                printf("on the stream %016llx\n", (unsigned long long)sum);
                OK(cuStreamDestroy(s));
        } else {
                OK(cuMemcpyHtoD(weights, host, bytes));
        }
        if (!strcmp(mode, "write"))
                OK(cuMemsetD8(weights + bytes / 2, 0x33, 1 << 20));
        if (!strcmp(mode, "write2d") || !strcmp(mode, "set2d") || !strcmp(mode, "write3d"))
                pitched_write(mode, weights, bytes);
        if (!strcmp(mode, "kernel-write") || !strcmp(mode, "unknown-layout")) {
                size_t n = bytes / sizeof(uint64_t);
                void *params[] = { &weights, &n };
                OK(cuLaunchKernel(!strcmp(mode, "kernel-write") ? scale_fn : scale_unknown_fn, 1, 1, 1, 1, 1, 1, 0,
                                  NULL, params, NULL));
        }
        if (!strncmp(mode, "kernel-write-captured", 21) || !strcmp(mode, "unknown-layout-captured")) {
                /* The writer captured into a graph (a new use of shared weights while capturing), then replayed. */
                size_t n = bytes / sizeof(uint64_t);
                void *params[] = { &weights, &n };
                bool beside = !strcmp(mode, "kernel-write-captured-beside");
                CUstream s, s2;
                CUgraph g, g2;
                CUgraphExec exec;
                OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
                OK(cuStreamCreate(&s2, CU_STREAM_NON_BLOCKING));
                OK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
                OK(cuLaunchKernel(!strcmp(mode, "unknown-layout-captured") ? scale_unknown_fn : scale_fn, 1, 1, 1, 1, 1,
                                  1, 0, s, params, NULL));
                if (!(g = end_capture(s, "of a writer")))
                        return 5;
                OK(cuGraphInstantiateWithFlags(&exec, g, 0));
                if (!strcmp(mode, "kernel-write-captured-reupload")) /* the weights again before the replay */
                        OK(cuMemcpyHtoD(weights, host, bytes));
                if (beside) /* another stream captures (relaxed) while the graph is launched */
                        OK(cuStreamBeginCapture(s2, CU_STREAM_CAPTURE_MODE_RELAXED));
                OK(cuGraphLaunch(exec, s));
                OK(cuStreamSynchronize(s));
                if (beside) {
                        if (!(g2 = end_capture(s2, "beside the graph")))
                                return 5;
                        OK(cuGraphDestroy(g2));
                }
                OK(cuGraphExecDestroy(exec));
                OK(cuGraphDestroy(g));
                OK(cuStreamDestroy(s));
                OK(cuStreamDestroy(s2));
        }
        if (!strcmp(mode, "read-beside-capture")) {
                /* A reader the publisher never ran, launched while another stream captures (global mode). */
                size_t n = bytes / sizeof(uint64_t);
                uint64_t sum = 0;
                void *params[] = { &weights, &n, &out };
                CUstream s, s2;
                CUgraph g2;
                OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
                OK(cuStreamCreate(&s2, CU_STREAM_NON_BLOCKING));
                OK(cuStreamBeginCapture(s2, CU_STREAM_CAPTURE_MODE_GLOBAL));
                OK(cuLaunchKernel(again_fn, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
                if (!(g2 = end_capture(s2, "beside a reader")))
                        return 5;
                OK(cuStreamSynchronize(s));
                OK(cuMemcpyDtoH(&sum, out, sizeof(sum)));
                printf("read beside a capture %016llx\n", (unsigned long long)sum);
                OK(cuGraphDestroy(g2));
                OK(cuStreamDestroy(s));
                OK(cuStreamDestroy(s2));
        }
        if (!strcmp(mode, "kernel-write-ex")) {
                /* The same writer through cuLaunchKernelEx_ptsz, as a per-thread-stream build calls it. */
                size_t n = bytes / sizeof(uint64_t);
                void *params[] = { &weights, &n };
                CUlaunchConfig config = {
                        .gridDimX = 1, .gridDimY = 1, .gridDimZ = 1, .blockDimX = 1, .blockDimY = 1, .blockDimZ = 1
                };
                OK(cuLaunchKernelEx_ptsz(&config, scale_fn, params, NULL));
        }
        if (!strcmp(mode, "hidden-write")) {
                size_t n = bytes / sizeof(uint64_t);
                CUdeviceptr slot;
                CUresult r;
                void *params[] = { &slot, &n };
                OK(cuMemAlloc(&slot, sizeof(weights)));
                OK(cuMemcpyHtoD(slot, &weights, sizeof(weights)));
                OK(cuLaunchKernel(scale_indirect_fn, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
                if ((r = cuCtxSynchronize()) != CUDA_SUCCESS) {
                        /* The write hit read-only memory: this context is lost, nobody else's data. */
                        printf("hidden write faulted: %d\n", (int)r);
                        return 0;
                }
        }
        printf("weights checksum %016llx\n", (unsigned long long)checksum(weights, bytes));
        if (!strcmp(mode, "ipc-export")) {
                CUipcMemHandle h;
                char hex[2 * sizeof(h.reserved) + 1], size_mib[32];
                uint64_t word = 0;
                pid_t pid;
                int status;

                OK(cuIpcGetMemHandle(&h, weights));
                for (size_t i = 0; i < sizeof(h.reserved); i++)
                        sprintf(hex + 2 * i, "%02x", (unsigned char)h.reserved[i]);
                snprintf(size_mib, sizeof(size_mib), "%zu", bytes >> 20);
                fflush(stdout);
                if ((pid = fork()) == 0) {
                        /* The importer on a GPU of its own choosing (devices_checks.sh). */
                        if (getenv("SHARE_TEST_CHILD_DEVICES"))
                                setenv("CUDA_VISIBLE_DEVICES", getenv("SHARE_TEST_CHILD_DEVICES"), 1);
                        execl("/proc/self/exe", argv[0], size_mib, "0", "ipc-open", hex, (char *)NULL);
                        _exit(127);
                }
                if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        fprintf(stderr, "share-test: the IPC child failed\n");
                        return 4;
                }
                OK(cuMemcpyDtoH(&word, weights, sizeof(word)));
                printf("parent sees %016llx\n", (unsigned long long)word);
        }
        OK(cuMemFree(out));
        OK(cuMemFree(weights));
        return 0;
}
