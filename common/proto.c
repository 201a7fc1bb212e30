/*
 * Wire protocol: what each message type is (names, fds, features, all
 * generated from proto.def), message constructors and socket helpers. The
 * bytes themselves are proto_codec.c's.
 */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto_rw.h"

static const char *const error_names[_SAGE_ERR_MAX] = {
        [SAGE_ERR_OK] = "ok",
        [SAGE_ERR_MALFORMED] = "malformed message",
        [SAGE_ERR_BAD_MAGIC] = "bad magic",
        [SAGE_ERR_VERSION] = "unsupported protocol version",
        [SAGE_ERR_UNKNOWN_TYPE] = "unknown message type",
        [SAGE_ERR_TOO_LARGE] = "message too large",
        [SAGE_ERR_NOT_FOUND] = "not found",
        [SAGE_ERR_BUDGET] = "budget exhausted",
        [SAGE_ERR_PERMISSION] = "permission denied",
        [SAGE_ERR_DRIVER] = "driver error",
        [SAGE_ERR_BAD_FD] = "bad file descriptor",
        [SAGE_ERR_SIZE_MISMATCH] = "size mismatch",
        [SAGE_ERR_BAD_DEVICE] = "device not served",
        [SAGE_ERR_BUSY] = "extent in use",
        [SAGE_ERR_LIMIT] = "limit reached",
        [SAGE_ERR_INTERNAL] = "internal error",
        [SAGE_ERR_NO_DRIVER] = "broker has no CUDA driver",
        [SAGE_ERR_REFUSED] = "refused",
};

const char *sage_instance_state_name(unsigned state) {
        static const char *const names[_SAGE_INSTANCE_STATE_MAX] = {
                [SAGE_INSTANCE_ACTIVE] = "active",       [SAGE_INSTANCE_SUSPENDING] = "suspending",
                [SAGE_INSTANCE_SUSPENDED] = "suspended", [SAGE_INSTANCE_RESUMING] = "resuming",
                [SAGE_INSTANCE_FAILED] = "failed",
        };
        return state < _SAGE_INSTANCE_STATE_MAX ? names[state] : "?";
}

const char *sage_instance_why_name(uint32_t why) {
        static const struct {
                uint32_t bit;
                const char *name;
        } reasons[] = {
                { SAGE_INSTANCE_WHY_SWITCH, "suspend is off on this node" },
                { SAGE_INSTANCE_WHY_NO_DRIVER, "the broker's driver has no checkpoint API" },
                { SAGE_INSTANCE_WHY_KEEP_ALIVE, "keep-alive" },
                { SAGE_INSTANCE_WHY_EXTENTS, "maps broker extents (imported memory cannot be restored)" },
                { SAGE_INSTANCE_WHY_IPC, "uses CUDA IPC" },
                { SAGE_INSTANCE_WHY_MULTI_GPU, "uses several GPUs" },
                { SAGE_INSTANCE_WHY_MPS, "MPS client" },
                { SAGE_INSTANCE_WHY_MANAGED, "holds managed memory" },
                { SAGE_INSTANCE_WHY_HOST_MEMORY, "host memory limit" },
        };
        for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
                if (why & reasons[i].bit)
                        return reasons[i].name;
        return why ? "?" : "";
}

const char *sage_proto_error_name(int code) {
        if (code < 0 || code >= _SAGE_ERR_MAX || !error_names[code])
                return "unknown error";
        return error_names[code];
}

const char *sage_proto_type_name(unsigned type) {
        const SageMessageInfo *info = sage_proto_message_info(type);
        return info ? info->name : "?";
}

bool sage_proto_label_valid(const char *name, size_t length) {
        if (length == 0 || length > SAGE_PROTO_LABEL_MAX)
                return false;
        for (size_t i = 0; i < length; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-'))
                        return false;
        }
        return true;
}

uint64_t sage_proto_feature(unsigned type) {
        const SageMessageInfo *info = sage_proto_message_info(type);
        return info ? info->feature : 0;
}

bool sage_proto_notice_to_broker(unsigned type) {
        const SageMessageInfo *info = sage_proto_message_info(type);
        return info && info->notice == SAGE_NOTICE_TO_BROKER;
}

bool sage_proto_notice_to_client(unsigned type) {
        const SageMessageInfo *info = sage_proto_message_info(type);
        return info && info->notice == SAGE_NOTICE_TO_CLIENT;
}

void sage_proto_init(SageMessage *m, unsigned type, uint32_t request_id) {
        memset(m, 0, sizeof(*m));
        m->header.magic = SAGE_PROTO_MAGIC;
        m->header.version = SAGE_PROTO_VERSION;
        m->header.type = (uint16_t)type;
        m->header.request_id = request_id;
}

