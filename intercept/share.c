/*
 * Sharing-based memory, client side — experimental (SAGE_SHARE=1, off by
 * default until proven on a GPU). Large allocations (SAGE_SHARE_MIN) are
 * backed by SAGE's own VMM allocation (cuMemCreate, POSIX-fd exportable)
 * mapped read-write at an address SAGE reserves, so that their physical
 * backing can be swapped later. When the app uploads a whole such
 * allocation from host memory, the bytes are hashed (XXH3-128 over 64 MiB
 * chunks in parallel, then over the chunk hashes) and the broker is asked
 * for an extent with that content: on a hit the private backing is
 * replaced by the broker's extent, mapped read-only, and nothing is copied;
 * on a miss the copy happens as usual and the allocation becomes a
 * candidate. When a candidate is freed (or the process exits), its device
 * content is read back and hashed again: unchanged over the life of the
 * process that uploaded it, it is published to the broker, sealed.
 *
 * Every failure falls back to the plain driver path (no broker: no VMM
 * backing at all). Known gaps, kept for the next steps of the issue: CUDA
 * IPC on VMM-backed allocations fails (the driver refuses it), a later
 * process that writes into a mapped read-only extent faults, and uploads
 * into parts of an allocation (framework memory pools) are not shared.
 */
#include <cuda.h>

#include "share.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_client.h"
#include "driver.h"
#include "hash.h"
#include "impl.h"
#include "intercept.h"
#include "log.h"
#include "options.h"
#include "util.h"
#include "warmup.h"

#define CHUNK (64u << 20)
#define MAX_HASH_THREADS 16

typedef enum { BACKING_PRIVATE, BACKING_CANDIDATE, BACKING_SHARED } Backing;

typedef struct Allocation {
        CUdeviceptr va;
        size_t size, padded;
        CUdevice dev;
        CUcontext ctx;
        CUmemGenericAllocationHandle handle; /* what is mapped at va */
        Backing backing;
        SageHash hash;                       /* of the uploaded bytes (candidate, shared) */
        uint64_t extent_id;                  /* shared: the broker reference we hold */
        struct Allocation *next;
} Allocation;

static pthread_mutex_t share_lock = PTHREAD_MUTEX_INITIALIZER;
static Allocation *allocations;
static SageBroker *broker;
static int share_state; /* 0 untried, 1 on, -1 off for this process */

/* The driver entry points this module calls without hooking them (driver.h). */
static const SageDriverExtras *const drv = &sage_driver_extras;

static void share_at_exit(void);

/* Under share_lock. */
static bool share_enabled(void) {
        if (share_state)
                return share_state > 0;
        share_state = -1;
        if (!sage_options()->share || !sage_driver_handle())
                return false;
        if (!drv->mem_granularity || !drv->ctx_get_device || !drv->ctx_get_current || !drv->ctx_push || !drv->ctx_pop ||
            !drv->ctx_synchronize)
                return false;
        if (sage_broker_connect(&broker, NULL, 500) < 0) {
                sage_info("share: no broker (%s); sharing off", sage_options()->socket);
                broker = NULL;
                return false;
        }
        atexit(share_at_exit);
        share_state = 1;
        return true;
}

/* A broker call failed at the transport level: stop sharing, keep running. */
static void broker_lost(int r) {
        if (r < 0 && broker) {
                sage_warn("share: broker connection lost (%s); sharing off", strerror(-r));
                broker = sage_broker_free(broker);
        }
}

static Allocation *find(CUdeviceptr va, Allocation ***link) {
        Allocation **l = &allocations;
        for (; *l; l = &(*l)->next)
                if ((*l)->va == va) {
                        if (link)
                                *link = l;
                        return *l;
                }
        return NULL;
}

static CUmemAllocationProp device_prop(CUdevice dev) {
        CUmemAllocationProp prop;

        memset(&prop, 0, sizeof(prop));
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = dev;
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        return prop;
}

