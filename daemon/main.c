/*
 * saged: command line, budgets, signals, daemonising; then the server loop.
 *
 * SIGTERM/SIGINT/SIGHUP are blocked and read through a signalfd in the same
 * epoll set as the clients, so shutdown is an ordinary event: the loop
 * returns, every client is dropped (its references with it), extents are
 * released, the primary contexts let go, and the socket files removed (the
 * main one and every --label-socket).
 * Without --foreground saged forks into the background and the parent exits
 * only once the socket is listening, so "saged && sagectl ping" works.
 * Under systemd (deploy/systemd) saged takes the sockets of saged.socket
 * instead of binding its own, and says READY=1 once it listens
 * (activation.c).
 * saged renices itself (--nice, default -10) before the driver or saged
 * starts a thread: Linux keeps a nice value per thread and a new thread
 * takes its creator's, so every thread (the event loop, the driver's, the
 * suspend/resume workers) runs ahead of the clients' bulk hashing; a
 * daemonised saged sets its session's autogroup to the same value.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "activation.h"
#include "broker_client.h"
#include "config.h"
#include "extent_store.h"
#include "gpu.h"
#include "identity.h"
#include "instance_policy.h"
#include "log.h"
#include "main_options.h"
#include "options.h"
#include "server.h"
#include "util.h"

/* Every client and every CUDA-IPC registration is an open fd: take the
 * hard limit rather than the (often 1024) soft default. */
static void raise_fd_limit(void) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        sage_warn("cannot raise the fd limit: %s", strerror(errno));
        }
}

/* One event-loop thread answers every client, a hash probe and a dup each;
 * 16 clients hashing on every core kept it in the run queue for ms per
 * wake-up (docs/sharing.md). Not being permitted (not root, no
 * CAP_SYS_NICE) is no reason not to serve: say so, go on as started. */
static void apply_nice(int nice) {
        char text[8];
        int fd;

        if (nice == 0)
                return;
        if (setpriority(PRIO_PROCESS, 0, nice) < 0) {
                sage_info("cannot run at nice %d (%s): staying at nice %d", nice, strerror(errno),
                          getpriority(PRIO_PROCESS, 0));
                return;
        }
        /* With autogroups (kernel.sched_autogroup_enabled, no CPU cgroup) a
         * thread's nice orders it only within its session's autogroup, and a
         * daemonised saged leads a session of its own: its autogroup takes
         * the value too. Never a session saged does not lead (--foreground
         * from a shell): that would renice the operator's terminal. */
        if (getsid(0) != getpid() || (fd = open("/proc/self/autogroup", O_WRONLY | O_CLOEXEC)) < 0)
                return; /* not a session leader, or no autogroups in this kernel */
        snprintf(text, sizeof(text), "%d", nice);
        if (write(fd, text, strlen(text)) < 0)
                sage_info("cannot set saged's autogroup to nice %d: %s", nice, strerror(errno));
        close(fd);
}

/* SIZE (k/M/G/T suffixes) or N% of each device's memory. */
static int apply_budget(ExtentStore *store, Gpu *gpu, const char *text) {
        size_t len = strlen(text);
        uint64_t bytes = 0, pct = 0;
        bool is_pct = len > 1 && text[len - 1] == '%';

        if (is_pct) {
                char buf[32];
                if (len >= sizeof(buf))
                        return -EINVAL;
                memcpy(buf, text, len - 1);
                buf[len - 1] = 0;
                if (sage_parse_uint(buf, &pct) < 0 || pct > 100)
                        return -EINVAL;
        } else if (sage_parse_size(text, &bytes) < 0)
                return -EINVAL;
        for (uint32_t d = 0; d < gpu_device_count(gpu); d++) {
                uint64_t b = is_pct ? gpu_total_memory(gpu, d) / 100 * pct : bytes;
                if (!gpu_serves(gpu, d))
                        continue;
                extent_store_set_budget(store, d, b);
                sage_info("device %u: budget %llu MiB", d, (unsigned long long)(b >> 20));
        }
        return 0;
}

static void release_extent(void *userdata, Extent *e) {
        gpu_release(userdata, e->payload);
}

/* Fork into the background; the parent returns only to exit, once the child
 * wrote to `*ready_fd` (or died). */
static int daemonize(int *ready_fd) {
        int p[2];
        pid_t pid;
        char c;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid > 0) {
                close(p[1]);
                ssize_t n = read(p[0], &c, 1);
                _exit(n == 1 ? 0 : 1);
        }
        close(p[0]);
        setsid();
        if (chdir("/") < 0)
                return -errno;
        *ready_fd = p[1];
        return 0;
}

