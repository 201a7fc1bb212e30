/* daemon/metrics_http.c without a loop: address parsing (loopback rule) and the page buffer. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* The daemon's headers are not on the unit tests' include path. */
#include "../../daemon/metrics_http.h"

#include "check.h"

static int parse(const char *text, bool any, uint16_t *port) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        int r = metrics_http_parse_address(text, any, &ss, &len);

        if (r >= 0)
                *port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                      : ((struct sockaddr_in6 *)&ss)->sin6_port);
        return r;
}

static void test_addresses(void) {
        uint16_t port = 0;

        CHECK(parse("127.0.0.1:9464", false, &port) == 0 && port == 9464);
        CHECK(parse("127.1.2.3:0", false, &port) == 0 && port == 0);
        CHECK(parse("[::1]:9464", false, &port) == 0 && port == 9464);
        CHECK(parse("localhost:80", false, &port) == 0 && port == 80);
        /* Every tenant is on the page: anything but loopback needs the operator's word. */
        CHECK(parse("0.0.0.0:9464", false, &port) == METRICS_HTTP_E_NOT_LOOPBACK);
        CHECK(parse("[::]:9464", false, &port) == METRICS_HTTP_E_NOT_LOOPBACK);
        CHECK(parse("[::ffff:10.0.0.1]:9464", false, &port) == METRICS_HTTP_E_NOT_LOOPBACK);
        CHECK(parse("[::ffff:127.0.0.1]:9464", false, &port) == 0);
        CHECK(parse("10.1.2.3:9464", false, &port) == METRICS_HTTP_E_NOT_LOOPBACK);
        CHECK(parse("0.0.0.0:9464", true, &port) == 0);
        CHECK(parse("10.1.2.3:1", true, &port) == 0 && port == 1);
        /* Not addresses (an unbracketed IPv6 address, "::1:9464", splits at its last colon: ::1, port 9464). */
        const char *bad[] = {
                "",          ":9464",   "127.0.0.1",  "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:9x",
                "[::1:9464", "[]:9464", "[::1]x:9464"
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                CHECK(parse(bad[i], true, &port) == -EINVAL);
}

static void test_buffer(void) {
        MetricsBuf b = { 0 };

        metrics_buf_printf(&b, "x{l=\"");
        metrics_buf_label_value(&b, "a\"b\\c\nd");
        metrics_buf_printf(&b, "\"} %d\n", 1);
        CHECK(!b.failed && strcmp(b.data, "x{l=\"a\\\"b\\\\c\\nd\"} 1\n") == 0);
        /* It grows past its first allocation, and fails (sticky) past the cap. */
        for (int i = 0; i < 100000 && !b.failed; i++)
                metrics_buf_printf(&b, "%0100d\n", i);
        CHECK(!b.failed && b.len > 100000 * 100);
        while (!b.failed)
                metrics_buf_printf(&b, "%01000d\n", 0);
        CHECK(b.len <= METRICS_HTTP_PAGE_MAX);
        size_t len = b.len;
        metrics_buf_printf(&b, "more");
        CHECK(b.len == len);
        free(b.data);
}

int main(void) {
        test_addresses();
        test_buffer();
        return 0;
}
