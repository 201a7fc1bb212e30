/* Who may reach saged's sockets: their directories, the labelled sockets' access rules. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "label.h"

/*
 * 0 when the directory that holds `socket_path` is writable by nobody but
 * saged's user and root (owned by one of them, no group or other write bit),
 * -EPERM otherwise (anyone who can write there could replace the socket with
 * an impostor's), other -errno when it cannot be checked.
 */
int access_check_socket_dir(const char *socket_path);

/* Give a labelled socket file the owner, group and mode of its rule. */
int access_apply(const char *socket_path, const LabelAccess *access);

/* A refused client's warnings: at most one a second, the rest counted. */
typedef struct AccessWarnings {
        uint64_t last_ns;
        uint64_t suppressed;
} AccessWarnings;

/* May a warning go out now? If so, *suppressed receives how many did not since the last one. */
bool access_warning_due(AccessWarnings *warnings, uint64_t *suppressed);

/*
 * May the peer of the accepted socket `fd` (credentials `cred`) use a
 * labelled socket with this rule? Supplementary groups come from
 * SO_PEERGROUPS when the rule names groups. A refusal is logged, rate
 * limited through `warnings`.
 */
bool access_allows(int fd, const struct ucred *cred, const LabelAccess *access, const char *socket_path,
                   AccessWarnings *warnings);
