/* fake_internal.h: state shared by the files of the simulated driver.
 *
 * One process-wide state (`fake`) guarded by one mutex: this is a test tool,
 * so simplicity beats concurrency. Functions named *_locked expect the mutex
 * held. Handles the application sees (CUcontext, CUstream, ...) are pointers
 * to the structs below; every one is kept on a list so that a stale or bogus
 * handle is reported (INVALID_CONTEXT / INVALID_HANDLE) instead of crashing.
 *
 * Exported symbols carry FAKE_EXPORT. Symbols cuda.h does not declare (the
 * per-thread `_ptds`/`_ptsz` variants, superseded versions) are declared here;
 * where cuda.h turns the name into a macro, the C name is `fake_<symbol>` and
 * an asm label gives the ABI name.
 */
#ifndef SAGE_FAKE_INTERNAL_H
#define SAGE_FAKE_INTERNAL_H

#include <cuda.h>
#include <pthread.h>
#include <sys/types.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fakecuda.h"

#define FAKE_EXPORT __attribute__((visibility("default")))

#define FAKE_MAX_DEVICES 16
#define FAKE_GRANULARITY ((size_t)2 << 20)
#define FAKE_DRIVER_VERSION 13000

/* ------------------------------------------------------------ objects */
struct CUctx_st {
        struct CUctx_st *next;
        int device; /* ordinal as the process sees it */
        unsigned flags;
        bool primary;
        size_t limits[CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT + 1]; /* cuCtxSetLimit, per context */
        bool faulted; /* a kernel faulted: sticky CUDA_ERROR_ILLEGAL_ADDRESS (fake_fault.c) */
};

typedef enum FakeAllocKind {
        FAKE_ALLOC_DEVICE,     /* cuMemAlloc & co: memfd-backed, counts against the device */
        FAKE_ALLOC_MANAGED,    /* cuMemAllocManaged: counts against the device */
        FAKE_ALLOC_HOST,       /* cuMemAllocHost / cuMemHostAlloc */
        FAKE_ALLOC_REGISTERED, /* cuMemHostRegister: the application's memory */
        FAKE_ALLOC_IPC,        /* cuIpcOpenMemHandle: another process's allocation */
} FakeAllocKind;

typedef struct FakeAlloc {
        struct FakeAlloc *next;
        FakeAllocKind kind;
        char *base;      /* what the application sees */
        size_t size;     /* what it asked for */
        size_t map_size; /* what is mmap()ed at base (0: not ours to unmap) */
        int fd;          /* memfd (DEVICE), -1 otherwise */
        CUcontext ctx;   /* owner: destroying it frees the allocation */
        int device;
        unsigned long long id;
} FakeAlloc;

/* A VMM physical allocation (cuMemCreate / cuMemImportFromShareableHandle). */
typedef struct FakePhys {
        struct FakePhys *next;
        CUmemGenericAllocationHandle handle;
        int fd;
        size_t size;
        CUmemAllocationProp prop;
        unsigned handle_refs; /* cuMemCreate/import/retain minus cuMemRelease */
        unsigned map_refs;    /* FakeMapping records using it; freed when both are 0 */
        bool counted;         /* counts against the device budget (created, not imported) */
} FakePhys;

typedef struct FakeReservation {
        struct FakeReservation *next;
        uintptr_t base;
        size_t size;
} FakeReservation;

/* One piece of a cuMemMap. cuMemSetAccess on part of a mapping splits it;
 * all pieces keep the map_id of the cuMemMap that made them, which is what
 * cuMemUnmap checks ("whole mappings only"). */
typedef struct FakeMapping {
        struct FakeMapping *next;
        uintptr_t base;
        size_t size;
        FakePhys *phys;
        size_t offset; /* into phys */
        int prot;
        unsigned long long map_id;
        uintptr_t map_base; /* the whole cuMemMap range */
        size_t map_size;
} FakeMapping;

typedef enum FakeOpKind {
        FAKE_OP_KERNEL,
        FAKE_OP_COPY,
        FAKE_OP_COPY3D,
        FAKE_OP_MEMSET
} FakeOpKind;

typedef struct FakeOp {
        FakeOpKind kind;
        union {
                struct {
                        const FakeKernelEntry *entry;
                        FakeKernelLaunch launch;
                        void **params; /* owned array of nparams pointers */
                        size_t nparams;
                        char *arg_store; /* owned copy of argument values (arg_bytes), or NULL */
                        size_t arg_bytes;
                } kernel;
                struct {
                        void *dst;
                        const void *src;
                        size_t bytes;
                } copy;
                CUDA_MEMCPY3D copy3d;
                struct {
                        void *dst;
                        unsigned value;
                        unsigned elem_size;
                        size_t count;
                } memset;
        } u;
} FakeOp;

