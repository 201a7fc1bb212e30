/* The instance table and its state machine (daemon/instances.c), without a driver. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
/* The daemon's headers are not on the unit tests' include path. */
#include "../../daemon/instances.h"

static const uint8_t uuid[16] = { 1, 2, 3 };

static void test_table(void) {
        InstanceTable t = { .max_resumes = 1 };
        Instance *a, *b;
        static int owner_a, owner_b;

        CHECK(instances_add(&t, &owner_a, 100, -1, 7, uuid, SAGE_INSTANCE_KEEP_ALIVE | SAGE_INSTANCE_MPS, 1, &a) == 0);
        CHECK(instances_add(&t, &owner_a, 100, -1, 7, uuid, 0, 1, NULL) == INSTANCES_E_EXISTS);
        CHECK(instances_add(&t, &owner_b, 100, -1, 7, uuid, 0, 1, NULL) == INSTANCES_E_EXISTS); /* same pid */
        CHECK(instances_add(&t, &owner_b, 200, -1, 8, uuid, 0, 1, &b) == 0);
        CHECK(instances_find_pid(&t, 100) == a && instances_find_pid(&t, 200) == b && !instances_find_pid(&t, 300));
        CHECK(instances_find_owner(&t, &owner_b) == b);
        CHECK(instance_why_flags(a) == (SAGE_INSTANCE_WHY_KEEP_ALIVE | SAGE_INSTANCE_WHY_MPS));
        CHECK(instance_why_flags(b) == 0 && b->state == SAGE_INSTANCE_ACTIVE && memcmp(b->uuid, uuid, 16) == 0);
        instances_remove(&t, a);
        CHECK(!instances_find_pid(&t, 100) && t.n == 1);
        instances_clear(&t);
        CHECK(t.n == 0);
}

static void test_states(void) {
        InstanceTable t = { .max_resumes = 1 };
        Instance *a, *b;
        static int oa, ob;

        CHECK(instances_add(&t, &oa, 100, -1, 7, uuid, 0, 0, &a) == 0);
        CHECK(instances_add(&t, &ob, 200, -1, 7, uuid, 0, 0, &b) == 0);
        /* Nothing to resume while active; suspend, and nothing else while it runs. */
        CHECK(instance_begin(&t, a, INSTANCE_OP_RESUME, 1) == INSTANCES_E_STATE);
        CHECK(instance_begin(&t, a, INSTANCE_OP_SUSPEND, 1) == 0 && a->state == SAGE_INSTANCE_SUSPENDING);
        CHECK(instance_begin(&t, a, INSTANCE_OP_SUSPEND, 1) == INSTANCES_E_BUSY);
        CHECK(instance_begin(&t, a, INSTANCE_OP_RESUME, 1) == INSTANCES_E_BUSY);
        /* A failed checkpoint (unlocked again): active, and left alone for room a while. */
        instance_finish(&t, a, INSTANCE_OP_SUSPEND, false, 5000000, 2);
        CHECK(a->state == SAGE_INSTANCE_ACTIVE && a->suspend_ms == 0 &&
              a->busy_until_ns == 2 + INSTANCE_BUSY_BACKOFF_NS);
        CHECK(instance_begin(&t, a, INSTANCE_OP_SUSPEND, 3) == 0);
        instance_finish(&t, a, INSTANCE_OP_SUSPEND, true, 5000000, 4);
        CHECK(a->state == SAGE_INSTANCE_SUSPENDED && a->suspend_ms == 5 && a->changed_ns == 4);
        CHECK(instance_begin(&t, b, INSTANCE_OP_SUSPEND, 5) == 0);
        instance_finish(&t, b, INSTANCE_OP_SUSPEND, true, 1, 6);
        /* The resume cap: one at a time here. */
        CHECK(instance_begin(&t, a, INSTANCE_OP_RESUME, 7) == 0 && a->state == SAGE_INSTANCE_RESUMING);
        CHECK(instance_begin(&t, b, INSTANCE_OP_RESUME, 7) == INSTANCES_E_BUSY && b->state == SAGE_INSTANCE_SUSPENDED);
        instance_finish(&t, a, INSTANCE_OP_RESUME, true, 310000000, 8);
        CHECK(a->state == SAGE_INSTANCE_ACTIVE && a->resume_ms == 310 && t.resuming == 0);
        /* A failed restore: failed for good (neither suspend nor resume starts). */
        CHECK(instance_begin(&t, b, INSTANCE_OP_RESUME, 9) == 0);
        instance_finish(&t, b, INSTANCE_OP_RESUME, false, 1, 10);
        CHECK(b->state == SAGE_INSTANCE_FAILED && t.resuming == 0);
        CHECK(instance_begin(&t, b, INSTANCE_OP_RESUME, 11) == INSTANCES_E_STATE);
        CHECK(instance_begin(&t, b, INSTANCE_OP_SUSPEND, 11) == INSTANCES_E_STATE);
        /* Cancelled before anything was tried; forgotten while resuming: the slot comes back. */
        CHECK(instance_begin(&t, a, INSTANCE_OP_SUSPEND, 12) == 0);
        instance_cancel(&t, a, INSTANCE_OP_SUSPEND);
        CHECK(a->state == SAGE_INSTANCE_ACTIVE);
        CHECK(instance_begin(&t, a, INSTANCE_OP_SUSPEND, 13) == 0);
        instance_finish(&t, a, INSTANCE_OP_SUSPEND, true, 1, 14);
        CHECK(instance_begin(&t, a, INSTANCE_OP_RESUME, 15) == 0 && t.resuming == 1);
        instances_remove(&t, a);
        CHECK(t.resuming == 0);
        instances_clear(&t);
}

