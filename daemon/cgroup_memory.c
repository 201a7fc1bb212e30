/*
 * cgroup v2 memory room (cgroup_memory.h). The cgroup path comes from the
 * kernel (/proc/PID/cgroup), not from the process, and cgroup names hold no
 * '/' nor "..": joining it under `root` stays inside the tree. A level whose
 * files cannot be read (a cgroup without the memory controller) limits
 * nothing; the root cgroup has no memory.max.
 */
#include "cgroup_memory.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "options.h"

/* One number from a cgroup file; "max" is UINT64_MAX. False if unreadable. */
static bool read_value(const char *dir, const char *name, uint64_t *out) {
        char path[PATH_MAX + 32], text[32];
        ssize_t n;
        int fd;

        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
                return false;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return false;
        n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n <= 0)
                return false;
        text[n] = 0;
        if (strncmp(text, "max", 3) == 0) {
                *out = UINT64_MAX;
                return true;
        }
        char *end;
        return sage_parse_uint_prefix(text, out, &end) == 0;
}

uint64_t cgroup_memory_room_of(const char *root, const char *cgroup) {
        char dir[PATH_MAX + 1];
        uint64_t room = UINT64_MAX;

        if (cgroup[0] != '/' || strstr(cgroup, "/..") ||
            (size_t)snprintf(dir, sizeof(dir), "%s%s", root, cgroup) >= sizeof(dir))
                return room; /* an odd path: nothing we can check */
        /* From the cgroup up to the root ("/": the root's own files, which a real root lacks). */
        for (size_t root_len = strlen(root); strlen(dir) > root_len;) {
                uint64_t max, current;
                if (read_value(dir, "memory.max", &max) && max != UINT64_MAX &&
                    read_value(dir, "memory.current", &current))
                        room = current >= max ? 0 : (max - current < room ? max - current : room);
                *strrchr(dir, '/') = 0;
        }
        return room;
}

int cgroup_memory_room(const char *root, pid_t pid, uint64_t *room) {
        char path[64], line[PATH_MAX];
        FILE *f;

        *room = UINT64_MAX;
        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "0::/", 4) == 0) {
                        line[strcspn(line, "\n")] = 0;
                        *room = cgroup_memory_room_of(root, line + 3);
                        break;
                }
        fclose(f);
        return 0; /* no "0::" line: cgroup v1 only, nothing to check */
}
