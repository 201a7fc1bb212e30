/* Small helpers every SAGE binary uses: cleanup attributes, clocks, sizes. */
#pragma once

#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define SAGE_EXPORT __attribute__((visibility("default")))
#define SAGE_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SAGE_LIKELY(x) __builtin_expect(!!(x), 1)
#define SAGE_UNLIKELY(x) __builtin_expect(!!(x), 0)

static inline void sage_freep(void *p) {
        free(*(void **)p);
}
static inline void sage_closep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}
#define _cleanup_free_ __attribute__((cleanup(sage_freep)))
#define _cleanup_close_ __attribute__((cleanup(sage_closep)))

/* Take ownership out of a cleanup variable. */
#define SAGE_TAKE_PTR(p)                \
        __extension__({                 \
                __typeof__(p) _t = (p); \
                (p) = NULL;             \
                _t;                     \
        })
#define SAGE_TAKE_FD(fd)       \
        __extension__({        \
                int _t = (fd); \
                (fd) = -1;     \
                _t;            \
        })

static inline uint64_t sage_clock_ns(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t sage_now_ns(void) {
        return sage_clock_ns(CLOCK_MONOTONIC);
}

/* A deadline for pthread_cond_timedwait (on the condition's clock, CLOCK_REALTIME unless set). */
static inline struct timespec sage_timespec_of_ns(uint64_t ns) {
        return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull) };
}

/* POSIX lets function and object pointers convert (dlsym); ISO C does not. */
#define SAGE_FN_CAST(type, p) (__extension__(type)(p))

/* For code that may run before a sanitizer runtime is initialised (the dlsym
 * path: ASan's own start-up calls dlsym, which is ours). */
#define SAGE_NO_SANITIZE __attribute__((no_sanitize("address", "undefined")))
