/*
 * Wire codec of DEVICES_REPLY (proto.h, "Devices"), apart from
 * proto_codec.c for size, under the same strict rules: an exact length, a
 * bounded count, known flag bits and zero reserved bytes only.
 */
#include <errno.h>
#include <stdio.h>

#include "proto_rw.h"

void put_devices_reply(Writer *w, const SageMessage *m) {
        const SageDevicesReply *d = &m->devices_reply;

        if (d->n_devices > SAGE_PROTO_DEVICES_MAX) {
                w->failed = true;
                return;
        }
        put_u32(w, d->n_devices);
        for (uint32_t i = 0; i < d->n_devices; i++) {
                put_bytes(w, d->devices[i].uuid, sizeof(d->devices[i].uuid));
                put_u64(w, d->devices[i].memory);
                put_u32(w, d->devices[i].flags);
                put_u32(w, 0);
        }
}

int get_devices_reply(Reader *r, SageMessage *m, SageListEntry *list) {
        SageDevicesReply *d = &m->devices_reply;
        uint32_t n = get_u32(r);

        if (r->failed)
                return 0;
        if (n > SAGE_PROTO_DEVICES_MAX || r->size - r->pos != (size_t)n * SAGE_PROTO_DEVICE_ENTRY_SIZE)
                return SAGE_ERR_MALFORMED;
        d->n_devices = n;
        for (uint32_t i = 0; i < n; i++) {
                memcpy(d->devices[i].uuid, r->p + r->pos, sizeof(d->devices[i].uuid));
                r->pos += sizeof(d->devices[i].uuid);
                d->devices[i].memory = get_u64(r);
                d->devices[i].flags = get_u32(r);
                if (get_u32(r) != 0 || (d->devices[i].flags & ~SAGE_DEVICE_FLAGS_ALL))
                        return SAGE_ERR_MALFORMED;
        }
        return 0;
}

int sage_uuid_parse(const char *text, uint8_t uuid[16]) {
        size_t n = 0;

        if (strncmp(text, "GPU-", 4) != 0)
                return -EINVAL;
        for (const char *p = text + 4; *p; p++) {
                int v = *p >= '0' && *p <= '9'   ? *p - '0'
                        : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
                        : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10
                                                 : -1;
                if (*p == '-')
                        continue;
                if (v < 0 || n == 32)
                        return -EINVAL;
                uuid[n / 2] = (uint8_t)(n % 2 ? (uuid[n / 2] | v) : v << 4);
                n++;
        }
        return n == 32 ? 0 : -EINVAL;
}

const char *sage_uuid_format(const uint8_t uuid[16], char *buf, size_t size) {
        snprintf(buf, size, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", uuid[0],
                 uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7], uuid[8], uuid[9], uuid[10], uuid[11],
                 uuid[12], uuid[13], uuid[14], uuid[15]);
        return buf;
}
