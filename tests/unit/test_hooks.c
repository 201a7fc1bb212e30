/*
 * The hook layer (intercept/hooks.c, symbols.c) without a driver: the real
 * entry points are functions of this file, put in the driver table by hand,
 * and every IMPL hook's logic forwards to them. Checked: the declared facts
 * (hooks.def) against the naming the driver follows, the facts a hook
 * computes for its observers, the observers' order, and that nothing is
 * observed when nothing is on or a hook is re-entered.
 */
#include <string.h>

#include "../../intercept/driver.h"
#include "../../intercept/hooks.h"
#include "check.h"

/* ---------------------------------------------------------------- a driver of our own */

SageDriver sage_driver = { .loaded = true };
static int driver_handle_dummy;

bool sage_driver_load(void) {
        return true;
}

void *sage_driver_handle(void) {
        return &driver_handle_dummy;
}

/* Every IMPL hook's logic: the plain driver path. Names are pasted here, as in
 * hooks.h: cuda.h #defines some of them (cuGetProcAddress). */
#define SAGE_IMPL_PASS(fn, type, params, fwd)
#define SAGE_IMPL_IMPL(fn, type, params, fwd)         \
        CUresult fn(type real, SAGE_UNPAREN params) { \
                return real fwd;                      \
        }
#define SAGE_HOOK(name, cat, kind, params, fwd, a0, a1, a2, w, st, res) \
        SAGE_IMPL_##kind(sage_impl_##name, sage_fn_##name##_t, params, fwd)
#include "../../intercept/hooks.def"
#undef SAGE_HOOK

static int real_calls;
static CUdeviceptr next_alloc = 0x10000;
static bool activate_during_call;

static CUresult real_alloc(CUdeviceptr *dptr, size_t bytes) {
        real_calls++;
        if (!bytes)
                return CUDA_ERROR_INVALID_VALUE;
        *dptr = next_alloc;
        next_alloc += 0x10000;
        if (activate_during_call)
                sage_hooks_activate(SAGE_OBSERVER_REDIRECT);
        return CUDA_SUCCESS;
}

static CUresult real_free(CUdeviceptr dptr) {
        real_calls++;
        return CUDA_SUCCESS;
}

static CUresult real_memset32_async(CUdeviceptr d, unsigned v, size_t n, CUstream s) {
        real_calls++;
        return CUDA_SUCCESS;
}

static CUresult real_launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned shared, CUstream s, void **params, void **extra) {
        real_calls++;
        return CUDA_SUCCESS;
}

static CUresult real_dtoh(void *dst, CUdeviceptr src, size_t n) {
        real_calls++;
        return CUDA_SUCCESS;
}

#define HOOK(name) SAGE_FN_CAST(sage_fn_##name##_t, sage_hook_table[SAGE_SYM_##name])
static CUresult real_copy2d(const CUDA_MEMCPY2D *c, CUstream s) {
        (void)c;
        (void)s;
        real_calls++;
        return CUDA_SUCCESS;
}

#define SET_REAL(name, fn) (sage_driver.real[SAGE_SYM_##name] = SAGE_FN_CAST(void *, (sage_fn_##name##_t)(fn)))

/* ---------------------------------------------------------------- observers that take notes */

static char order[64];
static SageCall seen_before, seen_after;
static int befores, afters;

static void note(char c) {
        size_t n = strlen(order);
        if (n + 1 < sizeof(order))
                order[n] = c, order[n + 1] = 0;
}

static void before0(SageCall *c) {
        note('a');
        seen_before = *c;
        befores++;
}
static void after0(SageCall *c) {
        note('A');
        seen_after = *c;
        afters++;
}
static void before1(SageCall *c) {
        note('b');
}
static void after1(SageCall *c) {
        note('B');
}
static void after2(SageCall *c) {
        note('C');
}

/* An observer that calls the driver through an exported entry point. */
static void before_reentering(SageCall *c) {
        CUdeviceptr p;
        note('r');
        CHECK(HOOK(cuMemAlloc_v2)(&p, 64) == CUDA_SUCCESS);
}

