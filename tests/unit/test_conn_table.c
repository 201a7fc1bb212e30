/* Connection accounting: per-namespace, per-label and broker-wide caps, root's rule. */
#include <errno.h>

#include "check.h"
/* The daemon's headers are not on the unit tests' include path. */
#include "../../daemon/conn_table.h"

int main(void) {
        ConnTable *t;

        CHECK(conn_table_new(&t, &(ConnLimits){ .max_total = 100, .max_per_namespace = 3, .max_per_label = 5 }) == 0);

        /* One uid on the main socket: 3, then refused; another uid is not affected. */
        for (int i = 0; i < 3; i++)
                CHECK(conn_table_admit(t, 65534, 0) == 0);
        CHECK(conn_table_admit(t, 65534, 0) == CONN_TABLE_E_NAMESPACE);
        CHECK(conn_table_namespace_count(t, 65534, 0) == 3);
        CHECK(conn_table_admit(t, 65533, 0) == 0);
        /* The same uid behind a labelled socket is another tenant. */
        CHECK(conn_table_admit(t, 65534, 1) == 0);
        CHECK(conn_table_total(t) == 5);

        /* A label's uids together: at most 5, whatever uids it takes. */
        for (uid_t uid = 1; uid <= 4; uid++)
                CHECK(conn_table_admit(t, uid, 2) == 0);
        CHECK(conn_table_admit(t, 0, 2) == 0); /* root behind a label is a tenant: counted */
        CHECK(conn_table_admit(t, 5, 2) == CONN_TABLE_E_LABEL);
        CHECK(conn_table_total(t) == 10);
        /* A root container taking many uids meets the per-label cap too. */
        for (uid_t uid = 1; uid <= 5; uid++)
                CHECK(conn_table_admit(t, uid, 0x80000007u) == 0);
        CHECK(conn_table_admit(t, 6, 0x80000007u) == CONN_TABLE_E_LABEL);
        CHECK(conn_table_total(t) == 15);
        conn_table_free(t);

        /* Broker-wide cap, and root on the main socket's reserve beyond it. */
        CHECK(conn_table_new(&t, &(ConnLimits){ .max_total = 8, .max_per_namespace = 3, .max_per_label = 100 }) == 0);
        for (uid_t uid = 100; uid < 104; uid++)
                for (int i = 0; i < 2; i++)
                        CHECK(conn_table_admit(t, uid, 0) == 0);
        CHECK(conn_table_total(t) == 8);
        CHECK(conn_table_admit(t, 200, 0) == CONN_TABLE_E_TOTAL);
        CHECK(conn_table_admit(t, 0, 1) == CONN_TABLE_E_TOTAL); /* root behind a label: no reserve */
        for (int i = 0; i < CONN_TABLE_ROOT_RESERVE; i++)
                CHECK(conn_table_admit(t, 0, 0) == 0); /* and no per-namespace cap */
        CHECK(conn_table_admit(t, 0, 0) == CONN_TABLE_E_TOTAL);

        /* Releases give room back; empty namespaces leave the table. */
        conn_table_release(t, 100, 0);
        CHECK(conn_table_admit(t, 200, 0) == CONN_TABLE_E_TOTAL); /* root's reserve is still taken */
        for (int i = 0; i < CONN_TABLE_ROOT_RESERVE; i++)
                conn_table_release(t, 0, 0);
        CHECK(conn_table_namespace_count(t, 0, 0) == 0);
        CHECK(conn_table_admit(t, 200, 0) == 0 && conn_table_namespace_count(t, 200, 0) == 1);
        conn_table_release(t, 100, 0);
        CHECK(conn_table_namespace_count(t, 100, 0) == 0);
        CHECK(conn_table_total(t) == 7);
        /* A container's label (identity.c numbers them from 0x80000000) is counted like a socket's:
         * admitted, capped per label together with the socket labels' rule, released. */
        CHECK(conn_table_admit(t, 0, 0x80000001u) == 0);
        CHECK(conn_table_admit(t, 1, 0x80000001u) == CONN_TABLE_E_TOTAL); /* full again: no reserve for it */
        CHECK(conn_table_namespace_count(t, 0, 0x80000001u) == 1);
        conn_table_release(t, 0, 0x80000001u);
        CHECK(conn_table_namespace_count(t, 0, 0x80000001u) == 0);
        /* The uid that keys label counts is never a client's; releasing what was never admitted changes nothing. */
        CHECK(conn_table_admit(t, (uid_t)-1, 0) == CONN_TABLE_E_NAMESPACE);
        conn_table_release(t, 4242, 0);
        conn_table_release(t, (uid_t)-1, 0x80000001u);
        CHECK(conn_table_total(t) == 7);
        CHECK(conn_table_limits(t)->max_total == 8);
        conn_table_free(t);

        /* Defaults. */
        CHECK(conn_table_new(&t, &(ConnLimits){ 0 }) == 0);
        CHECK(conn_table_limits(t)->max_total == CONN_TABLE_MAX_TOTAL);
        CHECK(conn_table_limits(t)->max_per_namespace == CONN_TABLE_MAX_PER_NAMESPACE);
        CHECK(conn_table_limits(t)->max_per_label == CONN_TABLE_MAX_PER_LABEL);
        conn_table_free(t);
        return 0;
}
