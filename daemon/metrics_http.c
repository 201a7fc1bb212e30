/*
 * saged's metrics endpoint: a deliberately small HTTP/1.x server inside the
 * broker's single-threaded epoll loop.
 *
 * The broker's clients come first, so nothing here may block the loop or
 * grow without bound: sockets are non-blocking, a connection reads at most
 * METRICS_HTTP_REQUEST_MAX bytes of request head, a fixed table serves at
 * most METRICS_HTTP_MAX_CONNS connections (a few more are told 503, any
 * others closed at accept), and every connection has a deadline
 * that does not move with traffic: a client trickling a byte a second
 * (slowloris) or reading its response slowly loses its slot when the
 * deadline passes, not when it stops sending. Accepting is bounded per
 * wakeup, and out of fds the listener rests for a moment (as listener.c's
 * do) instead of spinning the level-triggered loop.
 *
 * One request per connection (Connection: close): GET or HEAD of /metrics,
 * anything else 404/405/400/431. After the response the write side is shut
 * and the rest the client sent is read and dropped until it hangs up (or
 * its deadline), so a close never resets a response the client has not
 * read yet. The page is rendered at most every METRICS_HTTP_PAGE_REUSE_NS
 * and shared by the connections sending it (reference counted).
 */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "options.h"
#include "util.h"

#define ACCEPTS_PER_WAKEUP 32
#define ACCEPT_PAUSE_NS (100ull * 1000000)
#define METHOD_MAX 16
/* Beyond METRICS_HTTP_MAX_CONNS, this many more are told 503 properly (sent,
 * then drained until the client hangs up, for at most REFUSE_MS): a close with
 * the request unread would reset the connection and lose the answer. Past
 * those, a connection is closed at once. */
#define REFUSE_SLOTS 16
#define REFUSE_MS 1000
#define SLOTS (METRICS_HTTP_MAX_CONNS + REFUSE_SLOTS)

typedef struct MetricsPage {
        unsigned refs;
        size_t len;
        char *data;
} MetricsPage;

enum {
        CONN_FREE,
        CONN_READING,
        CONN_WRITING,
        CONN_DRAINING
};

typedef struct MetricsConn {
        int fd;
        int state;
        bool serving; /* holds one of the METRICS_HTTP_MAX_CONNS places (else: being refused) */
        uint64_t deadline_ns;
        size_t got;
        char request[METRICS_HTTP_REQUEST_MAX];
        char head[512]; /* status line and headers; an error's body too */
        size_t head_len;
        MetricsPage *page; /* the body of a 200 to GET; NULL otherwise */
        size_t sent;       /* of head, then page */
} MetricsConn;

struct MetricsHttp {
        int fd;
        int epoll_fd;
        char listen_tag; /* epoll data of the listener: its address */
        MetricsRenderFn render;
        void *userdata;
        char address[INET6_ADDRSTRLEN + 8];
        bool paused;
        uint64_t resume_ns;
        uint64_t refused;
        size_t serving;    /* connections with c->serving */
        MetricsPage *page; /* the latest rendering */
        uint64_t page_ns;
        MetricsConn conns[SLOTS];
};

void metrics_buf_printf(MetricsBuf *b, const char *format, ...) {
        va_list ap;
        int n;

        if (b->failed)
                return;
        for (;;) {
                va_start(ap, format);
                n = vsnprintf(b->data ? b->data + b->len : NULL, b->cap - b->len, format, ap);
                va_end(ap);
                if (n < 0) {
                        b->failed = true;
                        return;
                }
                if ((size_t)n < b->cap - b->len) {
                        b->len += (size_t)n;
                        return;
                }
                size_t cap = b->cap ? b->cap * 2 : 16384;
                while (cap - b->len <= (size_t)n)
                        cap *= 2;
                char *data = cap <= METRICS_HTTP_PAGE_MAX ? realloc(b->data, cap) : NULL;
                if (!data) {
                        b->failed = true;
                        return;
                }
                b->data = data;
                b->cap = cap;
        }
}

void metrics_buf_label_value(MetricsBuf *b, const char *s) {
        for (; *s; s++) {
                if (*s == '\\' || *s == '"')
                        metrics_buf_printf(b, "\\%c", *s);
                else if (*s == '\n')
                        metrics_buf_printf(b, "\\n");
                else
                        metrics_buf_printf(b, "%c", *s);
        }
}

