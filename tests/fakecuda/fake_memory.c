/* fake_memory.c: linear allocations, host memory, pointer queries, memset.
 *
 * Device memory is host memory: cuMemAlloc maps a fresh memfd (so that
 * cuIpcGetMemHandle can name it to another process) and the CUdeviceptr is
 * the mapping's address, which fake kernels dereference directly. Every
 * allocation is a FakeAlloc on one list with its owning context, so that
 * destroying the context frees it, and with its device, so that the bytes
 * count against SAGE_FAKE_MEM (page-rounded, like the real driver's rounding
 * to its own pages). Host allocations and registrations are recorded too:
 * cuPointerGetAttribute must tell host from device memory.
 */
#include "fake_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static bool counts_against_device(const FakeAlloc *a) {
        return a->kind == FAKE_ALLOC_DEVICE || a->kind == FAKE_ALLOC_MANAGED;
}

FakeAlloc *fake_alloc_find_locked(uintptr_t p) {
        for (FakeAlloc *a = fake.allocs; a; a = a->next) {
                uintptr_t base = (uintptr_t)a->base;
                if (p >= base && p < base + (a->size ? a->size : 1))
                        return a;
        }
        return NULL;
}

FakeAlloc *fake_alloc_record_locked(FakeAllocKind kind, void *base, size_t size, size_t map_size, int fd,
                                    CUcontext ctx) {
        FakeAlloc *a = calloc(1, sizeof *a);
        if (!a)
                return NULL;
        a->kind = kind;
        a->base = base;
        a->size = size;
        a->map_size = map_size;
        a->fd = fd;
        a->ctx = ctx;
        a->device = ctx ? ctx->device : 0;
        a->id = fake.next_id++;
        a->next = fake.allocs;
        fake.allocs = a;
        return a;
}

CUresult fake_device_alloc_locked(CUdeviceptr *out, size_t bytes, CUcontext ctx, FakeAllocKind kind) {
        if (!out || bytes == 0)
                return CUDA_ERROR_INVALID_VALUE;
        size_t rounded = fake_page_round(bytes);
        if (rounded < bytes || fake.mem_used[ctx->device] + rounded > fake.mem_total)
                return CUDA_ERROR_OUT_OF_MEMORY;
        int fd = -1;
        void *p;
        if (kind == FAKE_ALLOC_DEVICE) {
                fd = memfd_create("sage-fake-mem", MFD_CLOEXEC);
                if (fd < 0)
                        return CUDA_ERROR_OUT_OF_MEMORY;
                if (ftruncate(fd, (off_t)rounded) != 0) {
                        close(fd);
                        return CUDA_ERROR_OUT_OF_MEMORY;
                }
                p = MAP_FAILED;
                for (size_t i = 0; i < sizeof fake.freed / sizeof fake.freed[0] && p == MAP_FAILED; i++) {
                        if (fake.freed[i].size != rounded)
                                continue;
                        p = mmap((void *)fake.freed[i].base, rounded, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
                        if (p != MAP_FAILED &&
                            p != (void *)fake.freed[i].base) { /* a kernel without NOREPLACE: a hint */
                                munmap(p, rounded);
                                p = MAP_FAILED;
                        }
                        fake.freed[i].size = 0;
                }
                if (p == MAP_FAILED)
                        p = mmap(NULL, rounded, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        } else {
                p = mmap(NULL, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        }
        if (p == MAP_FAILED) {
                if (fd >= 0)
                        close(fd);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        if (!fake_alloc_record_locked(kind, p, bytes, rounded, fd, ctx)) {
                munmap(p, rounded);
                if (fd >= 0)
                        close(fd);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        fake.mem_used[ctx->device] += rounded;
        *out = (CUdeviceptr)(uintptr_t)p;
        return CUDA_SUCCESS;
}

void fake_alloc_free_locked(FakeAlloc *a) {
        for (FakeAlloc **p = &fake.allocs; *p; p = &(*p)->next) {
                if (*p == a) {
                        *p = a->next;
                        break;
                }
        }
        if (counts_against_device(a))
                fake.mem_used[a->device] -= a->map_size;
        if (a->map_size)
                munmap(a->base, a->map_size);
        if (a->kind == FAKE_ALLOC_DEVICE && a->map_size) {
                memmove(&fake.freed[1], &fake.freed[0], sizeof fake.freed - sizeof fake.freed[0]);
                fake.freed[0].base = (uintptr_t)a->base;
                fake.freed[0].size = a->map_size;
        }
        if (a->fd >= 0)
                close(a->fd);
        free(a);
}

void fake_free_context_objects_locked(CUcontext ctx) {
        FakeAlloc *a = fake.allocs;
        while (a) {
                FakeAlloc *next = a->next;
                if (a->ctx == ctx)
                        fake_alloc_free_locked(a);
                a = next;
        }
        fake_stream_free_context_locked(ctx);
        fake_module_free_context_locked(ctx);
}

static CUresult alloc_in_current(CUdeviceptr *dptr, size_t bytes, FakeAllocKind kind) {
        CUcontext ctx;
        FAKE_TRY(fake_require_context(&ctx));
        FAKE_TRY(fake_capture_unsafe_call());
        fake_lock();
        CUresult r = fake_device_alloc_locked(dptr, bytes, ctx, kind);
        fake_unlock();
        return r;
}

FAKE_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
        FAKE_GATE();
        return alloc_in_current(dptr, bytesize, FAKE_ALLOC_DEVICE);
}

FAKE_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
                                        unsigned int ElementSizeBytes) {
        FAKE_GATE();
        if (!pPitch || WidthInBytes == 0 || Height == 0 ||
            (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16))
                return CUDA_ERROR_INVALID_VALUE;
        size_t pitch = (WidthInBytes + 511) & ~(size_t)511;
        CUresult r = alloc_in_current(dptr, pitch * Height, FAKE_ALLOC_DEVICE);
        if (r == CUDA_SUCCESS)
                *pPitch = pitch;
        return r;
}

FAKE_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags) {
        FAKE_GATE();
        if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST)
                return CUDA_ERROR_INVALID_VALUE;
        return alloc_in_current(dptr, bytesize, FAKE_ALLOC_MANAGED);
}

static CUresult free_kind(uintptr_t p, bool (*ok)(const FakeAlloc *)) {
        FAKE_TRY(fake_capture_unsafe_call());
        fake_queue_drain(); /* freeing synchronizes, as in the driver */
        fake_lock();
        for (FakeAlloc *a = fake.allocs; a; a = a->next) {
                if ((uintptr_t)a->base == p && ok(a)) {
                        fake_alloc_free_locked(a);
                        fake_unlock();
                        return CUDA_SUCCESS;
                }
        }
        fake_unlock();
        return CUDA_ERROR_INVALID_VALUE;
}

FAKE_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (dptr == 0)
                return CUDA_SUCCESS;
        return free_kind((uintptr_t)dptr, counts_against_device);
}

