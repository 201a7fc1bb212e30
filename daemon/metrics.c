/*
 * What saged's /metrics page says (Prometheus text format 0.0.4), rendered
 * from the server's own figures whenever metrics_http.c asks for a page.
 *
 * Every family is declared once in the table below (name, type, help) and
 * printed from it, so HELP and TYPE cannot drift from the samples. Names
 * carry the `sage_` prefix and their unit (`_bytes`, `_seconds`); counters
 * end in `_total`. The page is broker-wide and names every tenant (its
 * namespaces, their bytes): that is why saged binds it to loopback unless
 * told otherwise (daemon/README.md, "Metrics").
 *
 * Per-namespace figures walk every extent (O(N log N) with the sort), at
 * most ten times a second (METRICS_HTTP_PAGE_REUSE_NS); the namespaces
 * holding the most bytes come first and at most METRICS_MAX_NAMESPACES of
 * them are listed, so a broker with many tenants still renders a bounded page.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "metrics_http.h"
#include "server_private.h"
#include "util.h"

#define METRICS_MAX_NAMESPACES 4096

#define METRICS_FAMILIES(X)                                                                                          \
        X(BUILD_INFO, "sage_build_info", "gauge", "saged's version and protocol version (always 1)")                 \
        X(START_TIME, "sage_start_time_seconds", "gauge", "When saged started, in seconds since the Unix epoch")     \
        X(EXTENTS, "sage_extents", "gauge", "Extents resident (verified or not)")                                    \
        X(UNVERIFIED, "sage_extents_unverified", "gauge",                                                            \
          "Extents whose bytes are still being checked against their "                                               \
          "content key (not served yet)")                                                                            \
        X(RESIDENT, "sage_resident_bytes", "gauge", "Bytes extents hold on each device (size plus notes)")           \
        X(BUDGET, "sage_budget_bytes", "gauge", "The most extents may hold on each device")                          \
        X(DEVICE_MEMORY, "sage_device_memory_bytes", "gauge", "Each served device's total memory")                   \
        X(REFERENCES, "sage_references", "gauge", "References clients hold on extents")                              \
        X(CLIENTS, "sage_clients", "gauge", "Connections of clients (libsage, sagectl, sage-run)")                   \
        X(IPC_EXPORTS, "sage_ipc_exports", "gauge", "CUDA-IPC registrations held")                                   \
        X(HITS, "sage_hits_total", "counter", "LOOKUPs that found a verified extent")                                \
        X(MISSES, "sage_misses_total", "counter", "LOOKUPs that found none")                                         \
        X(PUBLISHES, "sage_publishes_total", "counter", "PUBLISHes that created an extent")                          \
        X(REJECTED, "sage_publishes_rejected_total", "counter",                                                      \
          "PUBLISHes refused or dropped: over budget, or bytes that did not match their content key")                \
        X(EVICTIONS, "sage_evictions_total", "counter", "Extents evicted (budget, sagectl evict, rejected content)") \
        X(EVICTED, "sage_evicted_bytes_total", "counter", "Bytes of the extents evicted")                            \
        X(NAMESPACES, "sage_namespaces", "gauge", "Namespaces (tenants) holding extents")                            \
        X(NS_RESIDENT, "sage_namespace_resident_bytes", "gauge",                                                     \
          "Bytes one namespace's extents hold, all devices (the largest namespaces, at most 4096)")                  \
        X(NS_EXTENTS, "sage_namespace_extents", "gauge", "Extents one namespace holds")                              \
        X(INSTANCES, "sage_instances", "gauge", "Registered instances by state (docs/suspend.md)")                   \
        X(REFUSED, "sage_metrics_connections_refused_total", "counter",                                              \
          "Connections to this endpoint answered 503 (too many at once)")

enum {
#define X(id, name, type, help) METRIC_##id,
        METRICS_FAMILIES(X)
#undef X
};

static const struct {
        const char *name, *type, *help;
} families[] = {
#define X(id, name, type, help) { name, type, help },
        METRICS_FAMILIES(X)
#undef X
};

typedef struct NamespaceUse {
        uint64_t namespace_id;
        uint64_t bytes;
        uint64_t extents;
} NamespaceUse;

static void family(MetricsBuf *b, int id) {
        metrics_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", families[id].name, families[id].help, families[id].name,
                           families[id].type);
}

static void sample(MetricsBuf *b, int id, uint64_t value) {
        family(b, id);
        metrics_buf_printf(b, "%s %llu\n", families[id].name, (unsigned long long)value);
}

static void format_uuid(const uint8_t u[16], char out[41]) {
        static const char hex[] = "0123456789abcdef";
        char *p = out + 4;

        memcpy(out, "GPU-", 4);
        for (int i = 0; i < 16; i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        *p++ = '-';
                *p++ = hex[u[i] >> 4];
                *p++ = hex[u[i] & 15];
        }
        *p = 0;
}

static void per_device(Server *s, MetricsBuf *b, int id) {
        family(b, id);
        for (uint32_t d = 0; d < gpu_device_count(s->gpu); d++) {
                uint8_t u[16];
                char uuid[41] = "";
                uint64_t v = id == METRIC_RESIDENT ? extent_store_resident(s->store, d)
                             : id == METRIC_BUDGET ? extent_store_get_budget(s->store, d)
                                                   : gpu_total_memory(s->gpu, d);

                if (!gpu_serves(s->gpu, d))
                        continue;
                if (gpu_device_uuid(s->gpu, d, u))
                        format_uuid(u, uuid);
                if (v == EXTENT_STORE_UNLIMITED) /* no budget: +Inf */
                        metrics_buf_printf(b, "%s{device=\"%u\",uuid=\"%s\"} +Inf\n", families[id].name, d, uuid);
                else
                        metrics_buf_printf(b, "%s{device=\"%u\",uuid=\"%s\"} %llu\n", families[id].name, d, uuid,
                                           (unsigned long long)v);
        }
}

