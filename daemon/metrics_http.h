/*
 * A tiny HTTP/1.x server for saged's Prometheus endpoint (GET /metrics),
 * run inside the broker's epoll loop: no thread, no library, never a
 * blocking call. What it serves comes from a render callback (metrics.c).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Connections served at once; more are answered 503 and closed. */
#define METRICS_HTTP_MAX_CONNS 16
/* A request head (request line + headers) larger than this: 431. */
#define METRICS_HTTP_REQUEST_MAX 4096
/* From accept, the head must arrive within this (a byte a second never makes it). */
#define METRICS_HTTP_REQUEST_MS 5000
/* From the head, the client must take the response (and hang up) within this. */
#define METRICS_HTTP_RESPONSE_MS 10000
/* The most a page may grow to (the render fails beyond: 500). */
#define METRICS_HTTP_PAGE_MAX (16u << 20)
/* A page younger than this is served again instead of rendered: scrapes in a
 * loop cost the broker at most ten renders a second. */
#define METRICS_HTTP_PAGE_REUSE_NS (100ull * 1000000)

/* metrics_http_parse_address: a valid address that is not a loopback one. */
#define METRICS_HTTP_E_NOT_LOOPBACK 1

/* A growing text buffer with a sticky failure (out of memory, past the cap). */
typedef struct MetricsBuf {
        char *data;
        size_t len, cap;
        bool failed;
} MetricsBuf;

void metrics_buf_printf(MetricsBuf *b, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Append `s` as a label value: backslash, double quote and newline escaped. */
void metrics_buf_label_value(MetricsBuf *b, const char *s);

/* Appends the page's body to `out`; failing (out->failed) answers 500. */
typedef void (*MetricsRenderFn)(void *userdata, MetricsBuf *out);

typedef struct MetricsHttp MetricsHttp;

/*
 * ADDR:PORT ("127.0.0.1:9464", "[::1]:9464", "localhost:9464"; port 0: any
 * free one). -EINVAL: not an address; METRICS_HTTP_E_NOT_LOOPBACK: one other
 * than loopback while `allow_any` is false (the page shows every tenant).
 */
int metrics_http_parse_address(const char *text, bool allow_any, struct sockaddr_storage *out, socklen_t *len);

/* Listen on `addr` and add the listener to `epoll_fd` (never removed but by metrics_http_free). */
int metrics_http_new(MetricsHttp **out, const struct sockaddr *addr, socklen_t len, int epoll_fd,
                     MetricsRenderFn render, void *userdata);
MetricsHttp *metrics_http_free(MetricsHttp *m);

/* "127.0.0.1:9464": where it listens (the port the kernel chose for 0). */
const char *metrics_http_address(const MetricsHttp *m);

/* If `tag` (epoll data) is the endpoint's, handle `events` and return true. */
bool metrics_http_event(MetricsHttp *m, const void *tag, uint32_t events);
/* Close connections past their deadline; resume accepting after a pause. */
void metrics_http_expire(MetricsHttp *m, uint64_t now_ns);
/* Milliseconds until metrics_http_expire has work, or -1 (nothing due). */
int metrics_http_timeout_ms(const MetricsHttp *m, uint64_t now_ns);
/* Connections answered 503 (over METRICS_HTTP_MAX_CONNS) so far. */
uint64_t metrics_http_refused(const MetricsHttp *m);
