/*
 * sagectl: talk to saged. ping, stats, list, devices, evict, instances,
 * suspend, resume; human or JSON output.
 *
 * A thin shell over common/broker_client: every request has a timeout, and
 * failures say what to check ("is saged running?") and exit 1. Usage errors
 * exit 2.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "broker_client.h"
#include "config.h"
#include "hash.h"
#include "options.h"
#include "sagectl.h"
#include "util.h"

#define SAGECTL_TIMEOUT_MS 5000
/* suspend/resume wait for the driver: a checkpoint of 8 GiB takes ~4 s, plus the lock's wait. */
#define SAGECTL_SUSPEND_TIMEOUT_MS 60000

static void usage(FILE *f) {
        fprintf(f,
                "Usage: sagectl [--socket PATH] [--timeout MS] COMMAND\n"
                "Commands:\n"
                "  ping                     check that saged answers\n"
                "  stats [--json]           extents, bytes resident, budget, hits, misses, clients\n"
                "  list [--json]            extents visible to you (all of them for root on the main socket)\n"
                "  devices [--json]         the broker's GPUs by UUID, with the extents you see on each\n"
                "  evict ID|--unreferenced  drop one unreferenced extent, or all unreferenced ones\n"
                "  instances [--json]       registered instances visible to you: state, why not suspendable\n"
                "  suspend PID              checkpoint an instance: its GPU memory goes back (docs/suspend.md)\n"
                "  resume PID               restore a suspended instance\n"
                "The socket defaults to $SAGE_SOCKET, else %s for root,\n"
                "else $XDG_RUNTIME_DIR/sage/saged.sock.\n",
                SAGE_DEFAULT_SOCKET_ROOT);
}

int sagectl_fail(const char *what, int r, const SageBroker *b) {
        if (r > 0)
                fprintf(stderr, "sagectl: %s: %s%s%s\n", what, sage_proto_error_name(r),
                        b && sage_broker_last_error(b)[0] ? ": " : "", b ? sage_broker_last_error(b) : "");
        else
                fprintf(stderr, "sagectl: %s: %s\n", what, strerror(-r));
        return 1;
}

int sagectl_each_extent(SageBroker *b, void (*fn)(const SageListEntry *e, void *userdata), void *userdata) {
        SageListEntry *entries = calloc(SAGE_PROTO_LIST_MAX, sizeof(*entries));
        uint64_t after = 0;
        int more = 1, r = 0;

        if (!entries)
                return -ENOMEM;
        while (more) {
                uint32_t n = 0;
                r = sage_broker_list(b, after, entries, &n, &more);
                if (r || n == 0)
                        break;
                for (uint32_t i = 0; i < n; i++) {
                        fn(&entries[i], userdata);
                        after = entries[i].id;
                }
        }
        free(entries);
        return r;
}

int sagectl_list_end(const char *what, int r, const SageBroker *b, bool json, uint64_t rows) {
        if (r)
                return sagectl_fail(what, r, b);
        if (json)
                printf("%s]\n", rows ? "\n" : "");
        return 0;
}

static void print_budget(uint64_t budget, bool json) {
        if (budget == UINT64_MAX)
                printf(json ? "null" : "unlimited");
        else
                printf("%" PRIu64, budget);
}

static int cmd_stats(SageBroker *b, bool json) {
        SageStats s;
        int r = sage_broker_stats(b, &s);

        if (r)
                return sagectl_fail("stats", r, b);
        if (json) {
                printf("{\"extents\": %" PRIu64 ", \"bytes_resident\": %" PRIu64 ", \"budget\": ", s.extents,
                       s.bytes_resident);
                print_budget(s.budget, true);
                printf(", \"hits\": %" PRIu64 ", \"misses\": %" PRIu64 ", \"clients\": %" PRIu64 ", \"refs\": %" PRIu64
                       ", \"publishes\": %" PRIu64 ", \"evictions\": %" PRIu64 ", \"rejected_budget\": %" PRIu64
                       ", \"rejected_content\": %" PRIu64 ", \"records\": %" PRIu64 ", \"uptime_s\": %.3f}\n",
                       s.hits, s.misses, s.clients, s.refs, s.publishes, s.evictions, s.rejected_budget,
                       s.rejected_content, s.records, (double)s.uptime_ns / 1e9);
                return 0;
        }
        printf("extents:          %" PRIu64 "\n", s.extents);
        printf("bytes resident:   %" PRIu64 " (%.1f MiB)\n", s.bytes_resident, (double)s.bytes_resident / 1048576.0);
        printf("budget:           ");
        print_budget(s.budget, false);
        printf("\nhits:             %" PRIu64 "\n", s.hits);
        printf("misses:           %" PRIu64 "\n", s.misses);
        printf("clients:          %" PRIu64 "\n", s.clients);
        printf("refs:             %" PRIu64 "\n", s.refs);
        printf("publishes:        %" PRIu64 "\n", s.publishes);
        printf("evictions:        %" PRIu64 "\n", s.evictions);
        printf("rejected(budget): %" PRIu64 "\n", s.rejected_budget);
        printf("rejected(content): %" PRIu64 "\n", s.rejected_content);
        if (s.records)
                printf("records:          %" PRIu64 " (per-namespace)\n", s.records);
        printf("uptime:           %.1f s\n", (double)s.uptime_ns / 1e9);
        return 0;
}