FAKE_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream) {
        FAKE_GATE();
        CUresult r = fake_stream_check_uncaptured(hStream); /* allocation nodes are not simulated */
        return r == CUDA_SUCCESS ? cuMemAlloc_v2(dptr, bytesize) : r;
}

FAKE_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream) {
        FAKE_GATE();
        return cuMemAllocAsync(dptr, bytesize, hStream);
}

FAKE_EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream) {
        FAKE_GATE();
        CUresult r = fake_stream_check_uncaptured(hStream); /* free nodes are not simulated */
        return r == CUDA_SUCCESS ? cuMemFree_v2(dptr) : r;
}

FAKE_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream) {
        FAKE_GATE();
        return cuMemFreeAsync(dptr, hStream);
}

FAKE_EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
        FAKE_GATE();
        CUcontext ctx;
        FAKE_TRY(fake_require_context(&ctx));
        fake_lock();
        if (free_bytes)
                *free_bytes = fake.mem_total - fake.mem_used[ctx->device];
        if (total)
                *total = fake.mem_total;
        fake_unlock();
        return CUDA_SUCCESS;
}

/* ------------------------------------------------------------ host memory */
FAKE_EXPORT CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags) {
        FAKE_GATE();
        CUcontext ctx;
        FAKE_TRY(fake_require_context_args(&ctx, !pp || bytesize == 0));
        FAKE_TRY(fake_capture_unsafe_call());
        size_t rounded = fake_page_round(bytesize);
        if (fake.pin_ms)
                fake_sleep_ms(fake.pin_ms);
        void *p = mmap(NULL, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return CUDA_ERROR_OUT_OF_MEMORY;
        fake_lock();
        FakeAlloc *a = fake_alloc_record_locked(FAKE_ALLOC_HOST, p, bytesize, rounded, -1, ctx);
        fake_unlock();
        if (!a) {
                munmap(p, rounded);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        *pp = p;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t bytesize) {
        FAKE_GATE();
        return cuMemHostAlloc(pp, bytesize, 0);
}

static bool is_host(const FakeAlloc *a) {
        return a->kind == FAKE_ALLOC_HOST;
}
static bool is_registered(const FakeAlloc *a) {
        return a->kind == FAKE_ALLOC_REGISTERED;
}

FAKE_EXPORT CUresult cuMemFreeHost(void *p) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        return free_kind((uintptr_t)p, is_host);
}

/*
 * What the driver refuses: flags it does not know, memory that is not
 * mapped (it cannot pin it), a range overlapping one already registered or
 * allocated pinned by cuMemHostAlloc; an IO-memory range needs a device
 * this driver has not. Unregister takes only the base of a registration.
 */
#define REGISTER_FLAGS                                                                              \
        (CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP | CU_MEMHOSTREGISTER_IOMEMORY | \
         CU_MEMHOSTREGISTER_READ_ONLY)

static bool host_mapped(void *p, size_t n) {
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = (uintptr_t)p & ~(page - 1);

        return msync((void *)lo, (uintptr_t)p + n - lo, MS_ASYNC) == 0; /* ENOMEM: some page not mapped */
}

FAKE_EXPORT CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags) {
        FAKE_GATE();
        CUcontext ctx;
        FAKE_TRY(fake_require_context_args(&ctx, !p || bytesize == 0 || (Flags & ~REGISTER_FLAGS) ||
                                                         (uintptr_t)p + bytesize < (uintptr_t)p));
        FAKE_TRY(fake_capture_unsafe_call());
        if (fake.register_refuse)
                return fake.register_refuse;
        if (Flags & CU_MEMHOSTREGISTER_IOMEMORY)
                return CUDA_ERROR_NOT_SUPPORTED;
        if (!host_mapped(p, bytesize))
                return CUDA_ERROR_INVALID_VALUE;
        if (fake.pin_ms)
                fake_sleep_ms(fake.pin_ms);
        fake_lock();
        for (FakeAlloc *a = fake.allocs; a; a = a->next) {
                uintptr_t b = (uintptr_t)a->base, q = (uintptr_t)p;
                if ((is_registered(a) || is_host(a)) && q < b + a->size && b < q + bytesize) {
                        fake_unlock();
                        return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
                }
        }
        FakeAlloc *a = fake_alloc_record_locked(FAKE_ALLOC_REGISTERED, p, bytesize, 0, -1, ctx);
        fake_unlock();
        return a ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

FAKE_EXPORT CUresult cuMemHostUnregister(void *p) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        CUresult r = free_kind((uintptr_t)p, is_registered);
        return r == CUDA_SUCCESS ? r : CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
}

