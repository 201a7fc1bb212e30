/*
 * saged's option values: parsing and checking each one (main_options.h).
 * Every refusal names the option, what it expects and what it got, and
 * comes before saged daemonises, so "saged --bad && ..." fails on the
 * operator's terminal rather than in a log nobody reads.
 */
#include "main_options.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "conn_table.h"
#include "extent_store.h"
#include "instances.h"
#include "metrics_http.h"
#include "options.h"
#include "proto.h"
#include "server.h"

void args_clear(Args *a) {
        for (size_t i = 0; i < a->n_labels; i++)
                label_socket_clear(&a->labels[i]);
        a->n_labels = 0;
}

/* --label-socket PATH=LABEL, repeatable. Returns 0, or 2 (the exit status) after saying why. */
int add_label_socket(Args *a, const char *text) {
        int r;

        if (a->n_labels == LABEL_MAX_SOCKETS) {
                fprintf(stderr, "saged: --label-socket: at most %d labelled sockets\n", LABEL_MAX_SOCKETS);
                return 2;
        }
        r = label_socket_parse(text, &a->labels[a->n_labels]);
        if (r == -ENOMEM) {
                fprintf(stderr, "saged: %s\n", strerror(-r));
                return 2;
        }
        if (r < 0) {
                fprintf(stderr,
                        "saged: --label-socket: expected PATH=LABEL[,uid=U][,gid=G][,mode=0660], LABEL 1-%d "
                        "characters of A-Z a-z 0-9 . _ -, at most %d uid= and %d gid=, mode at most 0666, got '%s'\n",
                        SAGE_PROTO_LABEL_MAX, LABEL_MAX_IDS, LABEL_MAX_IDS, text);
                return 2;
        }
        a->n_labels++;
        return 0;
}

/* Labels are the platform's to assign: a broker not running as root serves
 * only its own uid, and must not let anyone split that into tenants it
 * cannot vouch for. Two listeners on one path would refuse each other. */
int check_label_sockets(const Args *a) {
        if (a->n_labels == 0)
                return 0;
        if (geteuid() != 0) {
                fprintf(stderr, "saged: --label-socket: only root may assign namespace labels "
                                "(a broker not running as root serves its own uid only)\n");
                return 2;
        }
        for (size_t i = 0; i < a->n_labels; i++) {
                if (strcmp(a->labels[i].path, a->socket) == 0) {
                        fprintf(stderr, "saged: --label-socket: %s is the main socket\n", a->labels[i].path);
                        return 2;
                }
                for (size_t j = 0; j < i; j++)
                        if (strcmp(a->labels[i].path, a->labels[j].path) == 0) {
                                fprintf(stderr, "saged: --label-socket: %s given twice\n", a->labels[i].path);
                                return 2;
                        }
        }
        return 0;
}

/* --max-clients* N: a positive count. Returns 0, or 2 (the exit status) after saying why. */
int parse_limit(int opt, const char *text, Args *a) {
        if (strchr("KTWZ", opt))
                return parse_instance_option(opt, text, a); /* the instances' options */
        const char *name = opt == 'M'   ? "--max-clients"
                           : opt == 'U' ? "--max-clients-per-uid"
                                        : "--max-clients-per-label";
        uint64_t *field = opt == 'M'   ? &a->max_clients
                          : opt == 'U' ? &a->max_clients_per_uid
                                       : &a->max_clients_per_label;
        uint64_t v;

        if (sage_parse_uint(text, &v) < 0 || v == 0 || v > (1u << 20)) {
                fprintf(stderr, "saged: %s: expected a number of connections from 1 to %u, got '%s'\n", name, 1u << 20,
                        text);
                return 2;
        }
        *field = v;
        return 0;
}

/* --metrics-listen (loopback unless --metrics-listen-any) and --exit-idle.
 * Returns 0, or 2 (the exit status) after saying why. */
