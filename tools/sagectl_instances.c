/*
 * sagectl's instance commands (docs/suspend.md): instances [--json],
 * suspend PID, resume PID. The broker decides who may see and act on an
 * instance (root on the main socket, or the instance's own namespace); an
 * instance the caller may not see is "not found", as for extents.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker_client.h"
#include "options.h"
#include "sagectl.h"

/* active, idle (libsage reported it so), suspending, suspended, resuming, failed */
static const char *state_text(const SageInstanceEntry *e) {
        if (e->state == SAGE_INSTANCE_ACTIVE && (e->activity & SAGE_INSTANCE_ACTIVITY_IDLE))
                return "idle";
        return sage_instance_state_name(e->state);
}

int sagectl_instances(SageBroker *b, bool json) {
        SageInstancesReply *page = calloc(1, sizeof(*page));
        uint32_t after = 0;
        uint64_t rows = 0;
        int r = 0;

        if (!page)
                return sagectl_fail("instances", -12, NULL);
        if (json)
                printf("[");
        else
                printf("%-8s %-20s %-36s %-10s %8s %9s %10s %10s %s\n", "PID", "NAMESPACE", "GPU", "STATE", "GPU-MiB",
                       "HOST-MiB", "SUSPEND-ms", "RESUME-ms", "NOT-SUSPENDABLE");
        for (;;) {
                r = sage_broker_instances(b, after, page);
                if (r)
                        break;
                for (uint32_t i = 0; i < page->n_entries; i++) {
                        const SageInstanceEntry *e = &page->entries[i];
                        const char *why = sage_instance_why_name(e->why_not);
                        bool known = e->gpu_bytes != SAGE_INSTANCE_BYTES_UNKNOWN;
                        char uuid[SAGE_UUID_STRING_SIZE], gpu[24];

                        sage_uuid_format(e->uuid, uuid, sizeof(uuid));
                        /* Reasons are fixed text without quotes or backslashes: no JSON escaping needed. */
                        if (json) {
                                snprintf(gpu, sizeof(gpu), "%" PRIu64, e->gpu_bytes);
                                printf("%s\n {\"pid\": %u, \"namespace\": %" PRIu64 ", \"uid\": %u, \"label\": %u, "
                                       "\"device\": \"%s\", \"state\": \"%s\", \"gpu_bytes\": %s"
                                       ", \"host_bytes\": %" PRIu64
                                       ", \"suspend_ms\": %u, \"resume_ms\": %u, \"idle_s\": %.3f, \"flags\": %u, "
                                       "\"why_not\": %u, \"why_not_text\": \"%s\"}",
                                       rows ? "," : "", e->pid, e->namespace_id, sage_namespace_uid(e->namespace_id),
                                       sage_namespace_label(e->namespace_id), uuid, state_text(e), known ? gpu : "null",
                                       e->host_bytes, e->suspend_ms, e->resume_ms, (double)e->idle_ns / 1e9, e->flags,
                                       e->why_not, why);
                        } else {
                                snprintf(gpu, sizeof(gpu), "%" PRIu64, e->gpu_bytes >> 20);
                                printf("%-8u %-20" PRIu64 " %-36s %-10s %8s %9" PRIu64 " %10u %10u %s\n", e->pid,
                                       e->namespace_id, uuid, state_text(e), known ? gpu : "?", e->host_bytes >> 20,
                                       e->suspend_ms, e->resume_ms, e->why_not ? why : "-");
                        }
                        rows++;
                        after = e->pid;
                }
                if (!page->more || page->n_entries == 0)
                        break;
        }
        free(page);
        return sagectl_list_end("instances", r, b, json, rows);
}

int sagectl_suspend_resume(SageBroker *b, const char *cmd, const char *pid_text) {
        SageInstanceOpReply reply;
        uint64_t pid;
        int r;

        if (sage_parse_uint(pid_text, &pid) < 0 || pid == 0 || pid > INT32_MAX) {
                fprintf(stderr, "sagectl: %s: expected a pid, got '%s'\n", cmd, pid_text);
                return 2;
        }
        r = strcmp(cmd, "suspend") == 0 ? sage_broker_suspend(b, (uint32_t)pid, &reply)
                                        : sage_broker_resume(b, (uint32_t)pid, &reply);
        if (r)
                return sagectl_fail(cmd, r, b);
        printf("instance %" PRIu64 " %s in %u ms (state %s)\n", pid,
               strcmp(cmd, "suspend") == 0 ? "suspended" : "resumed", reply.elapsed_ms,
               sage_instance_state_name(reply.state));
        return 0;
}