static bool is_loopback(const struct sockaddr *sa) {
        if (sa->sa_family == AF_INET)
                return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

int metrics_http_parse_address(const char *text, bool allow_any, struct sockaddr_storage *out, socklen_t *len) {
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
        const char *colon = strrchr(text, ':');
        char host[256];
        uint64_t port;
        size_t n;

        if (!colon || colon == text || sage_parse_uint(colon + 1, &port) < 0 || port > 65535)
                return -EINVAL;
        n = (size_t)(colon - text);
        if (text[0] == '[') { /* [v6]:port */
                if (n < 3 || text[n - 1] != ']')
                        return -EINVAL;
                text++;
                n -= 2;
        }
        if (n >= sizeof(host))
                return -EINVAL;
        memcpy(host, text, n);
        host[n] = 0;
        if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
                return -EINVAL;
        if ((res->ai_family != AF_INET && res->ai_family != AF_INET6) || res->ai_addrlen > sizeof(*out)) {
                freeaddrinfo(res);
                return -EINVAL;
        }
        memcpy(out, res->ai_addr, res->ai_addrlen);
        *len = res->ai_addrlen;
        freeaddrinfo(res);
        if (out->ss_family == AF_INET)
                ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
        else
                ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
        return !allow_any && !is_loopback((struct sockaddr *)out) ? METRICS_HTTP_E_NOT_LOOPBACK : 0;
}

static void page_unref(MetricsPage *p) {
        if (p && --p->refs == 0) {
                free(p->data);
                free(p);
        }
}

static void conn_close(MetricsHttp *m, MetricsConn *c) {
        epoll_ctl(m->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        page_unref(c->page);
        c->page = NULL;
        c->fd = -1;
        c->state = CONN_FREE;
        if (c->serving)
                m->serving--;
        c->serving = false;
}

static void conn_watch(MetricsHttp *m, MetricsConn *c, uint32_t events) {
        struct epoll_event ev = { .events = events, .data.ptr = c };
        if (epoll_ctl(m->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                conn_close(m, c);
}

static void set_listening(MetricsHttp *m, bool on) {
        struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.ptr = &m->listen_tag };
        epoll_ctl(m->epoll_fd, EPOLL_CTL_MOD, m->fd, &ev);
        m->paused = !on;
        if (!on)
                m->resume_ns = sage_now_ns() + ACCEPT_PAUSE_NS;
}

int metrics_http_new(MetricsHttp **out, const struct sockaddr *addr, socklen_t len, int epoll_fd,
                     MetricsRenderFn render, void *userdata) {
        MetricsHttp *m = calloc(1, sizeof(*m));
        struct sockaddr_storage bound;
        socklen_t bound_len = sizeof(bound);
        char host[INET6_ADDRSTRLEN];
        int one = 1, r;

        if (!m)
                return -ENOMEM;
        for (size_t i = 0; i < SLOTS; i++)
                m->conns[i].fd = -1;
        m->epoll_fd = epoll_fd;
        m->render = render;
        m->userdata = userdata;
        m->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (m->fd < 0) {
                r = -errno;
                free(m);
                return r;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &m->listen_tag };
        if (setsockopt(m->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 || bind(m->fd, addr, len) < 0 ||
            listen(m->fd, 256) < 0 || getsockname(m->fd, (struct sockaddr *)&bound, &bound_len) < 0 ||
            epoll_ctl(epoll_fd, EPOLL_CTL_ADD, m->fd, &ev) < 0) {
                r = -errno;
                close(m->fd);
                free(m);
                return r;
        }
        if (bound.ss_family == AF_INET) {
                const struct sockaddr_in *a = (const struct sockaddr_in *)&bound;
                inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
                snprintf(m->address, sizeof(m->address), "%s:%u", host, (unsigned)ntohs(a->sin_port));
        } else {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&bound;
                inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
                snprintf(m->address, sizeof(m->address), "[%s]:%u", host, (unsigned)ntohs(a->sin6_port));
        }
        *out = m;
        return 0;
}

MetricsHttp *metrics_http_free(MetricsHttp *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < SLOTS; i++)
                if (m->conns[i].state != CONN_FREE)
                        conn_close(m, &m->conns[i]);
        epoll_ctl(m->epoll_fd, EPOLL_CTL_DEL, m->fd, NULL);
        close(m->fd);
        page_unref(m->page);
        free(m);
        return NULL;
}

const char *metrics_http_address(const MetricsHttp *m) {
        return m->address;
}

uint64_t metrics_http_refused(const MetricsHttp *m) {
        return m->refused;
}

/* The latest page, rendered anew unless it is younger than METRICS_HTTP_PAGE_REUSE_NS; NULL: 500. */
static MetricsPage *current_page(MetricsHttp *m) {
        uint64_t now = sage_now_ns();
        MetricsBuf b = { 0 };
        MetricsPage *p;

        if (m->page && now - m->page_ns < METRICS_HTTP_PAGE_REUSE_NS) {
                m->page->refs++;
                return m->page;
        }
        m->render(m->userdata, &b);
        p = b.failed ? NULL : malloc(sizeof(*p));
        if (!p) {
                sage_warn("metrics: cannot render the page (%s)", b.failed ? "out of memory or too large" : "");
                free(b.data);
                return NULL;
        }
        *p = (MetricsPage){ .refs = 2, .len = b.len, .data = b.data };
        page_unref(m->page);
        m->page = p;
        m->page_ns = now;
        return p;
}

static void respond_error(MetricsConn *c, const char *status, const char *extra) {
        int n = snprintf(c->head, sizeof(c->head),
                         "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n%s"
                         "Connection: close\r\n\r\n%s\n",
                         status, strlen(status) + 1, extra, status);
        c->head_len = n > 0 && (size_t)n < sizeof(c->head) ? (size_t)n : 0;
}

/* The request head is in: decide the response. */
static void respond(MetricsHttp *m, MetricsConn *c) {
        char *line_end = memchr(c->request, '\n', c->got);
        char *method = c->request, *target, *version, *sp1, *sp2;
        bool head_only;

        *line_end = 0;
        if (line_end > c->request && line_end[-1] == '\r')
                line_end[-1] = 0;
        sp1 = strchr(method, ' ');
        sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
        if (!sp1 || !sp2 || sp1 == method || sp2 == sp1 + 1 || strchr(sp2 + 1, ' ')) {
                respond_error(c, "400 Bad Request", "");
                return;
        }
        *sp1 = *sp2 = 0;
        target = sp1 + 1;
        version = sp2 + 1;
        if (target[0] != '/' || (strcmp(version, "HTTP/1.0") != 0 && strcmp(version, "HTTP/1.1") != 0)) {
                respond_error(c, "400 Bad Request", "");
                return;
        }
        target[strcspn(target, "?#")] = 0;
        if (strcmp(target, "/metrics") != 0) {
                respond_error(c, "404 Not Found", "");
                return;
        }
        head_only = strcmp(method, "HEAD") == 0;
        if (!head_only && strcmp(method, "GET") != 0) {
                respond_error(c, "405 Method Not Allowed", "Allow: GET, HEAD\r\n");
                return;
        }
        MetricsPage *p = current_page(m);
        if (!p) {
                respond_error(c, "500 Internal Server Error", "");
                return;
        }
        int n = snprintf(c->head, sizeof(c->head),
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                         p->len);
        c->head_len = (size_t)n;
        if (head_only)
                page_unref(p);
        else
                c->page = p;
}

/* Could what arrived so far begin a request line? (Garbage is answered at once, not at the deadline.) */
static bool plausible(const MetricsConn *c) {
        for (size_t i = 0; i < c->got && i <= METHOD_MAX; i++) {
                if (c->request[i] == ' ')
                        return i > 0;
                if (c->request[i] < 'A' || c->request[i] > 'Z')
                        return false;
        }
        return c->got <= METHOD_MAX;
}

/* After a non-blocking recv/send: true when the caller stops here (nothing
 * more for now, or the connection is gone: then it is closed). */
static bool io_stops(MetricsHttp *m, MetricsConn *c, ssize_t n) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return true;
        if (n <= 0) {
                conn_close(m, c);
                return true;
        }
        return false;
}

static void conn_read(MetricsHttp *m, MetricsConn *c) {
        ssize_t n = recv(c->fd, c->request + c->got, sizeof(c->request) - c->got, MSG_DONTWAIT);

        if (io_stops(m, c, n))
                return;
        c->got += (size_t)n;
        if (!plausible(c))
                respond_error(c, "400 Bad Request", "");
        else if (memmem(c->request, c->got, "\r\n\r\n", 4) || memmem(c->request, c->got, "\n\n", 2))
                respond(m, c);
        else if (c->got == sizeof(c->request))
                respond_error(c, "431 Request Header Fields Too Large", "");
        else
                return;
        c->state = CONN_WRITING;
        c->deadline_ns = sage_now_ns() + METRICS_HTTP_RESPONSE_MS * 1000000ull;
        conn_watch(m, c, EPOLLOUT);
}

static void conn_write(MetricsHttp *m, MetricsConn *c) {
        size_t body = c->page ? c->page->len : 0;

        while (c->sent < c->head_len + body) {
                struct iovec iov[2];
                struct msghdr msg = { .msg_iov = iov };
                ssize_t n;

                if (c->sent < c->head_len) {
                        iov[msg.msg_iovlen++] = (struct iovec){ c->head + c->sent, c->head_len - c->sent };
                        if (body)
                                iov[msg.msg_iovlen++] = (struct iovec){ c->page->data, body };
                } else
                        iov[msg.msg_iovlen++] = (struct iovec){ c->page->data + (c->sent - c->head_len),
                                                                body - (c->sent - c->head_len) };
                n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (io_stops(m, c, n))
                        return;
                c->sent += (size_t)n;
        }
        page_unref(c->page);
        c->page = NULL;
        shutdown(c->fd, SHUT_WR);
        c->state = CONN_DRAINING;
        conn_watch(m, c, EPOLLIN);
}

/* Read and drop what the client still sends, until it hangs up. */
static void conn_drain(MetricsHttp *m, MetricsConn *c) {
        char buf[4096];
        for (int i = 0; i < 16; i++)
                if (io_stops(m, c, recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)))
                        return;
}

static void accept_some(MetricsHttp *m) {
        for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
                int fd = accept4(m->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                MetricsConn *c = NULL;

                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                sage_warn("metrics: accept: %s: pausing", strerror(errno));
                                set_listening(m, false);
                        }
                        return;
                }
                for (size_t j = 0; j < SLOTS && !c; j++)
                        if (m->conns[j].state == CONN_FREE)
                                c = &m->conns[j];
                bool serving = m->serving < METRICS_HTTP_MAX_CONNS;
                if (!serving)
                        m->refused++;
                if (!c) {
                        close(fd);
                        continue;
                }
                struct epoll_event ev = { .events = serving ? EPOLLIN : EPOLLOUT, .data.ptr = c };
                if (epoll_ctl(m->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                        close(fd);
                        continue;
                }
                *c = (MetricsConn){ .fd = fd,
                                    .state = serving ? CONN_READING : CONN_WRITING,
                                    .serving = serving,
                                    .deadline_ns = sage_now_ns() +
                                                   (serving ? METRICS_HTTP_REQUEST_MS : REFUSE_MS) * 1000000ull };
                if (serving)
                        m->serving++;
                else
                        respond_error(c, "503 Service Unavailable", "");
        }
}

