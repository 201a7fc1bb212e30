/* fake_procaddr.c: cuGetProcAddress and cuGetProcAddress_v2.
 *
 * cudart (static or shared) finds every driver entry point through here, by
 * base name plus the CUDA version it was built for, once with flags 0 and
 * once with the per-thread-default-stream flag. The answers come from a
 * static table (fake_procaddr.def) of function pointers, never from dlsym:
 * the SAGE interposer replaces dlsym in the process, and it routes the
 * pointers returned here by identity, so they must be exactly the exported
 * symbols' addresses (inside a shared object, taking the address of a
 * default-visibility function yields its canonical, GOT-resolved address,
 * the same one dlsym returns).
 */
#include "fake_internal.h"

#include <string.h>

typedef void (*FakeProcFn)(void);

typedef struct FakeProcEntry {
        const char *name;
        int version;
        FakeProcFn fn, fn_per_thread;
} FakeProcEntry;

static const FakeProcEntry proc_table[] = {
#define FAKE_PROC(name, version, fn, fn_pt) { name, version, (FakeProcFn)fn, (FakeProcFn)fn_pt },
#include "fake_procaddr.def"
#undef FAKE_PROC
};

static CUresult lookup(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                       CUdriverProcAddressQueryResult *status) {
        if (!symbol || !pfn)
                return CUDA_ERROR_INVALID_VALUE;
        const FakeProcEntry *best = NULL;
        bool known = false;
        for (size_t i = 0; i < sizeof proc_table / sizeof proc_table[0]; i++) {
                const FakeProcEntry *e = &proc_table[i];
                if (strcmp(e->name, symbol) != 0)
                        continue;
                known = true;
                if (e->version <= cudaVersion && (!best || e->version > best->version))
                        best = e;
        }
        *pfn = NULL;
        if (!best) {
                if (status)
                        *status = known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                                        : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
                return CUDA_ERROR_NOT_FOUND;
        }
        FakeProcFn fn = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ? best->fn_per_thread : best->fn;
        /* ISO C has no function-to-object pointer conversion; copy the bits. */
        memcpy(pfn, &fn, sizeof fn);
        if (status)
                *status = CU_GET_PROC_ADDRESS_SUCCESS;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult *symbolStatus) {
        return lookup(symbol, pfn, cudaVersion, flags, symbolStatus);
}

FAKE_EXPORT CUresult fake_cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags) {
        return lookup(symbol, pfn, cudaVersion, flags, NULL);
}
