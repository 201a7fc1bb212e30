/* Unit test of daemon/label: PATH=LABEL[,options] parsing, access rules and label numbering. */
#include <errno.h>
#include <stdbool.h>
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

        check_refused("/run/sage/a.sock");  /* no label */
        check_refused("/run/sage/a.sock="); /* empty label */
        check_refused("=tenant");           /* empty path */
        check_refused("");
        check_refused("p=bad/label");
        check_refused("p=bad label");
        check_refused("p=bad:label");
        check_refused("p=caf\xc3\xa9");
        snprintf(text, sizeof(text), "p=%064d", 7); /* 64 characters */
        check_refused(text);
}

static LabelSocket parsed(const char *text) {
        LabelSocket s;
        CHECK(label_socket_parse(text, &s) == 0);
        return s;
}

static bool allows(const LabelAccess *a, uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups) {
        struct ucred cred = { .pid = 1, .uid = uid, .gid = gid };
        return label_access_allows(a, &cred, groups, n_groups);
}

/* Access rules: root only by default; uid=, gid= and mode= open the door as named, no further. */
static void test_access(void) {
        static const gid_t wheel[] = { 10, 50 };
        LabelSocket s = parsed("/run/sage/a.sock=tenant-a");

        CHECK(s.access.n_uids == 0 && s.access.n_gids == 0 && s.access.mode == 0660);
        CHECK(label_access_owner(&s.access) == 0 && label_access_group(&s.access) == 0);
        CHECK(allows(&s.access, 0, 0, NULL, 0));
        CHECK(!allows(&s.access, 1000, 1000, NULL, 0) && !allows(&s.access, 65534, 65534, NULL, 0));
        label_socket_clear(&s);

        s = parsed("/run/sage/a.sock=tenant-a,uid=1000,gid=50");
        CHECK(strcmp(s.path, "/run/sage/a.sock") == 0 && strcmp(s.label, "tenant-a") == 0);
        CHECK(s.access.mode == 0660 && label_access_owner(&s.access) == 1000 && label_access_group(&s.access) == 50);
        CHECK(allows(&s.access, 1000, 1000, NULL, 0));
        CHECK(allows(&s.access, 2000, 50, NULL, 0));    /* primary group */
        CHECK(allows(&s.access, 2000, 2000, wheel, 2)); /* supplementary group */
        CHECK(!allows(&s.access, 2000, 2000, wheel, 1));
        CHECK(!allows(&s.access, 65534, 65534, NULL, 0));
        label_socket_clear(&s);

        /* Several uids: the file cannot say it, so it is 0666 and the list does the work. */
        s = parsed("/x/a=b.sock=t,uid=1,uid=2");
        CHECK(strcmp(s.path, "/x/a=b.sock") == 0 && strcmp(s.label, "t") == 0);
        CHECK(s.access.n_uids == 2 && s.access.mode == 0666);
        CHECK(allows(&s.access, 2, 2, NULL, 0) && allows(&s.access, 1, 1, NULL, 0));
        /* mode 0666 grants others through the file, and the accept check mirrors the file. */
        CHECK(allows(&s.access, 3, 3, NULL, 0));
        label_socket_clear(&s);
        s = parsed("/x/a.sock=t,uid=1,uid=2,mode=0660");
        CHECK(s.access.mode == 0660 && allows(&s.access, 2, 2, NULL, 0) && !allows(&s.access, 3, 3, NULL, 0));
        label_socket_clear(&s);
        s = parsed("/x/a.sock=t,mode=0606");
        CHECK(s.access.mode == 0606 && allows(&s.access, 3, 3, NULL, 0));
        label_socket_clear(&s);
        /* g+w admits the group the file gets (root's, without gid=). */
        s = parsed("/x/a.sock=t,mode=660");
        CHECK(allows(&s.access, 3, 0, NULL, 0) && !allows(&s.access, 3, 3, NULL, 0));
        label_socket_clear(&s);
        /* A comma in the path is not an option. */
        check_parse("/x,y/a.sock=t", "/x,y/a.sock", "t");

        check_refused("/x/a.sock=t,uid=");
        check_refused("/x/a.sock=t,uid=-1");
        check_refused("/x/a.sock=t,uid=4294967295");
        check_refused("/x/a.sock=t,uid=12x");
        check_refused("/x/a.sock=t,gid=abc");
        check_refused("/x/a.sock=t,mode=0777"); /* execute bits */
        check_refused("/x/a.sock=t,mode=4660"); /* setuid */
        check_refused("/x/a.sock=t,mode=0668"); /* not octal */
        check_refused("/x/a.sock=t,mode=0660,mode=0600");
        check_refused("/x/a.sock,uid=5"); /* no label */
        char text[400] = "/x/a.sock=t";
        for (int i = 0; i <= LABEL_MAX_IDS; i++)
                strcat(text, ",uid=7");
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
        test_access();
        test_table();
        printf("label: ok\n");
        return 0;
}