int check_metrics_and_idle(const Args *a, MetricsAddress *metrics, uint64_t *idle_ms) {
        uint64_t seconds;
        int r;

        if (a->exit_idle) {
                if (sage_parse_uint(a->exit_idle, &seconds) < 0 || seconds > 31536000) {
                        fprintf(stderr, "saged: --exit-idle: expected seconds from 0 to 31536000, got '%s'\n",
                                a->exit_idle);
                        return 2;
                }
                *idle_ms = seconds * 1000;
        }
        if (!a->metrics_listen)
                return 0;
        r = metrics_http_parse_address(a->metrics_listen, a->metrics_listen_any, &metrics->addr, &metrics->len);
        if (r == METRICS_HTTP_E_NOT_LOOPBACK) {
                fprintf(stderr,
                        "saged: --metrics-listen %s: not a loopback address; the metrics name every tenant and "
                        "their usage, so saged serves them to the node only unless --metrics-listen-any says "
                        "otherwise (then firewall it)\n",
                        a->metrics_listen);
                return 2;
        }
        if (r < 0) {
                fprintf(stderr, "saged: --metrics-listen: expected ADDR:PORT (127.0.0.1:9464, [::1]:9464), got '%s'\n",
                        a->metrics_listen);
                return 2;
        }
        return 0;
}

void usage(FILE *f) {
        fprintf(f,
                "Usage: saged [OPTIONS]\n"
                "SAGE per-node broker: owns shared, read-only GPU memory extents and keeps GPUs warm.\n\n"
                "  -s, --socket PATH     listen here (default: $SAGE_SOCKET, else %s for root,\n"
                "                        else $XDG_RUNTIME_DIR/sage/saged.sock)\n"
                "  -b, --budget SIZE|N%%  GPU memory extents may hold, per device (default %s)\n"
                "  -d, --devices LIST    devices to serve: ordinals or GPU UUIDs (GPU-...), e.g. 0,2 (default: all)\n"
                "      --driver LIB      CUDA driver library (default: $SAGE_DRIVER or libcuda.so.1)\n"
                "      --namespace-share N%%\n"
                "                        of each device's budget one namespace may hold (1-100, default %d%%)\n"
                "  -f, --foreground      stay in the foreground\n"
                "      --label-socket PATH=LABEL[,uid=U][,gid=G][,mode=0660]\n"
                "                        also listen on PATH; its clients get namespace (LABEL, uid);\n"
                "                        only root, the uids and the gids given may connect\n"
                "                        (root only; repeatable, up to %d)\n"
                "      --max-clients N   connections in all (default %d; root on the main socket\n"
                "                        has %d more)\n"
                "      --max-clients-per-uid N\n"
                "                        connections per uid and label (default %d; not for root\n"
                "                        on the main socket)\n"
                "      --max-clients-per-label N\n"
                "                        connections through one label's sockets (default %d)\n"
                "      --container-namespaces isolate|share\n"
                "                        clients of the main socket in another container than saged:\n"
                "                        a namespace of their container's own (isolate, default),\n"
                "                        or their uid's (share)\n"
                "      --suspend on|off  serve SUSPEND/RESUME of registered instances (default on;\n"
                "                        docs/suspend.md)\n"
                "      --max-resumes N   instances resumed at once (1-64, default %d); more wait\n"
                "      --max-instances-per-uid N\n"
                "                        registered instances per uid and label (default %d)\n"
                "      --suspend-prepare-timeout DURATION\n"
                "                        how long a suspend waits for the instance to prepare (default 8s)\n"
                "      --spool DIR       keep the bytes of extents suspended instances parked in DIR\n"
                "                        (saged's own, mode 0700), so a restarted broker gives them back\n"
                "      --spool-budget SIZE\n"
                "                        host bytes the spool may hold (default 8G)\n"
                "      --instance-memory SIZE|N%%\n"
                "                        GPU memory registered instances may hold, per device (default:\n"
                "                        no cap); more: suspend others first, resume only what fits\n"
                "      --instance-evict idle|any\n"
                "                        what the cap may suspend: idle instances only (default), or\n"
                "                        then any suspendable one\n"
                "      --nvml-library LIB, --cgroup-root DIR\n"
                "                        for tests: another NVML, a fake cgroup v2 tree\n"
                "      --metrics-listen ADDR:PORT\n"
                "                        serve Prometheus metrics at http://ADDR:PORT/metrics (default off;\n"
                "                        a loopback address unless --metrics-listen-any: it names every tenant)\n"
                "      --metrics-listen-any\n"
                "                        allow a non-loopback --metrics-listen address\n"
                "      --exit-idle SECONDS\n"
                "                        exit once no client has been connected for SECONDS (0: at once;\n"
                "                        sage-run --share's per-user broker)\n"
                "      --nice N          run saged's threads at nice N, -20 to 19 (default %d: ahead of\n"
                "                        its clients' bulk work; 0: as started; kept where not permitted)\n"
                "  -v, --verbose         more logging (repeat for debug)\n"
                "  -h, --help            this text\n"
                "      --version         print the version\n",
                SAGE_DEFAULT_SOCKET_ROOT, DEFAULT_BUDGET, DEFAULT_NAMESPACE_SHARE, LABEL_MAX_SOCKETS,
                CONN_TABLE_MAX_TOTAL, CONN_TABLE_ROOT_RESERVE, CONN_TABLE_MAX_PER_NAMESPACE, CONN_TABLE_MAX_PER_LABEL,
                SERVER_MAX_RESUMES, INSTANCES_MAX_PER_NAMESPACE, DEFAULT_NICE);
}