struct CUgraph_st {
        struct CUgraph_st *next;
        FakeOp *ops;
        size_t count, capacity;
        bool invalidated;         /* while capturing: an unsafe call (cuCtxSynchronize) broke the capture */
        CUstreamCaptureMode mode; /* while capturing: the mode it began in */
        pthread_t thread;         /* while capturing: the thread that began it */
};

struct CUgraphExec_st {
        struct CUgraphExec_st *next;
        struct CUgraph_st graph; /* a private copy */
};

struct CUstream_st {
        struct CUstream_st *next;
        CUcontext ctx;
        unsigned flags;
        int priority;
        struct CUgraph_st *capture; /* non-NULL while capturing */
};

struct CUevent_st {
        struct CUevent_st *next;
        CUcontext ctx;
        unsigned flags;
        bool recorded;
        double time_ms;
};

#define FAKE_FUNC_MAGIC 0x46554e43u /* "FUNC" */
#define FAKE_KERN_MAGIC 0x4b45524eu /* "KERN" */

struct CUfunc_st {
        uint32_t magic;
        const FakeKernelEntry *entry;
        struct CUmod_st *module;
};

struct CUkern_st {
        uint32_t magic;
        const FakeKernelEntry *entry;
        struct CUlib_st *library;
};

struct CUmod_st {
        struct CUmod_st *next;
        const FakeModuleImage *image;
        void *dl;      /* dlopen handle (cuModuleLoad), or NULL */
        CUcontext ctx; /* NULL for a library's module */
        struct CUfunc_st *functions;
};

struct CUlib_st {
        struct CUlib_st *next;
        struct CUmod_st module;
        struct CUkern_st *kernels;
};

/* fake_core.c: initialised and `dev` a visible device, else the error. */
CUresult fake_device_check(CUdevice dev);

/* The stable UUID of simulated GPU `gpu` (fake_core.c). */
void fake_gpu_uuid(int gpu, unsigned char out[16]);

/*
 * A context's local memory: the driver reserves the stack limit for every
 * thread the device can hold (on the H100, 2048 threads x 132 SMs: 1024 B
 * cost 264 MiB, 16 B cost 4 MiB; measured 260 MiB freed going 1024 -> 16).
 * The fake charges limit x SAGE_FAKE_LOCAL_THREADS (fake.local_threads; 0 by
 * default, so tests that count allocations exactly see only those; 270336
 * is the H100's figure, the suspend tests use a stand-in of 132 x 8).
 */
/* ------------------------------------------------------------ state */
typedef struct FakeState {
        pthread_mutex_t lock;
        pthread_mutex_t init_lock;
        bool init_done;
        CUresult init_result;
        pid_t init_pid; /* CUDA does not survive fork(): a child of an initialised process gets errors */

        /* From the environment, read once at the first cuInit. */
        unsigned init_ms, ctx_ms;
        unsigned map_ms;    /* SAGE_FAKE_MAP_MS: each cuMemMap sleeps this long (a driver under contention) */
        unsigned import_ms; /* SAGE_FAKE_IMPORT_MS: each cuMemImportFromShareableHandle sleeps this long (~2 ms at 16
                               processes on the H100: scripts/probes/vmm-contend) */
        atomic_uint
                fail_imports; /* SAGE_FAKE_FAIL_IMPORT: this many imports from the start fail (CUDA_ERROR_UNKNOWN) */
        unsigned pin_ms; /* SAGE_FAKE_PIN_MS: each cuMemHostAlloc/cuMemHostRegister sleeps this long (page-locking) */
        CUresult register_refuse; /* SAGE_FAKE_REGISTER_REFUSE: cuMemHostRegister answers this (0: it works) */
        size_t mem_total;
        size_t restore_free; /* SAGE_FAKE_RESTORE_FREE: what others left free while checkpointed (fake_checkpoint.c) */
        bool restore_squeeze;
        size_t local_threads;           /* SAGE_FAKE_LOCAL_THREADS: threads whose stack a context reserves */
        int device_count;               /* visible devices */
        int physical[FAKE_MAX_DEVICES]; /* visible ordinal -> simulated GPU index */

        size_t mem_used[FAKE_MAX_DEVICES];
        struct CUctx_st *primary[FAKE_MAX_DEVICES];
        unsigned primary_refs[FAKE_MAX_DEVICES];
        unsigned primary_flags[FAKE_MAX_DEVICES];
        pthread_mutex_t primary_create_lock[FAKE_MAX_DEVICES];

        struct CUctx_st *contexts;
        FakeAlloc *allocs;
        FakePhys *phys;
        FakeReservation *reservations;
        FakeMapping *mappings;
        struct CUstream_st *streams;
        struct CUevent_st *events;
        struct CUmod_st *modules;
        struct CUlib_st *libraries;
        struct CUgraph_st *graphs;
        struct CUgraphExec_st *execs;
        unsigned long long next_id;

        /* Device address ranges freed last, newest first: the real driver hands
     * a freed address out again first, so a stale pointer soon names
     * someone else's memory (fake_memory.c reuses them the same way). */
        struct {
                uintptr_t base;
                size_t size;
        } freed[8];
} FakeState;

