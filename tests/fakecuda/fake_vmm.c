/* fake_vmm.c: the virtual memory management API on memfd + mmap + mprotect.
 *
 * A physical allocation (cuMemCreate) is a memfd of its size; exporting it
 * hands out a dup() of that fd, importing takes any such fd (also one that
 * came from another process over SCM_RIGHTS) and reads the size with fstat.
 * A reservation is a PROT_NONE anonymous mapping; cuMemMap replaces part of
 * it with a MAP_SHARED|MAP_FIXED mapping of the memfd, still PROT_NONE, and
 * cuMemSetAccess mprotect()s it, so a stray write through a read-only mapping
 * faults exactly as a GPU kernel would fault. Physical memory lives while it
 * has a handle reference or a mapping (the real driver's rule), so memory
 * stays readable after cuMemRelease and after the exporter exits.
 * The same bookkeeping lets copies and memsets refuse, with INVALID_VALUE,
 * to touch a range that is not mapped with the protection they need.
 */
#include "fake_internal.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GRAN FAKE_GRANULARITY

/*
 * SAGE_FAKE_VMM_COUNT=FILE: at exit the process appends one line, how many
 * calls of each VMM entry point it made, so a test can count what SAGE's
 * allocator asks of a driver that serializes them across processes.
 */
enum {
        VMM_CREATE,
        VMM_RELEASE,
        VMM_RESERVE,
        VMM_FREE,
        VMM_MAP,
        VMM_UNMAP,
        VMM_ACCESS,
        VMM_IMPORT,
        VMM_KINDS
};
static _Atomic unsigned long vmm_calls[VMM_KINDS];
#define VMM_COUNT(kind) atomic_fetch_add_explicit(&vmm_calls[kind], 1, memory_order_relaxed)

__attribute__((destructor)) static void vmm_count_report(void) {
        const char *path = getenv("SAGE_FAKE_VMM_COUNT");
        FILE *f;

        if (!path || !*path || !(f = fopen(path, "a")))
                return;
        fprintf(f, "create %lu release %lu reserve %lu free %lu map %lu unmap %lu access %lu import %lu\n",
                vmm_calls[VMM_CREATE], vmm_calls[VMM_RELEASE], vmm_calls[VMM_RESERVE], vmm_calls[VMM_FREE],
                vmm_calls[VMM_MAP], vmm_calls[VMM_UNMAP], vmm_calls[VMM_ACCESS], vmm_calls[VMM_IMPORT]);
        fclose(f);
}

static FakePhys *phys_find_locked(CUmemGenericAllocationHandle h) {
        for (FakePhys *ph = fake.phys; ph; ph = ph->next)
                if (ph->handle == h && ph->handle_refs > 0)
                        return ph;
        return NULL;
}

static void phys_maybe_free_locked(FakePhys *ph) {
        if (ph->handle_refs || ph->map_refs)
                return;
        for (FakePhys **p = &fake.phys; *p; p = &(*p)->next) {
                if (*p == ph) {
                        *p = ph->next;
                        break;
                }
        }
        if (ph->counted)
                fake.mem_used[ph->prop.location.id] -= ph->size;
        close(ph->fd);
        free(ph);
}

static FakePhys *phys_new_locked(int fd, size_t size, const CUmemAllocationProp *prop, bool counted) {
        FakePhys *ph = calloc(1, sizeof *ph);
        if (!ph)
                return NULL;
        ph->handle = fake.next_id++;
        ph->fd = fd;
        ph->size = size;
        ph->prop = *prop;
        ph->handle_refs = 1;
        ph->counted = counted;
        ph->next = fake.phys;
        fake.phys = ph;
        if (counted)
                fake.mem_used[prop->location.id] += size;
        return ph;
}

FakeMapping *fake_mapping_find_locked(uintptr_t p) {
        for (FakeMapping *m = fake.mappings; m; m = m->next)
                if (p >= m->base && p < m->base + m->size)
                        return m;
        return NULL;
}

static FakeReservation *reservation_find_locked(uintptr_t p, size_t n) {
        for (FakeReservation *r = fake.reservations; r; r = r->next)
                if (p >= r->base && n <= r->size && p - r->base <= r->size - n)
                        return r;
        return NULL;
}