bool metrics_http_event(MetricsHttp *m, const void *tag, uint32_t events) {
        if (!m)
                return false;
        if (tag == &m->listen_tag) {
                accept_some(m);
                return true;
        }
        /* Equality only: ordering unrelated pointers is undefined. */
        for (size_t i = 0; i < SLOTS; i++) {
                MetricsConn *c = &m->conns[i];
                if (tag != c)
                        continue;
                if (c->state == CONN_READING)
                        conn_read(m, c);
                else if (c->state == CONN_WRITING)
                        conn_write(m, c);
                else if (c->state == CONN_DRAINING)
                        conn_drain(m, c);
                return true;
        }
        return false;
}

void metrics_http_expire(MetricsHttp *m, uint64_t now_ns) {
        if (!m)
                return;
        if (m->paused && now_ns >= m->resume_ns)
                set_listening(m, true);
        for (size_t i = 0; i < SLOTS; i++)
                if (m->conns[i].state != CONN_FREE && now_ns >= m->conns[i].deadline_ns)
                        conn_close(m, &m->conns[i]);
}

int metrics_http_timeout_ms(const MetricsHttp *m, uint64_t now_ns) {
        uint64_t next = UINT64_MAX;

        if (!m)
                return -1;
        if (m->paused)
                next = m->resume_ns;
        for (size_t i = 0; i < SLOTS; i++)
                if (m->conns[i].state != CONN_FREE && m->conns[i].deadline_ns < next)
                        next = m->conns[i].deadline_ns;
        if (next == UINT64_MAX)
                return -1;
        return next <= now_ns ? 0 : (int)((next - now_ns + 999999) / 1000000);
}
