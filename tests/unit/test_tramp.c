/*
 * The trampolines (intercept/tramp.c, tramp_entry.S, the generated
 * tramp_table.S) against a gate of the test's own: every argument register
 * and stack argument reaches the callee unchanged on the fast path, the
 * slow path and the counted variant (6 integer + 8 double arguments plus
 * stack arguments, a varargs call whose %al must survive), the callee
 * gets a 16-byte aligned stack, a closed gate is passed before the driver
 * function runs, a failed gate returns its CUresult without entering it,
 * a trampoline called from inside the gate passes straight (no recursion, no deadlock), and an
 * unwinder walks from inside the gate through the trampoline to the
 * caller (CFI). A call counts in flight until the driver function returns
 * (the landing pad): every kind of return value intact, nested calls
 * deeper than the shadow stack, a longjmp out of a callee, an unwinder
 * inside the callee that stops cleanly; an untyped slot's failed gate
 * calls through. The gate is tramp_gate.c's seam, sage_tramp_gate_pass().
 * `test-tramp bench` prints the fast path's cost per call.
 */
#include <cuda.h>

#include <emmintrin.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#include "check.h"
#include "hooks.h"
#include "suspend_gate.h"
#include "tramp.h"
#include "util.h"

#define FN(f) SAGE_FN_CAST(void *, f)

/* ---- the gate and the hook guard, as the test's own */
atomic_uint sage_gate_word;
atomic_bool sage_gate_fence_mode;
_Thread_local SageGateSlot *sage_gate_slot __attribute__((tls_model("initial-exec")));
static int gate_waits, gate_leaves, gate_error, gate_order, gate_untyped_through;
static void (*gate_action)(void);
static _Thread_local unsigned depth;

void sage_hooks_enter(void) {
        depth++;
}
void sage_hooks_leave(void) {
        depth--;
}
bool sage_hooks_inside(void) {
        return depth != 0;
}

/* Clobbers what a real gate may: every argument register, the varargs count and the vector registers. */
static void clobber(void) {
        __asm__ volatile("movq $-1, %%rdi\n\tmovq $-2, %%rsi\n\tmovq $-3, %%rdx\n\tmovq $-4, %%rcx\n\t"
                         "movq $-5, %%r8\n\tmovq $-6, %%r9\n\tmovq $-7, %%rax\n\tmovq $-8, %%r10\n\t"
                         "pcmpeqd %%xmm0, %%xmm0\n\tpcmpeqd %%xmm1, %%xmm1\n\tpcmpeqd %%xmm2, %%xmm2\n\t"
                         "pcmpeqd %%xmm3, %%xmm3\n\tpcmpeqd %%xmm4, %%xmm4\n\tpcmpeqd %%xmm5, %%xmm5\n\t"
                         "pcmpeqd %%xmm6, %%xmm6\n\tpcmpeqd %%xmm7, %%xmm7" ::
                                 : "rdi", "rsi", "rdx", "rcx", "r8", "r9", "rax", "r10", "xmm0", "xmm1", "xmm2", "xmm3",
                                   "xmm4", "xmm5", "xmm6", "xmm7", "memory");
}

/* A varargs callee that returns the %al its caller set (the number of vector registers used). */
__asm__(".text\n"
        "\t.type rax_probe, @function\n"
        "rax_probe:\n"
        "\t.cfi_startproc\n"
        "\tmovzbl %al, %eax\n"
        "\tret\n"
        "\t.cfi_endproc\n"
        "\t.size rax_probe, .-rax_probe\n");
long rax_probe(int n, ...);

/* This thread's gate slot, as suspend_gate.c gives one (never freed: the test's threads are few). */
static SageGateSlot *slot(void) {
        if (!sage_gate_slot) {
                sage_gate_slot = aligned_alloc(64, sizeof(SageGateSlot));
                CHECK(sage_gate_slot);
                memset(sage_gate_slot, 0, sizeof(SageGateSlot));
        }
        return sage_gate_slot;
}

static uint64_t in_flight(void) {
        SageGateSlot *t = slot();
        return atomic_load(&t->enters) - atomic_load(&t->leaves);
}

