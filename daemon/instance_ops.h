/*
 * What handle_instance.c (requests, worker threads) and instance_gate.c (the
 * suspend gate's handshake with libsage, pins) share about one operation on
 * an instance. Private to daemon/.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "server_private.h"

/* How long saged waits for SUSPEND_PREPARED (libsage drains calls for at most 2 s,
 * then synchronizes and unmaps) and for INSTANCE_REMAPPED. */
#define INSTANCE_PREPARE_TIMEOUT_NS (8000 * 1000000ull)
#define INSTANCE_REMAP_TIMEOUT_NS (15000 * 1000000ull)

enum {
        OP_PREPARING, /* SUSPEND_PREPARE sent, waiting for SUSPEND_PREPARED */
        OP_DRIVER,    /* the worker thread runs the driver's step */
        OP_REMAPPING, /* INSTANCE_RESUMED sent, waiting for INSTANCE_REMAPPED */
};

typedef struct InstanceOp {
        Server *server;
        int op; /* INSTANCE_OP_* */
        pid_t pid;
        Instance *instance; /* NULL once forgotten (its connection went) */
        Client *requester;  /* NULL once gone or answered: the reply is dropped */
        uint32_t request_id;
        unsigned reply_type; /* SUSPEND_REPLY, RESUME_REPLY or INSTANCE_RESUME_REPLY */
        int phase;           /* OP_* */
        uint32_t handshake;  /* request id of the SUSPEND_PREPARE / INSTANCE_RESUMED sent */
        uint64_t deadline_ns;
        uint64_t start_ns;
        bool thread_started;
        bool remap_failed;       /* libsage could not map its extents again: the instance ends FAILED */
        struct SpoolPlan *spool; /* a suspend's parked extents to write once checkpointed (NULL: none) */
        pthread_t thread;
        /* Written by the worker, read by the loop after `done`. */
        int code; /* 0 or SageProtoError */
        char why[96];
        uint64_t elapsed_ns;
        bool done;
        struct InstanceOp *next;
} InstanceOp;

/* handle_instance.c */
/* Start the driver's step of `op` in its worker thread (OP_DRIVER). 0 or a SageProtoError. */
int instance_op_start_driver(Server *s, InstanceOp *op);
/* End `op`: apply it to its instance, answer its requester, unlink and free it. */
void instance_op_finish(Server *s, InstanceOp *op);
/* Answer `op`'s requester now (the instance's own INSTANCE_RESUME: it runs again). */
void instance_op_answer_early(Server *s, InstanceOp *op);

/* instance_gate.c */
/* Send `type` (SUSPEND_PREPARE, INSTANCE_RESUMED) with `status` to the instance's connection. */
int instance_gate_notify(Server *s, Instance *in, unsigned type, uint32_t status, uint32_t handshake);
/* Pin `extent` for the instance (once; a reference of the broker's). False: out of memory. */
bool instance_gate_pin(Server *s, Instance *in, Extent *extent);
/* The extents pinned for it (*items: borrowed). */
size_t instance_gate_pins(const Instance *in, Extent ***items);
/* Drop every pin the instance holds. */
void instance_gate_unpin(Server *s, Instance *in);
/* The worker of a gate instance's op is done: go on with the handshake (or finish). */
void instance_gate_driver_done(Server *s, InstanceOp *op);
/* Deadlines of handshakes passed: give up on them. */
void instance_gate_tick(Server *s);
/* Arm the timer for handshakes in flight (instance_gate.c's timerfd). */
void instance_gate_arm(Server *s);