/* ------------------------------------------------------------ queries */
FAKE_EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        CUdeviceptr base = 0;
        size_t size = 0;
        fake_lock();
        FakeAlloc *a = fake_alloc_find_locked((uintptr_t)dptr);
        FakeMapping *m = a ? NULL : fake_mapping_find_locked((uintptr_t)dptr);
        if (a && a->kind != FAKE_ALLOC_HOST && a->kind != FAKE_ALLOC_REGISTERED) {
                base = (CUdeviceptr)(uintptr_t)a->base;
                size = a->size;
        } else if (m) {
                base = (CUdeviceptr)m->map_base;
                size = m->map_size;
        }
        fake_unlock();
        if (!size)
                return CUDA_ERROR_NOT_FOUND;
        if (pbase)
                *pbase = base;
        if (psize)
                *psize = size;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!data);
        fake_lock();
        FakeAlloc *a = fake_alloc_find_locked((uintptr_t)ptr);
        FakeMapping *m = a ? NULL : fake_mapping_find_locked((uintptr_t)ptr);
        FakeAlloc copy = a ? *a : (FakeAlloc){ 0 };
        FakeMapping mcopy = m ? *m : (FakeMapping){ 0 };
        fake_unlock();
        if (!a && !m)
                return CUDA_ERROR_INVALID_VALUE;
        bool host = a && (copy.kind == FAKE_ALLOC_HOST || copy.kind == FAKE_ALLOC_REGISTERED);
        switch (attribute) {
        case CU_POINTER_ATTRIBUTE_CONTEXT:
                /* VMM memory belongs to no context; answer the caller's. */
                *(CUcontext *)data = a ? copy.ctx : fake_current_context();
                return CUDA_SUCCESS;
        case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
                *(unsigned int *)data = host ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE;
                return CUDA_SUCCESS;
        case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: *(CUdeviceptr *)data = ptr; return CUDA_SUCCESS;
        case CU_POINTER_ATTRIBUTE_HOST_POINTER:
                if (!a || !(host || copy.kind == FAKE_ALLOC_MANAGED))
                        return CUDA_ERROR_INVALID_VALUE;
                *(void **)data = (void *)(uintptr_t)ptr;
                return CUDA_SUCCESS;
        case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
                *(int *)data = a ? copy.device : mcopy.phys->prop.location.id;
                return CUDA_SUCCESS;
        case CU_POINTER_ATTRIBUTE_BUFFER_ID:
                *(unsigned long long *)data = a ? copy.id : mcopy.map_id;
                return CUDA_SUCCESS;
        case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
                *(CUdeviceptr *)data = a ? (CUdeviceptr)(uintptr_t)copy.base : (CUdeviceptr)mcopy.map_base;
                return CUDA_SUCCESS;
        case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data = a ? copy.size : mcopy.map_size; return CUDA_SUCCESS;
        default: return CUDA_ERROR_INVALID_VALUE;
        }
}

