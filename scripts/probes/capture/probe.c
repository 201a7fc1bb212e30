/*
 * Which driver calls spoil another thread's stream capture, by the calling
 * thread's capture mode (cuThreadExchangeStreamCaptureMode). For each call:
 * the main thread begins a capture in the global mode on a non-blocking
 * stream and records one memset; a second thread (its mode set first) or the
 * capturing thread itself makes the call; then the capture ends. Prints
 *   OP by other/global: CALL_RESULT, capture CUDA_SUCCESS | CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
 * libsage's threads (warm-up, staging) call the driver while an app may be
 * capturing: what this prints is what tests/fakecuda models.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "probe.h"

#define MB ((size_t)1 << 20)

static CUcontext ctx;
static CUstream own; /* a non-blocking stream of the calling thread's, never captured */
static CUdeviceptr own_mem;
static void *pinned;

typedef CUresult (*Op)(void);

static CUresult op_host_register(void) {
        void *p = mmap(NULL, 16 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        CUresult r = cuMemHostRegister(p, 16 * MB, 0);
        if (r == CUDA_SUCCESS)
                cuMemHostUnregister(p);
        munmap(p, 16 * MB);
        return r;
}
static CUresult op_host_unregister(void) { /* registered before the capture began */
        return cuMemHostUnregister(pinned);
}
static CUresult op_alloc_host(void) {
        void *p = NULL;
        CUresult r = cuMemAllocHost(&p, 16 * MB);
        if (r == CUDA_SUCCESS)
                cuMemFreeHost(p);
        return r;
}
static CUresult op_stream_create(void) {
        CUstream s;
        CUresult r = cuStreamCreate(&s, CU_STREAM_NON_BLOCKING);
        if (r == CUDA_SUCCESS)
                cuStreamDestroy(s);
        return r;
}
static CUresult op_copy_async_own(void) {
        return cuMemcpyHtoDAsync(own_mem, pinned, 16 * MB, own);
}
static CUresult op_sync_own(void) {
        cuMemsetD8Async(own_mem, 1, MB, own);
        return cuStreamSynchronize(own);
}
static CUresult op_copy_sync(void) {
        return cuMemcpyHtoD(own_mem, pinned, MB);
}
static CUresult op_mem_alloc(void) {
        CUdeviceptr d;
        CUresult r = cuMemAlloc(&d, 2 * MB);
        if (r == CUDA_SUCCESS)
                cuMemFree(d);
        return r;
}
static CUresult op_mem_free(void) { /* the allocation in the relaxed mode, the free in the thread's own */
        CUstreamCaptureMode m = CU_STREAM_CAPTURE_MODE_RELAXED;
        CUdeviceptr d;
        CUresult r;
        cuThreadExchangeStreamCaptureMode(&m);
        r = cuMemAlloc(&d, 2 * MB);
        cuThreadExchangeStreamCaptureMode(&m);
        return r != CUDA_SUCCESS ? r : cuMemFree(d);
}
static CUresult op_vmm(void) {
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
        CUmemAccessDesc acc = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
                                .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        CUmemGenericAllocationHandle h;
        CUdeviceptr va;
        CUresult r;
        if ((r = cuMemCreate(&h, 2 * MB, &prop, 0)) != CUDA_SUCCESS)
                return r;
        if ((r = cuMemAddressReserve(&va, 2 * MB, 0, 0, 0)) == CUDA_SUCCESS) {
                if ((r = cuMemMap(va, 2 * MB, 0, h, 0)) == CUDA_SUCCESS) {
                        r = cuMemSetAccess(va, 2 * MB, &acc, 1);
                        cuMemUnmap(va, 2 * MB);
                }
                cuMemAddressFree(va, 2 * MB);
        }
        cuMemRelease(h);
        return r;
}
static CUresult op_ctx_sync(void) {
        return cuCtxSynchronize();
}
static CUresult op_event_record_own(void) {
        CUevent e;
        CUresult r = cuEventCreate(&e, CU_EVENT_DISABLE_TIMING);
        if (r == CUDA_SUCCESS) {
                r = cuEventRecord(e, own);
                cuEventDestroy(e);
        }
        return r;
}

static const struct {
        const char *name;
        Op op;
} ops[] = {
        { "cuMemHostRegister", op_host_register },
        { "cuMemHostUnregister", op_host_unregister },
        { "cuMemAllocHost", op_alloc_host },
        { "cuStreamCreate", op_stream_create },
        { "cuMemcpyHtoDAsync(own stream)", op_copy_async_own },
        { "cuStreamSynchronize(own stream)", op_sync_own },
        { "cuEventRecord(own stream)", op_event_record_own },
        { "cuMemcpyHtoD", op_copy_sync },
        { "cuMemAlloc", op_mem_alloc },
        { "cuMemFree", op_mem_free },
        { "VMM create/reserve/map/access", op_vmm },
        { "cuCtxSynchronize", op_ctx_sync },
};

typedef struct {
        Op op;
        CUstreamCaptureMode mode;
        CUresult r;
} Call;

static void *other_main(void *arg) {
        Call *c = arg;
        CUstreamCaptureMode m = c->mode;
        cuCtxSetCurrent(ctx);
        cuThreadExchangeStreamCaptureMode(&m);
        c->r = c->op();
        return NULL;
}

static const char *mode_name(CUstreamCaptureMode m) {
        return m == CU_STREAM_CAPTURE_MODE_GLOBAL    ? "global"
               : m == CU_STREAM_CAPTURE_MODE_RELAXED ? "relaxed"
                                                     : "thread_local";
}

static void run(int i, bool self, CUstreamCaptureMode mode, CUdeviceptr d) {
        CUstream s;
        CUgraph g = NULL;
        Call c = { ops[i].op, mode, CUDA_SUCCESS };
        CUresult end;
        pthread_t t;

        if (ops[i].op == op_host_unregister && cuMemHostRegister(pinned, 16 * MB, 0) != CUDA_SUCCESS)
                fprintf(stderr, "  (re-registering the pinned buffer failed)\n");
        cuStreamCreate(&s, CU_STREAM_NON_BLOCKING);
        cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
        cuMemsetD8Async(d, 0, MB, s);
        if (self) {
                CUstreamCaptureMode m = mode;
                cuThreadExchangeStreamCaptureMode(&m);
                c.r = c.op();
                cuThreadExchangeStreamCaptureMode(&m);
        } else {
                pthread_create(&t, NULL, other_main, &c);
                pthread_join(t, NULL);
        }
        end = cuStreamEndCapture(s, &g);
        printf("%-32s by %-5s/%-12s: %-40s capture %s\n", ops[i].name, self ? "self" : "other", mode_name(mode),
               name(c.r), name(end));
        if (g)
                cuGraphDestroy(g);
        cuCtxSynchronize();
        cuStreamDestroy(s);
        if (ops[i].op == op_host_unregister && c.r != CUDA_SUCCESS)
                cuMemHostUnregister(pinned);
}

int main(void) {
        CUdevice dev;
        CUdeviceptr d;
        CUstreamCaptureMode modes[] = { CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                                        CU_STREAM_CAPTURE_MODE_RELAXED };

        if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&dev, 0) != CUDA_SUCCESS ||
            cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS || cuCtxSetCurrent(ctx) != CUDA_SUCCESS) {
                printf("capture: no CUDA device\n");
                return 77;
        }
        cuMemAlloc(&d, MB);
        cuMemAlloc(&own_mem, 16 * MB);
        cuStreamCreate(&own, CU_STREAM_NON_BLOCKING);
        pinned = mmap(NULL, 16 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        for (int i = 0; i < (int)(sizeof(ops) / sizeof(ops[0])); i++) {
                if (ops[i].op != op_host_unregister && cuMemHostRegister(pinned, 16 * MB, 0) != CUDA_SUCCESS)
                        fprintf(stderr, "  (registering the pinned buffer failed)\n");
                for (int m = 0; m < 3; m++)
                        run(i, false, modes[m], d);
                run(i, true, CU_STREAM_CAPTURE_MODE_GLOBAL, d);
                run(i, true, CU_STREAM_CAPTURE_MODE_RELAXED, d);
                if (ops[i].op != op_host_unregister)
                        cuMemHostUnregister(pinned);
        }
        return 0;
}
