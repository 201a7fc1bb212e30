/*
 * How many copying threads a staged upload takes (share_stage.h): the CPUs
 * this process may use (its affinity mask; its cgroup's CPU quota, where
 * that is less, read once per process) and the load, read at each upload;
 * for uploads of 4 to 16 buffers, no more than the DMA keeps up with (the
 * pace, learnt from those uploads' timelines, which SAGE_VERBOSE=3 logs).
 */
#include "share_stage.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/*
 * The quota, read once per process (share_stage_quota_cpus): `pid` says
 * whose it is (a fork()ed child reads its own: it may have been moved to
 * another cgroup); the paths are a test's to change.
 */
static struct {
        _Atomic pid_t pid;
        _Atomic long cpus;
        const char *self_cgroup, *cgroup_root;
} cached_quota = { 0, 0, "/proc/self/cgroup", "/sys/fs/cgroup" };

#include "share_key.h"

long share_stage_cpus(long affinity, long quota, long period) {
        long q = quota > 0 && period > 0 ? (quota + period - 1) / period : 0;

        return q > 0 && q < affinity ? q : affinity;
}

/* The first one or two numbers of a file; false: no file, or no number ("max": no quota). */
static bool read_longs(const char *path, long *a, long *b) {
        FILE *f = fopen(path, "re");
        int n = f ? fscanf(f, "%ld %ld", a, b) : 0;

        if (f)
                fclose(f);
        return n >= 1;
}

/* The quota of cgroup `cg` (its first `len` characters) as CPUs; 0: none. */
static long cgroup_quota(const char *cg, size_t len, bool v2) {
        char path[640];
        long quota = 0, period = 100000, unused;

        if (v2) {
                snprintf(path, sizeof(path), "%s%.*s/cpu.max", cached_quota.cgroup_root, (int)len, cg);
                if (!read_longs(path, &quota, &period))
                        return 0;
        } else {
                snprintf(path, sizeof(path), "%s/cpu%.*s/cpu.cfs_quota_us", cached_quota.cgroup_root, (int)len, cg);
                if (!read_longs(path, &quota, &unused))
                        return 0;
                snprintf(path, sizeof(path), "%s/cpu%.*s/cpu.cfs_period_us", cached_quota.cgroup_root, (int)len, cg);
                read_longs(path, &period, &unused);
        }
        quota = share_stage_cpus(LONG_MAX, quota, period);
        return quota == LONG_MAX ? 0 : quota;
}

/*
 * The CPU quota of this process's cgroup or of an ancestor, as CPUs (0:
 * none): a container may see 16 CPUs but get 8 CPUs' time, and threads
 * beyond its quota are stopped for the rest of the period (100 ms: a whole
 * upload). cgroup v2's cpu.max, else v1's cpu.cfs_quota_us.
 */
static long quota_cpus(void) {
        char line[512], *cg = NULL, *p;
        FILE *f = fopen(cached_quota.self_cgroup, "re");
        long best = 0, q;
        bool v2 = false;

        while (f && !cg && fgets(line, sizeof(line), f)) {
                line[strcspn(line, "\n")] = 0;
                if (strncmp(line, "0::", 3) == 0)
                        v2 = true, cg = line + 3;
                else if ((p = strstr(line, ":cpu,")) || (p = strstr(line, ":cpu:")) || (p = strstr(line, ",cpu:")) ||
                         (p = strstr(line, ",cpu,")))
                        cg = strchr(p + 1, ':') + 1;
        }
        if (f)
                fclose(f);
        /* The cgroup and each ancestor ("/a/b", "/a", ""): the smallest quota binds. */
        for (size_t len = cg ? strlen(cg) : 0; cg; len--) {
                while (len > 0 && cg[len - 1] == '/')
                        len--;
                if ((q = cgroup_quota(cg, len, v2)) > 0 && (!best || q < best))
                        best = q;
                while (len > 0 && cg[len - 1] != '/')
                        len--;
                if (!len)
                        break;
        }
        return best;
}

