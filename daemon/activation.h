/* systemd's socket activation and readiness notification, without libsystemd. */
#pragma once

#include <stddef.h>

/* Listening sockets systemd may hand saged: the main one and each labelled one. */
#define ACTIVATION_MAX_FDS 65

/* The first fd passed by socket activation (sd_listen_fds(3)). */
#define ACTIVATION_FD_START 3

/*
 * The fds systemd passed (LISTEN_PID is us, LISTEN_FDS of them from fd 3),
 * made close-on-exec, into `fds` (at most `max`); *n = 0 when none were.
 * LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are removed from the
 * environment either way, so nothing saged starts takes them for its own.
 * -EINVAL when the variables are malformed or name more than `max` fds.
 * Call it before any fork: LISTEN_PID names the process systemd started.
 */
int activation_listen_fds(int *fds, size_t max, size_t *n);

/*
 * The fd among `fds` that is a listening SOCK_SEQPACKET UNIX socket bound
 * to `path`, made non-blocking; its slot becomes -1 (the caller owns the
 * fd). -ENOENT when none is.
 */
int activation_take(int *fds, size_t n, const char *path);

/*
 * Tell the service manager saged is ready (sd_notify(3) "READY=1") when
 * NOTIFY_SOCKET names one; the variable is removed. 0 also when there is
 * none; -errno when the message could not be sent.
 */
int activation_notify_ready(void);