/* ------------------------------------------------------------ memset */
CUresult fake_memset(void *dst, unsigned value, unsigned elem_size, size_t count, CUstream stream) {
        CUcontext ctx;
        FAKE_TRY(fake_require_context(&ctx));
        struct CUgraph_st *capture = NULL;
        if (stream)
                FAKE_TRY(fake_stream_check(stream, &capture));
        if (!dst || (uintptr_t)dst % elem_size)
                return CUDA_ERROR_INVALID_VALUE;
        if (count == 0)
                return CUDA_SUCCESS;
        fake_lock();
        CUresult r = fake_vmm_check_locked((uintptr_t)dst, count * elem_size, PROT_WRITE);
        fake_unlock();
        if (r != CUDA_SUCCESS)
                return r;
        FakeOp op = { .kind = FAKE_OP_MEMSET, .u.memset = { dst, value, elem_size, count } };
        if (capture)
                return fake_graph_append(capture, &op);
        if (stream && fake_queue_submit(&op, ctx))
                return CUDA_SUCCESS;
        fake_queue_drain();
        fake_op_run(&op);
        return CUDA_SUCCESS;
}

#define PTR(d) ((void *)(uintptr_t)(d))

/*
 * 2D memset: Height rows of Width elements, dstPitch bytes apart. Like the
 * real driver, a row in a read-only mapping fails the whole call
 * (INVALID_VALUE) before anything is written.
 */
static CUresult fake_memset2d(CUdeviceptr d, size_t pitch, unsigned value, unsigned elem_size, size_t width,
                              size_t height, CUstream stream) {
        FAKE_TRY(fake_require_context_args(NULL, !d || d % elem_size || (height > 1 && pitch < width * elem_size)));
        if (!width || !height)
                return CUDA_SUCCESS;
        CUresult r = CUDA_SUCCESS;
        fake_lock();
        for (size_t y = 0; y < height && r == CUDA_SUCCESS; y++)
                r = fake_vmm_check_locked((uintptr_t)d + y * pitch, width * elem_size, PROT_WRITE);
        fake_unlock();
        for (size_t y = 0; y < height && r == CUDA_SUCCESS; y++)
                r = fake_memset(PTR(d + y * pitch), value, elem_size, width, stream);
        return r;
}

/* Each width in its four forms: plain and _ptds, Async and Async_ptsz, 1D and 2D. */
#define MEMSET_ENTRIES(bits, type)                                                                                   \
        FAKE_ENTRY_PTDS(cuMemsetD##bits##_v2, (CUdeviceptr d, type v, size_t n),                                     \
                        fake_memset(PTR(d), v, sizeof(type), n, NULL))                                               \
        FAKE_ENTRY_PTSZ(cuMemsetD##bits##Async, (CUdeviceptr d, type v, size_t n, CUstream s),                       \
                        fake_memset(PTR(d), v, sizeof(type), n, s))                                                  \
        FAKE_ENTRY_PTDS(cuMemsetD2D##bits##_v2, (CUdeviceptr d, size_t p, type v, size_t w, size_t h),               \
                        fake_memset2d(d, p, v, sizeof(type), w, h, NULL))                                            \
        FAKE_ENTRY_PTSZ(cuMemsetD2D##bits##Async, (CUdeviceptr d, size_t p, type v, size_t w, size_t h, CUstream s), \
                        fake_memset2d(d, p, v, sizeof(type), w, h, s))

MEMSET_ENTRIES(8, unsigned char)
MEMSET_ENTRIES(16, unsigned short)
MEMSET_ENTRIES(32, unsigned int)
