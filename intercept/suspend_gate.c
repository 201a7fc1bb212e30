/*
 * The suspend gate (suspend_gate.h): per-thread call counters, the gate
 * word, and the slow path where calls wait while the process is prepared,
 * suspended or resumed.
 *
 * Counters: each thread gets a cache-aligned slot on its first call,
 * linked into a list that only grows; a thread's exit balances its slot (it
 * has no call in flight any more) and hands it to the next new thread. Sums
 * over the list give the calls in flight (leaves read before enters, so a
 * sum never undercounts) and the calls so far (idleness). A slot also holds
 * the thread's shadow stack of trampoline calls in flight (tramp_entry.S):
 * those count until the driver function returns.
 *
 * Phases are kept under one mutex; the word mirrors them for the fast path.
 * A call that finds the gate closed stops counting itself, waits for OPEN,
 * and while SUSPENDED the first such call asks for the resume (the others
 * wait for it). BROKEN (a resume failed, or the broker went away while the
 * process was suspended) fails every call with SAGE_GATE_ERROR: the process
 * cannot be trusted to hold its memory any more, and must not hang.
 */
#include "suspend_gate.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

atomic_uint sage_gate_word;
atomic_bool sage_gate_fence_mode = true; /* until membarrier is known to work */
_Thread_local SageGateSlot *sage_gate_slot __attribute__((tls_model("initial-exec")));

static SageGateSlot *_Atomic slots; /* grows only; slots are reused, never freed */
/* Out of memory: threads share one (atomics make it correct); its shadow stack stays full, so
 * trampolines never track a call on it (tramp_entry.S). */
static SageGateSlot fallback_slot = { .depth = SAGE_TRAMP_SHADOW_MAX };
static pthread_key_t slot_key;
static pthread_once_t slot_key_once = PTHREAD_ONCE_INIT;
static bool membarrier_ok;

static struct {
        pthread_mutex_t lock;
        pthread_cond_t cond; /* CLOCK_MONOTONIC: phase changes and leaves while closed */
        SageGatePhase phase;
        bool resuming;    /* a waiting call asks for the resume */
        bool resume_lost; /* the broker's connection failed: the listener decides (broker_gone) */
        SageGateResumeFn resume;
        void (*on_active)(void);
} gate = { .lock = PTHREAD_MUTEX_INITIALIZER };

/*
 * The thread exits. A call it never returned from (pthread_exit in a driver
 * callback) is in flight no more, or every later drain would wait for it.
 * A call it makes after this (a later key's destructor) takes a new slot.
 */
static void slot_release(void *p) {
        SageGateSlot *t = p;

        if (!t || t == &fallback_slot)
                return;
        sage_gate_slot = NULL;
        t->depth = 0;
        atomic_store_explicit(&t->leaves, atomic_load_explicit(&t->enters, memory_order_relaxed), memory_order_release);
        atomic_store(&t->in_use, false);
}

static void make_key(void) {
        pthread_key_create(&slot_key, slot_release);
}

SageGateSlot *sage_gate_slot_new(void) {
        SageGateSlot *t;

        pthread_once(&slot_key_once, make_key);
        for (t = atomic_load(&slots); t; t = t->next) {
                bool free_slot = false;
                if (atomic_compare_exchange_strong(&t->in_use, &free_slot, true))
                        break;
        }
        if (!t) {
                if (posix_memalign((void **)&t, 64, sizeof(*t)) != 0) {
                        sage_gate_slot = &fallback_slot;
                        return &fallback_slot;
                }
                memset(t, 0, sizeof(*t));
                atomic_store(&t->in_use, true);
                t->next = atomic_load(&slots);
                while (!atomic_compare_exchange_weak(&slots, &t->next, t))
                        ;
        }
        pthread_setspecific(slot_key, t);
        sage_gate_slot = t;
        return t;
}

static uint64_t sum_leaves(void) {
        uint64_t n = atomic_load_explicit(&fallback_slot.leaves, memory_order_acquire);
        for (SageGateSlot *t = atomic_load(&slots); t; t = t->next)
                n += atomic_load_explicit(&t->leaves, memory_order_acquire);
        return n;
}

