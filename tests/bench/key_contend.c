/*
 * Micro-benchmark of content keys on shared CPUs, not a test: P processes
 * key a GPT-2-medium-like set of tensors (97 pieces, 674 MiB: 24 layers of
 * 6, 2, 8 and 8 MiB, one of 98 MiB) at the same moment, while H threads
 * spin on the CPUs (other instances building their models), once for each
 * pool size T (common/hash_pool.c: the caller + T - 1 helpers). Per T it
 * prints the processes' key time (median, max), its tail (the callers'
 * waits for helpers, SageHashPoolUse.tail_ns), the helpers that took part,
 * and the keying thread's CPU time and wait for a CPU (schedstat).
 * Reading it: if the key's time grows with T while the CPUs are shared and
 * the tail holds the growth, the helpers straggle (descheduled holding a
 * chunk) and a loaded machine should key on the calling thread alone.
 *
 *   build/tests/unit/key-contend [P (default CPUs)] [H (default CPUs)] [T...] (default 1 2 4 8)
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "hash_pool.h"
#include "util.h"

#define MIB ((size_t)1 << 20)
#define LAYERS 24
#define MAX_T 16

typedef struct Result {
        double key_ms, tail_ms, cpu_ms, runq_ms;
        unsigned helpers;
} Result;

static atomic_bool spinning = true;

static void *spin(void *arg) {
        volatile uint64_t x = 0;

        while (atomic_load_explicit(&spinning, memory_order_relaxed))
                x++;
        return arg;
}

static double now_ms(clockid_t c) {
        return sage_clock_ns(c) / 1e6;
}

/* This thread's wait for a CPU so far (ms; /proc/thread-self/schedstat's second field), -1 if unknown. */
static double runq_ms(void) {
        FILE *f = fopen("/proc/thread-self/schedstat", "re");
        unsigned long long run, wait;
        int ok = f && fscanf(f, "%llu %llu", &run, &wait) == 2;

        if (f)
                fclose(f);
        return ok ? wait / 1e6 : -1;
}

/* One process: fills its memory, says so on `ready`, waits for the start byte, keys every piece on
 * `threads`, writes its Result to `out`. */
static void keyer(int ready, int start, int out, unsigned threads) {
        static const size_t layer[] = { 6 * MIB, 2 * MIB, 8 * MIB, 8 * MIB };
        size_t total = LAYERS * (6 + 2 + 8 + 8) * MIB + 98 * MIB, off = 0;
        unsigned char *data = malloc(total), go;
        SageHash *chunks = calloc(sage_content_key_nchunks(98 * MIB), sizeof(*chunks)), key;
        Result r = { 0 };
        double t0, c0, q0;

        if (!data || !chunks)
                _exit(1);
        for (size_t i = 0; i < total; i += 4096)
                data[i] = (unsigned char)(i >> 12); /* every page present, as a state dict's */
        if (write(ready, "r", 1) != 1 || read(start, &go, 1) != 1)
                _exit(1);
        t0 = now_ms(CLOCK_MONOTONIC);
        c0 = now_ms(CLOCK_THREAD_CPUTIME_ID);
        q0 = runq_ms();
        for (unsigned i = 0; i <= LAYERS * 4; i++) {
                size_t n = i < LAYERS * 4 ? layer[i % 4] : 98 * MIB;
                SageHashPoolUse use = sage_hash_pool_chunks(data + off, n, chunks, threads);
                key = sage_content_key_combine(chunks, sage_content_key_nchunks(n));
                (void)key;
                r.tail_ms += use.tail_ns / 1e6;
                r.helpers += use.helpers;
                off += n;
        }
        r.key_ms = now_ms(CLOCK_MONOTONIC) - t0;
        r.cpu_ms = now_ms(CLOCK_THREAD_CPUTIME_ID) - c0;
        r.runq_ms = runq_ms() - q0;
        if (write(out, &r, sizeof(r)) != (ssize_t)sizeof(r))
                _exit(1);
        _exit(0);
}

static int cmp(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static double median(double *v, unsigned n) {
        qsort(v, n, sizeof(*v), cmp);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        unsigned procs = argc > 1 ? (unsigned)atoi(argv[1]) : (unsigned)(cpus < 256 ? cpus : 256);
        unsigned hogs = argc > 2 ? (unsigned)atoi(argv[2]) : (unsigned)(cpus < 256 ? cpus : 256);
        unsigned ts[8] = { 1, 2, 4, 8 }, nts = 4;
        pthread_t hog[256];

        if (argc > 3) {
                nts = 0;
                for (int i = 3; i < argc && nts < 8; i++)
                        ts[nts++] = (unsigned)atoi(argv[i]);
        }
        if (procs < 1 || procs > 256 || hogs > 256) {
                fprintf(stderr, "usage: key-contend [P 1-256] [H 0-256] [T...]\n");
                return 2;
        }
        printf("key-contend: %ld CPUs, %u processes keying 674 MiB each (97 pieces) at once, %u spinning threads\n",
               cpus, procs, hogs);
        for (unsigned k = 0; k < nts; k++) {
                unsigned t = ts[k] < 1 ? 1 : ts[k] > MAX_T ? MAX_T : ts[k];
                int ready[2], start[2], res[2];
                char r1;
                double key[256], tail[256], cpu[256], runq[256], kmax = 0;
                unsigned helpers = 0, got = 0;
                pid_t pids[256];

                if (pipe(ready) || pipe(start) || pipe(res))
                        return 1;
                for (unsigned p = 0; p < procs; p++)
                        if ((pids[p] = fork()) == 0) {
                                close(ready[0]);
                                close(start[1]);
                                close(res[0]);
                                keyer(ready[1], start[0], res[1], t);
                        }
                close(ready[1]);
                close(start[0]);
                close(res[1]);
                for (unsigned p = 0; p < procs; p++) /* every process's memory filled before any keys */
                        if (read(ready[0], &r1, 1) != 1)
                                return 1;
                atomic_store(&spinning, true);
                for (unsigned h = 0; h < hogs; h++)
                        if (pthread_create(&hog[h], NULL, spin, NULL) != 0)
                                return 1;
                usleep(100 * 1000); /* the spinners take the CPUs */
                for (unsigned p = 0; p < procs; p++)
                        if (write(start[1], "g", 1) != 1)
                                return 1;
                for (Result r; got < procs && read(res[0], &r, sizeof(r)) == (ssize_t)sizeof(r); got++) {
                        key[got] = r.key_ms;
                        tail[got] = r.tail_ms;
                        cpu[got] = r.cpu_ms;
                        runq[got] = r.runq_ms;
                        helpers += r.helpers;
                        kmax = r.key_ms > kmax ? r.key_ms : kmax;
                }
                atomic_store(&spinning, false);
                for (unsigned h = 0; h < hogs; h++)
                        pthread_join(hog[h], NULL);
                for (unsigned p = 0; p < procs; p++)
                        waitpid(pids[p], NULL, 0);
                close(ready[0]);
                close(start[1]);
                close(res[0]);
                if (got < procs) {
                        fprintf(stderr, "key-contend: %u of %u processes reported\n", got, procs);
                        return 1;
                }
                printf("T=%-2u key %.1f ms median, %.1f max; tail %.1f ms; helpers %.1f a process; "
                       "keying thread: CPU %.1f ms, waited for a CPU %.1f ms\n",
                       t, median(key, got), kmax, median(tail, got), (double)helpers / got, median(cpu, got),
                       median(runq, got));
                fflush(stdout);
        }
        return 0;
}
