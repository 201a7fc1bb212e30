/*
 * The suspend gate (intercept/suspend_gate.c) without a driver: the fast
 * path's cost (printed in ns per enter/leave pair), a drain that waits for
 * a call in flight (and gives up at its deadline), calls that wait while
 * the gate is closed, a resume asked for by the first waiting call, a
 * failed resume that fails every call at once, and a thread that exits
 * inside a call leaving nothing in flight.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "../../intercept/suspend_gate.h"

static int resumes, resume_answer;

static int resume(uint64_t deadline_ns) {
        resumes++;
        if (resume_answer == 0)
                sage_gate_set_phase(SAGE_GATE_OPEN); /* as the listener does after the re-map */
        return resume_answer;
}

static void on_active(void) {
}

static int pipe_go[2], pipe_in[2];

/* A call in flight until a byte arrives on pipe_go. */
static void *in_flight(void *unused) {
        char byte;
        CHECK(sage_gate_enter() == CUDA_SUCCESS);
        CHECK(write(pipe_in[1], "i", 1) == 1);
        CHECK(read(pipe_go[0], &byte, 1) == 1);
        sage_gate_leave();
        return NULL;
}

/* A call and its return: nothing in flight after it, on a slot that may have been another thread's. */
static void *in_flight_none(void *unused) {
        CHECK(sage_gate_enter() == CUDA_SUCCESS);
        sage_gate_leave();
        CHECK(sage_gate_slot->depth == 0 && sage_gate_in_flight() == 0);
        return NULL;
}

/* A call made while the gate is closed: its result. */
static void *late_call(void *result) {
        CUresult r = sage_gate_enter();
        if (r == CUDA_SUCCESS)
                sage_gate_leave();
        *(CUresult *)result = r;
        return NULL;
}

static void fast_path(void) {
        const int n = 20000000;
        uint64_t t0, calls = sage_gate_calls();
        double ns;

        t0 = sage_now_ns();
        for (int i = 0; i < n; i++) {
                CHECK(sage_gate_enter() == CUDA_SUCCESS);
                sage_gate_leave();
        }
        ns = (double)(sage_now_ns() - t0) / n;
        CHECK(sage_gate_calls() == calls + (uint64_t)n && sage_gate_in_flight() == 0);
        printf("suspend gate: %.2f ns per call (enter + leave, %s)\n", ns,
               atomic_load(&sage_gate_fence_mode) ? "fences: no membarrier" : "membarrier");
}

static void drain(void) {
        pthread_t t;
        char byte;

        CHECK(pipe(pipe_go) == 0 && pipe(pipe_in) == 0);
        CHECK(pthread_create(&t, NULL, in_flight, NULL) == 0);
        CHECK(read(pipe_in[0], &byte, 1) == 1);
        CHECK(sage_gate_in_flight() == 1);
        /* Its deadline passes with the call still in flight. */
        CHECK(!sage_gate_close_and_drain(sage_now_ns() + 20000000ull));
        CHECK(sage_gate_phase() == SAGE_GATE_PREPARING);
        sage_gate_set_phase(SAGE_GATE_OPEN);
        /* The call ends while the drain waits: it returns as soon as it did. */
        CHECK(write(pipe_go[1], "g", 1) == 1);
        CHECK(sage_gate_close_and_drain(sage_now_ns() + 5000000000ull));
        CHECK(pthread_join(t, NULL) == 0);
        CHECK(sage_gate_in_flight() == 0);
        sage_gate_set_phase(SAGE_GATE_OPEN);
}

/*
 * A resume that ran out of time (the broker queued it for room past the
 * call's deadline, and answers later or not at all) fails that call only:
 * the connection is fine, so the next call asks again.
 */
static void resume_times_out(void) {
        CUresult r = CUDA_ERROR_UNKNOWN;
        pthread_t t;

        alarm(10); /* a call that waits out the gate's own 30 s fails the test here */
        resumes = 0;
        CHECK(sage_gate_close_and_drain(sage_now_ns() + 1000000000ull));
        sage_gate_set_phase(SAGE_GATE_SUSPENDED);
        resume_answer = -ETIMEDOUT;
        CHECK(pthread_create(&t, NULL, late_call, &r) == 0 && pthread_join(t, NULL) == 0);
        CHECK(r == SAGE_GATE_ERROR && resumes == 1 && sage_gate_phase() == SAGE_GATE_SUSPENDED);
        resume_answer = 0;
        CHECK(pthread_create(&t, NULL, late_call, &r) == 0 && pthread_join(t, NULL) == 0);
        CHECK(r == CUDA_SUCCESS && resumes == 2 && sage_gate_phase() == SAGE_GATE_OPEN);
        CHECK(sage_gate_in_flight() == 0);
        alarm(0);
        resumes = 0;
}

static void resume_on_call(void) {
        CUresult r = CUDA_ERROR_UNKNOWN;
        pthread_t t;

        CHECK(sage_gate_close_and_drain(sage_now_ns() + 1000000000ull));
        sage_gate_set_phase(SAGE_GATE_SUSPENDED);
        resume_answer = 0;
        CHECK(pthread_create(&t, NULL, late_call, &r) == 0 && pthread_join(t, NULL) == 0);
        CHECK(r == CUDA_SUCCESS && resumes == 1 && sage_gate_phase() == SAGE_GATE_OPEN);
        CHECK(sage_gate_in_flight() == 0);

        /* The broker refuses: this call and every later one fail, none asks again. */
        CHECK(sage_gate_close_and_drain(sage_now_ns() + 1000000000ull));
        sage_gate_set_phase(SAGE_GATE_SUSPENDED);
        resume_answer = 17; /* SAGE_ERR_REFUSED */
        CHECK(pthread_create(&t, NULL, late_call, &r) == 0 && pthread_join(t, NULL) == 0);
        CHECK(r == SAGE_GATE_ERROR && resumes == 2 && sage_gate_phase() == SAGE_GATE_BROKEN);
        CHECK(sage_gate_enter() == SAGE_GATE_ERROR && resumes == 2);
        sage_gate_set_phase(SAGE_GATE_OPEN); /* broken stays broken */
        CHECK(sage_gate_phase() == SAGE_GATE_BROKEN && sage_gate_in_flight() == 0);
}

/* A thread that exits inside a call (pthread_exit in a driver callback) has no call in flight any more. */
static void *exits_inside(void *unused) {
        CHECK(sage_gate_enter() == CUDA_SUCCESS);
        pthread_exit(NULL);
}

static void thread_exit(void) {
        uint64_t before = sage_gate_in_flight();
        pthread_t t;

        CHECK(pthread_create(&t, NULL, exits_inside, NULL) == 0 && pthread_join(t, NULL) == 0);
        CHECK(sage_gate_in_flight() == before);
        /* Its slot goes to the next thread, empty. */
        CHECK(pthread_create(&t, NULL, in_flight_none, NULL) == 0 && pthread_join(t, NULL) == 0);
}

int main(void) {
        sage_gate_init(resume, on_active);
        thread_exit();
        fast_path();
        drain();
        resume_times_out();
        resume_on_call();
        return 0;
}
