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

/* What the caller may see of the extents (all for root on the main socket), per device. */
typedef struct DeviceUse {
        uint64_t extents[SAGE_PROTO_DEVICES_MAX], bytes[SAGE_PROTO_DEVICES_MAX];
} DeviceUse;

static void count_extent(const SageListEntry *e, void *userdata) {
        DeviceUse *use = userdata;

        if (e->device < SAGE_PROTO_DEVICES_MAX) {
                use->extents[e->device]++;
                use->bytes[e->device] += e->size;
        }
}

int sagectl_devices(SageBroker *b, bool json) {
        DeviceUse use = { .extents = { 0 } };
        const SageDevicesReply *table;
        int r = sage_broker_devices(b, &table);

        if (r == 0)
                r = sagectl_each_extent(b, count_extent, &use);
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
                               d ? "," : "", d, uuid, served ? "true" : "false", e->memory, use.extents[d],
                               use.bytes[d]);
                else
                        printf("%-4u %-40s %-6s %14" PRIu64 " %8" PRIu64 " %14" PRIu64 "\n", d, uuid,
                               served ? "yes" : "no", e->memory, use.extents[d], use.bytes[d]);
        }
        return sagectl_list_end("devices", 0, b, json, table->n_devices);
}
