/*
 * A broker of another version, for the version-skew test (skew_checks.sh):
 * a pod's libsage and the node's saged are upgraded separately, so either
 * side may meet a protocol it does not speak.
 *   skew-broker MODE SOCKET   listen on SOCKET, go to the background once
 *                             listening (prints the pid), answer as MODE:
 *     newer     every reply in a header of the next protocol version
 *     older     every reply in a header of version 1
 *     refuse    ERROR VERSION to HELLO (what saged answers a peer of another version)
 *     features  HELLO_REPLY of version 2 from a broker that says it is newer and
 *               grants bits nobody defined yet; LOOKUPs miss, the rest UNKNOWN_TYPE
 *     garbage   64 random bytes to every message
 *     hangup    close every connection at once
 *     silent    read, never answer (the client's deadline must end the wait)
 *   skew-broker client-newer SOCKET   as a client of the next version: HELLO,
 *                             then expect ERROR VERSION or the end of the
 *                             connection; exit 0 if so
 * Up to 64 connections at once (libsage opens one per feature that needs it).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto.h"

#define MAX_CONNS 64

static uint8_t buf[SAGE_PROTO_MAX_MESSAGE];

/* The header's version field: bytes 4-5, little-endian (proto.h). */
static void set_version(uint8_t *msg, uint16_t version) {
        msg[4] = (uint8_t)(version & 0xff);
        msg[5] = (uint8_t)(version >> 8);
}

static void answer(const char *mode, int fd, const SageMessage *req) {
        static uint8_t out[4096];
        SageMessage reply;
        ssize_t n;

        if (strcmp(mode, "silent") == 0)
                return;
        if (strcmp(mode, "garbage") == 0) {
                if (getrandom(out, 64, 0) == 64)
                        (void)sage_proto_send(fd, out, 64, NULL, 0);
                return;
        }
        if (req->header.type == SAGE_MSG_HELLO && strcmp(mode, "refuse") != 0) {
                sage_proto_init(&reply, SAGE_MSG_HELLO_REPLY, req->header.request_id);
                reply.hello_reply = (SageHelloReply){ SAGE_PROTO_VERSION + 1, 1, 0, 2u << 20,
                                                      req->hello.features | 1ull << 40 | 1ull << 63 };
        } else if (req->header.type == SAGE_MSG_HELLO)
                sage_proto_error(&reply, req->header.request_id, SAGE_ERR_VERSION, "protocol %d only",
                                 SAGE_PROTO_VERSION + 1);
        else if (req->header.type == SAGE_MSG_LOOKUP)
                sage_proto_error(&reply, req->header.request_id, SAGE_ERR_NOT_FOUND, "not found");
        else
                sage_proto_error(&reply, req->header.request_id, SAGE_ERR_UNKNOWN_TYPE, "unknown");
        n = sage_proto_encode(&reply, out, sizeof(out));
        if (n < 0)
                return;
        if (strcmp(mode, "newer") == 0)
                set_version(out, SAGE_PROTO_VERSION + 1);
        else if (strcmp(mode, "older") == 0)
                set_version(out, 1);
        (void)sage_proto_send(fd, out, (size_t)n, NULL, 0);
}

static int serve(const char *mode, int lfd) {
        struct pollfd p[1 + MAX_CONNS];
        size_t n = 1;

        p[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
        for (;;) {
                if (poll(p, n, -1) < 0 && errno != EINTR)
                        return 1;
                if (p[0].revents & POLLIN) {
                        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                        if (fd >= 0 && (strcmp(mode, "hangup") == 0 || n == 1 + MAX_CONNS))
                                close(fd);
                        else if (fd >= 0)
                                p[n++] = (struct pollfd){ .fd = fd, .events = POLLIN };
                }
                for (size_t i = 1; i < n; i++) {
                        int fds[SAGE_PROTO_MAX_FDS];
                        size_t n_fds = 0;
                        SageMessage req;
                        ssize_t len;

                        if (!p[i].revents)
                                continue;
                        len = sage_proto_recv(p[i].fd, buf, sizeof(buf), fds, SAGE_PROTO_MAX_FDS, &n_fds);
                        for (size_t k = 0; k < n_fds; k++)
                                close(fds[k]);
                        if (len <= 0) {
                                close(p[i].fd);
                                p[i--] = p[--n];
                                continue;
                        }
                        if (sage_proto_decode(buf, (size_t)len, &req, NULL) == 0)
                                answer(mode, p[i].fd, &req);
                }
        }
}

static int client_newer(const struct sockaddr_un *addr) {
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        SageMessage m;
        ssize_t n;

        if (fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0)
                return 1;
        sage_proto_init(&m, SAGE_MSG_HELLO, 1);
        m.hello = (SageHello){ SAGE_PROTO_VERSION + 1, (uint32_t)getpid(), SAGE_FEATURES_ALL };
        n = sage_proto_encode(&m, buf, sizeof(buf));
        if (n < 0)
                return 1;
        set_version(buf, SAGE_PROTO_VERSION + 1);
        if (sage_proto_send(fd, buf, (size_t)n, NULL, 0) < 0)
                return 1;
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        n = recv(fd, buf, sizeof(buf), 0);
        close(fd);
        if (n == 0)
                return 0; /* closed: the broker does not speak it */
        if (n > 0 && sage_proto_decode(buf, (size_t)n, &m, NULL) == 0 && m.header.type == SAGE_MSG_ERROR &&
            m.error.code == SAGE_ERR_VERSION)
                return 0;
        fprintf(stderr, "skew-broker: a client of version %d got %zd bytes that are no refusal\n",
                SAGE_PROTO_VERSION + 1, n);
        return 1;
}

int main(int argc, char **argv) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        int lfd;
        pid_t pid;

        if (argc != 3 || strlen(argv[2]) >= sizeof(addr.sun_path)) {
                fprintf(stderr, "usage: skew-broker MODE SOCKET\n");
                return 2;
        }
        memcpy(addr.sun_path, argv[2], strlen(argv[2]) + 1);
        signal(SIGPIPE, SIG_IGN);
        if (strcmp(argv[1], "client-newer") == 0)
                return client_newer(&addr);
        lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 64) < 0) {
                perror("skew-broker: listen");
                return 1;
        }
        /* Listening: the caller may go on as soon as we print the pid. */
        pid = fork();
        if (pid < 0)
                return 1;
        if (pid > 0) {
                printf("%d\n", (int)pid);
                return 0;
        }
        setsid();
        if (!freopen("/dev/null", "w", stdout))
                return 1;
        return serve(argv[1], lfd);
}