long share_stage_quota_cpus(void) {
        pid_t self = getpid();

        if (atomic_load_explicit(&cached_quota.pid, memory_order_acquire) != self) { /* two at once: the same answer */
                atomic_store_explicit(&cached_quota.cpus, quota_cpus(), memory_order_relaxed);
                atomic_store_explicit(&cached_quota.pid, self, memory_order_release);
        }
        return atomic_load_explicit(&cached_quota.cpus, memory_order_relaxed);
}

void share_stage_quota_paths(const char *self_cgroup, const char *cgroup_root) {
        cached_quota.self_cgroup = self_cgroup;
        cached_quota.cgroup_root = cgroup_root;
        atomic_store(&cached_quota.pid, 0);
}

unsigned share_stage_threads_now(void) {
        long cpus = sage_share_cpu_count(), q = share_stage_quota_cpus();

        return share_stage_threads(q ? share_stage_cpus(cpus, q, 1) : cpus, sage_share_running_now());
}

unsigned share_stage_threads(long cpus, long running) {
        long others = running > 1 ? running - 1 : 0, t = cpus - others - 1; /* a CPU for the caller */

        if (running <= 0 || others > cpus / 4) /* unknown, or a busy machine: polite */
                t = t < cpus / 2 ? t : cpus / 2;
        return t < 1 ? 1 : t > SHARE_STAGE_MAX_THREADS ? SHARE_STAGE_MAX_THREADS : (unsigned)t;
}

bool share_stage_paced(size_t n, size_t slot_bytes) {
        return n >= SHARE_STAGE_PACE_ROUNDS * slot_bytes && n <= SHARE_STAGE_PACED_MAX * slot_bytes;
}

unsigned share_stage_pace(unsigned pace, unsigned offered, size_t n, size_t slot_bytes, const ShareStageCost *c) {
        uint64_t need;

        if (!share_stage_paced(n, slot_bytes) || !c->dma_ns || !c->copy_ns)
                return pace;
        if (c->tail_ns * 4 > c->dma_ns) { /* the host ran ahead: threads at one's rate to match the DMA's, + 1 */
                need = (c->copy_ns + c->dma_ns - 1) / c->dma_ns + 1;
                need = need < 2 ? 2 : need;
                return need < offered ? (unsigned)need : pace;
        }
        if (c->tail_ns * 10 < c->dma_ns && pace) /* the host was behind: a quarter more, none past the most */
                return pace + pace / 4 + 1 < SHARE_STAGE_MAX_THREADS ? pace + pace / 4 + 1 : 0;
        return pace;
}

/* Milliseconds and GB/s of the timeline line. */
static double ms_of(uint64_t ns) {
        return (double)ns / 1e6;
}

static double gbps(size_t bytes, uint64_t ns) {
        return ns ? (double)bytes / (double)ns : 0;
}

/*
 * One line per staged upload, so one GPU run shows what bounds it: the
 * host (waiting for chunks), the DMA (waiting for streams), the buffers
 * (threads waiting for one), or the start (time to the first DMA).
 */
void share_stage_log_timeline(size_t n, const ShareStageCost *c) {
        if (!sage_log_enabled(SAGE_LOG_DEBUG))
                return;
        sage_log(SAGE_LOG_DEBUG,
                 "staged %zu MiB in %.2f ms (%.1f GB/s): %u threads, %zu rounds, %zu copies; first DMA at %.2f ms; "
                 "host copy %.1f GB/s per thread, %.2f cores busy; caller waited %.2f ms for chunks, %.2f ms for "
                 "DMA (drain %.2f); DMA busy %.2f ms, %.2f of them after the last chunk; threads waited %.2f ms for "
                 "buffers; %u of %u buffers used; %u threads asked for, pace now %u (0: none); %s stores",
                 n >> 20, ms_of(c->wall_ns), gbps(n, c->wall_ns), c->threads, c->rounds, c->copies,
                 ms_of(c->first_dma_ns), gbps(n, c->copy_ns), c->wall_ns ? (double)c->cpu_ns / (double)c->wall_ns : 0,
                 ms_of(c->wait_host_ns), ms_of(c->wait_dma_ns), ms_of(c->drain_ns), ms_of(c->dma_ns), ms_of(c->tail_ns),
                 ms_of(c->wait_buf_ns), c->buffers, SHARE_STAGE_SLOTS, c->offered, c->pace,
                 c->streamed ? "streamed" : "cached");
}
