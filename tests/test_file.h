/*
 * The files of the tests' fake trees (a cgroup hierarchy under a temp root):
 * shared by unit (test_instance_policy.c) and integration (daemon_test.c)
 * tests, each of which checks the answer with its own CHECK.
 */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* dir/name, created or truncated, holding `text`: 0, or -errno. */
static inline int test_put_file(const char *dir, const char *name, const char *text) {
        char path[4096];
        size_t len = strlen(text);
        int fd, r = 0;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        if (write(fd, text, len) != (ssize_t)len)
                r = -EIO;
        close(fd);
        return r;
}