int main(int argc, char **argv) {
        static const struct option long_options[] = {
                { "socket", required_argument, NULL, 's' },
                { "budget", required_argument, NULL, 'b' },
                { "devices", required_argument, NULL, 'd' },
                { "driver", required_argument, NULL, 'D' },
                { "foreground", no_argument, NULL, 'f' },
                { "label-socket", required_argument, NULL, 'L' },
                { "container-namespaces", required_argument, NULL, 'C' },
                { "namespace-share", required_argument, NULL, 'N' },
                { "max-clients", required_argument, NULL, 'M' },
                { "max-clients-per-uid", required_argument, NULL, 'U' },
                { "max-clients-per-label", required_argument, NULL, 'P' },
                { "suspend", required_argument, NULL, 'S' },
                { "max-resumes", required_argument, NULL, 'R' },
                { "max-instances-per-uid", required_argument, NULL, 'K' },
                { "suspend-prepare-timeout", required_argument, NULL, 'T' },
                { "spool", required_argument, NULL, 'W' },
                { "spool-budget", required_argument, NULL, 'Z' },
                { "metrics-listen", required_argument, NULL, 'm' },
                { "metrics-listen-any", no_argument, NULL, 'A' },
                { "exit-idle", required_argument, NULL, 'I' },
                { "nice", required_argument, NULL, 'O' },
                { "instance-memory", required_argument, NULL, 'Y' },
                { "instance-evict", required_argument, NULL, 'E' },
                { "nvml-library", required_argument, NULL, 'n' },
                { "cgroup-root", required_argument, NULL, 'G' },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { NULL, 0, NULL, 0 },
        };
        Args args = { .budget = DEFAULT_BUDGET, .nice = DEFAULT_NICE };
        MetricsAddress metrics = { 0 };
        uint64_t idle_ms = 0;
        const char *failed_path;
        char default_socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
        uint32_t devices[EXTENT_STORE_MAX_DEVICES];
        uint8_t device_uuids[EXTENT_STORE_MAX_DEVICES][16];
        size_t n_devices = 0, n_device_uuids = 0;
        ExtentStore *store = NULL;
        Server *server = NULL;
        Gpu *gpu = NULL;
        int ready_fd = -1, sfd, opt, r, share = DEFAULT_NAMESPACE_SHARE;
        uint64_t instance_total = 0, instance_cap = 0;
        int inherited[ACTIVATION_MAX_FDS];
        size_t n_inherited = 0;
        sigset_t mask;

        sage_log_set_program("saged");
        /* Parse SAGE_* first: it sets libsage's log level (SAGE_VERBOSE), which
         * saged's own -v then overrides. */
        (void)sage_options();
        sage_log_set_level(SAGE_LOG_WARNING);
        while ((opt = getopt_long(argc, argv, "s:b:d:fvh", long_options, NULL)) >= 0) {
                switch (opt) {
                case 's': args.socket = optarg; break;
                case 'b': args.budget = optarg; break;
                case 'd': args.devices = optarg; break;
                case 'D': args.driver = optarg; break;
                case 'f': args.foreground = true; break;
                case 'N': args.namespace_share = optarg; break;
                case 'm': args.metrics_listen = optarg; break;
                case 'A': args.metrics_listen_any = true; break;
                case 'I': args.exit_idle = optarg; break;
                case 'v': args.verbosity++; break;
                case 'L':
                        if ((r = add_label_socket(&args, optarg)) != 0) {
                                args_clear(&args);
                                return r;
                        }
                        break;
                case 'K':
                case 'T':
                case 'W':
                case 'Z':
                case 'M':
                case 'U':
                case 'P':
                        if ((r = parse_limit(opt, optarg, &args)) != 0) {
                                args_clear(&args);
                                return r;
                        }
                        break;
                case 'O':
                        if ((r = parse_nice(optarg, &args)) != 0) {
                                args_clear(&args);
                                return r;
                        }
                        break;
                case 'C':
                        if (strcmp(optarg, "isolate") == 0)
                                args.container_namespaces = IDENTITY_ISOLATE;
                        else if (strcmp(optarg, "share") == 0)
                                args.container_namespaces = IDENTITY_SHARE;
                        else {
                                fprintf(stderr, "saged: --container-namespaces: expected isolate or share, got '%s'\n",
                                        optarg);
                                args_clear(&args);
                                return 2;
                        }
                        break;
                case 'S':
                        if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
                                fprintf(stderr, "saged: --suspend: expected on or off, got '%s'\n", optarg);
                                args_clear(&args);
                                return 2;
                        }
                        args.suspend_off = strcmp(optarg, "off") == 0;
                        break;
                case 'R':
                        if (sage_parse_uint(optarg, &args.max_resumes) < 0 || args.max_resumes == 0 ||
                            args.max_resumes > 64) {
                                fprintf(stderr, "saged: --max-resumes: expected a number from 1 to 64, got '%s'\n",
                                        optarg);
                                args_clear(&args);
                                return 2;
                        }
                        break;
                case 'Y': args.instance_memory = optarg; break;
                case 'E':
                        if (strcmp(optarg, "idle") != 0 && strcmp(optarg, "any") != 0) {
                                fprintf(stderr, "saged: --instance-evict: expected idle or any, got '%s'\n", optarg);
                                args_clear(&args);
                                return 2;
                        }
                        args.instance_evict = strcmp(optarg, "any") == 0 ? POLICY_EVICT_ANY : POLICY_EVICT_IDLE;
                        break;
                case 'n': args.nvml_library = optarg; break;
                case 'G': args.cgroup_root = optarg; break;
                case 'h': usage(stdout); return 0;
                case 'V': printf("saged %s (protocol %d)\n", SAGE_VERSION, SAGE_PROTO_VERSION); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "saged: unexpected argument '%s'\n", argv[optind]);
                return 2;
        }
        sage_log_set_level(SAGE_LOG_WARNING + args.verbosity);
        if (args.devices && parse_devices(args.devices, devices, SAGE_ARRAY_SIZE(devices), &n_devices, device_uuids,
                                          &n_device_uuids) < 0) {
                fprintf(stderr,
                        "saged: --devices: expected a list of device ordinals or GPU UUIDs like 0,1 or "
                        "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6, got '%s'\n",
                        args.devices);
                return 2;
        }
        if (args.namespace_share && (share = parse_share(args.namespace_share)) < 0) {
                fprintf(stderr, "saged: --namespace-share: expected a percentage from 1%% to 100%%, got '%s'\n",
                        args.namespace_share);
                return 2;
        }
        if (!args.socket) {
                if (sage_broker_default_socket(default_socket, sizeof(default_socket)) < 0) {
                        fprintf(stderr, "saged: default socket path too long; use --socket\n");
                        return 2;
                }
                args.socket = default_socket;
        }
        if (!args.driver)
                args.driver = sage_options()->driver;
        if ((r = check_metrics_and_idle(&args, &metrics, &idle_ms)) != 0) {
                args_clear(&args);
                return r;
        }
        if ((r = check_label_sockets(&args)) != 0) {
                args_clear(&args);
                return r;
        }

        /* Before daemonize: LISTEN_PID names this process, not its child. */
        if (activation_listen_fds(inherited, ACTIVATION_MAX_FDS, &n_inherited) < 0) {
                fprintf(stderr, "saged: socket activation: LISTEN_PID/LISTEN_FDS malformed, or more than %d sockets\n",
                        ACTIVATION_MAX_FDS);
                args_clear(&args);
                return 2;
        }

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        if (!args.foreground && (r = daemonize(&ready_fd)) < 0) {
                fprintf(stderr, "saged: cannot daemonize: %s\n", strerror(-r));
                return 1;
        }
        sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sfd < 0) {
                fprintf(stderr, "saged: signalfd: %s\n", strerror(errno));
                return 1;
        }

        raise_fd_limit();
        apply_nice(args.nice); /* before gpu_open: the driver starts threads */
        r = gpu_open(&gpu, args.driver, devices, n_devices, (const uint8_t(*)[16])device_uuids, n_device_uuids);
        if (r < 0)
                sage_warn("serving without GPUs (%s): PUBLISH and LOOKUP will be refused", strerror(-r));
        r = extent_store_new(&store, release_extent, NULL, gpu);
        if (r < 0) {
                fprintf(stderr, "saged: %s\n", strerror(-r));
                return 1;
        }
        if (apply_budget(store, gpu, args.budget) < 0) {
                fprintf(stderr, "saged: --budget: expected a size (e.g. 8G) or a percentage (e.g. 40%%), got '%s'\n",
                        args.budget);
                extent_store_free(store);
                gpu_close(gpu);
                return 2;
        }
        extent_store_set_namespace_share(store, (unsigned)share);
        /* N% of the first served device (the GPUs of one node are alike). */
        for (uint32_t d = 0; args.instance_memory && d < gpu_device_count(gpu) && !instance_total; d++)
                instance_total = gpu_total_memory(gpu, d);
        if (args.instance_memory &&
            instance_policy_parse_cap(args.instance_memory, instance_total, &instance_cap) < 0) {
                fprintf(stderr,
                        "saged: --instance-memory: expected a size (e.g. 40G) or a percentage (e.g. 80%%), got '%s'\n",
                        args.instance_memory);
                extent_store_free(store);
                gpu_close(gpu);
                return 2;
        }
        r = server_new(
                &server,
                &(ServerConfig){ .socket_path = args.socket,
                                 .label_sockets = args.labels,
                                 .n_label_sockets = args.n_labels,
                                 .max_clients = (size_t)args.max_clients,
                                 .max_clients_per_uid = (size_t)args.max_clients_per_uid,
                                 .max_clients_per_label = (size_t)args.max_clients_per_label,
                                 .container_namespaces = args.container_namespaces,
                                 .suspend_off = args.suspend_off,
                                 .max_resumes = (unsigned)args.max_resumes,
                                 .max_instances_per_uid = (size_t)args.max_instances_per_uid,
                                 .prepare_timeout_ms = args.prepare_timeout_ms,
                                 .spool_dir = args.spool_dir,
                                 .spool_budget = args.spool_budget,
                                 .inherited_fds = inherited,
                                 .n_inherited_fds = n_inherited,
                                 .metrics_address = args.metrics_listen ? (struct sockaddr *)&metrics.addr : NULL,
                                 .metrics_address_len = metrics.len,
                                 .exit_idle = args.exit_idle != NULL,
                                 .exit_idle_ms = idle_ms,
                                 .instance_memory = instance_cap,
                                 .instance_evict = args.instance_evict,
                                 .nvml_library = args.nvml_library,
                                 .cgroup_root = args.cgroup_root },
                store, gpu, &failed_path);
        if (r < 0) {
                if (failed_path && strcmp(failed_path, "--metrics-listen") == 0)
                        fprintf(stderr, "saged: --metrics-listen %s: %s\n", args.metrics_listen, strerror(-r));
                else if (r == -EADDRINUSE)
                        fprintf(stderr, "saged: another broker is already listening on %s\n", failed_path);
                else if (r == -EPERM)
                        fprintf(stderr,
                                "saged: refusing to listen on %s: its directory is writable by users other than "
                                "saged's and root, who could replace the socket; use a directory only saged's "
                                "user (or root) may write\n",
                                failed_path);
                else
                        fprintf(stderr, "saged: cannot listen on %s: %s\n", failed_path, strerror(-r));
                extent_store_free(store);
                gpu_close(gpu);
                args_clear(&args);
                return r == -EPERM ? 2 : 1;
        }
        /* A socket the unit lists that no option names would accept clients nobody serves. */
        for (size_t i = 0; i < n_inherited; i++)
                if (inherited[i] >= 0) {
                        sage_warn("socket activation: fd %d is not --socket or a --label-socket of saged "
                                  "(or not a listening SOCK_SEQPACKET socket): closed",
                                  inherited[i]);
                        close(inherited[i]);
                }
        sage_info("saged %s serving %u device(s) on %s", SAGE_VERSION, gpu_served_count(gpu), args.socket);
        if (ready_fd >= 0) {
                int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (devnull >= 0) {
                        dup2(devnull, STDIN_FILENO);
                        dup2(devnull, STDOUT_FILENO);
                        dup2(devnull, STDERR_FILENO);
                        close(devnull);
                }
                (void)!write(ready_fd, "r", 1);
                close(ready_fd);
        }
        r = activation_notify_ready();
        if (r < 0)
                sage_warn("cannot tell the service manager saged is ready (NOTIFY_SOCKET): %s", strerror(-r));

        r = server_run(server, sfd);
        if (r < 0)
                sage_warn("event loop: %s", strerror(-r));
        else {
                struct signalfd_siginfo si;
                if (read(sfd, &si, sizeof(si)) == sizeof(si))
                        sage_info("%s: shutting down", strsignal((int)si.ssi_signo));
        }
        server_free(server);
        args_clear(&args);
        close(sfd);
        return r < 0 ? 1 : 0;
}
