/*
 * Client side of the broker protocol, for libsage and sagectl.
 *
 * Every call is bounded in time: connecting and each request/reply exchange
 * wait at most the timeout given to sage_broker_connect(), so an application
 * never hangs on a stuck or dead broker; the caller then falls back to the
 * plain driver path. One connection may be shared by several threads (calls
 * are serialised by a mutex). A send to a dead broker never raises SIGPIPE.
 *
 * Returns: 0 on success; a positive SageProtoError the broker answered with
 * (SAGE_ERR_NOT_FOUND, SAGE_ERR_BUDGET, ...); a negative errno for transport
 * failures (-ETIMEDOUT, -ECONNREFUSED, -ENOENT, -EPIPE, -EPROTO). After a
 * negative return other than -ENOENT/-ECONNREFUSED from connect (or
 * -ENOBUFS from lookup_noted), treat the connection as broken: free it and
 * (later) reconnect.
 *
 * Extent fds received from lookups are read-only grants by contract: the fd
 * itself carries no protection, so the caller must map them with
 * CU_MEM_ACCESS_FLAGS_PROT_READ only (see daemon/README.md, "Security").
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

typedef struct SageBroker SageBroker;

/* The socket path: SAGE_SOCKET, else SAGE_DEFAULT_SOCKET_ROOT for root,
 * else $XDG_RUNTIME_DIR/sage/saged.sock (or /run/user/UID/sage/saged.sock). */
int sage_broker_default_socket(char *buf, size_t size);

/*
 * Connect (path NULL: the default), check who answers and say HELLO.
 * timeout_ms applies to the connect and, later, to every request. The
 * broker must run as root, as the caller's effective uid or as
 * SAGE_BROKER_UID (SO_PEERCRED): anyone else on the path is an impostor
 * (a user who bound it after saged stopped), and the call fails with
 * -EPERM without sending it a byte. -EUSERS: the broker refused the
 * connection over a connection cap. -EPROTONOSUPPORT: the broker speaks
 * another protocol version (`why` says which, where it said).
 */
int sage_broker_connect(SageBroker **out, const char *path, int timeout_ms);
/* sage_broker_connect, and on failure a sentence saying why into `why`. */
int sage_broker_connect_why(SageBroker **out, const char *path, int timeout_ms, char *why, size_t why_size);
SageBroker *sage_broker_free(SageBroker *broker);

/* What the broker said in reply to HELLO (features: what both speak; the
 * calls below never ask for more). */
const SageHelloReply *sage_broker_hello(const SageBroker *broker);
int sage_broker_fd(const SageBroker *broker);

int sage_broker_ping(SageBroker *broker);

/* A hit returns 0 with *extent_id and *fd_out (O_CLOEXEC; the caller owns
 * it and must map it PROT_READ only); a miss returns SAGE_ERR_NOT_FOUND. */
int sage_broker_lookup(SageBroker *broker, SageHash hash, uint64_t size, uint32_t device, uint64_t *extent_id,
                       int *fd_out);

/*
 * Many lookups at the price of about one round trip each SAGE_BROKER_PIPELINE
 * (32) of them (pipelined on the connection; a resume's re-map asks for every
 * parked extent at once; assembly keys every run first, then asks). Each
 * entry's result, extent_id and fd are as sage_broker_lookup's for its hash,
 * size and device; an entry with `notes` (notes_cap bytes) gets a hit's notes
 * there as sage_broker_lookup_noted's (-ENOBUFS when they do not fit: no
 * hit, its reference given back). Returns the first transport failure
 * (negative: the entries from there on carry it), else 0.
 */
typedef struct SageBrokerLookup {
        SageHash hash;
        uint64_t size;
        uint32_t device;
        void *notes; /* NULL: dropped */
        uint32_t notes_cap;
        int result;
        uint64_t extent_id;
        int fd;
        uint32_t notes_len;
} SageBrokerLookup;
int sage_broker_lookup_many(SageBroker *broker, SageBrokerLookup *lookups, size_t n);
/*
 * The same exchange spread over time: begin (the connection is this
 * caller's until end: no other request may be made on it meanwhile; NULL:
 * no memory), add each entry when its key is known (sent at once, read
 * later: the broker answers while the caller works on; an entry must stay
 * where it is until end; more than `max`: -ENOBUFS, not asked), end (every
 * entry added filled as sage_broker_lookup_many fills it; its return).
 */
typedef struct SageBrokerLookups SageBrokerLookups;
SageBrokerLookups *sage_broker_lookups_begin(SageBroker *broker, size_t max);
void sage_broker_lookups_add(SageBrokerLookups *lookups, SageBrokerLookup *entry);
int sage_broker_lookups_end(SageBrokerLookups *lookups);
/* Where the last pipelined exchange (lookup_many, lookups_end) waited. */
typedef struct SageBrokerWaits {
        uint64_t lock_ns;         /* for the connection's lock (another thread's exchange) */
        uint64_t first_answer_ns; /* from holding it to reading the first answer */
        uint64_t slowest_ns;      /* the longest wait for one answer */
        uint32_t slowest_at;      /* which one that was (0: the first) */
} SageBrokerWaits;
void sage_broker_many_waits(const SageBroker *broker, SageBrokerWaits *waits);

