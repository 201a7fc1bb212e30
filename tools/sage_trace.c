/*
 * sage-trace: summaries of SAGE trace dumps. It reads the JSON libsage
 * writes (one event per line) with a small field scanner rather than a
 * general JSON parser: it is meant for our own dumps, and says so when a
 * file is not one. The summary answers "where did the start-up go": when
 * the driver was initialised, when the first context, allocation, upload
 * and launch happened, time by category and by symbol, and the bytes moved
 * in each direction.
 *
 *   sage-trace summary [--json] TRACE...
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define MAX_NAMES 256

typedef struct SymbolTotal {
        char name[64];
        char cat[16];
        uint64_t calls, errors, bytes;
        double time_us;
} SymbolTotal;

typedef struct Milestone {
        const char *label;
        double at_us, dur_us;
        bool seen;
} Milestone;

enum {
        M_INIT,
        M_CTX,
        M_ALLOC,
        M_UPLOAD,
        M_MODULE,
        M_LAUNCH,
        M_COUNT
};

/*
 * libsage's counters (otherData.stats of the dump), named by the list
 * libsage itself is built from: the summary shows the sharing ones (SHARE_*).
 */
typedef enum Stat {
#define SAGE_STAT(name, text) STAT_##name,
#include "stats.def"
#undef SAGE_STAT
        STAT_COUNT,
} Stat;

static const char *const stat_names[STAT_COUNT] = {
#define SAGE_STAT(name, text) #name,
#include "stats.def"
#undef SAGE_STAT
};

static bool is_share_stat(int i) {
        return strncmp(stat_names[i], "SHARE_", 6) == 0;
}

typedef struct Summary {
        char program[128];
        long pid;
        uint64_t events, threads, errors;
        double first_us, last_us;
        SymbolTotal totals[MAX_NAMES];
        size_t ntotals;
        uint64_t bytes_htod, bytes_dtoh, bytes_dtod, bytes_other;
        double time_htod, time_dtoh;
        Milestone milestones[M_COUNT];
        char first_error[128];
        double stats[STAT_COUNT];
        SymbolTotal unhooked[MAX_NAMES]; /* calls through trampolines (no hook: counted, not timed) */
        size_t nunhooked;
        bool valid;
} Summary;

/* The text after "key": in line, or NULL. */
static const char *field(const char *line, const char *key) {
        char pattern[64];
        const char *p;

        snprintf(pattern, sizeof(pattern), "\"%s\":", key);
        p = strstr(line, pattern);
        return p ? p + strlen(pattern) : NULL;
}

static bool field_string(const char *line, const char *key, char *out, size_t size) {
        const char *p = field(line, key);
        size_t n = 0;

        if (!p || *p != '"')
                return false;
        for (p++; *p && *p != '"' && n + 1 < size; p++)
                out[n++] = *p == '\\' && p[1] ? *++p : *p;
        out[n] = 0;
        return true;
}

static bool field_number(const char *line, const char *key, double *out) {
        const char *p = field(line, key);
        char *end;

        if (!p)
                return false;
        *out = strtod(p, &end);
        return end != p;
}

static SymbolTotal *total_for(Summary *s, const char *name, const char *cat) {
        for (size_t i = 0; i < s->ntotals; i++)
                if (strcmp(s->totals[i].name, name) == 0)
                        return &s->totals[i];
        if (s->ntotals == MAX_NAMES)
                return NULL;
        snprintf(s->totals[s->ntotals].name, sizeof(s->totals[0].name), "%s", name);
        snprintf(s->totals[s->ntotals].cat, sizeof(s->totals[0].cat), "%s", cat);
        return &s->totals[s->ntotals++];
}

static void milestone(Summary *s, int which, double ts, double dur) {
        Milestone *m = &s->milestones[which];

        if (!m->seen || ts < m->at_us) {
                m->seen = true;
                m->at_us = ts;
                m->dur_us = dur;
        }
}

