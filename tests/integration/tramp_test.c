/*
 * Trampolines under libsage, against the simulated driver, reached as
 * cudart reaches the driver (dlopen + dlsym of cuGetProcAddress_v2, then
 * every entry point through it). Modes (SAGE_SUSPEND as the test sets it):
 *   on     an entry point libsage does not hook (cuDeviceGetName) comes back
 *          from cuGetProcAddress and from dlsym as one libsage trampoline that
 *          works; the fake's export table comes back as a copy whose
 *          functions are trampolines (checksum of every argument register
 *          intact) and whose data word is the driver's;
 *   off    the same calls answer the driver's own pointers and table;
 *   plain-tables  suspend on with SAGE_GATE_EXPORT_TABLES=0: trampolines for
 *          entry points, the driver's own table;
 *   count N  calls cuDeviceGetName N times (the trace counts them by name).
 */
#include <cuda.h>

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_object.h"
#include "fakecuda.h"
#include "util.h"

static int failures;

#define CHECK(cond)                                                                     \
        do {                                                                            \
                if (!(cond)) {                                                          \
                        fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
                        failures++;                                                     \
                }                                                                       \
        } while (0)

typedef CUresult (*get_proc_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*get_name_t)(char *, int, CUdevice);
typedef CUresult (*get_table_t)(const void **, const CUuuid *);

static bool from_driver(const void *fn) {
        return strstr(object_of(fn), "libcuda") != NULL;
}

static void *proc(get_proc_t get_proc, const char *name, cuuint64_t flags) {
        CUdriverProcAddressQueryResult status;
        void *fn = NULL;

        CHECK(get_proc(name, &fn, 12000, flags, &status) == CUDA_SUCCESS && fn);
        return fn;
}

static double checksum_call(const FakecudaExportTable *t) {
        return t->checksum(1, -2, 3, 4000000000L, 5, 6, 0.5, 1.25, -2.5, 3.75, 1e10, -1e-3, 7.0, 8.5, -9);
}

int main(int argc, char **argv) {
        const char *mode = argc > 1 ? argv[1] : "on";
        bool on = strcmp(mode, "on") == 0, plain_tables = strcmp(mode, "plain-tables") == 0;
        void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        const FakecudaExportTable *(*driver_table)(void);
        CUuuid id = { FAKECUDA_EXPORT_TABLE_ID };
        const FakecudaExportTable *table = NULL, *again = NULL, *own;
        get_proc_t get_proc;
        get_name_t get_name, get_name_pt, get_name_dlsym;
        get_table_t get_table;
        char name[64] = "";
        void *p;
        int count = -1;

        if (!cuda) {
                fprintf(stderr, "cannot open libcuda.so.1: %s\n", dlerror());
                return 1;
        }
        p = dlsym(cuda, "cuGetProcAddress_v2");
        get_proc = SAGE_FN_CAST(get_proc_t, p);
        p = dlsym(cuda, "fakecudaExportTable"); /* no driver name: glibc answers it */
        driver_table = SAGE_FN_CAST(const FakecudaExportTable *(*)(void), p);
        if (!get_proc || !driver_table)
                return 1;
        CHECK(SAGE_FN_CAST(CUresult(*)(unsigned), proc(get_proc, "cuInit", 0))(0) == CUDA_SUCCESS);

        p = proc(get_proc, "cuDeviceGetName", 0);
        get_name = SAGE_FN_CAST(get_name_t, p);
        if (strcmp(mode, "count") == 0) {
                int n = argc > 2 ? atoi(argv[2]) : 1;
                for (int i = 0; i < n; i++)
                        CHECK(get_name(name, sizeof(name), 0) == CUDA_SUCCESS);
                return failures ? 1 : 0;
        }
        CHECK(get_name(name, sizeof(name), 0) == CUDA_SUCCESS && strcmp(name, "SAGE simulated GPU") == 0);
        get_name_pt = SAGE_FN_CAST(get_name_t,
                                   proc(get_proc, "cuDeviceGetName", CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM));
        get_name_dlsym = SAGE_FN_CAST(get_name_t, dlsym(cuda, "cuDeviceGetName"));
        /* One entry point, one pointer, whichever way it was asked for. */
        CHECK(get_name_pt == get_name && get_name_dlsym == get_name);
        if (on || plain_tables)
                CHECK(from_sage(SAGE_FN_CAST(void *, get_name)));
        else
                CHECK(from_driver(SAGE_FN_CAST(void *, get_name)));
        memset(name, 0, sizeof(name));
        CHECK(get_name_dlsym(name, sizeof(name), 0) == CUDA_SUCCESS && strcmp(name, "SAGE simulated GPU") == 0);
        /* A hooked entry point stays the hook (the trampolines are only for the others). */
        CHECK(from_sage(proc(get_proc, "cuMemAlloc", 0)));

        get_table = SAGE_FN_CAST(get_table_t, proc(get_proc, "cuGetExportTable", 0));
        CHECK(get_table((const void **)&table, &id) == CUDA_SUCCESS && table);
        CHECK(get_table((const void **)&again, &id) == CUDA_SUCCESS && again == table);
        own = driver_table();
        if (!table)
                return 1;
        CHECK(table->size == own->size && table->data == own->data && *table->data == 0x5a6e);
        CHECK(checksum_call(table) == checksum_call(own));
        CHECK(table->device_count(&count) == CUDA_SUCCESS && count == 1);
        if (on) {
                CHECK(table != own);
                CHECK(from_sage(SAGE_FN_CAST(void *, table->checksum)));
                CHECK(from_sage(SAGE_FN_CAST(void *, table->device_count)));
        } else {
                CHECK(table == own);
        }
        printf("tramp-test %s: %s\n", mode, failures ? "FAILED" : "ok");
        return failures ? 1 : 0;
}
