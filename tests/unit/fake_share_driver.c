/* The in-test driver of sharing's unit tests (fake_share_driver.h). */
#include "fake_share_driver.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HANDLES 2048
#define MAX_MAPS 1024

typedef struct FakeHandle {
        unsigned char *bytes;
        size_t len;
        bool live;
} FakeHandle;

typedef struct FakeMap {
        CUdeviceptr va;
        size_t len;
        CUmemGenericAllocationHandle h;
        CUmemAccess_flags access;
        bool live;
} FakeMap;

FakeState fake;
/* One stream at a time: its copies wait, as a DMA engine's would, for the synchronize. */
#define MAX_PENDING 256
static struct {
        void *dst;
        CUdeviceptr src;
        size_t len;
} pending[MAX_PENDING];
static int npending;

static uint64_t stats_base[SAGE_STAT_COUNT];

/* The only place that knows how counters are kept: the rest of the tests read them through here. */
static uint64_t stat_now(SageStat stat) {
        return sage_stats_get(stat);
}

uint64_t fake_stat(SageStat stat) {
        return stat_now(stat) - stats_base[stat];
}

static FakeHandle handles[MAX_HANDLES + 1];
static FakeMap maps[MAX_MAPS];
static CUdeviceptr next_va = 0x100000000ull;
static int reservations;

int fake_live_maps(void) {
        int n = 0;
        for (size_t i = 0; i < MAX_MAPS; i++)
                n += maps[i].live;
        return n;
}

int fake_live_reservations(void) {
        return reservations;
}

void fake_reset(void) {
        for (size_t i = 0; i <= MAX_HANDLES; i++)
                free(handles[i].bytes);
        memset(handles, 0, sizeof(handles));
        memset(maps, 0, sizeof(maps));
        memset(&fake, 0, sizeof(fake));
        reservations = 0;
        npending = 0;
        for (size_t i = 0; i < SAGE_STAT_COUNT; i++)
                stats_base[i] = stat_now((SageStat)i);
}

static CUmemGenericAllocationHandle new_handle(size_t len) {
        for (size_t i = 1; i <= MAX_HANDLES; i++)
                if (!handles[i].live && !handles[i].bytes) {
                        handles[i] = (FakeHandle){ calloc(1, len), len, true };
                        fake.live_handles++;
                        return i;
                }
        abort();
}

CUmemGenericAllocationHandle fake_handle(size_t len, unsigned char byte) {
        CUmemGenericAllocationHandle h = new_handle(len);
        memset(handles[h].bytes, byte, len);
        return h;
}

