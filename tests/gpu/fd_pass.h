/*
 * Handing a file descriptor to another process over a UNIX socket
 * (SCM_RIGHTS): how the test programs and probes pass a VMM handle's POSIX
 * fd from exporter to importer (tests/fakecuda/test_fakecuda_vmm.c and
 * test_fakecuda_checkpoint.c, tests/gpu/two_gpus_probe.cu, scripts/probes/).
 * Plain C and C++; include it by its path relative to the includer.
 */
#ifndef SAGE_FD_PASS_H
#define SAGE_FD_PASS_H

#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Sends `len` bytes of `data` with `fd` attached (nothing attached when fd < 0): sendmsg's result. */
static inline ssize_t fd_send(int sock, int fd, const void *data, size_t len) {
        char ctl[CMSG_SPACE(sizeof(int))];
        struct iovec iov;
        struct msghdr msg;
        memset(ctl, 0, sizeof ctl);
        memset(&msg, 0, sizeof msg);
        iov.iov_base = (void *)(uintptr_t)data;
        iov.iov_len = len;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        if (fd >= 0) {
                msg.msg_control = ctl;
                msg.msg_controllen = sizeof ctl;
                struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof fd);
        }
        return sendmsg(sock, &msg, 0);
}

/* Receives `len` bytes into `data` (waiting for all of them) and the fd
 * that came with them: that fd, or -1 when none did. *got (if given):
 * recvmsg's result. */
static inline int fd_recv(int sock, void *data, size_t len, ssize_t *got) {
        char ctl[CMSG_SPACE(sizeof(int))];
        struct iovec iov;
        struct msghdr msg;
        int fd = -1;
        memset(&msg, 0, sizeof msg);
        iov.iov_base = data;
        iov.iov_len = len;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof ctl;
        ssize_t n = recvmsg(sock, &msg, MSG_WAITALL);
        if (got)
                *got = n;
        struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
        if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                memcpy(&fd, CMSG_DATA(c), sizeof fd);
        return fd;
}

#endif /* SAGE_FD_PASS_H */