static const SageObserver observer0 = { .before = before0, .after = after0 };
static const SageObserver observer1 = { .before = before1, .after = after1 };
static const SageObserver observer2 = { .after = after2 };
static const SageObserver reentering = { .before = before_reentering, .after = after2 };

static void reset_notes(void) {
        order[0] = 0;
        befores = afters = 0;
        memset(&seen_before, 0, sizeof(seen_before));
        memset(&seen_after, 0, sizeof(seen_after));
}

/* ---------------------------------------------------------------- the declarations */

static bool ends_with(const char *s, const char *tail) {
        size_t n = strlen(s), k = strlen(tail);
        return n >= k && strcmp(s + n - k, tail) == 0;
}

static bool starts_with(const char *s, const char *head) {
        return strncmp(s, head, strlen(head)) == 0;
}

static void declarations(void) {
        int creates[SAGE_RESOURCE_COUNT] = { 0 }, destroys[SAGE_RESOURCE_COUNT] = { 0 }, tracked = 0;

        for (int i = 0; i < SAGE_SYM_COUNT; i++) {
                const SageSymInfo *s = &sage_sym_info[i];
                bool per_thread = ends_with(s->name, "_ptsz") || ends_with(s->name, "_ptds");

                /* The per-thread forms, and only they, resolve a 0 stream to the per-thread one. */
                CHECK((s->stream == SAGE_STREAM_PER_THREAD) == per_thread ||
                      (!per_thread && s->stream != SAGE_STREAM_PER_THREAD));
                if (per_thread)
                        CHECK(s->stream == SAGE_STREAM_PER_THREAD);
                if (strstr(s->name, "Async") || s->category == SAGE_CAT_LAUNCH || s->category == SAGE_CAT_GRAPH)
                        CHECK(s->stream != SAGE_STREAM_NONE);
                /* Kernels and graphs may write anything: what sharing used to guess from names. */
                if (s->category == SAGE_CAT_LAUNCH || s->category == SAGE_CAT_GRAPH)
                        CHECK(s->writes == SAGE_WRITES_UNKNOWN);
                /* Pitched copies: computed from their descriptor, per call. */
                /* Batches: IMPLs that guard each write themselves (share_reach.c); anything may change. */
                else if (strstr(s->name, "Batch"))
                        CHECK(s->writes == SAGE_WRITES_UNKNOWN && s->impl);
                else if (strstr(s->name, "2D") || strstr(s->name, "3D"))
                        CHECK(s->writes == SAGE_WRITES_PITCHED);
                else if (starts_with(s->name, "cuMemset") || starts_with(s->name, "cuMemcpyHtoD") ||
                         starts_with(s->name, "cuMemcpyDtoD") || starts_with(s->name, "cuMemcpyPeer") ||
                         starts_with(s->name, "cuMemcpyAtoD") || strcmp(s->name, "cuMemcpy") == 0 ||
                         starts_with(s->name, "cuMemcpy_") || starts_with(s->name, "cuMemcpyAsync") ||
                         starts_with(s->name, "cuStreamWriteValue"))
                        CHECK(s->writes == SAGE_WRITES_RANGE);
                else
                        CHECK(s->writes == SAGE_WRITES_NONE);
                CHECK(s->writes == SAGE_WRITES_NONE || s->category == SAGE_CAT_COPY || s->category == SAGE_CAT_LAUNCH ||
                      s->category == SAGE_CAT_GRAPH);
                CHECK((s->resource_op == SAGE_RESOURCE_KEEPS) == (s->resource == SAGE_RESOURCE_NONE));
                if (s->resource_op == SAGE_RESOURCE_CREATES)
                        creates[s->resource]++;
                if (s->resource_op == SAGE_RESOURCE_DESTROYS)
                        destroys[s->resource]++;
                tracked += s->resource_op != SAGE_RESOURCE_KEEPS;
        }
        /* Whatever can be created can be destroyed: the redirect frees what it attributed. */
        for (int r = 1; r < SAGE_RESOURCE_COUNT; r++)
                CHECK(creates[r] > 0 && destroys[r] > 0);
        /* What the redirect tracked before the facts moved here (track.def had 20 lines). */
        CHECK(tracked == 20);
        CHECK(sage_sym_info[SAGE_SYM_cuMemAlloc_v2].resource == SAGE_RESOURCE_DEVICE_MEMORY);
        CHECK(sage_sym_info[SAGE_SYM_cuIpcOpenMemHandle_v2].resource_op == SAGE_RESOURCE_CREATES);
        CHECK(sage_sym_info[SAGE_SYM_cuEventDestroy_v2].resource_op == SAGE_RESOURCE_DESTROYS);
        CHECK(!sage_sym_writes_unknown(SAGE_SYM_cuMemcpy2DAsync_v2_ptsz));
        CHECK(sage_sym_writes_unknown(SAGE_SYM_cuLaunchKernel));
        CHECK(sage_sym_info[SAGE_SYM_cuMemsetD8_v2].impl && !sage_sym_info[SAGE_SYM_cuMemcpy3D_v2].impl);
        CHECK(!sage_sym_writes_unknown(SAGE_SYM_cuMemcpyDtoH_v2));
}

