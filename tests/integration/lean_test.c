/*
 * Lean contexts (SAGE_CTX_STACK_LIMIT) against the simulated driver. Each
 * scenario prints `stack=N`, the stack limit (CU_LIMIT_STACK_SIZE) the app
 * sees at the end; lean_checks.sh runs them with and without libsage and
 * the option. Scenarios (argv[1]):
 *   primary           cuInit, retain the primary context, make it current
 *   app-sets N        as primary, then the app sets its own limit N
 *   app-then-redirect N   the app sets N on the primary context, then
 *                     creates a context (served by the primary one under
 *                     the redirect, which applies the lean limit)
 *   redirect          a created context (redirected under SAGE)
 *   fake              the simulated driver's own semantics (per context,
 *                     defaults, a reset restores them); prints ok
 */
#include <cuda.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                              \
        do {                                                                                     \
                CUresult r_ = (call);                                                            \
                if (r_ != CUDA_SUCCESS) {                                                        \
                        fprintf(stderr, "%s:%d: %s = %d\n", __FILE__, __LINE__, #call, (int)r_); \
                        exit(1);                                                                 \
                }                                                                                \
        } while (0)

static size_t stack_limit(void) {
        size_t v = 0;

        CHECK(cuCtxGetLimit(&v, CU_LIMIT_STACK_SIZE));
        return v;
}

static CUcontext primary(void) {
        CUcontext ctx;

        CHECK(cuInit(0));
        CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
        CHECK(cuCtxPushCurrent(ctx));
        return ctx;
}

static int fake_semantics(void) {
        CUcontext p = primary(), created, popped;
        size_t v;

        if (cuCtxGetLimit(&v, CU_LIMIT_MAX) != CUDA_ERROR_INVALID_VALUE ||
            cuCtxGetLimit(NULL, CU_LIMIT_STACK_SIZE) != CUDA_ERROR_INVALID_VALUE)
                return fprintf(stderr, "bad arguments accepted\n"), 1;
        CHECK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 16));
        CHECK(cuCtxCreate(&created, NULL, 0, 0));
        if (stack_limit() != 1024)
                return fprintf(stderr, "a new context does not start at the default\n"), 1;
        CHECK(cuCtxDestroy(created));
        if (stack_limit() != 16)
                return fprintf(stderr, "the primary context's limit is not its own\n"), 1;
        CHECK(cuCtxPopCurrent(&popped));
        if (cuCtxGetLimit(&v, CU_LIMIT_STACK_SIZE) != CUDA_ERROR_INVALID_CONTEXT)
                return fprintf(stderr, "no current context accepted\n"), 1;
        CHECK(cuDevicePrimaryCtxReset(0));
        CHECK(cuDevicePrimaryCtxRetain(&p, 0));
        CHECK(cuCtxPushCurrent(p));
        if (stack_limit() != 1024)
                return fprintf(stderr, "a reset context keeps the old limit\n"), 1;
        puts("ok");
        return 0;
}

int main(int argc, char **argv) {
        const char *mode = argc > 1 ? argv[1] : "";
        size_t n = argc > 2 ? strtoull(argv[2], NULL, 0) : 0;
        CUcontext ctx, popped;

        if (strcmp(mode, "fake") == 0)
                return fake_semantics();
        if (strcmp(mode, "primary") == 0) {
                primary();
        } else if (strcmp(mode, "app-sets") == 0) {
                primary();
                CHECK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, n));
        } else if (strcmp(mode, "app-then-redirect") == 0) {
                primary();
                CHECK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, n));
                CHECK(cuCtxPopCurrent(&popped));
                CHECK(cuCtxCreate(&ctx, NULL, 0, 0));
        } else if (strcmp(mode, "redirect") == 0) {
                CHECK(cuInit(0));
                CHECK(cuCtxCreate(&ctx, NULL, 0, 0));
        } else {
                fprintf(stderr, "usage: lean-test primary|app-sets N|app-then-redirect "
                                "N|redirect|fake\n");
                return 2;
        }
        printf("stack=%zu\n", stack_limit());
        return 0;
}