/* Offer an extent: `fd` is a POSIX-fd export of a cuMemCreate allocation of
 * exactly `size` bytes on `device`, already filled. The fd is not consumed.
 * On success the caller holds one reference on *extent_id (release it when
 * the mapping goes away); *existed tells if the broker already had it. */
int sage_broker_publish(SageBroker *broker, SageHash hash, uint64_t size, uint32_t device, uint32_t flags, int fd,
                        uint64_t *extent_id, int *existed);

/*
 * Notes (proto.h, "Notes"): an opaque blob of at most
 * SAGE_PROTO_NOTES_MAX bytes that a sealed extent carries for every later
 * looker-up of the namespace. publish_noted is publish plus `notes_len`
 * bytes of `notes`; they are stored only if this call creates the extent
 * (*existed 0): an extent already resident keeps the notes it has. Notes
 * over SAGE_PROTO_NOTES_MAX return SAGE_ERR_MALFORMED without asking the
 * broker (sage_broker_last_error says why).
 *
 * lookup_noted is lookup plus the extent's notes, copied into `notes`
 * (`notes_cap` bytes; NULL with 0 is fine) with their length in *notes_len
 * (0 for an extent published without notes). Notes larger than notes_cap
 * are never truncated: the call returns -ENOBUFS with no fd, the size
 * needed in *notes_len, and the reference the hit took already given back;
 * the connection stays usable. A buffer of SAGE_PROTO_NOTES_MAX bytes
 * always fits. Other returns as lookup (*notes_len 0). publish and lookup
 * are these without notes (a lookup drops the extent's).
 */
int sage_broker_publish_noted(SageBroker *broker, SageHash hash, uint64_t size, uint32_t device, uint32_t flags, int fd,
                              const void *notes, uint32_t notes_len, uint64_t *extent_id, int *existed);
/*
 * publish_noted under a key that is not the bytes' content key (libsage's
 * file-identity key): the broker verifies the bytes against `content`
 * (common/hash.h's content key) instead. A broker that did not offer
 * SAGE_FEATURE_CONTENT: SAGE_ERR_UNKNOWN_TYPE, nothing sent.
 */
int sage_broker_publish_content(SageBroker *broker, SageHash key, SageHash content, uint64_t size, uint32_t device,
                                uint32_t flags, int fd, const void *notes, uint32_t notes_len, uint64_t *extent_id,
                                int *existed);
int sage_broker_lookup_noted(SageBroker *broker, SageHash hash, uint64_t size, uint32_t device, uint64_t *extent_id,
                             int *fd_out, void *notes, uint32_t notes_cap, uint32_t *notes_len);
/*
 * lookup_noted that runs meanwhile(ctx) once between sending the LOOKUP and
 * reading its answer (also when the request could not be sent): work that
 * needs the answer of neither a hit nor a miss overlaps the broker's turn
 * (libsage makes the new backing around an upload's granules there).
 * The answer's time limit counts from after it.
 */
typedef void (*SageBrokerMeanwhile)(void *ctx);
int sage_broker_lookup_noted_meanwhile(SageBroker *broker, SageHash hash, uint64_t size, uint32_t device,
                                       uint64_t *extent_id, int *fd_out, void *notes, uint32_t notes_cap,
                                       uint32_t *notes_len, SageBrokerMeanwhile meanwhile, void *ctx);

int sage_broker_release(SageBroker *broker, uint64_t extent_id);
int sage_broker_stats(SageBroker *broker, SageStats *out);

/* One page of the extent list: entries with id > after_id, at most
 * SAGE_PROTO_LIST_MAX into `entries`. */
int sage_broker_list(SageBroker *broker, uint64_t after_id, SageListEntry *entries, uint32_t *n_entries, int *more);

/* flags: SAGE_EVICT_ALL_UNREFERENCED, or 0 to evict `extent_id`. */
int sage_broker_evict(SageBroker *broker, uint64_t extent_id, uint32_t flags, SageEvictReply *out);

/*
 * CUDA-IPC emulation (proto.h, "IPC_EXPORT"). ipc_export registers `fd` (a
 * POSIX-fd export of a VMM allocation of `size` bytes on `device`; not
 * consumed: the broker keeps its own copy) and returns the token. The
 * registration lasts until ipc_revoke on this connection, or until this
 * connection closes. ipc_import trades a token of the caller's namespace for
 * a new fd (O_CLOEXEC, the caller owns it) and what the exporter announced;
 * an unknown token, a revoked one and one of another namespace all return
 * SAGE_ERR_NOT_FOUND. ipc_revoke works only on this connection's own
 * registrations (else SAGE_ERR_NOT_FOUND); fds already imported stay valid.
 * Too many registrations: SAGE_ERR_LIMIT. A broker that did not offer
 * SAGE_FEATURE_IPC: SAGE_ERR_UNKNOWN_TYPE, nothing sent.
 */