/* The one instance: the driver is a process-wide singleton, as the real one. */
extern FakeState fake;

void fake_lock(void);
void fake_unlock(void);
bool fake_initialized(void);
double fake_now_ms(void);
void fake_sleep_ms(unsigned ms);
size_t fake_page_round(size_t n);

/* fake_checkpoint.c: the gate every entry point passes first (the
 * checkpoint API's Lock closes it). FAKE_GATE() declares a scoped marker:
 * the call counts as in flight until it returns. In a process stuck in
 * FAILED it returns CUDA_ERROR_ILLEGAL_STATE after SAGE_FAKE_STUCK_MS. */
int fake_gate_enter(void);
void fake_gate_leave(int *entered);
void fake_checkpoint_start(void);
#define FAKE_GATE()                                                                   \
        __attribute__((cleanup(fake_gate_leave))) int fake_gate_ = fake_gate_enter(); \
        if (fake_gate_ < 0)                                                           \
        return CUDA_ERROR_ILLEGAL_STATE

#define FAKE_REQUIRE_INIT()                                \
        do {                                               \
                if (!fake_initialized())                   \
                        return CUDA_ERROR_NOT_INITIALIZED; \
        } while (0)

/* The check most entry points open with: initialised, then INVALID_VALUE
 * when `bad_args` (a missing out-pointer, a bad size) holds. */
#define FAKE_REQUIRE_INIT_ARGS(bad_args)                 \
        do {                                             \
                FAKE_REQUIRE_INIT();                     \
                if (bad_args)                            \
                        return CUDA_ERROR_INVALID_VALUE; \
        } while (0)

/* Returns the call's error, if any: the checks entry points open with. */
#define FAKE_TRY(expr)                         \
        do {                                   \
                CUresult fake_try_ = (expr);   \
                if (fake_try_ != CUDA_SUCCESS) \
                        return fake_try_;      \
        } while (0)

/*
 * Entry points that only pass the gate and hand over: FAKE_ENTRY defines
 * `name`; FAKE_ENTRY_PTDS / FAKE_ENTRY_PTSZ also its per-thread twin
 * (`name`_ptds, `name`_ptsz: what cudart calls under per-thread default
 * streams), the same body under a symbol of its own, so that each has its
 * own address as in the driver. check_gates.py reads these too.
 */
#define FAKE_ENTRY(name, params, call)     \
        FAKE_EXPORT CUresult name params { \
                FAKE_GATE();               \
                return call;               \
        }
#define FAKE_ENTRY_PTDS(name, params, call) FAKE_ENTRY(name, params, call) FAKE_ENTRY(name##_ptds, params, call)
#define FAKE_ENTRY_PTSZ(name, params, call) FAKE_ENTRY(name, params, call) FAKE_ENTRY(name##_ptsz, params, call)

/*
 * Every object list of FakeState (contexts, streams, events, modules,
 * libraries, graphs, executable graphs) links through its first member,
 * `next`, so one walk answers "is this handle live?" for all of them.
 * fake_listed takes the lock and the list head's address (&fake.streams).
 */
bool fake_listed_locked(const void *head, const void *obj);
bool fake_listed(const void *head_addr, const void *obj);
/* Takes `obj` off the list at `head_addr` (taking the lock); `missing`
 * (the call's error for a stale handle) when it was not on it. */
CUresult fake_unlist(void *head_addr, const void *obj, CUresult missing);
/* The destroy calls: initialised, `obj` taken off its list (else
 * `missing`), then given to `release`. */
CUresult fake_destroy(void *head_addr, void *obj, CUresult missing, void (*release)(void *));
/* A new object of `size` bytes, a copy of `init`, linked first into the
 * list at `head_addr` (taking the lock): NULL when out of memory. */