static void add_event(Summary *s, const char *line) {
        char name[64], cat[16];
        double ts, dur, result = 0, bytes = 0;
        SymbolTotal *t;

        if (!field_string(line, "name", name, sizeof(name)) || !field_string(line, "cat", cat, sizeof(cat)) ||
            !field_number(line, "ts", &ts) || !field_number(line, "dur", &dur))
                return;
        field_number(line, "result", &result);
        field_number(line, "bytes", &bytes);
        s->events++;
        if (s->events == 1 || ts < s->first_us)
                s->first_us = ts;
        if (ts + dur > s->last_us)
                s->last_us = ts + dur;
        if ((t = total_for(s, name, cat))) {
                t->calls++;
                t->time_us += dur;
                t->bytes += (uint64_t)bytes;
                t->errors += result != 0;
        }
        if (result != 0) {
                if (!s->errors)
                        snprintf(s->first_error, sizeof(s->first_error), "%s returned %d", name, (int)result);
                s->errors++;
                return;
        }
        if (strcmp(cat, "init") == 0)
                milestone(s, M_INIT, ts, dur);
        else if (strcmp(cat, "ctx") == 0 && (strstr(name, "Retain") || strstr(name, "CtxCreate")))
                milestone(s, M_CTX, ts, dur);
        else if (strcmp(cat, "mem") == 0 && strstr(name, "Alloc"))
                milestone(s, M_ALLOC, ts, dur);
        else if (strcmp(cat, "vmm") == 0 && strstr(name, "Create"))
                milestone(s, M_ALLOC, ts, dur);
        else if (strcmp(cat, "module") == 0 && strstr(name, "Load"))
                milestone(s, M_MODULE, ts, dur);
        else if (strcmp(cat, "launch") == 0 || strcmp(cat, "graph") == 0)
                milestone(s, M_LAUNCH, ts, dur);
        if (strcmp(cat, "copy") == 0 && !strstr(name, "Memset")) {
                if (strstr(name, "HtoD")) {
                        s->bytes_htod += (uint64_t)bytes;
                        s->time_htod += dur;
                        milestone(s, M_UPLOAD, ts, dur);
                } else if (strstr(name, "DtoH")) {
                        s->bytes_dtoh += (uint64_t)bytes;
                        s->time_dtoh += dur;
                } else if (strstr(name, "DtoD")) {
                        s->bytes_dtod += (uint64_t)bytes;
                } else {
                        s->bytes_other += (uint64_t)bytes;
                }
        }
}

/* "name":count,... up to the closing brace (libsage writes the names; they hold no quotes). */
static void load_unhooked(Summary *s, const char *p) {
        while (*p == '"' && s->nunhooked < MAX_NAMES) {
                SymbolTotal *t = &s->unhooked[s->nunhooked];
                const char *end = strchr(p + 1, '"');
                char *num;

                if (!end || end[1] != ':')
                        return;
                snprintf(t->name, sizeof(t->name), "%.*s", (int)(end - p - 1), p + 1);
                t->calls = strtoull(end + 2, &num, 10);
                s->nunhooked++;
                p = *num == ',' ? num + 1 : num;
        }
}

static int load(const char *path, Summary *s) {
        FILE *f = fopen(path, "r");
        char *line = NULL;
        size_t cap = 0;
        bool header = false;

        if (!f) {
                fprintf(stderr, "sage-trace: %s: %s\n", path, strerror(errno));
                return -1;
        }
        memset(s, 0, sizeof(*s));
        static const char *labels[M_COUNT] = { "driver init (cuInit)", "first context",     "first allocation",
                                               "first upload (H2D)",   "first module load", "first launch" };
        for (int i = 0; i < M_COUNT; i++)
                s->milestones[i].label = labels[i];
        while (getline(&line, &cap, f) > 0) {
                if (!header && strncmp(line, "{\"traceEvents\":[", 16) == 0)
                        header = true;
                if (strstr(line, "\"ph\":\"X\""))
                        add_event(s, line);
                else if (strstr(line, "\"otherData\"") && strstr(line, "\"stats\""))
                        for (int i = 0; i < STAT_COUNT; i++)
                                field_number(strstr(line, "\"stats\""), stat_names[i], &s->stats[i]);
                else if (strncmp(line, "\"unhooked_calls\":{", 18) == 0)
                        load_unhooked(s, line + 18);
                else if (strstr(line, "\"name\":\"thread_name\""))
                        s->threads++;
                else if (strstr(line, "\"name\":\"process_name\"")) {
                        double pid = 0;
                        field_number(line, "pid", &pid);
                        s->pid = (long)pid;
                        field_string(strstr(line, "\"args\""), "name", s->program, sizeof(s->program));
                }
        }
        free(line);
        fclose(f);
        if (!header) {
                fprintf(stderr, "sage-trace: %s is not a SAGE trace dump\n", path);
                return -1;
        }
        s->valid = true;
        return 0;
}