/* Label names seen so far: one LABEL request per label, not per extent. */
typedef struct LabelNames {
        struct {
                uint32_t label;
                char name[SAGE_PROTO_LABEL_MAX + 1]; /* "" when the broker would not say */
        } known[64];
        size_t n;
} LabelNames;

/* The name of `label`, or NULL when the broker does not tell it (an older
 * broker, or a label this client may not see). */
static const char *label_name(SageBroker *b, LabelNames *names, uint32_t label) {
        static char scratch[SAGE_PROTO_LABEL_MAX + 1];
        char *name = scratch;

        for (size_t i = 0; i < names->n; i++)
                if (names->known[i].label == label)
                        return names->known[i].name[0] ? names->known[i].name : NULL;
        if (names->n < SAGE_ARRAY_SIZE(names->known)) {
                names->known[names->n].label = label;
                name = names->known[names->n++].name;
        }
        if (sage_broker_label_name(b, label, name) != 0)
                name[0] = 0;
        return name[0] ? name : NULL;
}

typedef struct Listing {
        SageBroker *b;
        bool json;
        uint64_t rows;
} Listing;

static void list_row(const SageListEntry *e, void *userdata) {
        static LabelNames names;
        Listing *l = userdata;
        const uint32_t label = sage_namespace_label(e->namespace_id);
        const uint32_t uid = sage_namespace_uid(e->namespace_id);
        const bool container = label >= SAGE_NAMESPACE_CONTAINER_FIRST;
        const char *name = label && !container ? label_name(l->b, &names, label) : NULL;
        char hash[33], ns[SAGE_PROTO_LABEL_MAX + 32], gpu[SAGE_UUID_STRING_SIZE];
        sagectl_device_name(l->b, e->device, l->json, gpu, sizeof(gpu));
        sage_hash_format(e->hash, hash);
        /* Namespace: "uid", or "label:uid" ("#number:uid" for a label without a name),
         * or "container-N:uid". */
        if (!label)
                snprintf(ns, sizeof(ns), "%u", uid);
        else if (container)
                snprintf(ns, sizeof(ns), "container-%u:%u", label - SAGE_NAMESPACE_CONTAINER_FIRST, uid);
        else if (name)
                snprintf(ns, sizeof(ns), "%s:%u", name, uid);
        else
                snprintf(ns, sizeof(ns), "#%u:%u", label, uid);
        /* Label names are [A-Za-z0-9._-] (the decoder checks): no JSON escaping needed. */
        if (l->json) {
                printf("%s\n {\"id\": %" PRIu64 ", \"namespace\": %" PRIu64 ", \"uid\": %u, \"label\": ",
                       l->rows ? "," : "", e->id, e->namespace_id, uid);
                if (name)
                        printf("\"%s\"", name);
                else if (label && !container)
                        printf("\"#%u\"", label);
                else
                        printf("null");
                if (container)
                        printf(", \"container\": %u", label - SAGE_NAMESPACE_CONTAINER_FIRST);
                printf(", \"hash\": \"%s\", \"size\": %" PRIu64 ", \"device\": %u, \"uuid\": \"%s\", "
                       "\"refs\": %u, \"publisher_pid\": %u, \"idle_s\": %.3f, \"verified\": %s}",
                       hash, e->size, e->device, gpu, e->refs, e->publisher_pid, (double)e->idle_ns / 1e9,
                       e->flags & SAGE_LIST_UNVERIFIED ? "false" : "true");
        } else
                printf("%-8" PRIu64 " %-24s %-32s %14" PRIu64 " %4u %5u %8u %10.1f %s\n", e->id, ns, hash, e->size,
                       e->device, e->refs, e->publisher_pid, (double)e->idle_ns / 1e9, gpu);
        l->rows++;
}

static int cmd_list(SageBroker *b, bool json) {
        Listing l = { .b = b, .json = json };

        if (json)
                printf("[");
        else
                printf("%-8s %-24s %-32s %14s %4s %5s %8s %10s %s\n", "ID", "NAMESPACE", "HASH", "SIZE", "DEV", "REFS",
                       "PID", "IDLE(s)", "GPU");
        return sagectl_list_end("list", sagectl_each_extent(b, list_row, &l), b, json, l.rows);
}

static int cmd_evict(SageBroker *b, const char *what) {
        SageEvictReply reply;
        uint64_t id = 0;
        int r;

        if (strcmp(what, "--unreferenced") == 0)
                r = sage_broker_evict(b, 0, SAGE_EVICT_ALL_UNREFERENCED, &reply);
        else if (sage_parse_uint(what, &id) == 0)
                r = sage_broker_evict(b, id, 0, &reply);
        else {
                fprintf(stderr, "sagectl: evict: expected an extent id or --unreferenced, got '%s'\n", what);
                return 2;
        }
        if (r)
                return sagectl_fail("evict", r, b);
        printf("evicted %" PRIu64 " extent(s), %" PRIu64 " bytes\n", reply.evicted, reply.bytes);
        return 0;
}

