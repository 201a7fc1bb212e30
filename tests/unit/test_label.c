/* Unit test of daemon/label: PATH=LABEL parsing and label numbering. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The daemon's headers are not on the unit tests' include path. */
#include "../../daemon/label.h"

#include "check.h"

static void check_parse(const char *text, const char *path, const char *label) {
        LabelSocket s;
        CHECK(label_socket_parse(text, &s) == 0);
        CHECK(strcmp(s.path, path) == 0 && strcmp(s.label, label) == 0);
        label_socket_clear(&s);
        CHECK(!s.path && !s.label);
}

static void check_refused(const char *text) {
        LabelSocket s;
        CHECK(label_socket_parse(text, &s) == -EINVAL);
        CHECK(!s.path && !s.label);
}

static void test_parse(void) {
        char text[200];

        check_parse("/run/sage/a.sock=tenant-a", "/run/sage/a.sock", "tenant-a");
        check_parse("rel.sock=A.b_9-", "rel.sock", "A.b_9-");
        /* The split is at the last '=': a path may contain one, a label may not. */
        check_parse("/tmp/x=y/s.sock=t", "/tmp/x=y/s.sock", "t");
        /* 63 characters is the longest label. */
        snprintf(text, sizeof(text), "p=%063d", 7);
        check_parse(text, "p", text + 2);

        check_refused("/run/sage/a.sock");   /* no label */
        check_refused("/run/sage/a.sock=");  /* empty label */
        check_refused("=tenant");            /* empty path */
        check_refused("");
        check_refused("p=bad/label");
        check_refused("p=bad label");
        check_refused("p=bad:label");
        check_refused("p=caf\xc3\xa9");
        snprintf(text, sizeof(text), "p=%064d", 7); /* 64 characters */
        check_refused(text);
}

static void test_table(void) {
        LabelTable t = { 0 };
        uint32_t n;
        char name[16];

        CHECK(label_table_name(&t, 0) == NULL && label_table_name(&t, 1) == NULL);
        /* Numbered from 1 in the order first seen; a name seen again keeps its number. */
        CHECK(label_table_add(&t, "tenant-a", &n) == 0 && n == 1);
        CHECK(label_table_add(&t, "tenant-b", &n) == 0 && n == 2);
        CHECK(label_table_add(&t, "tenant-a", &n) == 0 && n == 1);
        CHECK(t.n == 2);
        CHECK(strcmp(label_table_name(&t, 1), "tenant-a") == 0 && strcmp(label_table_name(&t, 2), "tenant-b") == 0);
        CHECK(label_table_name(&t, 0) == NULL && label_table_name(&t, 3) == NULL);
        CHECK(label_table_name(&t, UINT32_MAX) == NULL);
        CHECK(label_table_add(&t, "no/slash", &n) == -EINVAL && label_table_add(&t, "", &n) == -EINVAL);
        /* Full at LABEL_MAX_SOCKETS distinct names; known names still answer. */
        for (uint32_t i = 3; i <= LABEL_MAX_SOCKETS; i++) {
                snprintf(name, sizeof(name), "t%u", (unsigned)i);
                CHECK(label_table_add(&t, name, &n) == 0 && n == i);
        }
        CHECK(label_table_add(&t, "one-more", &n) == -ENOSPC);
        CHECK(label_table_add(&t, "tenant-b", &n) == 0 && n == 2);
}

int main(void) {
        test_parse();
        test_table();
        printf("label: ok\n");
        return 0;
}