static int by_time(const void *a, const void *b) {
        double x = ((const SymbolTotal *)a)->time_us, y = ((const SymbolTotal *)b)->time_us;
        return x < y ? 1 : x > y ? -1 : 0;
}

static int by_calls(const void *a, const void *b) {
        uint64_t x = ((const SymbolTotal *)a)->calls, y = ((const SymbolTotal *)b)->calls;
        return x < y ? 1 : x > y ? -1 : 0;
}

static double gbps(uint64_t bytes, double us) {
        return us > 0 ? (double)bytes / (us * 1e3) : 0;
}

/* Upload bytes mapped, or copied and then mapped by assembly, over all upload bytes (0: none). */
static double shared_fraction(const Summary *s) {
        double mapped = s->stats[STAT_SHARE_BYTES_MAPPED], copied = s->stats[STAT_SHARE_BYTES_COPIED];

        return mapped + copied > 0 ? (mapped + s->stats[STAT_SHARE_BYTES_ASSEMBLED]) / (mapped + copied) : 0.0;
}

static void print_text(const char *path, Summary *s) {
        printf("%s: %s (pid %ld): %llu calls on %llu thread(s) over %.3f ms, %llu failed%s%s\n", path, s->program,
               s->pid, (unsigned long long)s->events, (unsigned long long)s->threads, (s->last_us - s->first_us) / 1e3,
               (unsigned long long)s->errors, s->errors ? ", first: " : "", s->errors ? s->first_error : "");
        printf("\nset-up (ms after libsage loaded)       at       took\n");
        for (int i = 0; i < M_COUNT; i++) {
                Milestone *m = &s->milestones[i];
                if (m->seen)
                        printf("  %-32s %9.3f  %9.3f\n", m->label, m->at_us / 1e3, m->dur_us / 1e3);
                else
                        printf("  %-32s %9s\n", m->label, "-");
        }
        printf("\ncopies                       bytes        ms      GB/s\n");
        printf("  host to device  %16llu %9.3f %9.2f\n", (unsigned long long)s->bytes_htod, s->time_htod / 1e3,
               gbps(s->bytes_htod, s->time_htod));
        printf("  device to host  %16llu %9.3f %9.2f\n", (unsigned long long)s->bytes_dtoh, s->time_dtoh / 1e3,
               gbps(s->bytes_dtoh, s->time_dtoh));
        printf("  device/other    %16llu\n", (unsigned long long)(s->bytes_dtod + s->bytes_other));
        if (s->stats[STAT_SHARE_ALLOCS] > 0) {
                /* Shared: uploads served by mapping, and copied bytes that assembly then mapped. */
                double mapped = s->stats[STAT_SHARE_BYTES_MAPPED], copied = s->stats[STAT_SHARE_BYTES_COPIED];
                printf("\nsharing (SAGE_SHARE=1): %.0f hits, %.0f misses; %.1f MiB mapped, %.1f MiB copied (%.1f%% "
                       "shared)\n",
                       s->stats[STAT_SHARE_HITS], s->stats[STAT_SHARE_MISSES], mapped / 1048576, copied / 1048576,
                       100 * shared_fraction(s));
                for (int i = 0; i < STAT_COUNT; i++)
                        if (is_share_stat(i) && s->stats[i] > 0 && i != STAT_SHARE_HITS && i != STAT_SHARE_MISSES &&
                            i != STAT_SHARE_BYTES_MAPPED && i != STAT_SHARE_BYTES_COPIED)
                                printf("  %-32s %12.0f\n", stat_names[i], s->stats[i]);
        }
        qsort(s->totals, s->ntotals, sizeof(s->totals[0]), by_time);
        printf("\n%-34s %-7s %8s %11s %7s\n", "symbol (by time)", "cat", "calls", "ms", "failed");
        for (size_t i = 0; i < s->ntotals && i < 20; i++)
                printf("  %-32s %-7s %8llu %11.3f %7llu\n", s->totals[i].name, s->totals[i].cat,
                       (unsigned long long)s->totals[i].calls, s->totals[i].time_us / 1e3,
                       (unsigned long long)s->totals[i].errors);
        if (s->nunhooked) {
                qsort(s->unhooked, s->nunhooked, sizeof(s->unhooked[0]), by_calls);
                printf("\n%-34s %8s\n", "unhooked entry points (by calls)", "calls");
                for (size_t i = 0; i < s->nunhooked && i < 20; i++)
                        printf("  %-32s %8llu\n", s->unhooked[i].name, (unsigned long long)s->unhooked[i].calls);
        }
}

