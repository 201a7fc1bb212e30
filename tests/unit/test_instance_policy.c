/* The memory policy's decisions (daemon/instance_policy.c) and the cgroup
 * room (daemon/cgroup_memory.c, over a fake cgroup tree), without a driver. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
/* The daemon's headers are not on the unit tests' include path. */
#include "../../daemon/cgroup_memory.h"
#include "../../daemon/instance_policy.h"
#include "../test_file.h"

#define MiB (1ull << 20)

static const uint8_t gpu0[16] = { 1 }, gpu1[16] = { 2 };
static int owners[8];

static Instance *add(InstanceTable *t, int i, const uint8_t *uuid, uint64_t used_ns) {
        Instance *in;
        CHECK(instances_add(t, &owners[i], 100 + i, -1, 7, uuid, 0, used_ns, &in) == 0);
        return in;
}

static void test_idle_deadline(void) {
        InstanceTable t = { .max_resumes = 1 };
        Instance *a = add(&t, 0, gpu0, 1), *b = add(&t, 1, gpu0, 1), *k = add(&t, 2, gpu0, 1);

        /* Nobody idle, or idle without a threshold: nothing due. */
        CHECK(instance_policy_next_deadline(&t) == 0);
        a->idle = true;
        a->idle_since_ns = 1000;
        CHECK(instance_policy_idle_deadline(a) == 0);
        a->idle_suspend_ms = 2;
        CHECK(instance_policy_idle_deadline(a) == 1000 + 2000000);
        b->idle = true, b->idle_since_ns = 500, b->idle_suspend_ms = 1;
        CHECK(instance_policy_next_deadline(&t) == 500 + 1000000);
        /* Keep-alive never; a suspended one is not due again. */
        k->flags = SAGE_INSTANCE_KEEP_ALIVE, k->idle = true, k->idle_suspend_ms = 1;
        CHECK(instance_policy_idle_deadline(k) == 0);
        CHECK(instance_begin(&t, b, INSTANCE_OP_SUSPEND, 2) == 0);
        CHECK(instance_policy_idle_deadline(b) == 0 && instance_policy_next_deadline(&t) == 1000 + 2000000);
        instance_finish(&t, b, INSTANCE_OP_SUSPEND, true, 1, 3);
        CHECK(instance_policy_next_deadline(&t) == 1000 + 2000000);
        /* Resumed: wanted again, not idle. */
        CHECK(instance_begin(&t, b, INSTANCE_OP_RESUME, 4) == 0);
        instance_finish(&t, b, INSTANCE_OP_RESUME, true, 1, 5);
        CHECK(!b->idle && b->used_ns == 5);
        instances_clear(&t);
}

static void test_held(void) {
        InstanceTable t = { .max_resumes = 4 };
        Instance *a = add(&t, 0, gpu0, 1), *b = add(&t, 1, gpu0, 1), *c = add(&t, 2, gpu1, 1), *d = add(&t, 3, gpu0, 1);
        uint64_t bytes[4] = { 100 * MiB, 200 * MiB, 400 * MiB, POLICY_BYTES_UNKNOWN }, leaving;

        (void)a, (void)c, (void)d;
        CHECK(instance_policy_held(&t, bytes, gpu0, &leaving) == 300 * MiB && leaving == 0);
        CHECK(instance_policy_held(&t, bytes, gpu1, NULL) == 400 * MiB);
        CHECK(instance_begin(&t, b, INSTANCE_OP_SUSPEND, 2) == 0);
        CHECK(instance_policy_held(&t, bytes, gpu0, &leaving) == 300 * MiB && leaving == 200 * MiB);
        instance_finish(&t, b, INSTANCE_OP_SUSPEND, true, 1, 3);
        bytes[1] = 0;
        CHECK(instance_policy_held(&t, bytes, gpu0, &leaving) == 100 * MiB && leaving == 0);
        /* Resuming: its footprint counts before the driver shows it. */
        b->footprint = 200 * MiB;
        CHECK(instance_begin(&t, b, INSTANCE_OP_RESUME, 4) == 0);
        CHECK(instance_policy_held(&t, bytes, gpu0, NULL) == 300 * MiB);
        instances_clear(&t);
}