int main(int argc, char **argv) {
        static const struct option long_options[] = {
                { "socket", required_argument, NULL, 's' },
                { "timeout", required_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 },
        };
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char why[320];
        const char *socket_path = NULL, *cmd;
        int timeout_ms = SAGECTL_TIMEOUT_MS, opt, r;
        bool json = false, timeout_given = false;
        SageBroker *b = NULL;

        /* "+": stop at the command, so its own flags (--json) are left to it. */
        while ((opt = getopt_long(argc, argv, "+s:t:h", long_options, NULL)) >= 0) {
                uint64_t v;
                switch (opt) {
                case 's': socket_path = optarg; break;
                case 't':
                        if (sage_parse_uint(optarg, &v) < 0 || v == 0 || v > 600000) {
                                fprintf(stderr, "sagectl: --timeout: expected milliseconds, got '%s'\n", optarg);
                                return 2;
                        }
                        timeout_ms = (int)v;
                        timeout_given = true;
                        break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind >= argc) {
                usage(stderr);
                return 2;
        }
        cmd = argv[optind++];
        for (int i = optind; i < argc; i++)
                if (strcmp(argv[i], "--json") == 0 && (strcmp(cmd, "stats") == 0 || strcmp(cmd, "list") == 0 ||
                                                       strcmp(cmd, "instances") == 0 || strcmp(cmd, "devices") == 0))
                        json = true;
                else if ((strcmp(cmd, "evict") != 0 && strcmp(cmd, "suspend") != 0 && strcmp(cmd, "resume") != 0) ||
                         i != optind || argc - optind != 1) {
                        fprintf(stderr, "sagectl: %s: unexpected argument '%s'\n", cmd, argv[i]);
                        return 2;
                }
        if (strcmp(cmd, "evict") == 0 && argc - optind != 1) {
                fprintf(stderr, "sagectl: evict: expected an extent id or --unreferenced\n");
                return 2;
        }
        if ((strcmp(cmd, "suspend") == 0 || strcmp(cmd, "resume") == 0) && argc - optind != 1) {
                fprintf(stderr, "sagectl: %s: expected a pid\n", cmd);
                return 2;
        }
        if ((strcmp(cmd, "suspend") == 0 || strcmp(cmd, "resume") == 0) && !timeout_given)
                timeout_ms = SAGECTL_SUSPEND_TIMEOUT_MS;
        if (strcmp(cmd, "ping") && strcmp(cmd, "stats") && strcmp(cmd, "list") && strcmp(cmd, "evict") &&
            strcmp(cmd, "instances") && strcmp(cmd, "suspend") && strcmp(cmd, "resume") && strcmp(cmd, "devices")) {
                fprintf(stderr, "sagectl: unknown command '%s'\n", cmd);
                usage(stderr);
                return 2;
        }
        if (!socket_path) {
                if (sage_broker_default_socket(path, sizeof(path)) < 0) {
                        fprintf(stderr, "sagectl: default socket path too long; use --socket\n");
                        return 1;
                }
                socket_path = path;
        }

        r = sage_broker_connect_why(&b, socket_path, timeout_ms, why, sizeof(why));
        if (r) {
                if (why[0])
                        fprintf(stderr, "sagectl: cannot connect to %s: %s\n", socket_path, why);
                else if (r == -ENOENT || r == -ECONNREFUSED)
                        fprintf(stderr, "sagectl: cannot connect to %s: %s (is saged running?)\n", socket_path,
                                strerror(-r));
                else
                        fprintf(stderr, "sagectl: cannot connect to %s: %s\n", socket_path,
                                r > 0 ? sage_proto_error_name(r) : strerror(-r));
                return 1;
        }
        if (strcmp(cmd, "ping") == 0) {
                uint64_t t0 = sage_now_ns();
                r = sage_broker_ping(b);
                if (r)
                        r = sagectl_fail("ping", r, b);
                else
                        printf("saged at %s: alive (%.0f us; protocol %u, features 0x%" PRIx64 ", namespace %" PRIu64
                               ")\n",
                               socket_path, (double)(sage_now_ns() - t0) / 1e3, sage_broker_hello(b)->broker_version,
                               sage_broker_hello(b)->features, sage_broker_hello(b)->namespace_id);
        } else if (strcmp(cmd, "stats") == 0)
                r = cmd_stats(b, json);
        else if (strcmp(cmd, "list") == 0)
                r = cmd_list(b, json);
        else if (strcmp(cmd, "instances") == 0)
                r = sagectl_instances(b, json);
        else if (strcmp(cmd, "devices") == 0)
                r = sagectl_devices(b, json);
        else if (strcmp(cmd, "suspend") == 0 || strcmp(cmd, "resume") == 0)
                r = sagectl_suspend_resume(b, cmd, argv[optind]);
        else
                r = cmd_evict(b, argv[optind]);
        sage_broker_free(b);
        return r;
}