/* A pidfd tells an exited process. */
static void test_exited(void) {
        InstanceTable t = { 0 };
        Instance *in;
        static int owner;
        int status;
        pid_t pid = fork();

        CHECK(pid >= 0);
        if (pid == 0) {
                pause();
                _exit(0);
        }
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        CHECK(pidfd >= 0);
        CHECK(instances_add(&t, &owner, pid, pidfd, 0, uuid, 0, 0, &in) == 0);
        CHECK(!instance_exited(in));
        kill(pid, SIGKILL);
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(instance_exited(in));
        instances_clear(&t);
}

/* Registered again after a broker restart while checkpointed: suspended from the start. */
static void test_adopt(void) {
        InstanceTable t = { .max_resumes = 1 };
        Instance *a, *b;
        static int oa, ob;

        CHECK(instances_add(&t, &oa, 100, -1, 7, uuid, SAGE_INSTANCE_CHECKPOINTED | SAGE_INSTANCE_MPS, 0, &a) == 0);
        CHECK(instances_add(&t, &ob, 200, -1, 7, uuid, 0, 0, &b) == 0);
        CHECK(instance_adopt_suspended(a) && a->state == SAGE_INSTANCE_SUSPENDED && a->flags == SAGE_INSTANCE_MPS);
        CHECK(!instance_adopt_suspended(a) && !instance_adopt_suspended(b) && b->state == SAGE_INSTANCE_ACTIVE);
        CHECK(instance_begin(&t, a, INSTANCE_OP_RESUME, 1) == 0);
        instance_finish(&t, a, INSTANCE_OP_RESUME, true, 1, 2);
        CHECK(a->state == SAGE_INSTANCE_ACTIVE);
        instances_clear(&t);
}

/* One namespace holds at most max_per_namespace; others still register; a slot comes back when one goes. */
static void test_per_namespace(void) {
        InstanceTable t = { .max_per_namespace = 3 };
        static char owners[8], many[INSTANCES_MAX_PER_NAMESPACE + 1];
        Instance *first = NULL;

        for (int i = 0; i < 3; i++)
                CHECK(instances_add(&t, &owners[i], 100 + i, -1, 7, uuid, 0, 1, i ? NULL : &first) == 0);
        CHECK(instances_add(&t, &owners[3], 103, -1, 7, uuid, 0, 1, NULL) == INSTANCES_E_NAMESPACE);
        CHECK(instances_count_namespace(&t, 7) == 3);
        CHECK(instances_add(&t, &owners[4], 104, -1, 8, uuid, 0, 1, NULL) == 0);
        CHECK(instances_add(&t, &owners[5], 105, -1, 1ull << 32 | 7, uuid, 0, 1, NULL) == 0); /* a label's uid 7 */
        instances_remove(&t, first);
        CHECK(instances_add(&t, &owners[3], 103, -1, 7, uuid, 0, 1, NULL) == 0);
        instances_clear(&t);
        /* 0: the default. */
        t = (InstanceTable){ 0 };
        for (int i = 0; i <= INSTANCES_MAX_PER_NAMESPACE; i++)
                CHECK(instances_add(&t, &many[i], 1000 + i, -1, 9, uuid, 0, 1, NULL) ==
                      (i < INSTANCES_MAX_PER_NAMESPACE ? 0 : INSTANCES_E_NAMESPACE));
        instances_clear(&t);
}

int main(void) {
        test_table();
        test_adopt();
        test_states();
        test_exited();
        test_per_namespace();
        printf("instances: ok\n");
        return 0;
}