static void test_victims(void) {
        InstanceTable t = { .max_resumes = 4 };
        Instance *a = add(&t, 0, gpu0, 30), *b = add(&t, 1, gpu0, 10), *c = add(&t, 2, gpu0, 20),
                 *d = add(&t, 3, gpu1, 5), *e = add(&t, 4, gpu0, 1);
        uint64_t bytes[5] = { 100 * MiB, 100 * MiB, 100 * MiB, 100 * MiB, 100 * MiB };
        bool ok[5] = { true, true, true, true, false };
        Instance *out[8];
        bool enough;
        size_t n;

        (void)d, (void)e;
        /* 400 MiB held on gpu0 under a cap of 500: room for 100 more without anyone. */
        n = instance_policy_victims(&t, bytes, ok, gpu0, NULL, 500 * MiB, 100 * MiB, POLICY_EVICT_ANY, out, 8, &enough);
        CHECK(n == 0 && enough);
        /* Nobody idle, idle-only: nothing, not enough. */
        n = instance_policy_victims(&t, bytes, ok, gpu0, NULL, 500 * MiB, 200 * MiB, POLICY_EVICT_IDLE, out, 8,
                                    &enough);
        CHECK(n == 0 && !enough);
        /* Idle ones first, least recently used first; then active ones the same way. */
        a->idle = c->idle = true;
        n = instance_policy_victims(&t, bytes, ok, gpu0, NULL, 500 * MiB, 200 * MiB, POLICY_EVICT_IDLE, out, 8,
                                    &enough);
        CHECK(n == 1 && out[0] == c && enough);
        n = instance_policy_victims(&t, bytes, ok, gpu0, NULL, 500 * MiB, 400 * MiB, POLICY_EVICT_IDLE, out, 8,
                                    &enough);
        CHECK(n == 2 && out[0] == c && out[1] == a && !enough);
        n = instance_policy_victims(&t, bytes, ok, gpu0, NULL, 500 * MiB, 400 * MiB, POLICY_EVICT_ANY, out, 8, &enough);
        CHECK(n == 3 && out[0] == c && out[1] == a && out[2] == b && enough);
        /* Never the requester, never one that may not be suspended (e), never another GPU's (d). */
        n = instance_policy_victims(&t, bytes, ok, gpu0, c, 500 * MiB, 600 * MiB, POLICY_EVICT_ANY, out, 8, &enough);
        CHECK(n == 2 && out[0] == a && out[1] == b && !enough);
        /* One being suspended already counts as room on its way. */
        CHECK(instance_begin(&t, c, INSTANCE_OP_SUSPEND, 40) == 0);
        n = instance_policy_victims(&t, bytes, ok, gpu0, NULL, 500 * MiB, 200 * MiB, POLICY_EVICT_IDLE, out, 8,
                                    &enough);
        CHECK(n == 0 && enough);
        /* No cap but the free memory (instance_policy_limit): the same choice. */
        CHECK(instance_policy_limit(0, 400 * MiB, POLICY_BYTES_UNKNOWN) == UINT64_MAX);
        CHECK(instance_policy_limit(0, 400 * MiB, POLICY_RESTORE_MARGIN + 50 * MiB) == 450 * MiB);
        CHECK(instance_policy_limit(420 * MiB, 400 * MiB, POLICY_RESTORE_MARGIN + 50 * MiB) == 420 * MiB);
        CHECK(instance_policy_limit(0, 400 * MiB, 10 * MiB) == 400 * MiB);
        instances_clear(&t);
}