static CUresult map_handle(Allocation *a, CUmemGenericAllocationHandle h, CUmemAccess_flags access) {
        CUmemAccessDesc desc = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, a->dev }, .flags = access };
        CUresult r = SAGE_REAL(cuMemMap)(a->va, a->padded, 0, h, 0);

        if (r == CUDA_SUCCESS && (r = SAGE_REAL(cuMemSetAccess)(a->va, a->padded, &desc, 1)) != CUDA_SUCCESS)
                SAGE_REAL(cuMemUnmap)(a->va, a->padded);
        return r;
}

/* ---------------------------------------------------------------- allocation */

static bool share_alloc(CUdeviceptr *dptr, size_t size, CUresult *result) {
        CUmemAllocationProp prop;
        size_t gran = 0;
        Allocation *a;
        CUresult r;

        if (!sage_options()->share || size < sage_options()->share_min || !dptr)
                return false;
        pthread_mutex_lock(&share_lock);
        if (!share_enabled() || !broker) {
                pthread_mutex_unlock(&share_lock);
                return false;
        }
        pthread_mutex_unlock(&share_lock);
        if (!(a = calloc(1, sizeof(*a))))
                return false;
        if (drv->ctx_get_device(&a->dev) != CUDA_SUCCESS || drv->ctx_get_current(&a->ctx) != CUDA_SUCCESS)
                goto fail;
        prop = device_prop(a->dev);
        if (drv->mem_granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS || !gran)
                goto fail;
        a->size = size;
        a->padded = (size + gran - 1) / gran * gran;
        if (SAGE_REAL(cuMemAddressReserve)(&a->va, a->padded, 0, 0, 0) != CUDA_SUCCESS)
                goto fail;
        r = SAGE_REAL(cuMemCreate)(&a->handle, a->padded, &prop, 0);
        if (r != CUDA_SUCCESS) {
                SAGE_REAL(cuMemAddressFree)(a->va, a->padded);
                /* Out of memory is the app's answer too: what cuMemAlloc would say. */
                if (r == CUDA_ERROR_OUT_OF_MEMORY) {
                        free(a);
                        return false;
                }
                goto fail;
        }
        if (map_handle(a, a->handle, CU_MEM_ACCESS_FLAGS_PROT_READWRITE) != CUDA_SUCCESS) {
                SAGE_REAL(cuMemRelease)(a->handle);
                SAGE_REAL(cuMemAddressFree)(a->va, a->padded);
                goto fail;
        }
        /* The context must outlive cudart's own release at exit: publishing reads it back. */
        sage_warmup_note_held(a->dev);
        pthread_mutex_lock(&share_lock);
        a->next = allocations;
        allocations = a;
        pthread_mutex_unlock(&share_lock);
        sage_stats_count(SAGE_STAT_SHARE_ALLOCS);
        *dptr = a->va;
        *result = CUDA_SUCCESS;
        return true;
fail:
        sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
        free(a);
        return false;
}

/* ---------------------------------------------------------------- hashing */

typedef struct HashJob {
        const unsigned char *data;
        size_t size;
        SageHash *chunks;
        size_t nchunks;
        unsigned thread, threads;
} HashJob;

static void *hash_worker(void *arg) {
        HashJob *j = arg;

        for (size_t i = j->thread; i < j->nchunks; i += j->threads) {
                size_t off = i * (size_t)CHUNK;
                size_t n = j->size - off < CHUNK ? j->size - off : CHUNK;
                j->chunks[i] = sage_hash(j->data + off, n);
        }
        return NULL;
}

/* The content key: XXH3-128 of each 64 MiB chunk, hashed together. */
static int content_hash(const void *data, size_t size, SageHash *out) {
        size_t nchunks = (size + CHUNK - 1) / CHUNK;
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        unsigned threads = (unsigned)(cpus < 1 ? 1 : cpus > MAX_HASH_THREADS ? MAX_HASH_THREADS : cpus);
        SageHash *chunks = calloc(nchunks, sizeof(*chunks));
        HashJob jobs[MAX_HASH_THREADS];
        pthread_t tids[MAX_HASH_THREADS];
        unsigned started = 0;

        if (!chunks)
                return -1;
        if (threads > nchunks)
                threads = (unsigned)nchunks;
        for (unsigned t = 0; t < threads; t++) {
                jobs[t] = (HashJob){ data, size, chunks, nchunks, t, threads };
                if (t > 0 && pthread_create(&tids[t], NULL, hash_worker, &jobs[t]) == 0)
                        started |= 1u << t;
        }
        hash_worker(&jobs[0]);
        for (unsigned t = 1; t < threads; t++) {
                if (started & (1u << t))
                        pthread_join(tids[t], NULL);
                else
                        hash_worker(&jobs[t]);
        }
        *out = sage_hash(chunks, nchunks * sizeof(*chunks));
        free(chunks);
        return 0;
}