static CUresult create(CUmemGenericAllocationHandle *h, size_t len, const CUmemAllocationProp *prop,
                       unsigned long long flags) {
        fake.creates++;
        if (fake.fail_create_at && --fake.fail_create_at == 0)
                return CUDA_ERROR_OUT_OF_MEMORY;
        if (!len || len % FAKE_GRAN || prop->requestedHandleTypes != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
                return CUDA_ERROR_INVALID_VALUE;
        *h = new_handle(len);
        return CUDA_SUCCESS;
}

static CUresult release(CUmemGenericAllocationHandle h) {
        fake.releases++;
        if (h < 1 || h > MAX_HANDLES || !handles[h].live)
                return CUDA_ERROR_INVALID_VALUE;
        handles[h].live = false; /* bytes stay while mapped; freed at reset */
        fake.live_handles--;
        return CUDA_SUCCESS;
}

static CUresult reserve(CUdeviceptr *va, size_t len, size_t align, CUdeviceptr addr, unsigned long long flags) {
        reservations++;
        *va = next_va;
        next_va += (len + FAKE_GRAN - 1) / FAKE_GRAN * FAKE_GRAN + FAKE_GRAN;
        return CUDA_SUCCESS;
}

static CUresult address_free(CUdeviceptr va, size_t len) {
        reservations--;
        return CUDA_SUCCESS;
}

static CUresult map(CUdeviceptr va, size_t len, size_t offset, CUmemGenericAllocationHandle h,
                    unsigned long long flags) {
        fake.maps++;
        if (h < 1 || h > MAX_HANDLES || !handles[h].live || handles[h].len != len || offset)
                return CUDA_ERROR_INVALID_VALUE;
        for (size_t i = 0; i < MAX_MAPS; i++)
                if (maps[i].live && maps[i].va < va + len && va < maps[i].va + maps[i].len)
                        return CUDA_ERROR_INVALID_VALUE;
        for (size_t i = 0; i < MAX_MAPS; i++)
                if (!maps[i].live) {
                        maps[i] = (FakeMap){ va, len, h, 0, true };
                        return CUDA_SUCCESS;
                }
        abort();
}

static CUresult unmap(CUdeviceptr va, size_t len) {
        fake.unmaps++;
        for (size_t i = 0; i < MAX_MAPS; i++)
                if (maps[i].live && maps[i].va == va && maps[i].len == len) {
                        maps[i].live = false;
                        return CUDA_SUCCESS;
                }
        fake.bad_unmaps++; /* the driver unmaps whole mappings only */
        return CUDA_ERROR_INVALID_VALUE;
}

/* As the driver: a range of whole mappings, several adjacent ones too. */
static CUresult set_access(CUdeviceptr va, size_t len, const CUmemAccessDesc *desc, size_t n) {
        size_t covered = 0;

        fake.accesses++;
        if (fake.fail_access_at && --fake.fail_access_at == 0)
                return CUDA_ERROR_INVALID_VALUE;
        for (size_t i = 0; i < MAX_MAPS; i++)
                if (maps[i].live && maps[i].va >= va && maps[i].va + maps[i].len <= va + len)
                        covered += maps[i].len;
        if (covered != len)
                return CUDA_ERROR_INVALID_VALUE;
        for (size_t i = 0; i < MAX_MAPS; i++)
                if (maps[i].live && maps[i].va >= va && maps[i].va + maps[i].len <= va + len)
                        maps[i].access = desc[0].flags;
        return CUDA_SUCCESS;
}

unsigned char *fake_at(CUdeviceptr va, CUmemAccess_flags *access) {
        for (size_t i = 0; i < MAX_MAPS; i++)
                if (maps[i].live && va >= maps[i].va && va < maps[i].va + maps[i].len) {
                        if (access)
                                *access = maps[i].access;
                        return handles[maps[i].h].bytes + (va - maps[i].va);
                }
        return NULL;
}

/* The bytes behind va and how many of them follow in the same mapping (0: unmapped). */
static unsigned char *mapped_run(CUdeviceptr va, size_t *run, CUmemAccess_flags *access) {
        for (size_t i = 0; i < MAX_MAPS; i++)
                if (maps[i].live && va >= maps[i].va && va < maps[i].va + maps[i].len) {
                        *run = maps[i].va + maps[i].len - va;
                        if (access)
                                *access = maps[i].access;
                        return handles[maps[i].h].bytes + (va - maps[i].va);
                }
        *run = 0;
        return NULL;
}

/* Run by run: a range may cross mappings. */
static CUresult copy_dtod(CUdeviceptr dst, CUdeviceptr src, size_t len) {
        fake.copies++;
        if (fake.fail_copy_at && --fake.fail_copy_at == 0)
                return CUDA_ERROR_ILLEGAL_ADDRESS;
        for (size_t run, srun; len; dst += run, src += run, len -= run) {
                CUmemAccess_flags access = 0;
                unsigned char *d = mapped_run(dst, &run, &access), *s = mapped_run(src, &srun, NULL);
                if (!d || !s)
                        return CUDA_ERROR_INVALID_VALUE;
                if (access != CU_MEM_ACCESS_FLAGS_PROT_READWRITE) {
                        fake.bad_writes++;
                        return CUDA_ERROR_INVALID_VALUE;
                }
                run = run < srun ? run : srun;
                run = run < len ? run : len;
                memmove(d, s, run);
        }
        return CUDA_SUCCESS;
}

static CUresult copy_dtoh_now(void *dst, CUdeviceptr src, size_t len) {
        for (size_t done = 0, n; done < len; done += n) {
                unsigned char *s = mapped_run(src + done, &n, NULL);

                if (!s)
                        return CUDA_ERROR_INVALID_VALUE;
                n = n < len - done ? n : len - done;
                memcpy((unsigned char *)dst + done, s, n);
        }
        return CUDA_SUCCESS;
}

bool fake_read(CUdeviceptr va, size_t len, void *dst) {
        return copy_dtoh_now(dst, va, len) == CUDA_SUCCESS;
}

/* An upload: into read-write mappings only, run by run. */
static CUresult copy_htod(CUdeviceptr dst, const void *src, size_t len) {
        fake.htod_copies++;
        for (size_t run; len; dst += run, src = (const unsigned char *)src + run, len -= run) {
                CUmemAccess_flags access = 0;
                unsigned char *d = mapped_run(dst, &run, &access);
                if (!d)
                        return CUDA_ERROR_INVALID_VALUE;
                if (access != CU_MEM_ACCESS_FLAGS_PROT_READWRITE) {
                        fake.bad_writes++;
                        return CUDA_ERROR_INVALID_VALUE;
                }
                run = run < len ? run : len;
                memcpy(d, src, run);
        }
        return CUDA_SUCCESS;
}

/* On a stream: lands at once (the fake has no queue for uploads); counted apart. */
static CUresult copy_htod_async(CUdeviceptr dst, const void *src, size_t len, CUstream st) {
        fake.htod_async++;
        return copy_htod(dst, src, len);
}

static CUresult copy_dtoh(void *dst, CUdeviceptr src, size_t len) {
        fake.dtoh_copies++;
        return copy_dtoh_now(dst, src, len);
}

static CUresult stream_create(CUstream *st, unsigned int flags) {
        if (fake.fail_stream || fake.streams_live)
                return CUDA_ERROR_OUT_OF_MEMORY;
        fake.streams_made++;
        fake.streams_live++;
        *st = (CUstream)(uintptr_t)0x5157;
        return CUDA_SUCCESS;
}

static CUresult stream_synchronize(CUstream st) {
        CUresult r = CUDA_SUCCESS;

        fake.stream_syncs++;
        if (fake.fail_stream_sync_at && --fake.fail_stream_sync_at == 0)
                return CUDA_ERROR_LAUNCH_FAILED;
        for (int i = 0; i < npending && r == CUDA_SUCCESS; i++)
                r = copy_dtoh_now(pending[i].dst, pending[i].src, pending[i].len);
        npending = 0;
        return r;
}

/* Not ready while copies wait for the synchronize that lands them (eager ones landed at once). */
static CUresult stream_query(CUstream st) {
        fake.stream_queries++;
        if (!npending)
                return CUDA_SUCCESS;
        fake.queries_not_ready++;
        return CUDA_ERROR_NOT_READY;
}

static CUresult stream_destroy(CUstream st) {
        fake.unsynced_copies += npending;
        npending = 0;
        fake.streams_live--;
        return CUDA_SUCCESS;
}

static CUresult copy_dtoh_async(void *dst, CUdeviceptr src, size_t len, CUstream st) {
        if (!fake_at(src, NULL) || !fake_at(src + len - 1, NULL) || npending == MAX_PENDING)
                return CUDA_ERROR_INVALID_VALUE;
        fake.dtoh_async++;
        if (fake.eager_copies)
                return copy_dtoh_now(dst, src, len);
        pending[npending].dst = dst;
        pending[npending].src = src;
        pending[npending++].len = len;
        return CUDA_SUCCESS;
}

void fake_fill(CUdeviceptr va, size_t len, unsigned char byte) {
        for (size_t run; len; va += run, len -= run) {
                unsigned char *d = mapped_run(va, &run, NULL);
                if (!d)
                        abort();
                run = run < len ? run : len;
                memset(d, byte, run);
        }
}

bool fake_holds(CUdeviceptr va, size_t len, unsigned char byte) {
        for (size_t run; len; va += run, len -= run) {
                unsigned char *d = mapped_run(va, &run, NULL);
                if (!d)
                        return false;
                run = run < len ? run : len;
                if (d[0] != byte || memcmp(d, d + 1, run - 1) != 0) /* all equal to the first */
                        return false;
        }
        return true;
}

static CUresult synchronize(void) {
        fake.syncs++;
        return CUDA_SUCCESS;
}

static CUresult ctx_push(CUcontext ctx) {
        return CUDA_SUCCESS;
}

static CUresult ctx_pop(CUcontext *ctx) {
        return CUDA_SUCCESS;
}

static CUresult import_fd(CUmemGenericAllocationHandle *h, void *fd, CUmemAllocationHandleType type) {
        struct stat st;

        fake.imports++;
        if (!fake.next_import && fake.import_len == FAKE_IMPORT_FD_SIZE && fstat((int)(intptr_t)fd, &st) == 0)
                fake.next_import = fake_handle((size_t)st.st_size, 0x77);
        if (!fake.next_import && fake.import_len && fake.import_len != FAKE_IMPORT_FD_SIZE)
                fake.next_import = fake_handle(fake.import_len, 0x77);
        if (!fake.next_import)
                return CUDA_ERROR_INVALID_VALUE;
        *h = fake.next_import;
        fake.next_import = 0;
        return CUDA_SUCCESS;
}

static CUresult export_fd(void *fd, CUmemGenericAllocationHandle h, CUmemAllocationHandleType type,
                          unsigned long long flags) {
        *(int *)fd = dup(2);
        return *(int *)fd >= 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static CUresult alloc_host(void **p, size_t len) {
        if (fake.fail_alloc_host)
                return CUDA_ERROR_OUT_OF_MEMORY;
        return (*p = malloc(len)) ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static CUresult free_host(void *p) {
        free(p);
        return CUDA_SUCCESS;
}

static CUresult param_info(CUfunction f, size_t i, size_t *off, size_t *size) {
        const FakeKernel *k = (const FakeKernel *)f;
        if (k->nparams == UINT32_MAX)
                return CUDA_ERROR_NOT_SUPPORTED;
        if (i >= k->nparams)
                return CUDA_ERROR_INVALID_VALUE;
        *off = i * 8;
        *size = k->size[i];
        return CUDA_SUCCESS;
}

static CUresult func_name(const char **name, CUfunction f) {
        *name = ((const FakeKernel *)f)->name;
        return CUDA_SUCCESS;
}

/* In SageVmmOps order: create, release, reserve, free, map, unmap, access, copy, synchronize. */
const SageShareDriver fake_driver = {
        .vmm = { create, release, reserve, address_free, map, unmap, set_access, copy_dtod, synchronize },
        .ctx_push = ctx_push,
        .ctx_pop = ctx_pop,
        .import_fd = import_fd,
        .export_fd = export_fd,
        .copy_dtoh = copy_dtoh,
        .copy_htod = copy_htod,
        .copy_htod_async = copy_htod_async,
        .alloc_host = alloc_host,
        .free_host = free_host,
        .stream_create = stream_create,
        .stream_destroy = stream_destroy,
        .stream_synchronize = stream_synchronize,
        .copy_dtoh_async = copy_dtoh_async,
        .stream_query = stream_query,
        .func_get_param_info = param_info,
        .func_get_name = func_name,
};