/* The product's gate (tramp_gate.c) in miniature: a call from inside passes straight, not counted;
 * an untyped call never returns the gate's error but calls through. */
static int callee_calls;
uint32_t sage_tramp_gate_pass(uint32_t entered, bool untyped) {
        SageGateSlot *t = slot();

        if (sage_hooks_inside()) {
                if (entered)
                        atomic_fetch_add(&t->leaves, 1);
                return SAGE_TRAMP_TAIL;
        }
        gate_waits++;
        gate_order = callee_calls; /* how many callee calls happened before the gate was passed */
        sage_hooks_enter();
        clobber();
        if (gate_action)
                gate_action();
        sage_hooks_leave();
        if (entered)
                atomic_fetch_add(&t->leaves, 1); /* not in flight while it waits */
        if (gate_error && untyped) {
                gate_untyped_through++;
                return SAGE_TRAMP_TAIL;
        }
        if (gate_error)
                return (uint32_t)gate_error;
        gate_leaves++;
        atomic_fetch_add(&t->enters, 1);
        if (t->depth >= SAGE_TRAMP_SHADOW_MAX) {
                atomic_fetch_add(&t->leaves, 1);
                return SAGE_TRAMP_TAIL;
        }
        return SAGE_TRAMP_TRACK;
}

/* ---- callees (the "driver functions") */
typedef double (*wide_fn)(long, long, long, long, long, long, double, double, double, double, double, double, double,
                          double, long, double, long);

__attribute__((noinline)) static double wide(long a, long b, long c, long d, long e, long f, double x0, double x1,
                                             double x2, double x3, double x4, double x5, double x6, double x7, long s0,
                                             double s1, long s2) {
        callee_calls++;
        return (double)(a * 1 + b * 3 + c * 5 + d * 7 + e * 11 + f * 13) + x0 * 17 + x1 * 19 + x2 * 23 + x3 * 29 +
               x4 * 31 + x5 * 37 + x6 * 41 + x7 * 43 + (double)s0 * 47 + s1 * 53 + (double)s2 * 59;
}

static double wide_call(wide_fn fn) {
        return fn(1, -2, 3, 4000000000L, 5, 6, 0.5, 1.25, -2.5, 3.75, 1e10, -1e-3, 7.0, 8.5, 9, 10.25, -11);
}

__attribute__((noinline)) static long vsum(int n, ...) {
        va_list ap;
        double total = 0;

        callee_calls++;
        va_start(ap, n);
        for (int i = 0; i < n; i++)
                total += (i & 1) ? (double)va_arg(ap, long) : va_arg(ap, double);
        va_end(ap);
        return (long)(total * 4);
}

static long vsum_call(long (*fn)(int, ...)) {
        return fn(10, 1.5, 2L, 3.25, 4L, 5.5, 6L, 7.75, 8L, 9.5, 10L);
}

/* Entry stack alignment as the callee sees it (rsp + 8 must be 16-aligned), and an aligned SSE store. */
__attribute__((noinline)) static CUresult aligned_callee(int *misaligned) {
        uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
        __m128d v = _mm_set_pd(1.0, 2.0);
        _Alignas(16) volatile double store[2];

        callee_calls++;
        _mm_store_pd((double *)store, v); /* movapd: faults on a misaligned frame */
        *misaligned = (int)(sp & 15);     /* the frame address is 16-aligned in a correctly aligned callee */
        return CUDA_SUCCESS;
}