static int by_namespace(const void *a, const void *b) {
        uint64_t x = ((const NamespaceUse *)a)->namespace_id, y = ((const NamespaceUse *)b)->namespace_id;
        return x < y ? -1 : x > y;
}

static int by_bytes_down(const void *a, const void *b) {
        uint64_t x = ((const NamespaceUse *)a)->bytes, y = ((const NamespaceUse *)b)->bytes;
        return x > y ? -1 : x < y;
}

/* Every namespace's extents and bytes, largest first; NULL (and *n 0) if none or out of memory. */
static NamespaceUse *namespace_use(Server *s, size_t *n) {
        ExtentStoreCounters counters;
        NamespaceUse *use;
        size_t k = 0, out = 0;

        *n = 0;
        extent_store_counters(s->store, &counters);
        if (counters.extents == 0 || !(use = calloc(counters.extents, sizeof(*use))))
                return NULL;
        for (Extent *e = extent_store_next(s->store, 0); e && k < counters.extents;
             e = extent_store_next(s->store, e->id))
                use[k++] = (NamespaceUse){ e->namespace_id, e->key.size + e->notes_len, 1 };
        qsort(use, k, sizeof(*use), by_namespace);
        for (size_t i = 0; i < k; i++) {
                if (out > 0 && use[out - 1].namespace_id == use[i].namespace_id) {
                        use[out - 1].bytes += use[i].bytes;
                        use[out - 1].extents++;
                } else
                        use[out++] = use[i];
        }
        qsort(use, out, sizeof(*use), by_bytes_down);
        *n = out;
        return use;
}

/* namespace="LABEL:uid" (or "uid", "container-N:uid", "#N:uid"), label="LABEL", uid="uid": as sagectl list names it. */
static void namespace_labels(Server *s, MetricsBuf *b, uint64_t namespace_id) {
        uint32_t label = sage_namespace_label(namespace_id), uid = sage_namespace_uid(namespace_id);
        const char *name = label && label < SAGE_NAMESPACE_CONTAINER_FIRST ? label_table_name(&s->labels, label) : NULL;
        char ns[96];

        if (!label)
                snprintf(ns, sizeof(ns), "%u", uid);
        else if (label >= SAGE_NAMESPACE_CONTAINER_FIRST)
                snprintf(ns, sizeof(ns), "container-%u:%u", label - SAGE_NAMESPACE_CONTAINER_FIRST, uid);
        else if (name)
                snprintf(ns, sizeof(ns), "%s:%u", name, uid);
        else
                snprintf(ns, sizeof(ns), "#%u:%u", label, uid);
        metrics_buf_printf(b, "{namespace=\"");
        metrics_buf_label_value(b, ns);
        metrics_buf_printf(b, "\",label=\"");
        metrics_buf_label_value(b, name ? name : "");
        metrics_buf_printf(b, "\",uid=\"%u\"}", uid);
}