uint64_t sage_gate_calls(void) {
        uint64_t n = atomic_load_explicit(&fallback_slot.enters, memory_order_acquire);
        for (SageGateSlot *t = atomic_load(&slots); t; t = t->next)
                n += atomic_load_explicit(&t->enters, memory_order_acquire);
        return n;
}

uint64_t sage_gate_in_flight(void) {
        uint64_t leaves = sum_leaves();
        uint64_t enters = sage_gate_calls();
        return enters > leaves ? enters - leaves : 0;
}

void sage_gate_init(SageGateResumeFn resume, void (*on_active)(void)) {
        pthread_condattr_t attr;

        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&gate.cond, &attr);
        pthread_condattr_destroy(&attr);
        gate.resume = resume;
        gate.on_active = on_active;
        membarrier_ok = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
        if (membarrier_ok)
                atomic_store(&sage_gate_fence_mode, false);
}

void sage_gate_resume_again(void) {
        pthread_mutex_lock(&gate.lock);
        gate.resume_lost = false;
        pthread_cond_broadcast(&gate.cond);
        pthread_mutex_unlock(&gate.lock);
}

void sage_gate_never_closes(void) {
        atomic_store(&sage_gate_fence_mode, false);
}

void sage_gate_forked(void) {
        pthread_condattr_t attr;

        pthread_mutex_init(&gate.lock, NULL); /* its holder, if any, is not in this process */
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&gate.cond, &attr);
        pthread_condattr_destroy(&attr);
        gate.phase = SAGE_GATE_OPEN;
        gate.resuming = gate.resume_lost = false;
        gate.resume = NULL;
        gate.on_active = NULL;
        atomic_store(&sage_gate_word, 0);
        sage_gate_never_closes();
}

