/*
 * Which loaded object a function pointer points into (interpose.c,
 * tramp_test.c): the routing tests tell libsage's hooks from the driver's
 * own entry points by it.
 */
#pragma once

#include <dlfcn.h>
#include <stdbool.h>
#include <string.h>

/* The file name (without folders) of the object holding fn, "?" if none. */
static inline const char *object_of(const void *fn) {
        Dl_info info;
        const char *slash;

        if (!fn || !dladdr(fn, &info) || !info.dli_fname)
                return "?";
        slash = strrchr(info.dli_fname, '/');
        return slash ? slash + 1 : info.dli_fname;
}

static inline bool from_sage(const void *fn) {
        return strstr(object_of(fn), "libsage") != NULL;
}