static void print_json(const char *path, Summary *s, bool last) {
        printf("{\"trace\":\"%s\",\"program\":\"%s\",\"pid\":%ld,\"calls\":%llu,\"threads\":%llu,\"failed\":%llu,"
               "\"span_ms\":%.3f,\"setup\":{",
               path, s->program, s->pid, (unsigned long long)s->events, (unsigned long long)s->threads,
               (unsigned long long)s->errors, (s->last_us - s->first_us) / 1e3);
        static const char *keys[M_COUNT] = { "init", "context", "alloc", "upload", "module", "launch" };
        for (int i = 0; i < M_COUNT; i++) {
                Milestone *m = &s->milestones[i];
                printf("%s\"%s\":", i ? "," : "", keys[i]);
                if (m->seen)
                        printf("{\"at_ms\":%.3f,\"took_ms\":%.3f}", m->at_us / 1e3, m->dur_us / 1e3);
                else
                        printf("null");
        }
        printf("},\"bytes\":{\"htod\":%llu,\"dtoh\":%llu,\"dtod\":%llu,\"other\":%llu},\"sharing\":{",
               (unsigned long long)s->bytes_htod, (unsigned long long)s->bytes_dtoh, (unsigned long long)s->bytes_dtod,
               (unsigned long long)s->bytes_other);
        for (int i = 0, n = 0; i < STAT_COUNT; i++)
                if (is_share_stat(i))
                        printf("%s\"%s\":%.0f", n++ ? "," : "", stat_names[i], s->stats[i]);
        printf("},\"shared_fraction\":%.6f,\"symbols\":{", shared_fraction(s));
        for (size_t i = 0; i < s->ntotals; i++)
                printf("%s\"%s\":{\"calls\":%llu,\"ms\":%.3f,\"failed\":%llu}", i ? "," : "", s->totals[i].name,
                       (unsigned long long)s->totals[i].calls, s->totals[i].time_us / 1e3,
                       (unsigned long long)s->totals[i].errors);
        printf("},\"unhooked\":{");
        for (size_t i = 0; i < s->nunhooked; i++)
                printf("%s\"%s\":%llu", i ? "," : "", s->unhooked[i].name, (unsigned long long)s->unhooked[i].calls);
        printf("}}%s\n", last ? "" : ",");
}

static void usage(FILE *f) {
        fprintf(f, "usage: sage-trace summary [--json] TRACE...\n"
                   "Summarizes SAGE trace dumps (SAGE_TRACE=file): set-up milestones, bytes copied,\n"
                   "time by driver call.\n");
}

int main(int argc, char **argv) {
        bool json = false;
        int first = 2, failed = 0, count;
        static Summary s;

        if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
                usage(stdout);
                return 0;
        }
        if (argc >= 2 && !strcmp(argv[1], "--version")) {
                printf("sage-trace %s\n", SAGE_VERSION);
                return 0;
        }
        if (argc < 3 || strcmp(argv[1], "summary") != 0) {
                usage(stderr);
                return 2;
        }
        if (!strcmp(argv[2], "--json")) {
                json = true;
                first = 3;
        }
        count = argc - first;
        if (count < 1) {
                usage(stderr);
                return 2;
        }
        if (json && count > 1)
                printf("[\n");
        for (int i = first; i < argc; i++) {
                if (load(argv[i], &s) < 0) {
                        failed = 1;
                        continue;
                }
                if (json)
                        print_json(argv[i], &s, i == argc - 1);
                else
                        print_text(argv[i], &s);
                if (!json && i + 1 < argc)
                        printf("\n");
        }
        if (json && count > 1)
                printf("]\n");
        return failed;
}
