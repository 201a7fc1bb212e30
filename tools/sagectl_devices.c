/*
 * sagectl devices, and the GPU names list shows: the broker's own device
 * table (DEVICES), by UUID. A device number on the wire is the broker's
 * ordinal, which means nothing to an operator whose functions see their GPU
 * as device 0 (CUDA_VISIBLE_DEVICES, containers): the UUID is what
 * nvidia-smi -L, CUDA_VISIBLE_DEVICES and the node's inventory agree on.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sagectl.h"

/* "GPU-8932f937" (short: as many hex digits as nvidia-smi users type), or the whole UUID. */
const char *sagectl_device_name(SageBroker *b, uint32_t device, bool full, char *buf, size_t size) {
        const SageDevicesReply *table;

        if (sage_broker_devices(b, &table) != 0 || device >= table->n_devices) {
                snprintf(buf, size, "#%u", device);
                return buf;
        }
        sage_uuid_format(table->devices[device].uuid, buf, size);
        if (!full && size > 12)
                buf[12] = 0;
        return buf;
}

int sagectl_devices(SageBroker *b, bool json) {
        SageListEntry *entries = calloc(SAGE_PROTO_LIST_MAX, sizeof(*entries));
        uint64_t extents[SAGE_PROTO_DEVICES_MAX] = { 0 }, bytes[SAGE_PROTO_DEVICES_MAX] = { 0 }, after = 0;
        const SageDevicesReply *table;
        int more = 1, r;

        if (!entries)
                return sagectl_fail("devices", -ENOMEM, NULL);
        r = sage_broker_devices(b, &table);
        /* What the caller may see of the extents (all for root on the main socket), per device. */
        while (r == 0 && more) {
                uint32_t n = 0;
                r = sage_broker_list(b, after, entries, &n, &more);
                for (uint32_t i = 0; r == 0 && i < n; i++) {
                        if (entries[i].device < SAGE_PROTO_DEVICES_MAX) {
                                extents[entries[i].device]++;
                                bytes[entries[i].device] += entries[i].size;
                        }
                        after = entries[i].id;
                }
                if (n == 0)
                        break;
        }
        free(entries);
        if (r)
                return sagectl_fail("devices", r, b);
        if (json)
                printf("[");
        else
                printf("%-4s %-40s %-6s %14s %8s %14s\n", "DEV", "UUID", "SERVED", "MEMORY", "EXTENTS", "BYTES");
        for (uint32_t d = 0; d < table->n_devices; d++) {
                char uuid[SAGE_UUID_STRING_SIZE];
                const SageDeviceEntry *e = &table->devices[d];
                bool served = e->flags & SAGE_DEVICE_SERVED;
                sage_uuid_format(e->uuid, uuid, sizeof(uuid));
                if (json)
                        printf("%s\n {\"device\": %u, \"uuid\": \"%s\", \"served\": %s, \"memory\": %" PRIu64
                               ", \"extents\": %" PRIu64 ", \"bytes\": %" PRIu64 "}",
                               d ? "," : "", d, uuid, served ? "true" : "false", e->memory, extents[d], bytes[d]);
                else
                        printf("%-4u %-40s %-6s %14" PRIu64 " %8" PRIu64 " %14" PRIu64 "\n", d, uuid,
                               served ? "yes" : "no", e->memory, extents[d], bytes[d]);
        }
        if (json)
                printf("%s]\n", table->n_devices ? "\n" : "");
        return 0;
}