__attribute__((noinline)) static CUresult plain(int x) {
        callee_calls++;
        return x == 42 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

static void *get(void *fn, const char *label, bool counted) {
        void *t = sage_tramp_get(fn, label, counted);

        CHECK(t && t != fn && sage_tramp_owns(t));
        return t;
}

static void check_arguments(void) {
        double want = wide_call(wide);
        long vwant = vsum_call(vsum);
        wide_fn gated, counted;
        long (*vgated)(int, ...), (*vcounted)(int, ...);
        void *p;

        p = get(FN(wide), "wide", false);
        memcpy(&gated, &p, sizeof(p));
        p = get(FN(wide), "wide", true);
        memcpy(&counted, &p, sizeof(p));
        p = get(FN(vsum), "vsum", false);
        memcpy(&vgated, &p, sizeof(p));
        p = get(FN(vsum), "vsum", true);
        memcpy(&vcounted, &p, sizeof(p));
        CHECK(sage_tramp_get(FN(wide), "again", false) == FN(gated));

        /* fast path: the gate open */
        gate_waits = 0;
        CHECK(wide_call(gated) == want);
        CHECK(vsum_call(vgated) == vwant);
        CHECK(gate_waits == 0);
        /* slow path: the gate says so; the gate clobbers every caller-saved register */
        atomic_store(&sage_gate_word, 1);
        CHECK(wide_call(gated) == want);
        CHECK(vsum_call(vgated) == vwant);
        CHECK(gate_waits == 2 && gate_leaves == 2);
        /* the varargs register count (%al) reaches a varargs callee */
        p = get(FN(rax_probe), "rax_probe", false);
        memcpy(&vgated, &p, sizeof(p));
        CHECK(vgated(3, 1.0, 2.0, 3.0) == 3);
        CHECK(vgated(5, 1.0, 2.0, 3.0, 4.0, 5.0) == 5);
        atomic_store(&sage_gate_word, 0);
        CHECK(vgated(2, 1.0, 2.0) == 2);
        /* counted: always the slow path */
        sage_tramp_set_counting(true);
        CHECK(wide_call(counted) == want);
        CHECK(vsum_call(vcounted) == vwant);
        CHECK(wide_call(gated) == want); /* the gated variant, gate open: not counted */
        sage_tramp_set_counting(false);
        printf("arguments: 6 integer + 8 double + 3 stack arguments and a varargs call pass unchanged\n");
}

static void check_alignment(void) {
        CUresult (*fn)(int *);
        void *p = get(FN(aligned_callee), "aligned", false);
        int misaligned = -1;

        memcpy(&fn, &p, sizeof(p));
        CHECK(fn(&misaligned) == CUDA_SUCCESS && misaligned == 0);
        atomic_store(&sage_gate_word, 1);
        misaligned = -1;
        CHECK(fn(&misaligned) == CUDA_SUCCESS && misaligned == 0);
        atomic_store(&sage_gate_word, 0);
        printf("alignment: the callee's frame is 16-byte aligned on both paths\n");
}

static CUresult (*plain_tramp)(int);

static void check_gate(void) {
        void *p = get(FN(plain), "plain", false);

        memcpy(&plain_tramp, &p, sizeof(p));
        /* the gate is passed before the driver function runs */
        atomic_store(&sage_gate_word, 1);
        callee_calls = 0;
        gate_order = -1;
        CHECK(plain_tramp(42) == CUDA_SUCCESS);
        CHECK(gate_order == 0 && callee_calls == 1);
        /* a failed gate: its CUresult, the driver function not entered */
        gate_error = CUDA_ERROR_ILLEGAL_STATE;
        CHECK(plain_tramp(42) == CUDA_ERROR_ILLEGAL_STATE);
        CHECK(callee_calls == 1);
        gate_error = 0;
        atomic_store(&sage_gate_word, 0);
        printf("gate: passed before the call; a failed resume returns its CUresult\n");
}

/* From inside the gate: a trampoline passes straight (this thread is inside libsage). */
static int inner_result = -1;
static void call_from_gate(void) {
        inner_result = plain_tramp(42);
}

static void check_recursion(void) {
        int waits = gate_waits;

        gate_action = call_from_gate;
        atomic_store(&sage_gate_word, 1);
        alarm(10); /* a recursion into the gate would never return */
        CHECK(plain_tramp(42) == CUDA_SUCCESS);
        alarm(0);
        CHECK(inner_result == CUDA_SUCCESS);
        CHECK(gate_waits == waits + 1);
        atomic_store(&sage_gate_word, 0);
        gate_action = NULL;
        printf("recursion: a driver call from inside the gate does not enter the gate again\n");
}

/* Unwinding from inside the gate reaches the function that called the trampoline. */
typedef struct Walk {
        uintptr_t lo, hi;
        int frames;
        bool found;
} Walk;
static Walk walk;

static _Unwind_Reason_Code walk_frame(struct _Unwind_Context *ctx, void *data) {
        Walk *w = data;
        uintptr_t ip = _Unwind_GetIP(ctx);

        w->frames++;
        if (ip > w->lo && ip <= w->hi)
                w->found = true;
        return w->frames < 64 ? _URC_NO_REASON : _URC_END_OF_STACK;
}

static void unwind_from_gate(void) {
        _Unwind_Backtrace(walk_frame, &walk);
}

__attribute__((noinline)) static int caller_of_trampoline(void) {
        int r = plain_tramp(42);
        __asm__ volatile("" ::: "memory");
        return r + 1;
}
__attribute__((noinline)) static void after_caller(void) {
        __asm__ volatile("");
}

static void check_unwind(void) {
        walk.lo = (uintptr_t)caller_of_trampoline;
        walk.hi = (uintptr_t)after_caller;
        if (walk.hi <= walk.lo) /* the compiler placed them the other way: give the caller 256 bytes */
                walk.hi = walk.lo + 256;
        gate_action = unwind_from_gate;
        atomic_store(&sage_gate_word, 1);
        CHECK(caller_of_trampoline() == 1);
        atomic_store(&sage_gate_word, 0);
        gate_action = NULL;
        CHECK(walk.found);
        printf("unwind: %d frames from inside the gate, through the trampoline to its caller\n", walk.frames);
}

/* ---- counted in flight until the driver function returns (tramp_entry.S's landing pad) */
static uint64_t seen_in_flight;
static uint32_t seen_depth;

__attribute__((noinline)) static CUresult observe(int x) {
        seen_in_flight = in_flight();
        seen_depth = sage_gate_slot->depth;
        return (CUresult)(x + 1);
}

typedef struct Pair {
        long a, b;
} Pair;
typedef struct Doubles {
        double x, y;
} Doubles;
typedef struct Big {
        long w[6];
} Big;

__attribute__((noinline)) static Pair ret_pair(long a) {
        return (Pair){ a, -a * 3 };
}
__attribute__((noinline)) static Doubles ret_doubles(double x) {
        return (Doubles){ x * 2, x / 4 };
}
__attribute__((noinline)) static long double ret_long_double(long double x) {
        return x * 3;
}
__attribute__((noinline)) static Big ret_big(long a, long s0, long s1, long s2, long s3, long s4, long s5, long s6) {
        return (Big){ { a, s0 + s1, s2, s3, s4 + s5, s6 } };
}

static void check_in_flight(void) {
        CUresult (*fn)(int);
        Pair (*pair)(long);
        Doubles (*doubles)(double);
        long double (*ld)(long double);
        Big (*big)(long, long, long, long, long, long, long, long);
        void *p = get(FN(observe), "observe", false);
        Pair pr;
        Doubles dr;
        Big br;

        memcpy(&fn, &p, sizeof(p));
        for (unsigned word = 0; word < 2; word++) {
                atomic_store(&sage_gate_word, word); /* the fast path, then the slow one */
                seen_in_flight = 0;
                CHECK(fn(6) == 7);
                CHECK(seen_in_flight == 1 && seen_depth == 1);
                CHECK(in_flight() == 0 && sage_gate_slot->depth == 0);
        }
        atomic_store(&sage_gate_word, 0);
        /* Return values in rax:rdx, xmm0:xmm1, st0 and memory (with stack arguments) pass the landing pad. */
        p = get(FN(ret_pair), "ret_pair", false);
        memcpy(&pair, &p, sizeof(p));
        pr = pair(5);
        CHECK(pr.a == 5 && pr.b == -15);
        p = get(FN(ret_doubles), "ret_doubles", false);
        memcpy(&doubles, &p, sizeof(p));
        dr = doubles(8.0);
        CHECK(dr.x == 16.0 && dr.y == 2.0);
        p = get(FN(ret_long_double), "ret_long_double", false);
        memcpy(&ld, &p, sizeof(p));
        CHECK(ld(1.5L) == 4.5L);
        p = get(FN(ret_big), "ret_big", false);
        memcpy(&big, &p, sizeof(p));
        br = big(1, 2, 3, 4, 5, 6, 7, 8);
        CHECK(br.w[0] == 1 && br.w[1] == 5 && br.w[2] == 4 && br.w[3] == 5 && br.w[4] == 13 && br.w[5] == 8);
        CHECK(in_flight() == 0);
        printf("in flight: counted until the driver function returns; every kind of return value intact\n");
}

/* A driver callback that calls the driver again, deeper than the shadow stack. */
static long (*nest_tramp)(long);
__attribute__((noinline)) static long nest(long n) {
        long r;

        if (n == 0)
                return (long)sage_gate_slot->depth;
        r = nest_tramp(n - 1);
        __asm__ volatile("" ::: "memory");
        return r;
}

static void check_nesting(void) {
        void *p = get(FN(nest), "nest", false);

        memcpy(&nest_tramp, &p, sizeof(p));
        CHECK(nest_tramp(3) == 4); /* four calls in flight at the innermost */
        CHECK(nest_tramp(SAGE_TRAMP_SHADOW_MAX + 8) == SAGE_TRAMP_SHADOW_MAX);
        CHECK(in_flight() == 0 && sage_gate_slot->depth == 0);
        printf("nesting: %d calls deep, the innermost %d counted until they return\n", SAGE_TRAMP_SHADOW_MAX + 9,
               SAGE_TRAMP_SHADOW_MAX);
}

/* A longjmp out of a driver callback: the abandoned call is dropped at the next return. */
static jmp_buf jump_back;
static void (*jumper_tramp)(void);
static int (*outer_tramp)(int);

__attribute__((noinline)) static void jumper(void) {
        longjmp(jump_back, 1);
}

__attribute__((noinline)) static int outer(int x) {
        volatile uint32_t depth_after = 0;

        if (setjmp(jump_back) == 0)
                jumper_tramp();
        else
                depth_after = sage_gate_slot->depth;
        return x * 10 + (int)depth_after;
}

static void check_longjmp(void) {
        void *p = get(FN(jumper), "jumper", false);

        memcpy(&jumper_tramp, &p, sizeof(p));
        p = get(FN(outer), "outer", false);
        memcpy(&outer_tramp, &p, sizeof(p));
        CHECK(outer_tramp(4) == 42); /* two entries after the longjmp: the abandoned one and outer's */
        CHECK(in_flight() == 0 && sage_gate_slot->depth == 0);
        printf("longjmp: a call abandoned by a longjmp out of the driver is not in flight after the next return\n");
}

/* An untyped slot (an export table's): a failed gate calls through, it never returns the CUresult. */
__attribute__((noinline)) static double untyped_target(double x, long s) {
        callee_calls++;
        return x * (double)s;
}

static void check_untyped(void) {
        double (*fn)(double, long);
        void *p = sage_tramp_get(FN(untyped_target), "untyped", SAGE_TRAMP_UNTYPED);
        int calls = callee_calls;

        CHECK(p);
        memcpy(&fn, &p, sizeof(p));
        atomic_store(&sage_gate_word, 1);
        gate_error = CUDA_ERROR_ILLEGAL_STATE;
        CHECK(fn(1.5, 4) == 6.0);
        CHECK(gate_untyped_through == 1 && callee_calls == calls + 1);
        CHECK(in_flight() == 0);
        gate_error = 0;
        atomic_store(&sage_gate_word, 0);
        printf("untyped: a failed gate calls through to the driver\n");
}

/* Unwinding from inside the driver function stops at the landing pad, cleanly. */
static int inside_frames;
static _Unwind_Reason_Code count_frame(struct _Unwind_Context *ctx, void *data) {
        (void)ctx;
        (void)data;
        return ++inside_frames < 64 ? _URC_NO_REASON : _URC_END_OF_STACK;
}

__attribute__((noinline)) static CUresult unwinding_callee(int x) {
        _Unwind_Backtrace(count_frame, NULL);
        return (CUresult)x;
}

static void check_unwind_inside(void) {
        CUresult (*fn)(int);
        void *p = get(FN(unwinding_callee), "unwinding", false);

        memcpy(&fn, &p, sizeof(p));
        CHECK(fn(3) == 3);
        CHECK(inside_frames >= 1 && inside_frames < 64);
        printf("unwind inside the driver: %d frames, ends at the landing pad\n", inside_frames);
}

__attribute__((noinline)) static CUresult named_target(int x) {
        return (CUresult)(x + 2);
}

static void *resolve(const char *name, void *ctx) {
        return strcmp(name, "cuDeviceGetName") == 0 ? ctx : NULL;
}

/* A function cuda.h names gets its named trampoline (tramp_table.S: sage_tramp_<name>). */
static void check_named(void) {
        extern const char sage_tramp_gated[];
        CUresult (*fn)(int);
        uint32_t i;
        void *t;

        sage_tramp_bind_named(resolve, FN(named_target));
        for (i = 0; i < SAGE_TRAMP_NAMED && strcmp(sage_tramp_names[i], "cuDeviceGetName"); i++)
                ;
        CHECK(i < SAGE_TRAMP_NAMED);
        t = sage_tramp_get(FN(named_target), "ignored", false);
        CHECK(t == (void *)(sage_tramp_gated + (size_t)i * SAGE_TRAMP_GATED_STRIDE));
        memcpy(&fn, &t, sizeof(t));
        CHECK(fn(5) == 7);
}

/* Counts by name: what the trace dumps. */
static void visit(const char *label, uint64_t count, void *ctx) {
        int *seen = ctx;

        if (strcmp(label, "wide") == 0 && count == 1)
                seen[0]++;
        if (strcmp(label, "vsum") == 0 && count == 1)
                seen[1]++;
}

static void check_counts(void) {
        int seen[2] = { 0, 0 };

        sage_tramp_each_count(visit, seen);
        CHECK(seen[0] == 1 && seen[1] == 1);
}

static void check_pool_full(void) {
        static char targets[SAGE_TRAMP_POOL + 1];
        unsigned got = 0;

        for (unsigned i = 0; i < SAGE_TRAMP_POOL + 1; i++)
                if (sage_tramp_get(&targets[i], "filler", false))
                        got++;
        CHECK(got < SAGE_TRAMP_POOL + 1);
        CHECK(!sage_tramp_get(&targets[SAGE_TRAMP_POOL], "filler", false));
        /* what was handed out before still works */
        CHECK(plain_tramp(42) == CUDA_SUCCESS);
}

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((noinline)) static CUresult empty(int x) {
        __asm__ volatile("");
        return (CUresult)(x & 0);
}

static double per_call(CUresult (*fn)(int), long n) {
        uint64_t t0 = now_ns();
        CUresult acc = 0;

        for (long i = 0; i < n; i++)
                acc += fn((int)i);
        CHECK(acc == 0);
        return (double)(now_ns() - t0) / (double)n;
}

static void bench(long n) {
        CUresult (*direct)(int) = empty, (*gated)(int), (*counted)(int);
        void *p = get(FN(empty), "empty", false);
        double best[3] = { 1e9, 1e9, 1e9 };

        memcpy(&gated, &p, sizeof(p));
        p = get(FN(empty), "empty", true);
        memcpy(&counted, &p, sizeof(p));
        for (int round = 0; round < 5; round++) {
                double d = per_call(direct, n), g, c;

                g = per_call(gated, n);
                sage_tramp_set_counting(true);
                c = per_call(counted, n);
                sage_tramp_set_counting(false);
                best[0] = d < best[0] ? d : best[0];
                best[1] = g < best[1] ? g : best[1];
                best[2] = c < best[2] ? c : best[2];
        }
        printf("bench: ns per call (best of 5 x %ld): direct %.2f, gated trampoline (gate open) %.2f "
               "(+%.2f), counted %.2f\n",
               n, best[0], best[1], best[1] - best[0], best[2]);
}

int main(int argc, char **argv) {
        slot(); /* as the real gate's first call gives one */
        if (argc > 1 && strcmp(argv[1], "bench") == 0) {
                bench(argc > 2 ? atol(argv[2]) : 50000000L);
                return 0;
        }
        check_arguments();
        check_alignment();
        check_gate();
        check_recursion();
        check_unwind();
        check_in_flight();
        check_nesting();
        check_longjmp();
        check_untyped();
        check_unwind_inside();
        check_named();
        check_counts();
        bench(200000);
        check_pool_full();
        printf("tramp: ok\n");
        return 0;
}