void *fake_list_add(void *head_addr, const void *init, size_t size);

/* Unlinks `item` from the list at `head` (a FakeState list; lock held). */
#define LIST_REMOVE(head, item)                                                    \
        do {                                                                       \
                for (__typeof__(head) *pp_ = &(head); *pp_; pp_ = &(*pp_)->next) { \
                        if (*pp_ == (item)) {                                      \
                                *pp_ = (item)->next;                               \
                                break;                                             \
                        }                                                          \
                }                                                                  \
        } while (0)

/* Links `item` first into the list at `head`, taking the lock. */
#define LIST_PUSH(head, item)          \
        do {                           \
                fake_lock();           \
                (item)->next = (head); \
                (head) = (item);       \
                fake_unlock();         \
        } while (0)

/* fake_context.c */
CUcontext fake_current_context(void); /* NULL when none or stale */
bool fake_context_alive_locked(CUcontext ctx);
void fake_context_forget_thread(CUcontext ctx);
/* Requires init and a current context; stores it in *out. */
CUresult fake_require_context(CUcontext *out);
/* fake_require_context, then INVALID_VALUE when `bad_args`. */
CUresult fake_require_context_args(CUcontext *out, bool bad_args);

/* fake_memory.c */
FakeAlloc *fake_alloc_find_locked(uintptr_t p);
/* Records an allocation of ctx's device (first on fake.allocs, with a fresh id): NULL when out of memory. */
FakeAlloc *fake_alloc_record_locked(FakeAllocKind kind, void *base, size_t size, size_t map_size, int fd,
                                    CUcontext ctx);
CUresult fake_device_alloc_locked(CUdeviceptr *out, size_t bytes, CUcontext ctx, FakeAllocKind kind);
void fake_alloc_free_locked(FakeAlloc *a);
void fake_free_context_objects_locked(CUcontext ctx);
CUresult fake_memset(void *dst, unsigned value, unsigned elem_size, size_t count, CUstream stream);

/* fake_vmm.c: is [p, p+n) safe to access? INVALID_VALUE when it touches a
 * VMM reservation where it is not mapped with the needed protection. */
CUresult fake_vmm_check_locked(uintptr_t p, size_t n, int need_prot);
FakeMapping *fake_mapping_find_locked(uintptr_t p);

/* fake_copy.c */
CUresult fake_copy_checked(void *dst, const void *src, size_t bytes);
CUresult fake_copy3d_checked(const CUDA_MEMCPY3D *c);

/* fake_stream.c */
CUresult fake_stream_check(CUstream s, struct CUgraph_st **capture); /* locks */
/* fake_stream_check for work the simulation cannot record into a capture: NOT_SUPPORTED while `s` captures. */
CUresult fake_stream_check_uncaptured(CUstream s); /* locks */
bool fake_invalidate_captures(void);               /* locks; any capture going on is broken: true */
/* A call the driver deems unsafe during a capture (fake_stream.c): STREAM_CAPTURE_UNSUPPORTED where prohibited. */
CUresult fake_capture_unsafe_call(void);                            /* locks */
CUresult fake_graph_append(struct CUgraph_st *g, const FakeOp *op); /* locks */
CUresult fake_op_run(const FakeOp *op);                             /* in the current context */
CUresult fake_op_run_in(const FakeOp *op, CUcontext ctx);

/* fake_queue.c: asynchronous work. submit: false when it cannot be queued
 * (then the caller drains and runs it at once); the op is the queue's. Never
 * drain with fake.lock held. */
bool fake_queue_submit(const FakeOp *op, CUcontext ctx);
void fake_queue_drain(void);
bool fake_queue_pending(void);                          /* work not run yet (let run now): a query's "not ready" */
void fake_queue_unmapping(uintptr_t base, size_t size); /* queued work using it faults */
void fake_op_release(FakeOp *op);
void fake_stream_free_context_locked(CUcontext ctx);

/* fake_fault.c: runs a kernel; a fault in it marks ctx faulted (sticky), the process lives. */
CUresult fake_kernel_run(CUcontext ctx, const FakeKernelEntry *entry, const FakeKernelLaunch *launch, void **params);

/* fake_module.c */
CUresult fake_launch(CUfunction f, const FakeKernelLaunch *launch, void **params, void **extra);
void fake_module_free_context_locked(CUcontext ctx);

/* ------------------------------------------------------------ symbols cuda.h lacks */
CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev);
CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *paramsArray, int numParams, unsigned int flags,
                        CUdevice dev);
CUresult fake_cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
                               cuuint64_t flags) __asm__("cuGetProcAddress");
