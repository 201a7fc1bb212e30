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
        SageDevicesReply *devices;            /* the broker's device table, once asked (broker_requests.c) */
        uint64_t many_lock_ns, many_first_ns; /* the last sage_broker_call_many's waits (sage_broker_many_waits) */
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
/* Requests on the wire at once in sage_broker_call_many. */
#define SAGE_BROKER_PIPELINE 32
/* n requests (no fds sent, no lists) pipelined under one lock: reply i, its fd (-1: none), its notes
 * (into notes[i]; `notes` NULL: dropped) and result (as sage_broker_call's) for reqs[i]. Returns the
 * first transport failure (negative), else 0. */
int sage_broker_call_many(SageBroker *b, SageMessage *reqs, size_t n, SageMessage *replies, int *reply_fds,
                          int *results, NotesSink *notes);
/* What sage_broker_last_error says next. */
void sage_broker_set_error(SageBroker *b, const char *format, ...) __attribute__((format(printf, 2, 3)));
