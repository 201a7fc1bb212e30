/*
 * A generation count of the process's memory map, so that share_key.c can
 * keep its parse of /proc/self/maps until the map changes: mmap, munmap and
 * mremap are interposed (the public symbols; glibc's own internal calls
 * create anonymous memory only) and go to the kernel as the syscalls they
 * are. If another preload (a sanitizer) answers for these names first, the
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

atomic_ulong sage_maps_generation = 1;

SAGE_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
SAGE_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);
SAGE_EXPORT int munmap(void *addr, size_t len);
SAGE_EXPORT void *mremap(void *old, size_t old_size, size_t new_size, int flags, ...);

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
        atomic_fetch_add_explicit(&sage_maps_generation, 1, memory_order_relaxed);
        return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
        return mmap(addr, len, prot, flags, fd, off);
}

int munmap(void *addr, size_t len) {
        atomic_fetch_add_explicit(&sage_maps_generation, 1, memory_order_relaxed);
        return (int)syscall(SYS_munmap, addr, len);
}

void *mremap(void *old, size_t old_size, size_t new_size, int flags, ...) {
        void *new_address = NULL;
        va_list ap;

        if (flags & 2 /* MREMAP_FIXED */) {
                va_start(ap, flags);
                new_address = va_arg(ap, void *);
                va_end(ap);
        }
        atomic_fetch_add_explicit(&sage_maps_generation, 1, memory_order_relaxed);
        return (void *)syscall(SYS_mremap, old, old_size, new_size, flags, new_address);
}

bool sage_maps_watch_active(void) {
        static int active; /* 0 unknown, 1 yes, -1 no; a benign race */

        if (!active) {
                void *m = sage_real_dlsym(RTLD_DEFAULT, "mmap"), *u = sage_real_dlsym(RTLD_DEFAULT, "munmap"),
                     *r = sage_real_dlsym(RTLD_DEFAULT, "mremap");
                active = m == SAGE_FN_CAST(void *, mmap) && u == SAGE_FN_CAST(void *, munmap) && r == SAGE_FN_CAST(void *, mremap) ? 1 : -1;
        }
        return active > 0;
}
