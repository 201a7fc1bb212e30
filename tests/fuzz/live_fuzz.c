/*
 * sage-live-fuzz: hostile clients against a running saged, for a bounded time.
 *
 *   sage-live-fuzz --saged PATH [--seconds S] [--seed N] [--workers N]
 *                  [--log FILE] [--skip zero-fds,socket-fds,bursts] [--fd-slack N]
 *   sage-live-fuzz --write-corpus DIR     (seeds for fuzz-proto: every message type)
 *
 * Starts saged (built with ASan+UBSan by scripts/fuzz.sh, against the
 * simulated driver: LD_LIBRARY_PATH) in the foreground with two labelled
 * sockets besides the main one and a budget of 64 extents, its stderr into
 * the log. Then worker
 * processes (live_fuzz_worker.c) as uids 0, 65534 and 65533 (when run as
 * root; otherwise all as the caller) send valid, mutated and hostile traffic
 * to all three sockets; this process kills one now and then (SIGKILL) and
 * starts it again, and PINGs the broker throughout.
 *
 * Passing means all of: no worker saw a violation (a missing, malformed or
 * wrong reply; an answered notice; a namespace crossed); saged stayed alive and answers PING;
 * once every worker is gone its clients and references drop back to the
 * probe's, evicting every unreferenced extent leaves none, and its open fds
 * return to the count before the run (+ --fd-slack, default 2); it exits 0
 * on SIGTERM; and the log holds nothing from a sanitizer. The seed is
 * printed first: the same seed replays every worker's traffic (the
 * interleaving is the scheduler's). --skip leaves out a hostile class, to
 * tell a known defect from a new one; CI never passes it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker_client.h"
#include "live_fuzz.h"
#include "util.h"

#define PROBE_TIMEOUT_MS 10000
#define SETTLE_MS 10000

typedef struct Run {
        const char *saged_path, *log_path;
        uint64_t seed;
        unsigned seconds, n_workers, skip, fd_slack;
        char dir[64], sockets[FUZZ_SOCKETS][96], log_default[96];
        const char *socket_ptrs[FUZZ_SOCKETS];
        uint32_t labels[FUZZ_SOCKETS];
        uid_t uids[FUZZ_UIDS];
        unsigned n_uids;
        pid_t saged;
        pid_t workers[FUZZ_MAX_WORKERS];
        unsigned generation[FUZZ_MAX_WORKERS];
        FuzzShared *shared;
        unsigned failures, kills, respawns;
} Run;

static Run run;

#define FAIL(...)                                                 \
        do {                                                      \
                fprintf(stderr, "live-fuzz: FAIL: " __VA_ARGS__); \
                fputc('\n', stderr);                              \
                run.failures++;                                   \
        } while (0)

/* Nothing outlives a failed or interrupted run: not saged, not a worker, not the sockets. */
static void cleanup(void) {
        for (unsigned i = 0; i < run.n_workers; i++)
                if (run.workers[i] > 0) {
                        kill(run.workers[i], SIGKILL);
                        waitpid(run.workers[i], NULL, 0);
                }
        if (run.saged > 0) {
                kill(run.saged, SIGKILL);
                waitpid(run.saged, NULL, 0);
        }
        for (unsigned i = 0; i < FUZZ_SOCKETS; i++)
                unlink(run.sockets[i]);
        if (run.dir[0])
                rmdir(run.dir);
}