/* ---------------------------------------------------------------- pitched writes */

static bool range_is(SageWriteRange w, uint64_t dst, uint64_t bytes) {
        return w.writes == SAGE_WRITES_RANGE && w.dst == dst && w.bytes == bytes;
}

/* The destination of a pitched copy or set: first byte written to last, from the descriptor. */
static void pitched_ranges(void) {
        CUDA_MEMCPY2D c2 = { .dstMemoryType = CU_MEMORYTYPE_DEVICE,
                             .dstDevice = 0x100000,
                             .dstXInBytes = 16,
                             .dstY = 3,
                             .dstPitch = 1024,
                             .WidthInBytes = 100,
                             .Height = 5 };
        CUDA_MEMCPY3D c3 = { .dstMemoryType = CU_MEMORYTYPE_DEVICE,
                             .dstDevice = 0x100000,
                             .dstXInBytes = 8,
                             .dstY = 2,
                             .dstZ = 1,
                             .dstPitch = 512,
                             .dstHeight = 10,
                             .WidthInBytes = 64,
                             .Height = 4,
                             .Depth = 3 };

        /* 2D: dstDevice + dstY * dstPitch + dstXInBytes, (Height - 1) * dstPitch + WidthInBytes. */
        CHECK(range_is(sage_write_copy2d(&c2), 0x100000 + 3 * 1024 + 16, 4 * 1024 + 100));
        c2.dstMemoryType = CU_MEMORYTYPE_UNIFIED; /* unified names device memory by dstDevice too */
        CHECK(range_is(sage_write_copy2d(&c2), 0x100000 + 3 * 1024 + 16, 4 * 1024 + 100));
        c2.Height = 1;
        CHECK(range_is(sage_write_copy2d(&c2), 0x100000 + 3 * 1024 + 16, 100));
        c2.Height = 0; /* nothing copied */
        CHECK(sage_write_copy2d(&c2).writes == SAGE_WRITES_NONE);
        c2.Height = 5;
        c2.dstMemoryType = CU_MEMORYTYPE_HOST;
        CHECK(sage_write_copy2d(&c2).writes == SAGE_WRITES_NONE);
        c2.dstMemoryType = CU_MEMORYTYPE_ARRAY;
        CHECK(sage_write_copy2d(&c2).writes == SAGE_WRITES_NONE);
        c2.dstMemoryType = (CUmemorytype)0x77; /* a type we do not know: anything */
        CHECK(sage_write_copy2d(&c2).writes == SAGE_WRITES_UNKNOWN);
        c2.dstMemoryType = CU_MEMORYTYPE_DEVICE;
        c2.dstPitch = UINT64_MAX / 2; /* overflows: where it lands is unknown, where it starts is said */
        CHECK(sage_write_copy2d(&c2).writes == SAGE_WRITES_UNKNOWN && sage_write_copy2d(&c2).dst == 0x100000);
        CHECK(sage_write_copy2d(NULL).writes == SAGE_WRITES_NONE);

        /* 3D: + dstZ * dstHeight * dstPitch; (Depth - 1) * dstHeight * dstPitch + (Height - 1) * dstPitch + Width. */
        CHECK(range_is(sage_write_copy3d(&c3), 0x100000 + (1 * 10 + 2) * 512 + 8, (2 * 10 + 3) * 512 + 64));
        c3.Depth = 1;
        CHECK(range_is(sage_write_copy3d(&c3), 0x100000 + (1 * 10 + 2) * 512 + 8, 3 * 512 + 64));
        c3.dstMemoryType = CU_MEMORYTYPE_HOST;
        CHECK(sage_write_copy3d(&c3).writes == SAGE_WRITES_NONE);

        /* memset2D: (Height - 1) * dstPitch + Width * elementSize. */
        CHECK(range_is(sage_write_set2d(0x200000, 256, 10, 4, 4), 0x200000, 3 * 256 + 40));
        CHECK(sage_write_set2d(0x200000, 256, 10, 0, 4).writes == SAGE_WRITES_NONE);
        CHECK(sage_write_set2d(0x200000, 256, SIZE_MAX, 2, 4).writes == SAGE_WRITES_UNKNOWN);
}

