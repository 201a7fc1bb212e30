/*
 * Unit test of the cgroup CPU quota in intercept/share_stage_threads.c:
 * the smallest quota of the process's cgroup and its ancestors (v2's
 * cpu.max, v1's cpu.cfs_quota_us), read once per process (it was read at
 * every staged upload: /proc/self/cgroup and a file per ancestor), again
 * in a fork()ed child. A cgroup tree of the test's own stands in for
 * /proc/self/cgroup and /sys/fs/cgroup.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../intercept/share_stage.h"

static char root[64], self[128];

static void put(const char *rel, const char *text) {
        char path[256];
        FILE *f;

        snprintf(path, sizeof(path), "%s%s", root, rel);
        assert((f = fopen(path, "w")) && fputs(text, f) >= 0 && fclose(f) == 0);
}

static void dir(const char *rel) {
        char path[256];

        snprintf(path, sizeof(path), "%s%s", root, rel);
        assert(mkdir(path, 0700) == 0);
}

int main(void) {
        int status;
        pid_t pid;

        snprintf(root, sizeof(root), "/tmp/sage-quota-XXXXXX");
        assert(mkdtemp(root));
        snprintf(self, sizeof(self), "%s/self-cgroup", root);
        dir("/a");
        dir("/a/b");
        dir("/cpu");
        dir("/cpu/v1");
        put("/self-cgroup", "0::/a/b\n");
        put("/a/cpu.max", "max 100000\n");
        put("/a/b/cpu.max", "300000 100000\n");
        share_stage_quota_paths(self, root);
        assert(share_stage_quota_cpus() == 3);
        /* An ancestor's smaller quota binds. */
        put("/a/cpu.max", "150000 100000\n");
        share_stage_quota_paths(self, root);
        assert(share_stage_quota_cpus() == 2);

        /* Read once: neither a new quota nor a missing file changes what this process was given. */
        put("/a/cpu.max", "max 100000\n");
        put("/a/b/cpu.max", "100000 100000\n");
        assert(share_stage_quota_cpus() == 2);
        assert(unlink(self) == 0);
        assert(share_stage_quota_cpus() == 2);
        assert(share_stage_threads_now() == 1); /* 2 CPUs' time: one for the caller, one copying */

        /* A child reads its own (here: cgroup v1's files, the process in /v1). */
        put("/self-cgroup", "4:cpu,cpuacct:/v1\n");
        put("/cpu/v1/cpu.cfs_quota_us", "400000\n");
        put("/cpu/v1/cpu.cfs_period_us", "100000\n");
        pid = fork();
        assert(pid >= 0);
        if (pid == 0)
                _exit(share_stage_quota_cpus() == 4 ? 0 : 1);
        assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert(share_stage_quota_cpus() == 2);

        /* No cgroup file at all: no quota. */
        assert(unlink(self) == 0);
        share_stage_quota_paths(self, root);
        assert(share_stage_quota_cpus() == 0);
        snprintf(self, sizeof(self), "rm -rf %s", root);
        assert(system(self) == 0);
        puts("share_stage_quota: ok");
        return 0;
}