/* ---------------------------------------------------------------- uploads */

/* Swap the private backing of `a` for the shared extent behind `fd`, read-only. */
static bool map_shared(Allocation *a, int fd, uint64_t extent_id) {
        CUmemGenericAllocationHandle shared;

        if (SAGE_REAL(cuMemImportFromShareableHandle)(&shared, (void *)(uintptr_t)fd,
                                                  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != CUDA_SUCCESS)
                return false;
        drv->ctx_synchronize(); /* nothing in flight may touch the old backing */
        SAGE_REAL(cuMemUnmap)(a->va, a->padded);
        if (map_handle(a, shared, CU_MEM_ACCESS_FLAGS_PROT_READ) != CUDA_SUCCESS) {
                SAGE_REAL(cuMemRelease)(shared);
                if (map_handle(a, a->handle, CU_MEM_ACCESS_FLAGS_PROT_READWRITE) != CUDA_SUCCESS)
                        sage_warn("share: cannot restore the private backing of %p", (void *)(uintptr_t)a->va);
                return false;
        }
        SAGE_REAL(cuMemRelease)(a->handle);
        a->handle = shared;
        a->backing = BACKING_SHARED;
        a->extent_id = extent_id;
        return true;
}

/* A whole-allocation upload from host memory: true when served by mapping. */
static bool share_upload(CUdeviceptr dst, const void *src, size_t bytes) {
        Allocation *a;
        SageHash hash;
        uint64_t extent_id = 0;
        int fd = -1, r;
        bool served = false;

        if (!src || !atomic_load_explicit(&sage_stats[SAGE_STAT_SHARE_ALLOCS], memory_order_relaxed))
                return false;
        pthread_mutex_lock(&share_lock);
        a = find(dst, NULL);
        if (!a || a->backing != BACKING_PRIVATE || bytes != a->size || !broker) {
                pthread_mutex_unlock(&share_lock);
                return false;
        }
        if (content_hash(src, bytes, &hash) < 0) {
                pthread_mutex_unlock(&share_lock);
                return false;
        }
        r = sage_broker_lookup(broker, hash, a->padded, (uint32_t)a->dev, &extent_id, &fd);
        if (r == 0 && fd >= 0) {
                served = map_shared(a, fd, extent_id);
                close(fd);
                if (!served) {
                        sage_broker_release(broker, extent_id);
                        sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
                }
        } else {
                broker_lost(r);
        }
        if (served) {
                sage_stats_count(SAGE_STAT_SHARE_HITS);
        } else {
                /* Copied as usual by the caller; a candidate for publishing. */
                a->backing = BACKING_CANDIDATE;
                a->hash = hash;
                sage_stats_count(SAGE_STAT_SHARE_MISSES);
        }
        pthread_mutex_unlock(&share_lock);
        return served;
}

/* ---------------------------------------------------------------- publishing */

/* Read the allocation back in chunks and hash it as content_hash does. */
static int device_hash(Allocation *a, SageHash *out) {
        size_t nchunks = (a->size + CHUNK - 1) / CHUNK;
        SageHash *chunks = calloc(nchunks, sizeof(*chunks));
        void *buf = NULL;
        int r = -1;

        if (!chunks || SAGE_REAL(cuMemAllocHost_v2)(&buf, CHUNK) != CUDA_SUCCESS)
                goto out;
        for (size_t i = 0; i < nchunks; i++) {
                size_t off = i * (size_t)CHUNK, n = a->size - off < CHUNK ? a->size - off : CHUNK;
                if (SAGE_REAL(cuMemcpyDtoH_v2)(buf, a->va + off, n) != CUDA_SUCCESS)
                        goto out;
                chunks[i] = sage_hash(buf, n);
        }
        *out = sage_hash(chunks, nchunks * sizeof(*chunks));
        r = 0;
out:
        if (buf)
                SAGE_REAL(cuMemFreeHost)(buf);
        free(chunks);
        return r;
}

/* Unchanged since its upload? Then offer it to the broker, sealed. Under share_lock. */
static void publish_if_unchanged(Allocation *a) {
        SageHash now;
        CUcontext popped;
        int fd = -1, existed = 0, r;
        uint64_t id;

        if (a->backing != BACKING_CANDIDATE || !broker || drv->ctx_push(a->ctx) != CUDA_SUCCESS)
                return;
        if (drv->ctx_synchronize() == CUDA_SUCCESS && device_hash(a, &now) == 0 && sage_hash_equal(now, a->hash) &&
            SAGE_REAL(cuMemExportToShareableHandle)(&fd, a->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0) ==
                    CUDA_SUCCESS) {
                r = sage_broker_publish(broker, a->hash, a->padded, (uint32_t)a->dev, SAGE_PUBLISH_SEALED, fd, &id,
                                        &existed);
                if (r == 0) {
                        sage_broker_release(broker, id); /* the broker keeps it; we hold no reference */
                        sage_stats_count(SAGE_STAT_SHARE_PUBLISHED);
                } else {
                        broker_lost(r);
                }
                close(fd);
        }
        drv->ctx_pop(&popped);
}

static void release_allocation(Allocation *a) {
        SAGE_REAL(cuMemUnmap)(a->va, a->padded);
        SAGE_REAL(cuMemRelease)(a->handle);
        SAGE_REAL(cuMemAddressFree)(a->va, a->padded);
        if (a->backing == BACKING_SHARED && broker)
                broker_lost(sage_broker_release(broker, a->extent_id));
        free(a);
}

bool sage_share_free(CUdeviceptr va, CUresult *result) {
        Allocation *a, **link;

        if (!atomic_load_explicit(&sage_stats[SAGE_STAT_SHARE_ALLOCS], memory_order_relaxed))
                return false;
        pthread_mutex_lock(&share_lock);
        a = find(va, &link);
        if (a) {
                *link = a->next;
                publish_if_unchanged(a);
        }
        pthread_mutex_unlock(&share_lock);
        if (!a)
                return false;
        drv->ctx_synchronize(); /* cuMemFree waits for the work using the memory */
        release_allocation(a);
        *result = CUDA_SUCCESS;
        return true;
}

static void share_at_exit(void) {
        pthread_mutex_lock(&share_lock);
        for (Allocation *a = allocations; a; a = a->next)
                publish_if_unchanged(a);
        pthread_mutex_unlock(&share_lock);
}

/* ---------------------------------------------------------------- hooks */

CUresult sage_impl_cuMemAlloc_v2(sage_fn_cuMemAlloc_v2_t real, CUdeviceptr *dptr, size_t bytesize) {
        CUresult r;
        return share_alloc(dptr, bytesize, &r) ? r : real(dptr, bytesize);
}

CUresult sage_impl_cuMemFree_v2(sage_fn_cuMemFree_v2_t real, CUdeviceptr dptr) {
        CUresult r;
        return sage_share_free(dptr, &r) ? r : real(dptr);
}

CUresult sage_impl_cuMemcpyHtoD_v2(sage_fn_cuMemcpyHtoD_v2_t real, CUdeviceptr dst, const void *src, size_t bytes) {
        return share_upload(dst, src, bytes) ? CUDA_SUCCESS : real(dst, src, bytes);
}

CUresult sage_impl_cuMemcpyHtoD_v2_ptds(sage_fn_cuMemcpyHtoD_v2_ptds_t real, CUdeviceptr dst, const void *src,
                                        size_t bytes) {
        return share_upload(dst, src, bytes) ? CUDA_SUCCESS : real(dst, src, bytes);
}
