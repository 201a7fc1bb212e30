/* saged's socket server: listening socket, epoll loop, request dispatch. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "extent_store.h"
#include "gpu.h"
#include "identity.h"
#include "label.h"

typedef struct ServerConfig {
        const char *socket_path;
        /* Extra sockets whose clients get namespace (label, uid): at most
         * LABEL_MAX_SOCKETS. Only root may assign labels (main.c refuses them
         * otherwise); the server does not check it again. */
        const LabelSocket *label_sockets;
        size_t n_label_sockets;
        size_t max_clients;           /* broker-wide; 0: CONN_TABLE_MAX_TOTAL */
        size_t max_clients_per_uid;   /* per namespace (label, uid); 0: CONN_TABLE_MAX_PER_NAMESPACE */
        size_t max_clients_per_label; /* per labelled socket's label; 0: CONN_TABLE_MAX_PER_LABEL */
        size_t max_ipc_exports;       /* broker-wide; 0: IPC_REGISTRY_MAX_TOTAL (at most half the fd limit) */
        /* Clients of the main socket in another container than saged: their
         * container's namespaces (ISOLATE, the default) or their uid's. */
        IdentityMode container_namespaces;
        bool suspend_off;     /* --suspend=off: SUSPEND refused (RESUME still served) */
        unsigned max_resumes; /* instances resumed at once; 0: SERVER_MAX_RESUMES */
        /* --max-instances-per-uid (instances per namespace; 0: INSTANCES_MAX_PER_NAMESPACE) and
         * --suspend-prepare-timeout (the wait for SUSPEND_PREPARED; 0: INSTANCE_PREPARE_TIMEOUT_NS). */
        size_t max_instances_per_uid;
        uint64_t prepare_timeout_ms;
        /* --spool DIR (NULL: off), --spool-budget (0: SPOOL_DEFAULT_BUDGET): instance_spool.h. */
        const char *spool_dir;
        uint64_t spool_budget;
        /* The memory policy (docs/suspend.md, "Memory policy"). */
        uint64_t instance_memory; /* --instance-memory: bytes instances may hold per GPU; 0: no cap */
        int instance_evict;       /* --instance-evict: PolicyEvict (idle only, or any) */
        const char *nvml_library; /* --nvml-library (tests: the simulated NVML); NULL: libnvidia-ml.so.1 */
        const char *cgroup_root;  /* --cgroup-root (tests: a fake tree); NULL: /sys/fs/cgroup */
        /* --metrics-listen: serve Prometheus text at http://ADDR/metrics (metrics.c); NULL: off. */
        const struct sockaddr *metrics_address;
        socklen_t metrics_address_len;
        /* --exit-idle: return from server_run once no client has been connected
         * for exit_idle_ms (holding SOCKET.lock, see server_run). */
        bool exit_idle;
        uint64_t exit_idle_ms;
        /* Listening sockets systemd passed (activation.c): a socket whose path
         * is socket_path or a labelled one's is taken instead of binding a new
         * one (its slot becomes -1); the others stay the caller's. */
        int *inherited_fds;
        size_t n_inherited_fds;
} ServerConfig;

/* Resumes at once, by default: the driver stages restores through host
 * memory; a few in parallel still gain (8 at once: ~1.2 s each, 310 ms alone). */
#define SERVER_MAX_RESUMES 4
/* How long a suspend waits for the instance's CUDA calls in flight (Lock). */
#define SERVER_SUSPEND_LOCK_MS 5000

typedef struct Server Server;

/*
 * Create the socket and each labelled one (their parent directories too, if
 * missing), refusing to start when another broker answers on any of them
 * (-EADDRINUSE; *failed_path names it, for every error), or when a socket's
 * directory is writable by others than saged's user and root (-EPERM), and
 * replacing stale ones.
 * `gpu` may be NULL (no driver: PUBLISH/LOOKUP answer SAGE_ERR_NO_DRIVER;
 * the IPC messages need no driver).
 * The server takes ownership of `store` and `gpu`.
 */
int server_new(Server **out, const ServerConfig *config, ExtentStore *store, Gpu *gpu, const char **failed_path);
/* Removes the socket files, drops every client (and its references), frees the store. */
Server *server_free(Server *server);

/*
 * Serve until `stop_fd` (a signalfd, or any fd) becomes readable, or, with
 * exit_idle_ms, until the broker has had no client for that long and holds
 * the lock file SOCKET.lock (a sage-run that starts or reuses the broker
 * holds it until its own connection is accepted, so it never picks a
 * broker that is on its way out). The lock stays held until server_free,
 * which removes the sockets first.
 */
int server_run(Server *server, int stop_fd);
