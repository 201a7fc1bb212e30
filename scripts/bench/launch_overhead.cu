/*
 * Kernel launch cost, the hottest path libsage interposes. Two figures, each
 * measured `reps` times (median and min reported):
 *   async_ns: a tight loop of empty <<<1,1>>> launches on the default stream,
 *             one cudaStreamSynchronize at the end, per launch;
 *   sync_ns:  launch + cudaStreamSynchronize per iteration (latency).
 * Prints one JSON object on stdout. scripts/bench/launch-overhead.sh runs it
 * natively and under libsage, interleaved, and compares.
 *
 * Usage: launch_overhead [--launches N] [--sync-launches N] [--reps N]
 */
#include "bench_common.h"

__global__ void empty_kernel(void) {
}

static long arg_value(int argc, char **argv, const char *name, long def) {
        for (int i = 1; i + 1 < argc; i++)
                if (strcmp(argv[i], name) == 0)
                        return strtol(argv[i + 1], NULL, 10);
        return def;
}

int main(int argc, char **argv) {
        long launches = arg_value(argc, argv, "--launches", 200000);
        long sync_launches = arg_value(argc, argv, "--sync-launches", 20000);
        int reps = (int)arg_value(argc, argv, "--reps", 7);
        if (launches < 1 || sync_launches < 1 || reps < 1) {
                fprintf(stderr, "usage: %s [--launches N] [--sync-launches N] [--reps N]\n", argv[0]);
                return 2;
        }

        RT_CHECK(cudaFree(0));
        /* Warm-up: module load, launch path, queue. */
        for (int i = 0; i < 10000; i++)
                empty_kernel<<<1, 1>>>();
        RT_CHECK(cudaGetLastError());
        RT_CHECK(cudaStreamSynchronize(0));

        double *async_ns = (double *)calloc((size_t)reps, sizeof(double));
        double *sync_ns = (double *)calloc((size_t)reps, sizeof(double));
        if (!async_ns || !sync_ns)
                return 1;
        for (int r = 0; r < reps; r++) {
                uint64_t t0 = now_ns();
                for (long i = 0; i < launches; i++)
                        empty_kernel<<<1, 1>>>();
                RT_CHECK(cudaStreamSynchronize(0));
                async_ns[r] = (double)(now_ns() - t0) / (double)launches;
                RT_CHECK(cudaGetLastError());

                t0 = now_ns();
                for (long i = 0; i < sync_launches; i++) {
                        empty_kernel<<<1, 1>>>();
                        RT_CHECK(cudaStreamSynchronize(0));
                }
                sync_ns[r] = (double)(now_ns() - t0) / (double)sync_launches;
                RT_CHECK(cudaGetLastError());
        }

        printf("{\"bench\":\"launch_overhead\",\"sage_loaded\":%s,\"launches\":%ld,"
               "\"sync_launches\":%ld,\"reps\":%d,",
               sage_loaded() ? "true" : "false", launches, sync_launches, reps);
        print_samples("async_ns", async_ns, reps);
        printf(",");
        print_samples("sync_ns", sync_ns, reps);
        printf("}\n");
        free(async_ns);
        free(sync_ns);
        return 0;
}
