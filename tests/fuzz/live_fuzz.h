/*
 * The live-socket fuzzer of saged (live_fuzz.c runs the broker and checks
 * it; live_fuzz_worker.c is what each hostile client process does).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"

/* Clients of one worker use these sockets: 0 the main one, 1.. labelled ones. */
#define FUZZ_SOCKETS 3
/* uids the workers run as (root only; otherwise everything runs as the caller). */
#define FUZZ_UIDS 3
#define FUZZ_MAX_WORKERS 16
/* Extent keys per namespace: few, so LOOKUPs of one namespace hit what it published. */
#define FUZZ_KEYS 6
/* Tokens and extent ids each worker shows the others (to try them across namespaces). */
#define FUZZ_SLOTS 8
/* A reply slower than this is a stall: the broker answers every packet or hangs up. */
#define FUZZ_REPLY_TIMEOUT_MS 10000

/* splitmix64: one state word, every run reproducible from the printed seed. */
typedef struct Rng {
        uint64_t state;
} Rng;

static inline uint64_t rng_next(Rng *r) {
        uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* 0 .. n-1 (n > 0). */
static inline uint64_t rng_below(Rng *r, uint64_t n) {
        return rng_next(r) % n;
}

static inline bool rng_chance(Rng *r, unsigned percent) {
        return rng_below(r, 100) < percent;
}

/*
 * Something a worker registered (an IPC token, an extent id) and the
 * namespace it lives in, for other workers to try. Written by its worker
 * only, under a sequence counter (odd while writing) so a reader never takes
 * half of one entry for another namespace's.
 */
typedef struct FuzzSlot {
        uint32_t seq;
        uint64_t namespace_id;
        uint64_t extent_id;
        uint8_t token[SAGE_IPC_TOKEN_SIZE];
} FuzzSlot;

/* Violations are counted here too, so the parent sees them even from a worker it killed. */
typedef struct FuzzShared {
        FuzzSlot slots[FUZZ_MAX_WORKERS][FUZZ_SLOTS];
        uint64_t violations;
        uint64_t requests, replies, hangups;
        uint64_t hits, foreign_checks; /* LOOKUP hits; answers checked for another namespace's key, id or token */
        uint64_t notices;              /* notices to the broker sent (each checked unanswered by a PING after it) */
} FuzzShared;

/* Hostile classes a run can leave out (--skip), to tell a known defect from a new one. */
#define FUZZ_SKIP_ZERO_FDS 0x1u   /* zero-length packets with fds */
#define FUZZ_SKIP_SOCKET_FDS 0x2u /* broker connections (the sender's own, another) passed as fds */
#define FUZZ_SKIP_BURSTS 0x4u     /* bursts of connections */

/* The --label-socket names saged gets, by label number (0: the main socket). */
static const char *const fuzz_label_names[FUZZ_SOCKETS] = { NULL, "fuzz-a", "fuzz-b" };

typedef struct FuzzWorker {
        unsigned index;
        uid_t uid;
        uint64_t seed;
        uint64_t deadline_ns;
        uint64_t key_seed;          /* the run's seed: keys of namespace n derive from it */
        const char *const *sockets; /* FUZZ_SOCKETS paths */
        const uint32_t *labels;     /* the label number of each socket (0: main) */
        const uid_t *uids;          /* every uid some worker runs as */
        unsigned n_uids;
        unsigned skip; /* FUZZ_SKIP_* */
        FuzzShared *shared;
} FuzzWorker;

/* ------------------------------------------------------------ a worker (live_fuzz_conn.c, live_fuzz_worker.c) */

#define MAX_CONNS 8
#define MAX_HELD 64
#define MAX_SEND_FDS 250 /* below the kernel's SCM_MAX_FD (253) */

typedef struct Conn {
        int fd;
        unsigned socket;
        uint64_t namespace_id;
        bool sees_all;
        uint64_t held[MAX_HELD]; /* extent ids this connection holds a reference on (one per entry) */
        size_t n_held;
        uint8_t tokens[FUZZ_SLOTS][SAGE_IPC_TOKEN_SIZE]; /* its live IPC exports */
        size_t n_tokens;
} Conn;

typedef struct Worker {
        const FuzzWorker *cfg;
        Rng rng;
        Conn conns[MAX_CONNS];
        unsigned next_slot;
        uint32_t request_id;
        uint8_t buf[2 * SAGE_PROTO_MAX_MESSAGE];
        uint8_t rx[SAGE_PROTO_MAX_MESSAGE];
        SageListEntry list[SAGE_PROTO_LIST_MAX];
        unsigned violations;
} Worker;

#define VIOLATION(w, ...)                                                                                         \
        do {                                                                                                      \
                fprintf(stderr, "live-fuzz worker %u (uid %u) %s:%d: ", (w)->cfg->index, (unsigned)(w)->cfg->uid, \
                        __FILE__, __LINE__);                                                                      \
                fprintf(stderr, __VA_ARGS__);                                                                     \
                fputc('\n', stderr);                                                                              \
                (w)->violations++;                                                                                \
                __atomic_add_fetch(&(w)->cfg->shared->violations, 1, __ATOMIC_RELAXED);                           \
        } while (0)

/* What exchange() and receive() return besides -1 (a violation, already counted). */
enum {
        HANGUP = 0,
        REPLIED = 1
};

int memfd_of(size_t size);
int connect_to(const char *path);
int hostile_fd(Worker *w, const Conn *c);
void conn_close(Conn *c);
Conn *conn_open(Worker *w, Conn *c);
Conn *some_conn(Worker *w);
int send_raw(int sock, const void *buf, size_t len, const int *fds, size_t n_fds, int flags);
int receive(Worker *w, Conn *c, SageMessage *reply, int *fd_out);
int exchange(Worker *w, Conn *c, const void *buf, size_t len, const int *fds, size_t n_fds, SageMessage *reply,
             int *fd_out);
uint32_t key_notes(const SageExtentKey *k, uint8_t *out);
uint64_t namespace_of(const Worker *w, unsigned socket, uid_t uid);
/* Show an id/token of namespace_id to the other workers (slot: this worker's slot number). */
void show(Worker *w, unsigned slot, uint64_t namespace_id, uint64_t extent_id, const uint8_t *token);
/* A consistent copy of a random worker's slot; false if it is empty or was being written. */
bool peek(Worker *w, FuzzSlot *out);

/* Hostile traffic (live_fuzz_hostile.c): on connection c, or (burst) on connections of its own. */
void mutated(Worker *w, Conn *c);
void garbage(Worker *w, Conn *c);
void many_fds(Worker *w, Conn *c);
void zero_length_fds(Worker *w, Conn *c);
void flood(Worker *w, Conn *c);
void half_close(Worker *w, Conn *c);
void burst(Worker *w);
void oversize(Worker *w, Conn *c);
void export_flood(Worker *w, Conn *c);

/* Run one worker until its deadline; returns its exit status (0: no violation seen). */
int fuzz_worker_run(const FuzzWorker *w);

/* Key k of a namespace, as every worker derives it, and a memfd of its content (the caller closes it). */
#define FUZZ_KEY_SIZE ((uint64_t)2 << 20)
SageExtentKey fuzz_key(uint64_t key_seed, uint64_t namespace_id, unsigned k);
int fuzz_key_memfd(uint64_t key_seed, uint64_t namespace_id, unsigned k);