/* ---------------------------------------------------------------- the hooks */

static void hooks(void) {
        CUdeviceptr p = 0;
        int launch_arg = 7;
        void *params[] = { &launch_arg };
        CUstream stream = (CUstream)(uintptr_t)0x5000;

        SET_REAL(cuMemAlloc_v2, real_alloc);
        SET_REAL(cuMemFree_v2, real_free);
        SET_REAL(cuMemsetD32Async_ptsz, real_memset32_async);
        SET_REAL(cuLaunchKernel, real_launch);
        SET_REAL(cuMemcpyDtoH_v2, real_dtoh);
        SET_REAL(cuMemcpy2DAsync_v2_ptsz, real_copy2d);
        sage_hooks_register(SAGE_OBSERVER_TRACE, &observer0);
        sage_hooks_register(SAGE_OBSERVER_REDIRECT, &observer1);
        sage_hooks_register(SAGE_OBSERVER_SHARE, &observer2);

        /* Registered but off: the plain path, nobody called. */
        reset_notes();
        CHECK(HOOK(cuMemAlloc_v2)(&p, 4096) == CUDA_SUCCESS && p == 0x10000 && real_calls == 1);
        CHECK(order[0] == 0);

        /* All on: before from the highest slot down, after from the lowest up. */
        sage_hooks_activate(SAGE_OBSERVER_TRACE);
        sage_hooks_activate(SAGE_OBSERVER_REDIRECT);
        sage_hooks_activate(SAGE_OBSERVER_SHARE);
        CHECK(sage_hooks_active(SAGE_OBSERVER_SHARE));
        reset_notes();
        CHECK(HOOK(cuMemsetD32Async_ptsz)(0x20000, 1, 100, NULL) == CUDA_SUCCESS);
        CHECK(strcmp(order, "baABC") == 0);
        CHECK(seen_before.sym == SAGE_SYM_cuMemsetD32Async_ptsz && !seen_before.own);
        CHECK(seen_before.write_dst == 0x20000 && seen_before.write_bytes == 400);
        CHECK(seen_before.stream == CU_STREAM_PER_THREAD); /* _ptsz: 0 is the per-thread stream */
        CHECK(seen_after.result == CUDA_SUCCESS && seen_after.args[0] == 400 && seen_after.args[1] == 0x20000);

        /* A created resource is read after the call, and only when it succeeded. */
        sage_hooks_deactivate(SAGE_OBSERVER_REDIRECT);
        sage_hooks_deactivate(SAGE_OBSERVER_SHARE);
        reset_notes();
        CHECK(HOOK(cuMemAlloc_v2)(&p, 8192) == CUDA_SUCCESS);
        CHECK(strcmp(order, "aA") == 0);
        CHECK(seen_before.handle == 0 && seen_after.handle == p && p == 0x20000);
        reset_notes();
        CHECK(HOOK(cuMemAlloc_v2)(&p, 0) == CUDA_ERROR_INVALID_VALUE);
        CHECK(seen_after.result == CUDA_ERROR_INVALID_VALUE && seen_after.handle == 0);
        /* A destroyed one is known before. */
        reset_notes();
        CHECK(HOOK(cuMemFree_v2)(0x20000) == CUDA_SUCCESS);
        CHECK(seen_before.handle == 0x20000 && seen_after.handle == 0x20000);

        /* A launch writes what nobody can name; its stream is the one given. */
        reset_notes();
        CHECK(HOOK(cuLaunchKernel)(NULL, 2, 3, 1, 32, 1, 1, 0, stream, params, NULL) == CUDA_SUCCESS);
        CHECK(sage_sym_info[seen_before.sym].writes == SAGE_WRITES_UNKNOWN && seen_before.stream == stream);
        CHECK(seen_after.args[1] == 6);
        /* A device-to-host copy writes no device memory; a synchronous copy names stream 0. */
        reset_notes();
        CHECK(HOOK(cuMemcpyDtoH_v2)(&launch_arg, 0x30000, 4) == CUDA_SUCCESS);
        CHECK(sage_sym_info[seen_before.sym].writes == SAGE_WRITES_NONE && seen_before.stream == NULL);
        CHECK(seen_before.writes == SAGE_WRITES_NONE);
        /* A pitched copy: observers see the range its descriptor names, before the call. */
        reset_notes();
        {
                CUDA_MEMCPY2D c = { .dstMemoryType = CU_MEMORYTYPE_DEVICE,
                                    .dstDevice = 0x40000,
                                    .dstY = 2,
                                    .dstPitch = 4096,
                                    .WidthInBytes = 1000,
                                    .Height = 3 };
                CHECK(HOOK(cuMemcpy2DAsync_v2_ptsz)(&c, NULL) == CUDA_SUCCESS);
        }
        CHECK(seen_before.sym == SAGE_SYM_cuMemcpy2DAsync_v2_ptsz && seen_before.writes == SAGE_WRITES_RANGE);
        CHECK(seen_before.write_dst == 0x40000 + 2 * 4096 && seen_before.write_bytes == 2 * 4096 + 1000);
        CHECK(seen_before.stream == CU_STREAM_PER_THREAD);

        /* A feature the call itself turns on sees the call's end (sharing, a redirect do). */
        reset_notes();
        activate_during_call = true;
        CHECK(HOOK(cuMemAlloc_v2)(&p, 4096) == CUDA_SUCCESS);
        activate_during_call = false;
        CHECK(strcmp(order, "aAB") == 0);
        sage_hooks_deactivate(SAGE_OBSERVER_REDIRECT);

        /* Re-entered (libsage's own logic): straight to the driver, unobserved. */
        reset_notes();
        sage_hooks_enter();
        CHECK(HOOK(cuMemFree_v2)(p) == CUDA_SUCCESS);
        sage_hooks_leave();
        CHECK(order[0] == 0);

        /* libsage's own calls are reported after the fact, marked as its own. */
        reset_notes();
        sage_hooks_report(SAGE_SYM_cuInit, 123, CUDA_SUCCESS, 0, 0, 0);
        CHECK(strcmp(order, "A") == 0 && seen_after.own && seen_after.t0 == 123 && seen_after.sym == SAGE_SYM_cuInit);

        /* All off again: nothing observed. */
        sage_hooks_deactivate(SAGE_OBSERVER_TRACE);
        reset_notes();
        CHECK(HOOK(cuMemFree_v2)(p) == CUDA_SUCCESS);
        sage_hooks_report(SAGE_SYM_cuInit, 1, CUDA_SUCCESS, 0, 0, 0);
        CHECK(order[0] == 0 && befores == 0 && afters == 0);

        /* An observer's own driver calls go straight to the driver, unobserved. */
        sage_hooks_register(SAGE_OBSERVER_SHARE, &reentering);
        sage_hooks_activate(SAGE_OBSERVER_SHARE);
        reset_notes();
        real_calls = 0;
        CHECK(HOOK(cuMemFree_v2)(p) == CUDA_SUCCESS);
        CHECK(strcmp(order, "rC") == 0 && real_calls == 2);
        sage_hooks_deactivate(SAGE_OBSERVER_SHARE);

        /* A symbol the driver lacks: the driver's own answer for a missing entry point. */
        CHECK(HOOK(cuMemFreeHost)(NULL) == CUDA_ERROR_NOT_FOUND);
}

int main(void) {
        declarations();
        pitched_ranges();
        hooks();
        printf("hooks: ok\n");
        return 0;
}