void sage_proto_error(SageMessage *m, uint32_t request_id, int code, const char *format, ...) {
        va_list ap;

        sage_proto_init(m, SAGE_MSG_ERROR, request_id);
        m->error.code = (uint32_t)code;
        va_start(ap, format);
        vsnprintf(m->error.message, sizeof(m->error.message), format, ap);
        va_end(ap);
}

size_t sage_proto_expected_fds(const SageMessage *m) {
        switch (m->header.type) {
/* clang-format off */
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        case SAGE_MSG_##NAME: return (FDS) ? 1 : 0;                                                     \
        case SAGE_MSG_##REPLY_NAME: return (REPLY_FDS) ? 1 : 0;
#define SAGE_NOTICE(NAME, NUMBER, PAYLOAD, FLAGS, FDS, DIRECTION, FEATURE, HANDLER) \
        case SAGE_MSG_##NAME: return (FDS) ? 1 : 0;
/* clang-format on */
#include "proto.def"
#undef SAGE_NOTICE
#undef SAGE_MESSAGE
        default: return 0;
        }
}

int sage_proto_sendmsg(int sock, const void *buf, size_t len, const int *fds, size_t n_fds, int flags) {
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * SAGE_PROTO_SENDMSG_FDS_MAX)];
        } control;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (n_fds > SAGE_PROTO_SENDMSG_FDS_MAX)
                return -EINVAL;
        if (n_fds > 0) {
                struct cmsghdr *c;
                memset(&control, 0, CMSG_SPACE(sizeof(int) * n_fds));
                msg.msg_control = control.buf;
                msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        do
                n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        if ((size_t)n != len)
                return -EMSGSIZE; /* SOCK_SEQPACKET sends all or nothing */
        return 0;
}

int sage_proto_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds) {
        if (n_fds > SAGE_PROTO_MAX_FDS)
                return -EINVAL;
        return sage_proto_sendmsg(sock, buf, len, fds, n_fds, 0);
}

int sage_proto_send_message(int sock, const SageMessage *m, const int *fds, size_t n_fds) {
        uint8_t buf[SAGE_PROTO_MAX_MESSAGE];
        ssize_t n = sage_proto_encode(m, buf, sizeof(buf));

        if (n < 0)
                return (int)n;
        return sage_proto_send(sock, buf, (size_t)n, fds, n_fds);
}

ssize_t sage_proto_recv(int sock, void *buf, size_t size, int *fds, size_t max_fds, size_t *n_fds) {
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        /* Room for more fds than we accept, so extra ones arrive and get closed
         * instead of being silently truncated (MSG_CTRUNC) by the kernel. */
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 64)];
        } control;
        struct msghdr msg = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = sizeof(control.buf),
        };
        size_t stored = 0;
        bool bad = false;
        ssize_t n;

        *n_fds = 0;
        do
                n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;

        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                size_t count;
                int *data;
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
                        bad = true;
                        continue;
                }
                count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                data = (int *)(void *)CMSG_DATA(c);
                for (size_t i = 0; i < count; i++) {
                        int fd;
                        memcpy(&fd, &data[i], sizeof(fd));
                        if (stored < max_fds && fds)
                                fds[stored++] = fd;
                        else {
                                close(fd);
                                bad = true;
                        }
                }
        }
        /* A zero-length message reads like the end of the stream; one that
         * carries fds is not the end, and those fds would leak with it. */
        if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || bad || (n == 0 && stored > 0)) {
                for (size_t i = 0; i < stored; i++)
                        close(fds[i]);
                return (msg.msg_flags & MSG_TRUNC) ? -EMSGSIZE : -EBADMSG;
        }
        *n_fds = stored;
        return n;
}

int sage_uuid_parse(const char *text, uint8_t uuid[16]) {
        size_t n = 0;

        if (strncmp(text, "GPU-", 4) != 0)
                return -EINVAL;
        for (const char *p = text + 4; *p; p++) {
                int v = *p >= '0' && *p <= '9'   ? *p - '0'
                        : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
                        : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10
                                                 : -1;
                if (*p == '-')
                        continue;
                if (v < 0 || n == 32)
                        return -EINVAL;
                uuid[n / 2] = (uint8_t)(n % 2 ? (uuid[n / 2] | v) : v << 4);
                n++;
        }
        return n == 32 ? 0 : -EINVAL;
}

const char *sage_uuid_format(const uint8_t uuid[16], char *buf, size_t size) {
        snprintf(buf, size, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", uuid[0],
                 uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7], uuid[8], uuid[9], uuid[10], uuid[11],
                 uuid[12], uuid[13], uuid[14], uuid[15]);
        return buf;
}
