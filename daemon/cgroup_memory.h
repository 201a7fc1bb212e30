/*
 * Host memory left to a process under its cgroup v2 limits: the driver's
 * checkpoint copies the device memory into the process's own host memory,
 * charged to its cgroup, and a checkpoint that passes memory.max gets the
 * process OOM-killed. Read from /proc/PID/cgroup's "0::" line and
 * memory.max / memory.current of that cgroup and each ancestor under
 * `root` (normally /sys/fs/cgroup; tests give a fake tree).
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#define CGROUP_MEMORY_ROOT "/sys/fs/cgroup"

/*
 * Bytes the process may still grow by: the least of (memory.max -
 * memory.current) over its cgroup and its ancestors, UINT64_MAX when none
 * has a limit (or cgroup v2 is not there: nothing to pass). Returns 0, or
 * -errno when /proc/PID/cgroup cannot be read (the process is gone).
 */
int cgroup_memory_room(const char *root, pid_t pid, uint64_t *room);
/* The same for a cgroup path ("/a/b", as /proc/PID/cgroup's "0::" line has it) under `root`. */
uint64_t cgroup_memory_room_of(const char *root, const char *cgroup);