/* After the word changed: every thread either shows its count, or sees the word. */
static void publish_word(void) {
        if (!membarrier_ok || syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
                atomic_thread_fence(memory_order_seq_cst);
}

static void deadline_ts(uint64_t deadline_ns, struct timespec *ts) {
        ts->tv_sec = (time_t)(deadline_ns / 1000000000ull);
        ts->tv_nsec = (long)(deadline_ns % 1000000000ull);
}

/* The word for `phase` (keeping a pending NOTE). Under gate.lock. */
static void set_phase_locked(SageGatePhase phase) {
        unsigned bits = phase == SAGE_GATE_OPEN     ? 0
                        : phase == SAGE_GATE_BROKEN ? SAGE_GATE_BIT_FAILED | SAGE_GATE_BIT_CLOSED
                                                    : SAGE_GATE_BIT_CLOSED;
        gate.phase = phase;
        if (phase == SAGE_GATE_OPEN)
                gate.resume_lost = false;
        atomic_fetch_and(&sage_gate_word, ~(unsigned)(SAGE_GATE_BIT_CLOSED | SAGE_GATE_BIT_FAILED));
        atomic_fetch_or(&sage_gate_word, bits);
        pthread_cond_broadcast(&gate.cond);
}

void sage_gate_set_phase(SageGatePhase phase) {
        pthread_mutex_lock(&gate.lock);
        if (gate.phase != SAGE_GATE_BROKEN)
                set_phase_locked(phase);
        pthread_mutex_unlock(&gate.lock);
}

SageGatePhase sage_gate_phase(void) {
        SageGatePhase p;
        pthread_mutex_lock(&gate.lock);
        p = gate.phase;
        pthread_mutex_unlock(&gate.lock);
        return p;
}

bool sage_gate_close_and_drain(uint64_t deadline_ns) {
        struct timespec ts;
        bool drained;

        pthread_mutex_lock(&gate.lock);
        if (gate.phase != SAGE_GATE_OPEN) {
                pthread_mutex_unlock(&gate.lock);
                return false;
        }
        set_phase_locked(SAGE_GATE_PREPARING);
        pthread_mutex_unlock(&gate.lock);
        publish_word();

        pthread_mutex_lock(&gate.lock);
        for (;;) {
                uint64_t now = sage_now_ns(), step;
                if ((drained = sage_gate_in_flight() == 0) || now >= deadline_ns)
                        break;
                /* Leaves while closed signal; the short step covers one that raced the close. */
                step = deadline_ns - now < 5000000ull ? deadline_ns - now : 5000000ull;
                deadline_ts(now + step, &ts);
                pthread_cond_timedwait(&gate.cond, &gate.lock, &ts);
        }
        pthread_mutex_unlock(&gate.lock);
        return drained;
}

void sage_gate_left(void) {
        pthread_mutex_lock(&gate.lock);
        pthread_cond_broadcast(&gate.cond);
        pthread_mutex_unlock(&gate.lock);
}

void sage_gate_note_idle(void) {
        atomic_fetch_or(&sage_gate_word, SAGE_GATE_BIT_NOTE);
}

/* Wait until the gate is open (asking for the resume if it is up to us): 0, or the call's error. */
static CUresult wait_open(uint64_t deadline_ns) {
        CUresult r = CUDA_SUCCESS;
        struct timespec ts;

        deadline_ts(deadline_ns, &ts);
        pthread_mutex_lock(&gate.lock);
        while (gate.phase != SAGE_GATE_OPEN) {
                if (gate.phase == SAGE_GATE_BROKEN) {
                        r = SAGE_GATE_ERROR;
                        break;
                }
                if (gate.phase == SAGE_GATE_SUSPENDED && !gate.resuming && !gate.resume_lost && gate.resume) {
                        int rr;
                        gate.resuming = true;
                        pthread_mutex_unlock(&gate.lock);
                        rr = gate.resume(deadline_ns);
                        pthread_mutex_lock(&gate.lock);
                        gate.resuming = false;
                        pthread_cond_broadcast(&gate.cond);
                        if (rr > 0) {
                                /* The broker will not resume us: nothing will open the gate. */
                                if (gate.phase == SAGE_GATE_SUSPENDED)
                                        set_phase_locked(SAGE_GATE_BROKEN);
                                r = SAGE_GATE_ERROR;
                                break;
                        }
                        /* Out of time (queued for room past our deadline): this call fails, the next one
                         * asks again. Latching resume_lost here would leave a live broker never asked. */
                        if (rr == -ETIMEDOUT) {
                                r = SAGE_GATE_ERROR;
                                break;
                        }
                        /* The connection failed: the listener sees the broker gone and decides. */
                        if (rr < 0)
                                gate.resume_lost = true;
                        continue;
                }
                if (pthread_cond_timedwait(&gate.cond, &gate.lock, &ts) == ETIMEDOUT && gate.phase != SAGE_GATE_OPEN) {
                        r = SAGE_GATE_ERROR;
                        break;
                }
        }
        pthread_mutex_unlock(&gate.lock);
        return r;
}

CUresult sage_gate_wait(SageGateSlot *t) {
        uint64_t deadline = sage_now_ns() + SAGE_GATE_RESUME_MS * 1000000ull;

        for (;;) {
                unsigned w = atomic_load(&sage_gate_word);
                CUresult r;

                if (w & SAGE_GATE_BIT_NOTE) {
                        if (atomic_fetch_and(&sage_gate_word, ~(unsigned)SAGE_GATE_BIT_NOTE) & SAGE_GATE_BIT_NOTE)
                                if (gate.on_active)
                                        gate.on_active();
                        w &= ~(unsigned)SAGE_GATE_BIT_NOTE;
                }
                if (!(w & (SAGE_GATE_BIT_CLOSED | SAGE_GATE_BIT_FAILED)))
                        return CUDA_SUCCESS; /* counted in flight */
                /* Not in flight while waiting: the drain must not wait for us. */
                atomic_fetch_add(&t->leaves, 1);
                sage_gate_left();
                r = wait_open(deadline);
                if (r != CUDA_SUCCESS)
                        return r;
                atomic_fetch_add(&t->enters, 1);
                atomic_thread_fence(memory_order_seq_cst);
        }
}
