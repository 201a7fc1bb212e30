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
 *
 * A label is only as private as its socket: each one carries an access
 * rule (LabelAccess), written into the socket file's owner, group and mode
 * when it is created and checked again at every accept from SO_PEERCRED
 * (and SO_PEERGROUPS), so a socket left reachable by mistake (a bind mount,
 * a loose directory) still lets in no one the operator did not name.
 */
#include "label.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "options.h"

/* The length of text without its trailing ",uid=…", ",gid=…" and ",mode=…" options. */
static size_t options_start(const char *text) {
        size_t len = strlen(text);

        for (;;) {
                const char *comma = memrchr(text, ',', len);
                const char *opt = comma ? comma + 1 : NULL;
                if (!opt || (strncmp(opt, "uid=", 4) && strncmp(opt, "gid=", 4) && strncmp(opt, "mode=", 5)))
                        return len;
                len = (size_t)(comma - text);
        }
}

static int parse_id(const char *value, uint32_t *out) {
        uint64_t v;
        /* (uid_t)-1 means "no change" to chown and "nobody" to nothing else. */
        if (sage_parse_uint(value, &v) < 0 || v >= UINT32_MAX)
                return -EINVAL;
        *out = (uint32_t)v;
        return 0;
}

/* "uid=U", "gid=G" or "mode=OCTAL" (nul-terminated). */
static int parse_option(const char *opt, LabelAccess *a, bool *have_mode) {
        uint32_t id;

        if (strncmp(opt, "mode=", 5) == 0) {
                const char *v = opt + 5;
                unsigned long mode = 0;
                if (!*v || strlen(v) > 4 || *have_mode)
                        return -EINVAL;
                for (; *v; v++) {
                        if (*v < '0' || *v > '7')
                                return -EINVAL;
                        mode = mode * 8 + (unsigned long)(*v - '0');
                }
                /* Read and write bits only: a socket needs nothing else. */
                if (mode & ~0666ul)
                        return -EINVAL;
                a->mode = (mode_t)mode;
                *have_mode = true;
                return 0;
        }
        if (parse_id(opt + 4, &id) < 0)
                return -EINVAL;
        if (opt[0] == 'u') {
                if (a->n_uids == LABEL_MAX_IDS)
                        return -EINVAL;
                a->uids[a->n_uids++] = (uid_t)id;
        } else {
                if (a->n_gids == LABEL_MAX_IDS)
                        return -EINVAL;
                a->gids[a->n_gids++] = (gid_t)id;
        }
        return 0;
}

static int parse_options(const char *options, LabelAccess *a) {
        char buf[32];
        bool have_mode = false;

        *a = (LabelAccess){ 0 };
        while (*options == ',') {
                const char *end = strchrnul(options + 1, ',');
                size_t n = (size_t)(end - options - 1);
                if (n >= sizeof(buf))
                        return -EINVAL;
                memcpy(buf, options + 1, n);
                buf[n] = 0;
                if (parse_option(buf, a, &have_mode) < 0)
                        return -EINVAL;
                options = end;
        }
        /* One owner and one group express the rule exactly; longer lists only the accept check can. */
        if (!have_mode)
                a->mode = a->n_uids > 1 || a->n_gids > 1 ? 0666 : 0660;
        return 0;
}

int label_socket_parse(const char *text, LabelSocket *out) {
        size_t spec_len = options_start(text);
        const char *eq = memrchr(text, '=', spec_len);
        size_t path_len, label_len;
        char label[SAGE_PROTO_LABEL_MAX + 1];

        *out = (LabelSocket){ 0 };
        if (!eq)
                return -EINVAL;
        path_len = (size_t)(eq - text);
        label_len = spec_len - path_len - 1;
        if (path_len == 0 || label_len >= sizeof(label))
                return -EINVAL;
        memcpy(label, eq + 1, label_len);
        label[label_len] = 0;
        if (!sage_proto_label_valid(label, label_len) || parse_options(text + spec_len, &out->access) < 0)
                return -EINVAL;
        out->path = strndup(text, path_len);
        out->label = strdup(label);
        if (!out->path || !out->label) {
                label_socket_clear(out);
                return -ENOMEM;
        }
        return 0;
}

uid_t label_access_owner(const LabelAccess *a) {
        return a->n_uids ? a->uids[0] : 0;
}

gid_t label_access_group(const LabelAccess *a) {
        return a->n_gids ? a->gids[0] : 0;
}

static bool in_group(gid_t gid, const struct ucred *cred, const gid_t *groups, size_t n_groups) {
        if (cred->gid == gid)
                return true;
        for (size_t i = 0; i < n_groups; i++)
                if (groups[i] == gid)
                        return true;
        return false;
}

bool label_access_allows(const LabelAccess *a, const struct ucred *cred, const gid_t *groups, size_t n_groups) {
        if (cred->uid == 0 || (a->mode & S_IWOTH))
                return true;
        if ((a->mode & S_IWUSR) && cred->uid == label_access_owner(a))
                return true;
        for (size_t i = 0; i < a->n_uids; i++)
                if (cred->uid == a->uids[i])
                        return true;
        if ((a->mode & S_IWGRP) && in_group(label_access_group(a), cred, groups, n_groups))
                return true;
        for (size_t i = 0; i < a->n_gids; i++)
                if (in_group(a->gids[i], cred, groups, n_groups))
                        return true;
        return false;
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
