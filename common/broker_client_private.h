/* What broker_client.c (the transport) and broker_requests.c (one function per request) share. */
#pragma once

#include <pthread.h>

#include "broker_client.h"

struct SageBroker {
        int fd;
        int timeout_ms;
        uint32_t next_request_id;
        pthread_mutex_t lock;
        SageHelloReply hello;
        char last_error[SAGE_PROTO_ERROR_MESSAGE_MAX + 1];
        /* Unsolicited broker -> client notices (proto.def TO_CLIENT), whoever reads them. */
        SageBrokerNoticeFn on_notice;
        void *notice_userdata;
        SageDevicesReply *devices; /* the broker's device table, once asked (broker_requests.c) */
        SageBrokerWaits waits;     /* the last window's (sage_broker_many_waits) */
};

/* Where the notes of a LOOKUP reply go: `length` receives their size,
 * the bytes are copied only if they fit in `capacity`. */
typedef struct NotesSink {
        void *bytes;
        uint32_t capacity;
        uint32_t length;
} NotesSink;

/* One request/reply exchange under the connection's lock. A reply fd (if
 * any) goes to *reply_fd; notes of a LOOKUP reply into `notes` (NULL: dropped). */
int sage_broker_call(SageBroker *b, SageMessage *req, const int *fds, size_t n_fds, SageMessage *reply,
                     SageListEntry *list_storage, int *reply_fd);
int sage_broker_call_noted(SageBroker *b, SageMessage *req, SageMessage *reply, int *reply_fd, NotesSink *notes);
/* call_noted running meanwhile(ctx) (if not NULL) once between the send and the reply (broker_client.h). */
int sage_broker_call_noted_meanwhile(SageBroker *b, SageMessage *req, SageMessage *reply, int *reply_fd,
                                     NotesSink *notes, SageBrokerMeanwhile meanwhile, void *ctx);
/* sage_broker_call (no list, no reply fd) with its own timeout instead of the connection's. */
int sage_broker_call_timeout(SageBroker *b, SageMessage *req, const int *fds, size_t n_fds, SageMessage *reply,
                             int timeout_ms);
/* Requests on the wire at once in a window (sage_broker_window_send). */
#define SAGE_BROKER_PIPELINE 32
/*
 * Requests pipelined on the connection: sent one at a time, whenever the
 * caller has the next (keys hashed as a read-back goes on), at most
 * SAGE_BROKER_PIPELINE on the wire (an older answer is read first), the
 * answers read in order. The connection's lock is held from open to close;
 * nothing else may use it meanwhile. The caller's arrays: request i
 * (filled before its send), its reply, fd (-1: none), notes (into notes[i];
 * `notes` NULL: dropped) and result, as sage_broker_call's.
 */
typedef struct SageBrokerWindow {
        SageBroker *b;
        SageMessage *reqs, *replies;
        int *fds, *results;
        NotesSink *notes;
        size_t sent, answered;   /* requests given to send, answers read */
        size_t unsent_from;      /* SIZE_MAX, or the request that could not go (it and those after: send_failed) */
        int send_failed, failed; /* failed: the first failure read; the stream is out of step after it */
        uint64_t t0;             /* when the lock was taken (sage_broker_many_waits) */
        uint64_t deadline[SAGE_BROKER_PIPELINE]; /* of request i in slot i % SAGE_BROKER_PIPELINE */
        uint8_t *buf;
} SageBrokerWindow;
/* Take the connection for a window; -ENOMEM (nothing taken). */
int sage_broker_window_open(SageBroker *b, SageBrokerWindow *w, SageMessage *reqs, SageMessage *replies, int *fds,
                            int *results, NotesSink *notes);
/* Send reqs[w->sent] (an answer read first when the window is full; nothing sent once one failed). */
void sage_broker_window_send(SageBrokerWindow *w);
/* Read the answers left, give the connection back: the first transport failure (negative), else 0. */
int sage_broker_window_close(SageBrokerWindow *w);
/* What sage_broker_last_error says next. */
void sage_broker_set_error(SageBroker *b, const char *format, ...) __attribute__((format(printf, 2, 3)));