static void test_fits(void) {
        /* Restore only into free memory: footprint plus the margin. */
        CHECK(instance_policy_restore_fits(0, 0, 100 * MiB, POLICY_BYTES_UNKNOWN));
        CHECK(instance_policy_restore_fits(0, 0, 100 * MiB, 100 * MiB + POLICY_RESTORE_MARGIN));
        CHECK(!instance_policy_restore_fits(0, 0, 100 * MiB, 100 * MiB + POLICY_RESTORE_MARGIN - 1));
        CHECK(instance_policy_restore_fits(300 * MiB, 200 * MiB, 100 * MiB, POLICY_BYTES_UNKNOWN));
        CHECK(!instance_policy_restore_fits(300 * MiB, 201 * MiB, 100 * MiB, POLICY_BYTES_UNKNOWN));
        CHECK(instance_policy_host_fits(POLICY_BYTES_UNKNOWN, 1ull << 40));
        CHECK(instance_policy_host_fits(100, 100) && !instance_policy_host_fits(99, 100));
}

static void test_parse_cap(void) {
        uint64_t v;
        CHECK(instance_policy_parse_cap("8G", 0, &v) == 0 && v == 8ull << 30);
        CHECK(instance_policy_parse_cap("50%", 1000, &v) == 0 && v == 500);
        CHECK(instance_policy_parse_cap("0", 1000, &v) == -EINVAL);
        CHECK(instance_policy_parse_cap("101%", 1000, &v) == -EINVAL);
        CHECK(instance_policy_parse_cap("x%", 1000, &v) == -EINVAL);
        CHECK(instance_policy_parse_cap("lots", 1000, &v) == -EINVAL);
}

static void put(const char *dir, const char *name, const char *text) {
        CHECK(test_put_file(dir, name, text) == 0);
}

/* A cgroup under a fake root: the least room over it and its ancestors. */
static void test_cgroup(void) {
        char root[] = "/tmp/sage-cgroup-test-XXXXXX", a[512], ab[512], cmd[600];

        CHECK(mkdtemp(root));
        snprintf(a, sizeof(a), "%s/a", root);
        snprintf(ab, sizeof(ab), "%s/a/b", root);
        CHECK(mkdir(a, 0755) == 0 && mkdir(ab, 0755) == 0);
        /* No files (no memory controller): no limit. */
        CHECK(cgroup_memory_room_of(root, "/a/b") == UINT64_MAX);
        put(ab, "memory.max", "max\n");
        put(ab, "memory.current", "1000\n");
        CHECK(cgroup_memory_room_of(root, "/a/b") == UINT64_MAX);
        put(ab, "memory.max", "5000\n");
        CHECK(cgroup_memory_room_of(root, "/a/b") == 4000);
        /* A parent's tighter limit wins; the root's own files count for "/" only. */
        put(a, "memory.max", "3000\n");
        put(a, "memory.current", "2500\n");
        CHECK(cgroup_memory_room_of(root, "/a/b") == 500);
        put(root, "memory.max", "100\n");
        put(root, "memory.current", "10\n");
        CHECK(cgroup_memory_room_of(root, "/a/b") == 500 && cgroup_memory_room_of(root, "/") == 90);
        /* Over the limit already: no room. Odd paths: not checked. */
        put(ab, "memory.current", "9000\n");
        CHECK(cgroup_memory_room_of(root, "/a/b") == 0);
        CHECK(cgroup_memory_room_of(root, "/a/../a/b") == UINT64_MAX && cgroup_memory_room_of(root, "a") == UINT64_MAX);
        /* A process: its /proc/PID/cgroup; one that does not exist is an error. */
        {
                uint64_t room;
                CHECK(cgroup_memory_room(root, getpid(), &room) == 0);
                CHECK(cgroup_memory_room(root, 0x7ffffff0, &room) < 0);
        }
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        CHECK(system(cmd) == 0);
}

int main(void) {
        test_idle_deadline();
        test_held();
        test_victims();
        test_fits();
        test_parse_cap();
        test_cgroup();
        printf("instance_policy: ok\n");
        return 0;
}
