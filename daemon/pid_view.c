/*
 * Pid translation (pid_view.h). NSpid lists a process's pid in every pid
 * namespace from saged's (the reader's) down to its own; the caller's
 * namespace is an ancestor of the instance's exactly when walking the
 * instance's namespace up (NS_GET_PARENT) by the depth difference lands on
 * the caller's namespace (same device and inode). The ancestor check is what
 * keeps a sibling container, whose NSpid happens to have as many entries,
 * from seeing numbers that mean nothing (or something else) to it.
 */
#include "pid_view.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define PID_VIEW_MAX_LEVELS 32 /* the kernel nests pid namespaces at most 32 deep */

/* NSpid of `pid`: how many entries, written to out (at most max). -errno if unreadable. */
static int read_nspid(pid_t pid, pid_t *out, int max) {
        char path[64], line[512];
        int n = -ENOENT;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f)) {
                char *p = line + 6, *end;
                if (strncmp(line, "NSpid:", 6) != 0)
                        continue;
                n = 0;
                for (long v; n < max && (v = strtol(p, &end, 10), end != p); p = end)
                        out[n++] = (pid_t)v;
                break;
        }
        fclose(f);
        return n;
}

int pid_view_of(PidView *v, pid_t caller) {
        char path[64];
        struct stat mine, theirs;
        pid_t ns[PID_VIEW_MAX_LEVELS];
        int n;

        *v = (PidView){ .same = true };
        snprintf(path, sizeof(path), "/proc/%d/ns/pid", (int)caller);
        /* Unreadable (a saged that is not root, under hidepid): saged's own view, as without translation. */
        if (caller <= 0 || stat("/proc/self/ns/pid", &mine) < 0 || stat(path, &theirs) < 0)
                return 0;
        v->same = false;
        if (mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino) {
                v->same = true;
                return 0;
        }
        n = read_nspid(caller, ns, PID_VIEW_MAX_LEVELS);
        if (n < 2)
                return n < 0 ? n : -EINVAL; /* outside saged's namespace: nothing is visible */
        v->level = (unsigned)n - 1;
        v->dev = theirs.st_dev;
        v->ino = theirs.st_ino;
        return 0;
}

pid_t pid_view_translate(const PidView *v, pid_t pid) {
        char path[64];
        pid_t ns[PID_VIEW_MAX_LEVELS];
        struct stat st;
        int n, fd, ok;

        if (v->same)
                return pid;
        if (v->level == 0)
                return 0; /* pid_view_of failed: see nothing */
        n = read_nspid(pid, ns, PID_VIEW_MAX_LEVELS);
        if (n <= (int)v->level)
                return 0;
        snprintf(path, sizeof(path), "/proc/%d/ns/pid", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        for (int up = n - 1 - (int)v->level; fd >= 0 && up > 0; up--) {
                int parent = ioctl(fd, NS_GET_PARENT);
                close(fd);
                fd = parent;
        }
        if (fd < 0)
                return 0;
        ok = fstat(fd, &st) == 0 && st.st_dev == v->dev && st.st_ino == v->ino;
        close(fd);
        return ok ? ns[v->level] : 0;
}