CUresult fake_vmm_check_locked(uintptr_t p, size_t n, int need_prot) {
        for (FakeReservation *r = fake.reservations; r; r = r->next) {
                uintptr_t lo = p > r->base ? p : r->base;
                uintptr_t hi = p + n < r->base + r->size ? p + n : r->base + r->size;
                while (lo < hi) {
                        FakeMapping *m = fake_mapping_find_locked(lo);
                        if (!m || (m->prot & need_prot) != need_prot)
                                return CUDA_ERROR_INVALID_VALUE;
                        lo = m->base + m->size;
                }
        }
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                                   CUmemAllocationGranularity_flags option) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!granularity || !prop);
        *granularity = GRAN;
        return CUDA_SUCCESS;
}

static bool valid_prop(const CUmemAllocationProp *prop) {
        return prop && prop->type == CU_MEM_ALLOCATION_TYPE_PINNED &&
               prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE && prop->location.id >= 0 &&
               prop->location.id < fake.device_count &&
               (prop->requestedHandleTypes == CU_MEM_HANDLE_TYPE_NONE ||
                prop->requestedHandleTypes == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
}

#define VMM_MEMFD_PREFIX "sage-fake-vmm-gpu"

/* The visible ordinal of the GPU whose VMM allocation `fd` is, -1 when it is
 * none of this driver's allocations (any other file, a cuMemAlloc memfd, a
 * GPU this process does not see). The real driver imports only its own
 * exported handles, with their device; nothing in it can be fooled by a
 * file of the right size. */
static int vmm_fd_device(int fd) {
        char link[64], target[128];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
                return -1;
        target[n] = 0;
        static const char prefix[] = "/memfd:" VMM_MEMFD_PREFIX;
        if (strncmp(target, prefix, sizeof prefix - 1) != 0)
                return -1;
        char *end;
        long gpu = strtol(target + sizeof prefix - 1, &end, 10);
        if (end == target + sizeof prefix - 1 || strcmp(end, " (deleted)") != 0)
                return -1;
        for (int dev = 0; dev < fake.device_count; dev++)
                if (fake.physical[dev] == gpu)
                        return dev;
        return -1;
}

FAKE_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                                 unsigned long long flags) {
        FAKE_GATE();
        VMM_COUNT(VMM_CREATE);
        FAKE_REQUIRE_INIT_ARGS(!handle || !valid_prop(prop) || size == 0 || size % GRAN || flags);
        fake_lock();
        if (fake.mem_used[prop->location.id] + size > fake.mem_total) {
                fake_unlock();
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        /* The name marks the memory as this driver's VMM allocation of one
     * physical GPU: import accepts nothing else (see there). */
        char name[48];
        snprintf(name, sizeof name, "%s%d", VMM_MEMFD_PREFIX, fake.physical[prop->location.id]);
        int fd = memfd_create(name, MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
                if (fd >= 0)
                        close(fd);
                fake_unlock();
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        FakePhys *ph = phys_new_locked(fd, size, prop, true);
        if (ph)
                *handle = ph->handle;
        else
                close(fd);
        fake_unlock();
        return ph ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

FAKE_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
        FAKE_GATE();
        VMM_COUNT(VMM_RELEASE);
        FAKE_REQUIRE_INIT();
        fake_lock();
        FakePhys *ph = phys_find_locked(handle);
        if (ph) {
                ph->handle_refs--;
                phys_maybe_free_locked(ph);
        }
        fake_unlock();
        return ph ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FAKE_EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                         unsigned long long flags) {
        FAKE_GATE();
        VMM_COUNT(VMM_RESERVE);
        FAKE_REQUIRE_INIT_ARGS(!ptr || size == 0 || size % GRAN || (alignment & (alignment - 1)));
        if (alignment < GRAN)
                alignment = GRAN;
        const int mflags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
        char *base = MAP_FAILED;
        if (addr && addr % alignment == 0) { /* the address is a hint, honoured when free */
                base = mmap((void *)(uintptr_t)addr, size, PROT_NONE, mflags | MAP_FIXED_NOREPLACE, -1, 0);
                if (base != MAP_FAILED && base != (char *)(uintptr_t)addr) {
                        munmap(base, size);
                        base = MAP_FAILED;
                }
        }
        if (base == MAP_FAILED) {
                char *raw = mmap(NULL, size + alignment, PROT_NONE, mflags, -1, 0);
                if (raw == MAP_FAILED)
                        return CUDA_ERROR_OUT_OF_MEMORY;
                base = (char *)(((uintptr_t)raw + alignment - 1) & ~(uintptr_t)(alignment - 1));
                if (base > raw)
                        munmap(raw, (size_t)(base - raw));
                size_t tail = (size_t)(raw + size + alignment - (base + size));
                if (tail)
                        munmap(base + size, tail);
        }
        FakeReservation *r = calloc(1, sizeof *r);
        if (!r) {
                munmap(base, size);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        r->base = (uintptr_t)base;
        r->size = size;
        fake_lock();
        r->next = fake.reservations;
        fake.reservations = r;
        fake_unlock();
        *ptr = (CUdeviceptr)r->base;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
        FAKE_GATE();
        VMM_COUNT(VMM_FREE);
        FAKE_REQUIRE_INIT();
        fake_lock();
        for (FakeReservation **p = &fake.reservations; *p; p = &(*p)->next) {
                FakeReservation *r = *p;
                if (r->base != (uintptr_t)ptr || r->size != size)
                        continue;
                for (FakeMapping *m = fake.mappings; m; m = m->next) {
                        if (m->base >= r->base && m->base < r->base + r->size) {
                                fake_unlock();
                                return CUDA_ERROR_INVALID_VALUE; /* still mapped: unmap first */
                        }
                }
                *p = r->next;
                munmap((void *)r->base, r->size);
                free(r);
                fake_unlock();
                return CUDA_SUCCESS;
        }
        fake_unlock();
        return CUDA_ERROR_INVALID_VALUE;
}

FAKE_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                              unsigned long long flags) {
        FAKE_GATE();
        VMM_COUNT(VMM_MAP);
        FAKE_REQUIRE_INIT();
        if (fake.map_ms) {
                const char *mark = getenv("SAGE_FAKE_MAP_MARK");
                int fd = mark && *mark ? open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0600) : -1;
                if (fd >= 0)
                        close(fd);
                fake_sleep_ms(fake.map_ms);
        }
        uintptr_t p = (uintptr_t)ptr;
        if (flags || size == 0 || p % GRAN || size % GRAN || offset % GRAN)
                return CUDA_ERROR_INVALID_VALUE;
        fake_lock();
        FakePhys *ph = phys_find_locked(handle);
        CUresult r = CUDA_ERROR_INVALID_VALUE;
        if (!ph || offset > ph->size || size > ph->size - offset || !reservation_find_locked(p, size))
                goto out;
        for (FakeMapping *m = fake.mappings; m; m = m->next)
                if (p < m->base + m->size && m->base < p + size)
                        goto out;
        FakeMapping *m = calloc(1, sizeof *m);
        if (!m) {
                r = CUDA_ERROR_OUT_OF_MEMORY;
                goto out;
        }
        if (mmap((void *)p, size, PROT_NONE, MAP_SHARED | MAP_FIXED, ph->fd, (off_t)offset) == MAP_FAILED) {
                free(m);
                r = CUDA_ERROR_OUT_OF_MEMORY;
                goto out;
        }
        *m = (FakeMapping){ .base = p,
                            .size = size,
                            .phys = ph,
                            .offset = offset,
                            .prot = PROT_NONE,
                            .map_id = fake.next_id++,
                            .map_base = p,
                            .map_size = size };
        m->next = fake.mappings;
        fake.mappings = m;
        ph->map_refs++;
        r = CUDA_SUCCESS;
out:
        fake_unlock();
        return r;
}

FAKE_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
        FAKE_GATE();
        VMM_COUNT(VMM_UNMAP);
        FAKE_REQUIRE_INIT();
        uintptr_t p = (uintptr_t)ptr;
        if (size == 0)
                return CUDA_ERROR_INVALID_VALUE;
        /* Unmapping does not wait for the GPU: queued work still using the range faults. */
        fake_queue_unmapping(p, size);
        fake_lock();
        bool any = false;
        /* Whole mappings only: every cuMemMap touched must lie inside the range. */
        for (FakeMapping *m = fake.mappings; m; m = m->next) {
                if (p < m->base + m->size && m->base < p + size) {
                        any = true;
                        if (m->map_base < p || m->map_base + m->map_size > p + size) {
                                fake_unlock();
                                return CUDA_ERROR_INVALID_VALUE;
                        }
                }
        }
        if (!any) {
                fake_unlock();
                return CUDA_ERROR_INVALID_VALUE;
        }
        for (FakeMapping **pm = &fake.mappings; *pm;) {
                FakeMapping *m = *pm;
                if (m->base >= p && m->base < p + size) {
                        *pm = m->next;
                        /* Put the reservation's PROT_NONE placeholder back. */
                        mmap((void *)m->base, m->size, PROT_NONE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
                        m->phys->map_refs--;
                        phys_maybe_free_locked(m->phys);
                        free(m);
                } else {
                        pm = &m->next;
                }
        }
        fake_unlock();
        return CUDA_SUCCESS;
}

/* Cut the mapping record that strictly contains `at` in two. */
static bool split_at_locked(uintptr_t at) {
        FakeMapping *m = fake_mapping_find_locked(at);
        if (!m || m->base == at)
                return true;
        FakeMapping *tail = malloc(sizeof *tail);
        if (!tail)
                return false;
        *tail = *m;
        tail->base = at;
        tail->size = m->base + m->size - at;
        tail->offset = m->offset + (at - m->base);
        m->size = at - m->base;
        tail->next = m->next;
        m->next = tail;
        m->phys->map_refs++;
        return true;
}

/*
 * Access for a GPU other than the one the physical memory lies on is a peer
 * mapping: the real driver grants it only where that GPU can access its
 * peer's memory (CUDA Programming Guide, "Virtual Memory Management":
 * access to a peer's allocation is granted per device with cuMemSetAccess,
 * subject to cuDeviceCanAccessPeer). The simulated GPUs are a node without
 * peer access, so such a grant fails with CUDA_ERROR_INVALID_DEVICE (the
 * code is assumed, not measured: tests/gpu/two_gpus.sh measures it).
 */
FAKE_EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count) {
        FAKE_GATE();
        VMM_COUNT(VMM_ACCESS);
        FAKE_REQUIRE_INIT();
        uintptr_t p = (uintptr_t)ptr;
        if (!desc || count == 0 || size == 0)
                return CUDA_ERROR_INVALID_VALUE;
        int prot = PROT_NONE;
        for (size_t i = 0; i < count; i++) {
                if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE || desc[i].location.id < 0 ||
                    desc[i].location.id >= fake.device_count)
                        return CUDA_ERROR_INVALID_DEVICE;
                switch (desc[i].flags) {
                case CU_MEM_ACCESS_FLAGS_PROT_READWRITE: prot |= PROT_READ | PROT_WRITE; break;
                case CU_MEM_ACCESS_FLAGS_PROT_READ: prot |= PROT_READ; break;
                case CU_MEM_ACCESS_FLAGS_PROT_NONE: break;
                default: return CUDA_ERROR_INVALID_VALUE;
                }
        }
        fake_lock();
        /* The whole range must be mapped, and only by memory of the GPUs given access (see above). */
        for (uintptr_t at = p; at < p + size;) {
                FakeMapping *m = fake_mapping_find_locked(at);
                if (!m) {
                        fake_unlock();
                        return CUDA_ERROR_INVALID_VALUE;
                }
                for (size_t i = 0; i < count; i++)
                        if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE &&
                            desc[i].location.id != m->phys->prop.location.id) {
                                fake_unlock();
                                return CUDA_ERROR_INVALID_DEVICE;
                        }
                at = m->base + m->size;
        }
        if (!split_at_locked(p) || !split_at_locked(p + size)) {
                fake_unlock();
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        CUresult r = CUDA_SUCCESS;
        for (FakeMapping *m = fake.mappings; m; m = m->next) {
                if (m->base >= p && m->base < p + size) {
                        if (mprotect((void *)m->base, m->size, prot) != 0)
                                r = CUDA_ERROR_INVALID_VALUE;
                        else
                                m->prot = prot;
                }
        }
        fake_unlock();
        return r;
}

