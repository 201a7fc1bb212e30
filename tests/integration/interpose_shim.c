/* A library beside the test program: it defines shim_value too, and asks
 * dlsym(RTLD_NEXT) from its own position — which must find nothing after it. */
#include <dlfcn.h>

__attribute__((visibility("default"))) int shim_value(void);
__attribute__((visibility("default"))) void *shim_lookup_next(const char *name);

int shim_value(void) {
        return 1;
}

void *shim_lookup_next(const char *name) {
        /* Not a tail call: glibc must see this library as the caller. */
        void *volatile fn = dlsym(RTLD_NEXT, name);
        return fn;
}
