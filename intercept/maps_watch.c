/*
 * A generation count of the parts of the memory map share_key.c relies on
 * (the file mappings uploads came from), so that it can keep its parse of
 * /proc/self/maps until one of them changes: mmap (MAP_FIXED), munmap and
 * mremap are interposed (the public symbols; glibc's own internal calls
 * create and drop anonymous memory only) and go to the kernel as the
 * syscalls they are; one that touches a watched range moves the count. If another preload (a sanitizer) answers for these names first, the
 * count never moves and sage_maps_watch_active() says so: the parse is then
 * not kept.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "driver.h"
#include "maps_watch.h"
#include "util.h"

/* Only the interposers below move it; readers go through the accessors. */
static atomic_ulong generation = 1;

/* The ranges share_key.c relies on: a change there moves the generation. */
#define MAX_WATCHED 32
static _Atomic uintptr_t watch_lo[MAX_WATCHED], watch_hi[MAX_WATCHED];
static atomic_uint nwatched;

static bool overlaps_watched(uintptr_t lo, uintptr_t hi) {
        unsigned n = atomic_load_explicit(&nwatched, memory_order_acquire);

        for (unsigned i = 0; i < n && i < MAX_WATCHED; i++)
                if (lo < atomic_load_explicit(&watch_hi[i], memory_order_relaxed) &&
                    atomic_load_explicit(&watch_lo[i], memory_order_relaxed) < hi)
                        return true;
        return false;
}

static void changed(const void *addr, size_t len) {
        uintptr_t lo = (uintptr_t)addr;

        if (overlaps_watched(lo, lo + len < lo ? UINTPTR_MAX : lo + len))
                atomic_fetch_add_explicit(&generation, 1, memory_order_release);
}

unsigned long sage_maps_generation_now(void) {
        return atomic_load_explicit(&generation, memory_order_acquire);
}

const atomic_ulong *sage_maps_generation_counter(void) {
        return &generation;
}

bool sage_maps_watched(uintptr_t lo, uintptr_t hi) {
        unsigned n = atomic_load_explicit(&nwatched, memory_order_acquire);

        for (unsigned i = 0; i < n && i < MAX_WATCHED; i++)
                if (atomic_load_explicit(&watch_lo[i], memory_order_relaxed) <= lo &&
                    hi <= atomic_load_explicit(&watch_hi[i], memory_order_relaxed))
                        return true;
        return false;
}

bool sage_maps_watch(uintptr_t lo, uintptr_t hi) {
        unsigned n = atomic_load_explicit(&nwatched, memory_order_acquire);

        if (sage_maps_watched(lo, hi))
                return true;
        if (n >= MAX_WATCHED)
                return false;
        atomic_store_explicit(&watch_lo[n], lo, memory_order_relaxed);
        atomic_store_explicit(&watch_hi[n], hi, memory_order_relaxed);
        atomic_store_explicit(&nwatched, n + 1, memory_order_release); /* callers are serialized */
        return true;
}

SAGE_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
SAGE_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);
SAGE_EXPORT int munmap(void *addr, size_t len);
SAGE_EXPORT void *mremap(void *old, size_t old_size, size_t new_size, int flags, ...);

/* A new mapping replaces nothing unless it is MAP_FIXED (0x10). */
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
        if (flags & 0x10)
                changed(addr, len);
        return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
        return mmap(addr, len, prot, flags, fd, off);
}

int munmap(void *addr, size_t len) {
        changed(addr, len);
        return (int)syscall(SYS_munmap, addr, len);
}

void *mremap(void *old, size_t old_size, size_t new_size, int flags, ...) {
        void *new_address = NULL;
        va_list ap;

        if (flags & 2 /* MREMAP_FIXED */) {
                va_start(ap, flags);
                new_address = va_arg(ap, void *);
                va_end(ap);
                changed(new_address, new_size);
        }
        changed(old, old_size > new_size ? old_size : new_size);
        return (void *)syscall(SYS_mremap, old, old_size, new_size, flags, new_address);
}

bool sage_maps_watch_active(void) {
        static int active; /* 0 unknown, 1 yes, -1 no; a benign race */

        if (!active) {
                void *m = sage_real_dlsym(RTLD_DEFAULT, "mmap"), *u = sage_real_dlsym(RTLD_DEFAULT, "munmap"),
                     *r = sage_real_dlsym(RTLD_DEFAULT, "mremap");
                active = m == SAGE_FN_CAST(void *, mmap) && u == SAGE_FN_CAST(void *, munmap) &&
                                         r == SAGE_FN_CAST(void *, mremap)
                                 ? 1
                                 : -1;
        }
        return active > 0;
}