static void per_namespace(Server *s, MetricsBuf *b) {
        size_t n;
        NamespaceUse *use = namespace_use(s, &n);

        sample(b, METRIC_NAMESPACES, n);
        for (int id = METRIC_NS_RESIDENT; id <= METRIC_NS_EXTENTS; id++) {
                family(b, id);
                for (size_t i = 0; i < n && i < METRICS_MAX_NAMESPACES; i++) {
                        metrics_buf_printf(b, "%s", families[id].name);
                        namespace_labels(s, b, use[i].namespace_id);
                        metrics_buf_printf(
                                b, " %llu\n",
                                (unsigned long long)(id == METRIC_NS_RESIDENT ? use[i].bytes : use[i].extents));
                }
        }
        free(use);
}

void server_render_metrics(void *userdata, MetricsBuf *b) {
        Server *s = userdata;
        ExtentStoreCounters counters;
        uint64_t by_state[_SAGE_INSTANCE_STATE_MAX] = { 0 };
        struct timespec now;
        double started;

        extent_store_counters(s->store, &counters);
        clock_gettime(CLOCK_REALTIME, &now);
        started = (double)now.tv_sec + now.tv_nsec / 1e9 - (double)(sage_now_ns() - s->started_ns) / 1e9;

        family(b, METRIC_BUILD_INFO);
        metrics_buf_printf(b, "%s{version=\"%s\",protocol=\"%d\"} 1\n", families[METRIC_BUILD_INFO].name, SAGE_VERSION,
                           SAGE_PROTO_VERSION);
        family(b, METRIC_START_TIME);
        metrics_buf_printf(b, "%s %.3f\n", families[METRIC_START_TIME].name, started);
        sample(b, METRIC_EXTENTS, counters.extents);
        sample(b, METRIC_UNVERIFIED, s->n_verifying);
        per_device(s, b, METRIC_RESIDENT);
        per_device(s, b, METRIC_BUDGET);
        per_device(s, b, METRIC_DEVICE_MEMORY);
        sample(b, METRIC_REFERENCES, counters.refs);
        sample(b, METRIC_CLIENTS, s->n_clients);
        sample(b, METRIC_IPC_EXPORTS, ipc_registry_count(s->ipc));
        sample(b, METRIC_HITS, s->hits);
        sample(b, METRIC_MISSES, s->misses);
        sample(b, METRIC_PUBLISHES, s->publishes);
        family(b, METRIC_REJECTED);
        metrics_buf_printf(b, "%s{reason=\"budget\"} %llu\n%s{reason=\"content\"} %llu\n",
                           families[METRIC_REJECTED].name, (unsigned long long)s->rejected_budget,
                           families[METRIC_REJECTED].name, (unsigned long long)s->rejected_content);
        sample(b, METRIC_EVICTIONS, counters.evictions);
        sample(b, METRIC_EVICTED, counters.evicted_bytes);
        per_namespace(s, b);
        for (size_t i = 0; i < s->instances.n; i++)
                if (s->instances.items[i]->state < _SAGE_INSTANCE_STATE_MAX)
                        by_state[s->instances.items[i]->state]++;
        family(b, METRIC_INSTANCES);
        for (unsigned st = 0; st < _SAGE_INSTANCE_STATE_MAX; st++)
                metrics_buf_printf(b, "%s{state=\"%s\"} %llu\n", families[METRIC_INSTANCES].name,
                                   sage_instance_state_name(st), (unsigned long long)by_state[st]);
        sample(b, METRIC_REFUSED, metrics_http_refused(s->metrics));
}