/* --max-instances-per-uid N ('K'), --suspend-prepare-timeout DURATION ('T'), --spool DIR ('W'),
 * --spool-budget SIZE ('Z'). 0, or 2 after saying why. */
int parse_instance_option(int opt, const char *text, Args *a) {
        uint64_t v;

        if (opt == 'W') {
                a->spool_dir = text;
                return 0;
        }
        if (opt == 'Z') {
                if (sage_parse_size(text, &v) < 0 || v == 0) {
                        fprintf(stderr, "saged: --spool-budget: expected a size (8G, 512M), got '%s'\n", text);
                        return 2;
                }
                a->spool_budget = v;
                return 0;
        }
        if (opt == 'K') {
                if (sage_parse_uint(text, &v) < 0 || v == 0 || v > INSTANCES_MAX) {
                        fprintf(stderr, "saged: --max-instances-per-uid: expected a number from 1 to %d, got '%s'\n",
                                INSTANCES_MAX, text);
                        return 2;
                }
                a->max_instances_per_uid = v;
                return 0;
        }
        /* At least 100 ms: even an idle instance answers after a round trip and a synchronize. */
        if (sage_parse_duration_ms(text, &v) < 0 || v < 100 || v > 3600000) {
                fprintf(stderr, "saged: --suspend-prepare-timeout: expected a duration from 100ms to 1h, got '%s'\n",
                        text);
                return 2;
        }
        a->prepare_timeout_ms = v;
        return 0;
}

/* Ordinals, or GPU UUIDs (GPU-…) into `uuids`. */
int parse_devices(const char *text, uint32_t *out, size_t max, size_t *n, uint8_t (*uuids)[16], size_t *n_uuids) {
        char *copy = strdup(text), *save = NULL;
        int r = 0;

        *n = 0;
        *n_uuids = 0;
        if (!copy)
                return -ENOMEM;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                uint64_t v;
                if (strncmp(tok, "GPU-", 4) == 0) {
                        if (*n_uuids == max || sage_uuid_parse(tok, uuids[*n_uuids]) < 0) {
                                r = -EINVAL;
                                break;
                        }
                        (*n_uuids)++;
                        continue;
                }
                if (sage_parse_uint(tok, &v) < 0 || v >= EXTENT_STORE_MAX_DEVICES || *n == max) {
                        r = -EINVAL;
                        break;
                }
                out[(*n)++] = (uint32_t)v;
        }
        free(copy);
        return r == 0 && *n == 0 && *n_uuids == 0 ? -EINVAL : r;
}

/* N% or N, 1-100. Returns the percentage or -EINVAL. */
int parse_share(const char *text) {
        char buf[8];
        size_t len = strlen(text);
        uint64_t pct;

        if (len > 1 && text[len - 1] == '%')
                len--;
        if (len == 0 || len >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, text, len);
        buf[len] = 0;
        if (sage_parse_uint(buf, &pct) < 0 || pct < 1 || pct > 100)
                return -EINVAL;
        return (int)pct;
}

/* --nice N: -20..19, the range setpriority(2) takes; anything else is a typo. */
int parse_nice(const char *text, Args *a) {
        bool negative = text[0] == '-';
        uint64_t v;

        if (sage_parse_uint(text + negative, &v) < 0 || v > (negative ? 20u : 19u)) {
                fprintf(stderr, "saged: --nice: expected a nice value from -20 to 19, got '%s'\n", text);
                return 2;
        }
        a->nice = negative ? -(int)v : (int)v;
        return 0;
}