static void start_saged(void) {
        char label_a[160], label_b[160];
        const char *argv[16];
        size_t n = 0;

        argv[n++] = run.saged_path;
        argv[n++] = "--foreground";
        argv[n++] = "--socket";
        argv[n++] = run.sockets[0];
        /* Room for 64 extents: publishes evict and get refused (BUDGET) all the time. */
        argv[n++] = "--budget";
        argv[n++] = "128M";
        if (geteuid() == 0) {
                /* Labelled sockets admit root and the uids listed: the workers' (mode 0666 then). */
                snprintf(label_a, sizeof(label_a), "%s=%s,uid=65534,uid=65533", run.sockets[1], fuzz_label_names[1]);
                snprintf(label_b, sizeof(label_b), "%s=%s,uid=65534,uid=65533", run.sockets[2], fuzz_label_names[2]);
                argv[n++] = "--label-socket";
                argv[n++] = label_a;
                argv[n++] = "--label-socket";
                argv[n++] = label_b;
        }
        argv[n] = NULL;
        run.saged = fork();
        if (run.saged < 0) {
                perror("fork");
                exit(1);
        }
        if (run.saged == 0) {
                int log = open(run.log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (log < 0 || null < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
                        _exit(126);
                /* A fuzzer killed by a timeout leaves no broker behind. */
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                execv(run.saged_path, (char **)argv);
                _exit(127);
        }
}

/* Connect the probe once saged listens (it says HELLO: the broker answers). */
static SageBroker *wait_for_saged(void) {
        for (int i = 0; i < 1000; i++) {
                SageBroker *b;
                if (sage_broker_connect(&b, run.sockets[0], PROBE_TIMEOUT_MS) == 0)
                        return b;
                if (waitpid(run.saged, NULL, WNOHANG) != 0) {
                        run.saged = 0;
                        break;
                }
                usleep(10000); /* nothing to wait on before the socket exists */
        }
        fprintf(stderr, "live-fuzz: saged did not come up (log: %s)\n", run.log_path);
        exit(1);
}

/* saged's open fds: count, and their targets into `targets` (NULL: count only). */
static unsigned list_fds(char targets[][128], unsigned max) {
        char path[64], link[PATH_MAX];
        unsigned n = 0;
        struct dirent *d;
        DIR *dir;

        snprintf(path, sizeof(path), "/proc/%d/fd", (int)run.saged);
        dir = opendir(path);
        if (!dir)
                return 0;
        while ((d = readdir(dir))) {
                if (d->d_name[0] == '.')
                        continue;
                if (targets && n < max) {
                        ssize_t len;
                        snprintf(link, sizeof(link), "%s/%s", path, d->d_name);
                        len = readlink(link, targets[n], 127);
                        targets[n][len > 0 ? len : 0] = 0;
                }
                n++;
        }
        closedir(dir);
        return n;
}

/* Until only the probe is connected and no reference is held, or SETTLE_MS. */
static bool settle(SageBroker *probe, SageStats *st) {
        for (int i = 0; i < SETTLE_MS / 10; i++) {
                if (sage_broker_stats(probe, st) != 0)
                        return false;
                if (st->clients == 1 && st->refs == 0)
                        return true;
                usleep(10000); /* the broker drops hung-up clients on its own schedule */
        }
        return false;
}

static void spawn_worker(unsigned i, uint64_t deadline_ns, int probe_fd) {
        Rng r = { run.seed ^ (0x5851f42d4c957f2dull * (i + 1)) ^ ((uint64_t)run.generation[i] << 40) };
        FuzzWorker w = {
                .index = i,
                .uid = run.uids[i % run.n_uids],
                .seed = rng_next(&r),
                .deadline_ns = deadline_ns,
                .key_seed = run.seed,
                .sockets = run.socket_ptrs,
                .labels = run.labels,
                .uids = run.uids,
                .n_uids = run.n_uids,
                .skip = run.skip,
                .shared = run.shared,
        };
        pid_t pid = fork();

        if (pid < 0) {
                FAIL("fork: %s", strerror(errno));
                return;
        }
        if (pid == 0) {
                close(probe_fd);
                signal(SIGPIPE, SIG_IGN);
                if (geteuid() == 0 && w.uid != 0 &&
                    (setgroups(0, NULL) < 0 || setresgid(w.uid, w.uid, w.uid) < 0 ||
                     setresuid(w.uid, w.uid, w.uid) < 0)) {
                        perror("live-fuzz: setresuid");
                        _exit(2);
                }
                /* After the uid change, which clears it. */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                _exit(fuzz_worker_run(&w));
        }
        run.workers[i] = pid;
        run.generation[i]++;
}

/* Reap what exited: sudden exits (3) and our kills come back; violations are failures. */
static void reap(bool respawn, uint64_t deadline_ns, int probe_fd) {
        for (unsigned i = 0; i < run.n_workers; i++) {
                int status;
                if (run.workers[i] <= 0 || waitpid(run.workers[i], &status, WNOHANG) != run.workers[i])
                        continue;
                run.workers[i] = 0;
                if (WIFEXITED(status) && WEXITSTATUS(status) == 1)
                        FAIL("worker %u (generation %u) saw violations", i, run.generation[i]);
                else if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
                        FAIL("worker %u could not start", i);
                else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
                        FAIL("worker %u died of signal %d", i, WTERMSIG(status));
                if (respawn && sage_now_ns() < deadline_ns) {
                        run.respawns++;
                        spawn_worker(i, deadline_ns, probe_fd);
                }
        }
}

static bool saged_alive(void) {
        int status;
        if (run.saged > 0 && waitpid(run.saged, &status, WNOHANG) == run.saged) {
                FAIL("saged died (%s %d)", WIFSIGNALED(status) ? "signal" : "exit status",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
                run.saged = 0;
        }
        return run.saged > 0;
}

static void fuzz(SageBroker *probe) {
        uint64_t deadline = sage_now_ns() + (uint64_t)run.seconds * 1000000000ull;
        int probe_fd = sage_broker_fd(probe);
        Rng r = { run.seed };

        for (unsigned i = 0; i < run.n_workers; i++)
                spawn_worker(i, deadline, probe_fd);
        while (sage_now_ns() < deadline && saged_alive()) {
                usleep(50000 + (useconds_t)rng_below(&r, 250000)); /* the kill schedule: not a wait for anything */
                if (rng_chance(&r, 15)) {
                        unsigned i = (unsigned)rng_below(&r, run.n_workers);
                        if (run.workers[i] > 0 && kill(run.workers[i], SIGKILL) == 0)
                                run.kills++;
                }
                reap(true, deadline, probe_fd);
                if (sage_broker_ping(probe) != 0) {
                        FAIL("saged stopped answering PING during the run");
                        break;
                }
        }
        /* Workers stop at the deadline on their own; a stalled one is a failure, not a wait forever. */
        for (int i = 0; i < (FUZZ_REPLY_TIMEOUT_MS + 5000) / 10; i++) {
                bool left = false;
                reap(false, deadline, probe_fd);
                for (unsigned k = 0; k < run.n_workers; k++)
                        left |= run.workers[k] > 0;
                if (!left)
                        return;
                usleep(10000);
        }
        for (unsigned i = 0; i < run.n_workers; i++)
                if (run.workers[i] > 0) {
                        FAIL("worker %u did not finish", i);
                        kill(run.workers[i], SIGKILL);
                }
        reap(false, deadline, probe_fd);
}

/* Print the log's sanitizer reports (and what follows each: the stack); false if there are any. */
static bool log_clean(void) {
        static const char *const markers[] = { "AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                                               "runtime error:", "ThreadSanitizer" };
        char line[1024];
        int context = 0;
        bool clean = true;
        FILE *f = fopen(run.log_path, "r");

        if (!f) {
                FAIL("cannot read the log %s", run.log_path);
                return false;
        }
        while (fgets(line, sizeof(line), f)) {
                for (size_t i = 0; i < SAGE_ARRAY_SIZE(markers); i++)
                        if (strstr(line, markers[i])) {
                                clean = false;
                                context = 40;
                        }
                if (context > 0) {
                        context--;
                        fprintf(stderr, "  saged: %s", line);
                }
        }
        fclose(f);
        return clean;
}

static void check_end(SageBroker *probe, unsigned base_fds, char base[][128]) {
        static char now[4096][128];
        SageEvictReply evicted;
        SageStats st;
        SageBroker *fresh;
        int status;

        if (!saged_alive())
                return;
        if (sage_broker_ping(probe) != 0 || sage_broker_connect(&fresh, run.sockets[0], PROBE_TIMEOUT_MS) != 0) {
                FAIL("saged does not answer PING after the run");
                return;
        }
        sage_broker_free(fresh);
        if (!settle(probe, &st))
                FAIL("clients and references did not drop: %llu clients (1 expected), %llu refs (0 expected)",
                     (unsigned long long)st.clients, (unsigned long long)st.refs);
        if (sage_broker_evict(probe, 0, SAGE_EVICT_ALL_UNREFERENCED, &evicted) != 0 ||
            sage_broker_stats(probe, &st) != 0 || st.extents != 0)
                FAIL("%llu extents left after evicting every unreferenced one", (unsigned long long)st.extents);
        unsigned n = list_fds(now, SAGE_ARRAY_SIZE(now));
        printf("live-fuzz: saged has %u fds open (%u before the run), %llu clients, %llu extents; it served "
               "%llu publishes, %llu hits, %llu misses, %llu evictions, %llu refused for the budget\n",
               n, base_fds, (unsigned long long)st.clients, (unsigned long long)st.extents,
               (unsigned long long)st.publishes, (unsigned long long)st.hits, (unsigned long long)st.misses,
               (unsigned long long)st.evictions, (unsigned long long)st.rejected_budget);
        if (n > base_fds + run.fd_slack) {
                FAIL("saged's open fds grew from %u to %u; new ones (up to 20):", base_fds, n);
                unsigned shown = 0;
                for (unsigned i = 0; i < n && i < SAGE_ARRAY_SIZE(now) && shown < 20; i++) {
                        bool old = false;
                        for (unsigned k = 0; k < base_fds && !old; k++)
                                old = strcmp(now[i], base[k]) == 0;
                        if (!old && ++shown)
                                fprintf(stderr, "  %s\n", now[i]);
                }
        }
        sage_broker_free(probe);
        kill(run.saged, SIGTERM);
        for (int i = 0; i < 1000 && waitpid(run.saged, &status, WNOHANG) == 0; i++)
                usleep(10000);
        if (waitpid(run.saged, &status, WNOHANG) == 0) {
                FAIL("saged did not exit within 10 s of SIGTERM");
                return;
        }
        run.saged = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                FAIL("saged did not exit 0 on SIGTERM (%s %d)", WIFSIGNALED(status) ? "signal" : "status",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/*
 * Seeds for fuzz-proto: one valid message of every type, replies included,
 * and the largest ones (full notes, a full LIST page), which random
 * mutation alone reaches late if ever. Files DIR/TYPE-N; returns 0 or 1.
 */
static int write_corpus(const char *dir) {
        /* Every type of proto.def, and ERROR. */
        static const unsigned types[] = {
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        SAGE_MSG_##NAME, SAGE_MSG_##REPLY_NAME,
#include "proto.def"
#undef SAGE_MESSAGE
                SAGE_MSG_ERROR,
        };
        static uint8_t buf[SAGE_PROTO_MAX_MESSAGE], notes[SAGE_PROTO_NOTES_MAX];
        static SageListEntry entries[SAGE_PROTO_LIST_MAX];

        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return 1;
        for (size_t i = 0; i < SAGE_ARRAY_SIZE(types); i++)
                for (unsigned big = 0; big < 2; big++) {
                        SageMessage m;
                        char path[PATH_MAX];
                        ssize_t n;
                        FILE *f;

                        sage_proto_init(&m, types[i], (uint32_t)i);
                        if (!(types[i] & SAGE_MSG_REPLY_BIT))
                                m.lookup = fuzz_key(1, 0, 0); /* overlays every key, id and token */
                        if (types[i] == SAGE_MSG_PUBLISH) {
                                m.header.flags = SAGE_PUBLISH_SEALED;
                                m.publish.notes = (SageNotes){ big ? SAGE_PROTO_NOTES_MAX : 3, notes };
                        }
                        if (types[i] == SAGE_MSG_LOOKUP_REPLY)
                                m.lookup_reply = (SageLookupReply){
                                        1, 7, FUZZ_KEY_SIZE, { big ? SAGE_PROTO_NOTES_MAX : 3, notes }
                                };
                        if (types[i] == SAGE_MSG_LIST_REPLY)
                                m.list_reply = (SageListReply){ big ? SAGE_PROTO_LIST_MAX : 2, 1, entries };
                        if (types[i] == SAGE_MSG_LABEL_REPLY)
                                snprintf(m.label_reply.name, sizeof(m.label_reply.name), "%s", fuzz_label_names[1]);
                        if (types[i] == SAGE_MSG_ERROR)
                                sage_proto_error(&m, 9, SAGE_ERR_LIMIT, "%s", big ? "too many" : "");
                        n = sage_proto_encode(&m, buf, sizeof(buf));
                        snprintf(path, sizeof(path), "%s/%s-%u", dir, sage_proto_type_name(types[i]), big);
                        f = fopen(path, "w");
                        if (n < 0 || !f || fwrite(buf, 1, (size_t)n, f) != (size_t)n || fclose(f) != 0) {
                                fprintf(stderr, "live-fuzz: cannot write %s\n", path);
                                return 1;
                        }
                }
        return 0;
}

static unsigned parse_skip(const char *text) {
        unsigned skip = 0;
        if (strstr(text, "zero-fds"))
                skip |= FUZZ_SKIP_ZERO_FDS;
        if (strstr(text, "socket-fds"))
                skip |= FUZZ_SKIP_SOCKET_FDS;
        if (strstr(text, "bursts"))
                skip |= FUZZ_SKIP_BURSTS;
        return skip;
}

static void parse_args(int argc, char **argv) {
        static const struct option options[] = {
                { "saged", required_argument, NULL, 'S' },
                { "seconds", required_argument, NULL, 't' },
                { "seed", required_argument, NULL, 's' },
                { "workers", required_argument, NULL, 'w' },
                { "log", required_argument, NULL, 'l' },
                { "skip", required_argument, NULL, 'k' },
                { "fd-slack", required_argument, NULL, 'f' },
                { "write-corpus", required_argument, NULL, 'c' },
                { NULL, 0, NULL, 0 },
        };
        int opt;

        run.seconds = 20;
        run.fd_slack = 2; /* what a broker may open once and keep (a reserve fd against EMFILE) */
        run.n_workers = 6;
        if (getrandom(&run.seed, sizeof(run.seed), 0) != sizeof(run.seed))
                run.seed = (uint64_t)getpid() ^ sage_now_ns();
        while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
                switch (opt) {
                case 'S': run.saged_path = optarg; break;
                case 't': run.seconds = (unsigned)strtoul(optarg, NULL, 10); break;
                case 's': run.seed = strtoull(optarg, NULL, 0); break;
                case 'w': run.n_workers = (unsigned)strtoul(optarg, NULL, 10); break;
                case 'l': run.log_path = optarg; break;
                case 'k': run.skip = parse_skip(optarg); break;
                case 'f': run.fd_slack = (unsigned)strtoul(optarg, NULL, 10); break;
                case 'c': exit(write_corpus(optarg));
                default: exit(2);
                }
        }
        if (!run.saged_path || optind != argc || run.n_workers == 0 || run.n_workers > FUZZ_MAX_WORKERS) {
                fprintf(stderr,
                        "usage: sage-live-fuzz --saged PATH [--seconds S] [--seed N] [--workers 1-%d] "
                        "[--log FILE] [--skip zero-fds,socket-fds,bursts] [--fd-slack N]\n",
                        FUZZ_MAX_WORKERS);
                exit(2);
        }
}

int main(int argc, char **argv) {
        static char base[4096][128];
        SageBroker *probe;
        unsigned base_fds;
        SageStats st;

        parse_args(argc, argv);
        setvbuf(stdout, NULL, _IONBF, 0);
        signal(SIGPIPE, SIG_IGN);
        setenv("SAGE_FAKE_DEVICES", "1", 0);
        run.n_uids = geteuid() == 0 ? FUZZ_UIDS : 1;
        run.uids[0] = geteuid();
        run.uids[1] = 65534;
        run.uids[2] = 65533;
        snprintf(run.dir, sizeof(run.dir), "/tmp/sage-live-fuzz-XXXXXX");
        if (!mkdtemp(run.dir) || chmod(run.dir, 0755) < 0) {
                perror("live-fuzz: mkdtemp");
                return 1;
        }
        atexit(cleanup);
        for (unsigned i = 0; i < FUZZ_SOCKETS; i++) {
                /* Without root there are no labelled sockets: every "socket" is the main one. */
                snprintf(run.sockets[i], sizeof(run.sockets[i]), "%s/%s.sock", run.dir,
                         geteuid() == 0 ? (const char *[]){ "main", "a", "b" }[i] : "main");
                run.socket_ptrs[i] = run.sockets[i];
                run.labels[i] = geteuid() == 0 ? i : 0;
        }
        if (!run.log_path) {
                snprintf(run.log_default, sizeof(run.log_default), "/tmp/sage-live-fuzz-saged.%d.log", (int)getpid());
                run.log_path = run.log_default;
        }
        printf("live-fuzz: seed %llu, %u s, %u workers as uid%s", (unsigned long long)run.seed, run.seconds,
               run.n_workers, run.n_uids > 1 ? "s 0, 65534, 65533" : " of the caller (not root)");
        printf("; saged log %s\n  replay: sage-live-fuzz --saged %s --seed %llu --seconds %u --workers %u\n",
               run.log_path, run.saged_path, (unsigned long long)run.seed, run.seconds, run.n_workers);
        run.shared = mmap(NULL, sizeof(FuzzShared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (run.shared == MAP_FAILED) {
                perror("live-fuzz: mmap");
                return 1;
        }

        start_saged();
        probe = wait_for_saged();
        if (!settle(probe, &st)) {
                fprintf(stderr, "live-fuzz: saged did not settle before the run\n");
                return 1;
        }
        base_fds = list_fds(base, SAGE_ARRAY_SIZE(base));
        fuzz(probe);
        check_end(probe, base_fds, base);
        if (!log_clean())
                FAIL("sanitizer reports in saged's log (above; all of it in %s)", run.log_path);
        if (run.shared->violations)
                FAIL("%llu violations (above)", (unsigned long long)run.shared->violations);
        printf("live-fuzz: %llu packets, %llu replies, %llu hang-ups, %llu hits, %llu answers checked across "
               "namespaces, %llu notices left unanswered; %u kills, %u restarts; %s (seed %llu)\n",
               (unsigned long long)run.shared->requests, (unsigned long long)run.shared->replies,
               (unsigned long long)run.shared->hangups, (unsigned long long)run.shared->hits,
               (unsigned long long)run.shared->foreign_checks, (unsigned long long)run.shared->notices, run.kills,
               run.respawns, run.failures ? "FAILED" : "ok", (unsigned long long)run.seed);
        if (run.failures && !run.skip)
                fprintf(stderr, "live-fuzz: to tell a class of traffic apart, rerun with the seed and --skip "
                                "zero-fds (zero-length packets with fds), socket-fds (broker connections passed "
                                "as fds) or bursts (many connections at once)\n");
        return run.failures ? 1 : 0;
}