int sage_broker_ipc_export(SageBroker *broker, int fd, uint64_t size, uint32_t device,
                           uint8_t token[SAGE_IPC_TOKEN_SIZE]);
int sage_broker_ipc_import(SageBroker *broker, const uint8_t token[SAGE_IPC_TOKEN_SIZE], int *fd_out, uint64_t *size,
                           uint32_t *device);
int sage_broker_ipc_revoke(SageBroker *broker, const uint8_t token[SAGE_IPC_TOKEN_SIZE]);

/* The name of platform label `label` (sage_namespace_label of a namespace
 * id) into `name`: 0, or SAGE_ERR_NOT_FOUND for a label the caller may not
 * see (proto.h, "LABEL"); a broker that did not offer SAGE_FEATURE_LABEL:
 * SAGE_ERR_UNKNOWN_TYPE, nothing sent. */
int sage_broker_label_name(SageBroker *broker, uint32_t label, char name[SAGE_PROTO_LABEL_MAX + 1]);

/*
 * Instances (proto.h, "Instances"; docs/suspend.md). instance_register
 * makes the calling process (as the broker sees this connection's peer) an
 * instance on the GPU of `uuid`; it stays one while this connection lives.
 * instances: one page (pid > after_pid) of the instances the caller may see.
 * suspend/resume: the broker checkpoints/restores instance `pid` and answers
 * once done (the connection's timeout must cover it); SAGE_ERR_NOT_FOUND for
 * a pid the caller may not see, SAGE_ERR_REFUSED (last_error says why),
 * SAGE_ERR_BUSY. A broker that did not offer SAGE_FEATURE_INSTANCES:
 * SAGE_ERR_UNKNOWN_TYPE, nothing sent.
 */
int sage_broker_instance_register(SageBroker *broker, const uint8_t uuid[16], uint32_t flags);
int sage_broker_instances(SageBroker *broker, uint32_t after_pid, SageInstancesReply *out);
int sage_broker_suspend(SageBroker *broker, uint32_t pid, SageInstanceOpReply *out);
int sage_broker_resume(SageBroker *broker, uint32_t pid, SageInstanceOpReply *out);

/*
 * The suspend gate (proto.h; docs/suspend.md, "Handshake"). The broker may
 * send notices of its own (SUSPEND_PREPARE, INSTANCE_RESUMED) at any time:
 * whoever reads the connection (a call waiting for its reply, or
 * sage_broker_pump) hands each to `fn`, under the connection's lock (so
 * `fn` must not call the broker: queue the work). Without a handler they
 * are dropped.
 *
 * instance_register_gate: instance_register with flag GATE and
 * `idle_suspend_ms`, when the broker offered SAGE_FEATURE_SUSPEND_GATE
 * (*gate says whether it did; else a plain registration).
 * notify: send a notice (INSTANCE_IDLE, ...); nothing comes back.
 * pump: read what has arrived, without waiting: 0, or -EPIPE once the
 * broker is gone (the connection is then closed).
 * instance_resume: INSTANCE_RESUME, waiting at most `timeout_ms`.
 */
typedef void (*SageBrokerNoticeFn)(void *userdata, const SageMessage *notice);
void sage_broker_on_notice(SageBroker *broker, SageBrokerNoticeFn fn, void *userdata);
int sage_broker_instance_register_gate(SageBroker *broker, const uint8_t uuid[16], uint32_t flags,
                                       uint32_t idle_suspend_ms, bool *gate);
int sage_broker_notify(SageBroker *broker, SageMessage *notice);
int sage_broker_pump(SageBroker *broker);
int sage_broker_instance_resume(SageBroker *broker, int timeout_ms, SageInstanceOpReply *out);

/*
 * Devices (proto.h, "Devices"): every `device` above is the broker's
 * ordinal. devices: the broker's table (entry i is its ordinal i), asked
 * once per connection and kept. device_of_uuid: the broker's ordinal of
 * the GPU `uuid`, if the broker serves it: 0, or SAGE_ERR_NOT_FOUND (not
 * in the table, or not served), SAGE_ERR_UNKNOWN_TYPE (the broker did not
 * offer SAGE_FEATURE_DEVICES), a negative transport error.
 */
int sage_broker_devices(SageBroker *broker, const SageDevicesReply **out);
int sage_broker_device_of_uuid(SageBroker *broker, const uint8_t uuid[16], uint32_t *device);

/* The message of the last ERROR reply ("" if none). */
const char *sage_broker_last_error(const SageBroker *broker);