FAKE_EXPORT CUresult cuMemGetAccess(unsigned long long *flags, const CUmemLocation *location, CUdeviceptr ptr) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!flags || !location);
        fake_lock();
        FakeMapping *m = fake_mapping_find_locked((uintptr_t)ptr);
        int prot = m ? m->prot : -1;
        fake_unlock();
        if (prot < 0)
                return CUDA_ERROR_INVALID_VALUE;
        *flags = (prot & PROT_WRITE)  ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                 : (prot & PROT_READ) ? CU_MEM_ACCESS_FLAGS_PROT_READ
                                      : CU_MEM_ACCESS_FLAGS_PROT_NONE;
        return CUDA_SUCCESS;
}

/* SAGE_FAKE_EXPORT_LOG: one line (the pid) per export, so a test counts a process's driver exports. */
static void log_export(void) {
        const char *path = getenv("SAGE_FAKE_EXPORT_LOG");
        int fd = path && *path ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : -1;

        if (fd >= 0) {
                dprintf(fd, "%d\n", (int)getpid());
                close(fd);
        }
}

FAKE_EXPORT CUresult cuMemExportToShareableHandle(void *shareableHandle, CUmemGenericAllocationHandle handle,
                                                  CUmemAllocationHandleType handleType, unsigned long long flags) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!shareableHandle || flags);
        if (handleType != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
                return CUDA_ERROR_NOT_SUPPORTED;
        fake_lock();
        FakePhys *ph = phys_find_locked(handle);
        int fd = -1;
        CUresult r = CUDA_ERROR_INVALID_VALUE;
        if (ph && (ph->prop.requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)) {
                fd = dup(ph->fd);
                r = fd >= 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
        }
        fake_unlock();
        if (r == CUDA_SUCCESS) {
                *(int *)shareableHandle = fd;
                log_export();
        }
        return r;
}

