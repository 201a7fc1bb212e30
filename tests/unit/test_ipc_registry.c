/* Unit test of daemon/ipc_registry: tokens, namespace-bound lookup, owner-only
 * revoke, dropping an owner's registrations, limits, and that every fd the
 * registry took is closed exactly when its registration goes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The daemon's headers are not on the unit tests' include path. */
#include "../../daemon/ipc_registry.h"

#include "check.h"

static int new_fd(void) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        return fd;
}

static bool fd_open(int fd) {
        return fcntl(fd, F_GETFD) >= 0;
}

static IpcExport *add(IpcRegistry *r, IpcOwner *o, uint64_t ns, int fd, int want) {
        SageIpcAllocation a = { .size = 2 << 20, .device = 3 };
        IpcExport *e = NULL;
        CHECK(ipc_registry_add(r, o, ns, fd, &a, 1234, &e) == want);
        return e;
}

static void test_basics(void) {
        IpcRegistry *r;
        IpcOwner a = { 0 }, b = { 0 };
        SageIpcToken unknown;
        int fa = new_fd(), fb = new_fd();

        CHECK(ipc_registry_new(&r, 0, 0) == 0);
        CHECK(ipc_registry_max_total(r) == IPC_REGISTRY_MAX_TOTAL);
        IpcExport *ea = add(r, &a, 1000, fa, 0);
        IpcExport *eb = add(r, &b, 1000, fb, 0);
        CHECK(ea && eb && ea->fd == fa && ea->allocation.size == 2 << 20 && ea->allocation.device == 3);
        CHECK(memcmp(&ea->token, &eb->token, sizeof(ea->token)) != 0);
        CHECK(ipc_registry_count(r) == 2 && a.n_exports == 1 && b.n_exports == 1);
        SageIpcToken ta = ea->token, tb = eb->token;

        /* Found in its namespace only. */
        CHECK(ipc_registry_find(r, &ta, 1000) == ea);
        CHECK(ipc_registry_find(r, &ta, 1001) == NULL);
        CHECK(ipc_registry_find(r, &ta, (uint64_t)1 << 32 | 1000) == NULL);
        /* One bit off is another token. */
        unknown = ta;
        unknown.bytes[15] ^= 1;
        CHECK(ipc_registry_find(r, &unknown, 1000) == NULL);
        unknown = ta;
        unknown.bytes[0] ^= 0x80;
        CHECK(ipc_registry_find(r, &unknown, 1000) == NULL);

        /* Only the owner revokes; the fd closes then, not before. */
        CHECK(ipc_registry_revoke(r, &b, &ta) == IPC_REGISTRY_E_NOT_FOUND);
        CHECK(ipc_registry_revoke(r, &a, &unknown) == IPC_REGISTRY_E_NOT_FOUND);
        CHECK(fd_open(fa));
        CHECK(ipc_registry_revoke(r, &a, &ta) == 0);
        CHECK(!fd_open(fa) && a.n_exports == 0 && ipc_registry_count(r) == 1);
        CHECK(ipc_registry_find(r, &ta, 1000) == NULL);
        CHECK(ipc_registry_revoke(r, &a, &ta) == IPC_REGISTRY_E_NOT_FOUND);
        CHECK(ipc_registry_find(r, &tb, 1000) == eb);

        /* Freeing closes what is left. */
        CHECK(fd_open(fb));
        ipc_registry_free(r);
        CHECK(!fd_open(fb));
}

static void test_drop_owner_and_limits(void) {
        enum {
                PER_OWNER = 5,
                TOTAL = 8
        };
        IpcRegistry *r;
        IpcOwner a = { 0 }, b = { 0 }, c = { 0 };
        SageIpcToken tokens_a[PER_OWNER], tokens_b[3];
        int fds_a[PER_OWNER], fds_b[3];

        CHECK(ipc_registry_new(&r, PER_OWNER, TOTAL) == 0);
        for (int i = 0; i < PER_OWNER; i++) {
                fds_a[i] = new_fd();
                tokens_a[i] = add(r, &a, 7, fds_a[i], 0)->token;
        }
        /* Per owner: refused, and the fd stays the caller's. */
        int extra = new_fd();
        add(r, &a, 7, extra, IPC_REGISTRY_E_OWNER_LIMIT);
        CHECK(fd_open(extra));
        for (int i = 0; i < 3; i++) {
                fds_b[i] = new_fd();
                tokens_b[i] = add(r, &b, 7, fds_b[i], 0)->token;
        }
        /* In total. */
        add(r, &c, 7, extra, IPC_REGISTRY_E_TOTAL_LIMIT);
        CHECK(fd_open(extra) && c.n_exports == 0 && ipc_registry_count(r) == TOTAL);

        /* Dropping an owner from the middle of its list and the table. */
        CHECK(ipc_registry_revoke(r, &a, &tokens_a[2]) == 0 && !fd_open(fds_a[2]));
        ipc_registry_drop_owner(r, &a);
        CHECK(a.n_exports == 0 && a.exports == NULL && ipc_registry_count(r) == 3);
        for (int i = 0; i < PER_OWNER; i++) {
                CHECK(!fd_open(fds_a[i]));
                CHECK(ipc_registry_find(r, &tokens_a[i], 7) == NULL);
        }
        for (int i = 0; i < 3; i++)
                CHECK(fd_open(fds_b[i]) && ipc_registry_find(r, &tokens_b[i], 7));
        /* Room again. */
        add(r, &c, 7, extra, 0);
        ipc_registry_drop_owner(r, &b);
        ipc_registry_drop_owner(r, &c);
        CHECK(ipc_registry_count(r) == 0 && !fd_open(extra));
        for (int i = 0; i < 3; i++)
                CHECK(!fd_open(fds_b[i]));
        ipc_registry_free(r);
}

/* Many registrations: tokens stay distinct and findable (bucket chains). */
static void test_many(void) {
        enum {
                N = 3000
        };
        IpcRegistry *r;
        IpcOwner o = { 0 };
        static SageIpcToken tokens[N];
        int fd = new_fd();

        CHECK(ipc_registry_new(&r, N, N) == 0);
        for (int i = 0; i < N; i++)
                tokens[i] = add(r, &o, 1, fcntl(fd, F_DUPFD_CLOEXEC, 0), 0)->token;
        for (int i = 0; i < N; i++) {
                const IpcExport *e = ipc_registry_find(r, &tokens[i], 1);
                CHECK(e && memcmp(&e->token, &tokens[i], sizeof(tokens[i])) == 0);
        }
        for (int i = 0; i < N; i += 2)
                CHECK(ipc_registry_revoke(r, &o, &tokens[i]) == 0);
        for (int i = 0; i < N; i++)
                CHECK((ipc_registry_find(r, &tokens[i], 1) != NULL) == (i % 2 == 1));
        ipc_registry_drop_owner(r, &o);
        ipc_registry_free(r);
        /* Every duplicate was closed: the next fd is the one after ours. */
        int probe = new_fd();
        CHECK(probe == fd + 1);
        close(probe);
        close(fd);
}

int main(void) {
        test_basics();
        test_drop_owner_and_limits();
        test_many();
        printf("ipc_registry: ok\n");
        return 0;
}
