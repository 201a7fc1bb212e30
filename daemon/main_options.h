/*
 * saged's command line: what each option holds, and the parsers and checks
 * that turn a bad value into exit status 2 with a sentence on stderr, before
 * saged daemonises or touches a GPU. main.c owns the order (parse, check,
 * then start); the options and their words live here.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "identity.h"
#include "label.h"

#define DEFAULT_BUDGET "50%"
/* One tenant may hold at most half of a device's budget: another always finds room. */
#define DEFAULT_NAMESPACE_SHARE 50
/* saged's nice value (--nice): its requests are short and bounded, its
 * clients' hashing is bulk work on every core (daemon/README.md). */
#define DEFAULT_NICE (-10)

typedef struct Args {
        const char *socket;
        const char *budget;
        const char *devices;
        const char *driver;
        const char *namespace_share;
        bool foreground;
        int verbosity;
        LabelSocket labels[LABEL_MAX_SOCKETS];
        size_t n_labels;
        uint64_t max_clients, max_clients_per_uid, max_clients_per_label; /* 0: defaults */
        IdentityMode container_namespaces;
        bool suspend_off;           /* --suspend=off */
        uint64_t max_resumes;       /* --max-resumes; 0: SERVER_MAX_RESUMES */
        const char *metrics_listen; /* --metrics-listen ADDR:PORT */
        bool metrics_listen_any;    /* --metrics-listen-any: a non-loopback ADDR is meant */
        const char *exit_idle;      /* --exit-idle SECONDS */
        /* The memory policy: --instance-memory (resolved once the GPUs are known), --instance-evict. */
        const char *instance_memory;
        int instance_evict;                     /* PolicyEvict */
        const char *nvml_library, *cgroup_root; /* tests only */
        /* --max-instances-per-uid, --suspend-prepare-timeout (ms); 0: the defaults */
        uint64_t max_instances_per_uid;
        uint64_t prepare_timeout_ms;
        const char *spool_dir; /* --spool DIR; NULL: off */
        uint64_t spool_budget; /* --spool-budget; 0: SPOOL_DEFAULT_BUDGET */
        int nice;              /* --nice, -20..19; 0: the priority saged was started at */
} Args;

typedef struct MetricsAddress {
        struct sockaddr_storage addr;
        socklen_t len;
} MetricsAddress;

void args_clear(Args *a);
/* These four return 0, or 2 (the exit status) after saying why on stderr. */
int add_label_socket(Args *a, const char *text);     /* --label-socket PATH=LABEL, repeatable */
int parse_limit(int opt, const char *text, Args *a); /* --max-clients* N ('M', 'U', 'P'), and 'K' 'T' 'W' 'Z' */
int check_label_sockets(const Args *a);              /* root only, no path twice */
/* 'K' --max-instances-per-uid, 'T' --suspend-prepare-timeout, 'W' --spool, 'Z' --spool-budget */
int parse_instance_option(int opt, const char *text, Args *a);
/* --metrics-listen (loopback unless --metrics-listen-any) and --exit-idle */
int check_metrics_and_idle(const Args *a, MetricsAddress *metrics, uint64_t *idle_ms);
void usage(FILE *f);
/* --devices: ordinals into `out`, GPU UUIDs (GPU-…) into `uuids`. Returns 0 or -EINVAL, -ENOMEM. */
int parse_devices(const char *text, uint32_t *out, size_t max, size_t *n, uint8_t (*uuids)[16], size_t *n_uuids);
/* --nice N: -20..19. Returns 0, or 2 (the exit status) after saying why. */
int parse_nice(const char *text, Args *a);
/* --namespace-share: N% or N, 1-100. Returns the percentage or -EINVAL. */
int parse_share(const char *text);