CUresult fake_cuEventElapsedTime(float *ms, CUevent start, CUevent end) __asm__("cuEventElapsedTime");
CUresult fake_cuDeviceGetUuid(CUuuid *uuid, CUdevice dev) __asm__("cuDeviceGetUuid");
CUresult fake_cuStreamBeginCapture(CUstream s) __asm__("cuStreamBeginCapture");
CUresult cuStreamBeginCapture_ptsz(CUstream s);
CUresult cuStreamBeginCapture_v2_ptsz(CUstream s, CUstreamCaptureMode mode);

CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n);
CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s);
CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dst, const void *src, size_t n);
CUresult cuMemcpyDtoH_v2_ptds(void *dst, CUdeviceptr src, size_t n);
CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n);
CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dst, const void *src, size_t n, CUstream s);
CUresult cuMemcpyDtoHAsync_v2_ptsz(void *dst, CUdeviceptr src, size_t n, CUstream s);
CUresult cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s);
CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *c);
CUresult cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D *c);
CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *c, CUstream s);
CUresult cuMemcpy3D_v2_ptds(const CUDA_MEMCPY3D *c);
CUresult cuMemcpy3DAsync_v2_ptsz(const CUDA_MEMCPY3D *c, CUstream s);
CUresult cuMemcpyPeer_ptds(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n);
CUresult cuMemcpyPeerAsync_ptsz(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n, CUstream s);
CUresult cuMemsetD8_v2_ptds(CUdeviceptr d, unsigned char v, size_t n);
CUresult cuMemsetD16_v2_ptds(CUdeviceptr d, unsigned short v, size_t n);
CUresult cuMemsetD32_v2_ptds(CUdeviceptr d, unsigned int v, size_t n);
CUresult cuMemsetD8Async_ptsz(CUdeviceptr d, unsigned char v, size_t n, CUstream s);
CUresult cuMemsetD16Async_ptsz(CUdeviceptr d, unsigned short v, size_t n, CUstream s);
CUresult cuMemsetD32Async_ptsz(CUdeviceptr d, unsigned int v, size_t n, CUstream s);
CUresult cuMemsetD2D8_v2_ptds(CUdeviceptr d, size_t p, unsigned char v, size_t w, size_t h);
CUresult cuMemsetD2D16_v2_ptds(CUdeviceptr d, size_t p, unsigned short v, size_t w, size_t h);
CUresult cuMemsetD2D32_v2_ptds(CUdeviceptr d, size_t p, unsigned int v, size_t w, size_t h);
CUresult cuMemsetD2D8Async_ptsz(CUdeviceptr d, size_t p, unsigned char v, size_t w, size_t h, CUstream s);
CUresult cuMemsetD2D16Async_ptsz(CUdeviceptr d, size_t p, unsigned short v, size_t w, size_t h, CUstream s);
CUresult cuMemsetD2D32Async_ptsz(CUdeviceptr d, size_t p, unsigned int v, size_t w, size_t h, CUstream s);
CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s);
/* fake_memop.c */
CUresult cuStreamWriteValue32_v2_ptsz(CUstream s, CUdeviceptr a, cuuint32_t v, unsigned int f);
CUresult cuStreamWriteValue64_v2_ptsz(CUstream s, CUdeviceptr a, cuuint64_t v, unsigned int f);
CUresult cuStreamWaitValue32_v2_ptsz(CUstream s, CUdeviceptr a, cuuint32_t v, unsigned int f);
CUresult cuStreamWaitValue64_v2_ptsz(CUstream s, CUdeviceptr a, cuuint64_t v, unsigned int f);
CUresult cuStreamBatchMemOp_v2_ptsz(CUstream s, unsigned int n, CUstreamBatchMemOpParams *p, unsigned int f);
CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s);
CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool, CUstream s);

CUresult cuStreamSynchronize_ptsz(CUstream s);
CUresult cuStreamQuery_ptsz(CUstream s);
CUresult cuStreamWaitEvent_ptsz(CUstream s, CUevent e, unsigned int flags);
CUresult cuStreamIsCapturing_ptsz(CUstream s, CUstreamCaptureStatus *status);
CUresult cuStreamEndCapture_ptsz(CUstream s, CUgraph *graph);
CUresult cuEventRecord_ptsz(CUevent e, CUstream s);
CUresult cuGraphLaunch_ptsz(CUgraphExec exec, CUstream s);

CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                             unsigned shared, CUstream s, void **params, void **extra);
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **params, void **extra);
CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                        unsigned bz, unsigned shared, CUstream s, void **params);

#endif