FAKE_EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle, void *osHandle,
                                                    CUmemAllocationHandleType shHandleType) {
        FAKE_GATE();
        VMM_COUNT(VMM_IMPORT);
        FAKE_REQUIRE_INIT_ARGS(!handle);
        if (fake.import_ms)
                fake_sleep_ms(fake.import_ms);
        for (unsigned left = atomic_load(&fake.fail_imports); left;) /* one failure each, whichever thread */
                if (atomic_compare_exchange_weak(&fake.fail_imports, &left, left - 1))
                        return CUDA_ERROR_UNKNOWN;
        if (shHandleType != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
                return CUDA_ERROR_NOT_SUPPORTED;
        /* Any fd the driver did not export (a file, a memfd, /dev/null, a pipe, a closed fd) is refused
         * with CUDA_ERROR_UNKNOWN: measured on the H100, driver 580 (scripts/probes/driver_facts). */
        int fd = (int)(intptr_t)osHandle;
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0 || (size_t)st.st_size % GRAN)
                return CUDA_ERROR_UNKNOWN;
        int dev = vmm_fd_device(fd);
        if (dev < 0)
                return CUDA_ERROR_UNKNOWN;
        int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (own < 0)
                return CUDA_ERROR_OUT_OF_MEMORY;
        CUmemAllocationProp prop = {
                .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev },
        };
        fake_lock();
        FakePhys *ph = phys_new_locked(own, (size_t)st.st_size, &prop, false);
        if (ph)
                *handle = ph->handle;
        fake_unlock();
        if (!ph) {
                close(own);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
                                                            CUmemGenericAllocationHandle handle) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!prop);
        fake_lock();
        FakePhys *ph = phys_find_locked(handle);
        if (ph)
                *prop = ph->prop;
        fake_unlock();
        return ph ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FAKE_EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!handle);
        fake_lock();
        FakeMapping *m = fake_mapping_find_locked((uintptr_t)addr);
        if (m) {
                m->phys->handle_refs++;
                *handle = m->phys->handle;
        }
        fake_unlock();
        return m ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
