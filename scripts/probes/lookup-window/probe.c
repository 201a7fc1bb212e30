/*
 * Spread lookups against a real saged (simulated driver): 34 extents of
 * 2 MiB published with notes of NOTES bytes, then looked up by another
 * connection through sage_broker_lookups_* as assembly does, one every
 * 130 us (keyed during an ~8 ms read-back), and the exchange ended. Prints
 * per round how long the end waited and which answer waited longest
 * (sage_broker_many_waits; from 1). Replies pile up in the socket when the
 * client reads none while it sends: the broker stops reading requests while
 * it cannot write (docs/sharing.md, the cost table's assembled hit).
 *   probe SOCKET NOTES
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include "broker_client.h"
#include "hash.h"
#include "proto.h"
#define MiB (1u << 20)
#define N 34 /* bert's assembled runs */
static void sleep_us(long us) {
        struct timespec t = { 0, us * 1000 };
        nanosleep(&t, NULL);
}
static uint64_t now(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1000000000ull + t.tv_nsec;
}
int main(int argc, char **argv) {
        const char *sock = argv[1];
        size_t notes_len = atoi(argv[2]);
        SageBroker *b;
        SageHash key[N];
        static char notes[SAGE_PROTO_NOTES_MAX];
        memset(notes, 'n', sizeof(notes));
        if (sage_broker_connect(&b, sock, 5000)) {
                fprintf(stderr, "connect\n");
                return 1;
        }
        for (int i = 0; i < N; i++) {
                size_t size = 2 * MiB;
                int fd = memfd_create("sage-fake-vmm-gpu0", MFD_CLOEXEC);
                char *buf = calloc(1, size);
                uint64_t id;
                int existed;
                snprintf(buf, 64, "extent %d notes %zu pid %d", i, notes_len, (int)getpid());
                if (ftruncate(fd, size) || pwrite(fd, buf, size, 0) != (ssize_t)size)
                        return 2;
                key[i] = sage_content_key(buf, size);
                int r = sage_broker_publish_noted(b, key[i], size, 0, SAGE_PUBLISH_SEALED, fd, notes, notes_len, &id,
                                                  &existed);
                if (r) {
                        fprintf(stderr, "publish %d: %d\n", i, r);
                        return 3;
                }
                close(fd);
                free(buf);
        }
        sleep_us(300000); /* verified meanwhile */
        SageBroker *c;
        if (sage_broker_connect(&c, sock, 5000))
                return 4;
        for (int round = 0; round < 3; round++) {
                static SageBrokerLookup l[N];
                static char nb[N][SAGE_PROTO_NOTES_MAX];
                uint64_t t0 = now();
                SageBrokerLookups *ls = sage_broker_lookups_begin(c, N);
                for (int i = 0; i < N; i++) {
                        l[i] = (SageBrokerLookup){
                                .hash = key[i], .size = 2 * MiB, .device = 0, .notes = nb[i], .notes_cap = sizeof(nb[i])
                        };
                        sage_broker_lookups_add(ls, &l[i]);
                        sleep_us(130); /* keyed during the read-back */
                }
                uint64_t t1 = now();
                int r = sage_broker_lookups_end(ls);
                uint64_t t2 = now();
                SageBrokerWaits w;
                sage_broker_many_waits(c, &w);
                int hits = 0;
                for (int i = 0; i < N; i++) {
                        hits += l[i].result == 0 && l[i].fd >= 0;
                        if (l[i].fd >= 0)
                                close(l[i].fd);
                }
                printf("notes %zu: r %d hits %d sending %.2f ms, end %.2f ms, slowest %.2f ms at %u\n", notes_len, r,
                       hits, (t1 - t0) / 1e6, (t2 - t1) / 1e6, w.slowest_ns / 1e6, w.slowest_at + 1);
        }
        return 0;
}
