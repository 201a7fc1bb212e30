/*
 * Platform labels.
 *
 * A label puts every client of one listening socket into its own namespace
 * family (label << 32 | uid) whatever its uid: the platform (root, the only
 * one who may start saged with labels) gives each tenant its own socket,
 * so two tenants that happen to run as the same uid still never share an
 * extent or an IPC token. Labels are named on the command line and numbered
 * here, densely from 1 in option order: the numbers live only as long as the
 * broker (so do the extents they key), which is why nothing needs them to be
 * stable across restarts, only distinct from each other and from 0.
 */
#include "label.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int label_socket_parse(const char *text, LabelSocket *out) {
        const char *eq = strrchr(text, '=');
        size_t path_len, label_len;

        *out = (LabelSocket){ 0 };
        if (!eq)
                return -EINVAL;
        path_len = (size_t)(eq - text);
        label_len = strlen(eq + 1);
        if (path_len == 0 || !sage_proto_label_valid(eq + 1, label_len))
                return -EINVAL;
        out->path = strndup(text, path_len);
        out->label = strdup(eq + 1);
        if (!out->path || !out->label) {
                label_socket_clear(out);
                return -ENOMEM;
        }
        return 0;
}

void label_socket_clear(LabelSocket *s) {
        free(s->path);
        free(s->label);
        *s = (LabelSocket){ 0 };
}

int label_table_add(LabelTable *t, const char *name, uint32_t *number) {
        size_t len = strlen(name);

        if (!sage_proto_label_valid(name, len))
                return -EINVAL;
        for (uint32_t i = 0; i < t->n; i++)
                if (strcmp(t->names[i], name) == 0) {
                        *number = i + 1;
                        return 0;
                }
        if (t->n == LABEL_MAX_SOCKETS)
                return -ENOSPC;
        memcpy(t->names[t->n], name, len + 1);
        *number = ++t->n;
        return 0;
}

const char *label_table_name(const LabelTable *t, uint32_t number) {
        return number >= 1 && number <= t->n ? t->names[number - 1] : NULL;
}
