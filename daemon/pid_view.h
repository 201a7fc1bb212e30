/*
 * Pids as a caller's pid namespace sees them. saged works with its own view
 * (SO_PEERCRED, pidfds); a sagectl in a container with a pid namespace of its
 * own knows other numbers. Its view of an instance is the instance's NSpid
 * entry at the caller's namespace depth (/proc/PID/status), and only an
 * instance inside the caller's namespace (or one nested in it) has one: the
 * rest of the node is invisible to it, as it is to the kernel's view.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

typedef struct PidView {
        bool same;      /* the caller shares saged's pid namespace: pids as they are */
        unsigned level; /* the caller's namespace depth below saged's (its NSpid entries - 1) */
        dev_t dev;      /* its pid namespace (/proc/PID/ns/pid) */
        ino_t ino;
} PidView;

/* The view of process `caller` (saged's pid). Its namespace unreadable: saged's own view. A caller in a
 * namespace saged cannot place (not below saged's): -errno, and nothing is visible through `view`. */
int pid_view_of(PidView *view, pid_t caller);
/* `pid` (saged's view) as the caller sees it; 0 when it is outside the caller's namespace. */
pid_t pid_view_translate(const PidView *view, pid_t pid);
