/*
 * The broker wire protocol: what libsage, sagectl and saged say to each other.
 *
 * Transport: a UNIX SOCK_SEQPACKET socket, one message per packet, file
 * descriptors (extent handles) passed as SCM_RIGHTS ancillary data.
 * Every message is a fixed 20-byte header followed by a typed payload, all
 * integers little-endian, encoded and decoded field by field (never by
 * casting structs onto the buffer), bounded by SAGE_PROTO_MAX_MESSAGE.
 *
 *   offset size  field
 *        0    4  magic          SAGE_PROTO_MAGIC ("SAGE" on the wire)
 *        4    2  version        SAGE_PROTO_VERSION
 *        6    2  type           SageMessageType (replies have bit 15 set)
 *        8    4  flags          per type; unknown bits must be zero
 *       12    4  request id     chosen by the client, echoed in the reply
 *       16    4  payload length bytes after the header
 *
 * Compatibility: a peer accepts exactly its own SAGE_PROTO_VERSION, and
 * every payload has one exact length; changing the layout of a message bumps
 * the version (2: HELLO's feature bits, STATS' records; 3: every device is
 * the broker's ordinal, which clients find by UUID through DEVICES (a
 * version-2 libsage sent its own ordinal), and notes folded into PUBLISH and
 * LOOKUP_REPLY, the NOTED twins gone). ERROR alone has the same layout in
 * every version from 2 on: a peer decodes an ERROR of any of them, and saged
 * answers a request of another version with an ERROR in that version
 * (SAGE_ERR_VERSION, naming both), so an older client can say why it was
 * refused, then hangs up. Within a version,
 * HELLO negotiates features (SAGE_FEATURE_*): the client offers what it
 * speaks, the broker answers what both do, and the client asks for nothing
 * outside that (proto.def names the feature each request needs); a client
 * whose broker lacks a feature uses the plain variant or does without, it
 * never fails the application. New request types come with a feature bit.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hash.h"

#define SAGE_PROTO_MAGIC 0x45474153u /* "SAGE" little-endian */
#define SAGE_PROTO_VERSION 3
/* The oldest version whose ERROR a peer can decode (ERROR's layout has not changed since). */
#define SAGE_PROTO_ERROR_VERSION_MIN 2
#define SAGE_PROTO_HEADER_SIZE 20
#define SAGE_PROTO_MAX_MESSAGE 65536
#define SAGE_PROTO_MAX_FDS 4
#define SAGE_PROTO_ERROR_MESSAGE_MAX 200
/* LIST replies are paged: at most this many entries per reply. */
#define SAGE_PROTO_LIST_MAX 512
#define SAGE_IPC_TOKEN_SIZE 16
/* Notes a sealed extent may carry (PUBLISH, LOOKUP_REPLY), at most. */
#define SAGE_PROTO_NOTES_MAX 32768
/* A platform label's name (LABEL_REPLY): 1 to this many bytes of [A-Za-z0-9._-]. */
#define SAGE_PROTO_LABEL_MAX 63

#define SAGE_MSG_REPLY_BIT 0x8000u

/* Every message type, from proto.def: requests and their replies. */
typedef enum SageMessageType {
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        SAGE_MSG_##NAME = NUMBER, SAGE_MSG_##REPLY_NAME = SAGE_MSG_REPLY_BIT | NUMBER,
#define SAGE_NOTICE(NAME, NUMBER, PAYLOAD, FLAGS, FDS, DIRECTION, FEATURE, HANDLER) SAGE_MSG_##NAME = NUMBER,
#include "proto.def"
#undef SAGE_NOTICE
#undef SAGE_MESSAGE
        SAGE_MSG_ERROR = SAGE_MSG_REPLY_BIT | 0x7fff,
} SageMessageType;

/*
 * Error codes: returned (positive) by the decoder, and carried by ERROR
 * replies. Stable on the wire: append only.
 */
typedef enum SageProtoError {
        SAGE_ERR_OK = 0,
        SAGE_ERR_MALFORMED = 1, /* bad lengths, truncated, nonzero reserved bits */
        SAGE_ERR_BAD_MAGIC = 2,
        SAGE_ERR_VERSION = 3, /* protocol version not spoken */
        SAGE_ERR_UNKNOWN_TYPE = 4,
        SAGE_ERR_TOO_LARGE = 5, /* over SAGE_PROTO_MAX_MESSAGE */
        SAGE_ERR_NOT_FOUND = 6, /* no such extent (in the caller's namespace) */
        SAGE_ERR_BUDGET = 7,    /* publishing would exceed the budget */
        SAGE_ERR_PERMISSION = 8,
        SAGE_ERR_DRIVER = 9,         /* the driver refused (import, export, map) */
        SAGE_ERR_BAD_FD = 10,        /* missing, extra, or unusable file descriptor */
        SAGE_ERR_SIZE_MISMATCH = 11, /* published handle is not the announced size */
        SAGE_ERR_BAD_DEVICE = 12,    /* device not served by this broker */
        SAGE_ERR_BUSY = 13,          /* extent referenced; cannot evict */
        SAGE_ERR_LIMIT = 14,         /* per-client limit reached */
        SAGE_ERR_INTERNAL = 15,
        SAGE_ERR_NO_DRIVER = 16, /* the broker runs without a CUDA driver */
        SAGE_ERR_REFUSED = 17,   /* the broker must not do this to that instance (the message says why) */
        _SAGE_ERR_MAX,
} SageProtoError;

const char *sage_proto_error_name(int code);
const char *sage_proto_type_name(unsigned type);

/* PUBLISH flags. */
#define SAGE_PUBLISH_SEALED 0x1u /* the publisher asserts the content is read-only from now on */
/* The key is not the content key (a file identity); the content key follows it (SAGE_FEATURE_CONTENT). */
#define SAGE_PUBLISH_CONTENT 0x2u
#define SAGE_PUBLISH_FLAGS_ALL (SAGE_PUBLISH_SEALED | SAGE_PUBLISH_CONTENT)
/* LIST entry flags, besides the SAGE_PUBLISH_* it was published with: the
 * broker has not yet checked its bytes against its key (a LOOKUP misses it). */
#define SAGE_LIST_UNVERIFIED 0x80000000u
/* EVICT flags. */
#define SAGE_EVICT_ALL_UNREFERENCED 0x1u
#define SAGE_EVICT_FLAGS_ALL SAGE_EVICT_ALL_UNREFERENCED

typedef struct SageHeader {
        uint32_t magic;
        uint16_t version;
        uint16_t type;
        uint32_t flags;
        uint32_t request_id;
        uint32_t payload_length;
} SageHeader;

/*
 * HELLO features: what a broker serves beyond the core requests. Bits are
 * stable on the wire (append only); a peer ignores bits it does not know.
 */
/* 0x1: version 2's NOTES (PUBLISH_NOTED, LOOKUP_NOTED); notes are part of PUBLISH and LOOKUP since 3. */
#define SAGE_FEATURE_CONTENT 0x2ull      /* PUBLISH flag CONTENT: a file-identity key, verified by content */
#define SAGE_FEATURE_STATS_SCOPED 0x4ull /* STATS answers about the caller's namespace (root on main: all) */
#define SAGE_FEATURE_IPC 0x8ull          /* IPC_EXPORT, IPC_IMPORT, IPC_REVOKE */
#define SAGE_FEATURE_LABEL 0x10ull       /* LABEL */
#define SAGE_FEATURE_INSTANCES 0x20ull   /* INSTANCE_REGISTER, INSTANCES, SUSPEND, RESUME */
#define SAGE_FEATURE_DEVICES 0x40ull     /* DEVICES: the broker's ordinals by GPU UUID */
/* INSTANCE_REGISTER flag GATE, INSTANCE_RESUME and the suspend handshake's notices (proto.def) */
#define SAGE_FEATURE_SUSPEND_GATE 0x80ull
#define SAGE_FEATURES_ALL                                                                           \
        (SAGE_FEATURE_CONTENT | SAGE_FEATURE_STATS_SCOPED | SAGE_FEATURE_IPC | SAGE_FEATURE_LABEL | \
         SAGE_FEATURE_INSTANCES | SAGE_FEATURE_DEVICES | SAGE_FEATURE_SUSPEND_GATE)

typedef struct SageHello {
        uint32_t client_version; /* SAGE_PROTO_VERSION of the client */
        uint32_t pid;            /* informational only: the broker trusts SO_PEERCRED */
        uint64_t features;       /* SAGE_FEATURE_* the client speaks */
} SageHello;

typedef struct SageHelloReply {
        uint32_t broker_version;
        uint32_t n_devices;    /* devices this broker serves */
        uint64_t namespace_id; /* assigned from the peer's credentials */
        uint64_t granularity;  /* VMM granularity extents must be a multiple of */
        uint64_t features;     /* SAGE_FEATURE_* both speak: the client's offer, less what the broker lacks */
} SageHelloReply;

typedef struct SageExtentKey {
        SageHash hash;
        uint64_t size;
        uint32_t device;
} SageExtentKey;

/*
 * Notes: an opaque blob (at most SAGE_PROTO_NOTES_MAX bytes) a publisher
 * attaches to a sealed extent and every later looker-up of the same
 * namespace receives (libsage records there what it learned while verifying
 * the content read-only). Sealed means immutable: the first publisher's
 * notes stay, later publishes of the same key change nothing. Offsets are
 * from the payload's start; K = 28, the SageExtentKey.
 *
 *   LOOKUP                       0 K key                            (28 bytes)
 *   LOOKUP_REPLY   + 1 fd on a hit
 *                                0 1 found, 1 8 extent id, 9 8 size, 17 4 notes_len, 21 notes_len bytes
 *   PUBLISH        + 1 fd        0 K key, K 4 notes_len, K+4 notes_len bytes
 *     with flag CONTENT          0 K key, K 16 content key (XXH3-128), K+16 4 notes_len, K+20 notes
 *   PUBLISH_REPLY                0 8 extent id, 8 1 existed         (9 bytes)
 *
 * A notes_len over SAGE_PROTO_NOTES_MAX or other than the bytes that follow
 * is SAGE_ERR_MALFORMED; so are notes on a LOOKUP_REPLY miss. An extent
 * published without notes (notes_len 0) answers LOOKUP with notes_len 0.
 */
typedef struct SageNotes {
        uint32_t length;
        const uint8_t *bytes; /* encode: the caller's; decode: points into the decoded buffer */
} SageNotes;

typedef struct SageLookupReply {
        uint8_t found; /* 1: an fd rides along; 0: a miss */
        uint64_t extent_id;
        uint64_t size;
        SageNotes notes; /* the extent's (none on a miss) */
} SageLookupReply;

typedef struct SagePublish {
        SageExtentKey key;
        SageHash content; /* with SAGE_PUBLISH_CONTENT: what the broker verifies the bytes against */
        SageNotes notes;  /* kept only by the publish that creates the extent */
} SagePublish;

typedef struct SagePublishReply {
        uint64_t extent_id;
        uint8_t existed; /* the key was already resident; the offered fd was dropped */
} SagePublishReply;

typedef struct SageStats {
        uint64_t extents;
        uint64_t bytes_resident;
        uint64_t budget;
        uint64_t hits;
        uint64_t misses;
        uint64_t clients;
        uint64_t refs;
        uint64_t publishes;
        uint64_t evictions;
        uint64_t rejected_budget;
        uint64_t uptime_ns;
        uint64_t rejected_content; /* published bytes that did not match their content key, dropped */
        uint64_t records;          /* per-namespace records the broker holds (root on the main socket only; else 0) */
} SageStats;

typedef struct SageListEntry {
        uint64_t id;
        uint64_t namespace_id;
        SageHash hash;
        uint64_t size;
        uint32_t device;
        uint32_t refs;
        uint32_t publisher_pid;
        uint32_t flags;   /* SAGE_PUBLISH_* as published */
        uint64_t idle_ns; /* time since last use (0 while referenced) */
} SageListEntry;

#define SAGE_PROTO_LIST_ENTRY_SIZE 64

typedef struct SageList {
        uint64_t after_id; /* entries with id > after_id */
} SageList;

typedef struct SageListReply {
        uint32_t n_entries;
        uint8_t more;           /* ask again with after_id = last id */
        SageListEntry *entries; /* decode: points into caller storage of SAGE_PROTO_LIST_MAX */
} SageListReply;

typedef struct SageEvict {
        uint64_t extent_id; /* ignored with SAGE_EVICT_ALL_UNREFERENCED */
} SageEvict;

typedef struct SageEvictReply {
        uint64_t evicted;
        uint64_t bytes;
} SageEvictReply;

/*
 * CUDA-IPC emulation: libsage backs allocations with VMM memory, on which the
 * driver refuses cuIpcGetMemHandle. Instead the exporter hands the broker a
 * POSIX-fd export of the allocation and gets an unguessable token (which it
 * puts into the CUipcMemHandle); an importer of the same namespace trades the
 * token for a duplicate of the fd. The broker only keeps the fd open: it
 * never imports it into the driver. Offsets are from the payload's start.
 *
 *   IPC_EXPORT        + 1 fd   0 8 size, 8 4 device              (12 bytes)
 *   IPC_EXPORT_REPLY           0 16 token                        (16 bytes)
 *   IPC_IMPORT                 0 16 token                        (16 bytes)
 *   IPC_IMPORT_REPLY  + 1 fd   0 8 size, 8 4 device              (12 bytes)
 *   IPC_REVOKE                 0 16 token                        (16 bytes)
 *   IPC_REVOKE_REPLY           (empty)
 *
 * The registration belongs to the exporting connection: only it may revoke,
 * and its disconnect (or death) drops all of its registrations. An unknown
 * token and one of another namespace both answer SAGE_ERR_NOT_FOUND, for
 * IMPORT and REVOKE alike; too many registrations answer SAGE_ERR_LIMIT.
 * Importers keep what they imported (the fd is theirs).
 */
typedef struct SageIpcToken {
        uint8_t bytes[SAGE_IPC_TOKEN_SIZE]; /* 128 random bits from getrandom() */
} SageIpcToken;

typedef struct SageIpcAllocation {
        uint64_t size;   /* a broker with a driver checks the handle is exactly this size */
        uint32_t device; /* the broker's ordinal (checked when it has a driver), relayed as is */
} SageIpcAllocation;

/*
 * Namespaces: label << 32 | uid. The uid comes from SO_PEERCRED; the label
 * (0: none) from the socket the client connected to, which only the
 * platform (root) configures (saged --label-socket). LABEL asks the name of
 * a label number, for display (sagectl list):
 *
 *   LABEL                      0 4 label                         (4 bytes)
 *   LABEL_REPLY                0 1 length, 1 length name         (2..64 bytes)
 *
 * The name is 1..SAGE_PROTO_LABEL_MAX bytes of [A-Za-z0-9._-] (anything
 * else is SAGE_ERR_MALFORMED). A label the caller may not see (another
 * tenant's, for everyone but root on the unlabelled socket), label 0 and an
 * unknown one all answer SAGE_ERR_NOT_FOUND.
 */
static inline uint32_t sage_namespace_label(uint64_t namespace_id) {
        return (uint32_t)(namespace_id >> 32);
}

static inline uint32_t sage_namespace_uid(uint64_t namespace_id) {
        return (uint32_t)namespace_id;
}

/* Label values from here up are containers the broker numbered (a client of
 * the unlabelled socket in another container than saged), not labels: they
 * have no name, container N is label SAGE_NAMESPACE_CONTAINER_FIRST + N. */
#define SAGE_NAMESPACE_CONTAINER_FIRST 0x80000000u

/* Is `name` (`length` bytes) a valid label name? */
bool sage_proto_label_valid(const char *name, size_t length);

typedef struct SageLabelReply {
        char name[SAGE_PROTO_LABEL_MAX + 1]; /* NUL-terminated */
} SageLabelReply;

/*
 * Instances (docs/suspend.md): a process that registers is an instance the
 * broker may suspend (checkpoint) and resume on an operator's request. The
 * broker knows it by the registering connection (SO_PEERCRED pid and a
 * pidfd), never by a pid it claims; its namespace is the connection's.
 *
 *   INSTANCE_REGISTER          0 16 device UUID                  (16 bytes)
 *     flags: SAGE_INSTANCE_*   what libsage knows makes it unsuspendable
 *     with flag GATE           0 16 UUID, 16 4 idle_suspend_ms   (20 bytes)
 *   INSTANCE_REGISTER_REPLY    (empty)
 *   INSTANCES                  0 4 after_pid                     (4 bytes)
 *   INSTANCES_REPLY            0 4 n, 4 1 more, then n entries of
 *                              SAGE_PROTO_INSTANCE_ENTRY_SIZE bytes (pid order)
 *   SUSPEND, RESUME            0 4 pid                           (4 bytes)
 *   SUSPEND_REPLY, RESUME_REPLY 0 4 state, 4 4 elapsed ms        (8 bytes)
 *
 * A pid the caller may not see (another namespace's, for everyone but
 * root on the main socket) and one that is no instance both answer
 * SAGE_ERR_NOT_FOUND. An instance the broker must not suspend answers
 * SAGE_ERR_REFUSED with the reason; one already being suspended or resumed,
 * or a resume over the broker's cap of concurrent resumes, SAGE_ERR_BUSY.
 * The reply to SUSPEND/RESUME comes once the driver is done.
 *
 * The suspend gate (SAGE_FEATURE_SUSPEND_GATE; docs/suspend.md, "Handshake"),
 * all on the instance's own registration connection:
 *   INSTANCE_IDLE, INSTANCE_ACTIVE   notices, empty: no call for idle_suspend_ms; a call again
 *   INSTANCE_FLAGS             notice, 0 4 flags learnt later (SAGE_INSTANCE_LATER)
 *   INSTANCE_RESUME            request, empty: resume me (a call found the gate closed)
 *   INSTANCE_RESUME_REPLY      as RESUME_REPLY, once restored and unlocked
 *   SUSPEND_PREPARE            broker -> client notice, empty; its request id is the handshake's
 *   SUSPEND_PREPARED           notice, 0 4 status, 4 4 why (SAGE_INSTANCE_WHY_*, status REFUSED)
 *   INSTANCE_RESUMED           broker -> client notice, 0 4 status, 4 4 0
 *   INSTANCE_REMAPPED          notice, 0 4 status, 4 4 0
 * PREPARED and REMAPPED echo the request id of the PREPARE / RESUMED they
 * answer; anything else (unasked, another connection, a stale id) is
 * ignored. Status is SAGE_GATE_*.
 */
#define SAGE_INSTANCE_KEEP_ALIVE 0x1u /* never suspend (the platform's choice) */
#define SAGE_INSTANCE_MULTI_GPU 0x2u  /* the process uses several GPUs */
#define SAGE_INSTANCE_MPS 0x4u        /* an MPS client */
#define SAGE_INSTANCE_MANAGED 0x8u    /* holds managed memory */
#define SAGE_INSTANCE_IPC 0x10u       /* CUDA IPC or shareable-handle export/import outside the broker */
#define SAGE_INSTANCE_GATE 0x20u      /* libsage's suspend gate: unmaps extents on SUSPEND_PREPARE */
/* Registering again after the broker restarted, while checkpointed: the
 * broker adopts it as SUSPENDED once the driver confirms (docs/suspend.md). */
#define SAGE_INSTANCE_CHECKPOINTED 0x40u
#define SAGE_INSTANCE_FLAGS_ALL                                                                           \
        (SAGE_INSTANCE_KEEP_ALIVE | SAGE_INSTANCE_MULTI_GPU | SAGE_INSTANCE_MPS | SAGE_INSTANCE_MANAGED | \
         SAGE_INSTANCE_IPC | SAGE_INSTANCE_GATE | SAGE_INSTANCE_CHECKPOINTED)
/* What INSTANCE_FLAGS may carry: what libsage learns after registering. */
#define SAGE_INSTANCE_LATER (SAGE_INSTANCE_MULTI_GPU | SAGE_INSTANCE_MANAGED | SAGE_INSTANCE_IPC)

/* Status of SUSPEND_PREPARED, INSTANCE_RESUMED, INSTANCE_REMAPPED. */
enum {
        SAGE_GATE_OK = 0,
        SAGE_GATE_BUSY = 1,    /* calls stayed in flight: the gate is open again */
        SAGE_GATE_REFUSED = 2, /* cannot be suspended (why says so); the gate is open again */
        SAGE_GATE_FAILED = 3,  /* unmapping, restoring or re-mapping failed */
        _SAGE_GATE_STATUS_MAX,
};
#define SAGE_PROTO_INSTANCES_MAX 32
#define SAGE_PROTO_INSTANCE_ENTRY_SIZE 80

/* Instance states (INSTANCES, SUSPEND/RESUME replies). */
enum {
        SAGE_INSTANCE_ACTIVE = 0,
        SAGE_INSTANCE_SUSPENDING = 1,
        SAGE_INSTANCE_SUSPENDED = 2,
        SAGE_INSTANCE_RESUMING = 3,
        SAGE_INSTANCE_FAILED = 4, /* a restore failed: the driver keeps the process stuck */
        _SAGE_INSTANCE_STATE_MAX,
};

/* Why an instance is not suspendable (a bit set; 0: it is). */
#define SAGE_INSTANCE_WHY_KEEP_ALIVE 0x1u
#define SAGE_INSTANCE_WHY_MULTI_GPU 0x2u
#define SAGE_INSTANCE_WHY_MPS 0x4u
#define SAGE_INSTANCE_WHY_MANAGED 0x8u
#define SAGE_INSTANCE_WHY_EXTENTS 0x10u   /* maps broker extents (imported memory cannot be restored) */
#define SAGE_INSTANCE_WHY_IPC 0x20u       /* CUDA IPC (SAGE's emulation): exports or imports */
#define SAGE_INSTANCE_WHY_SWITCH 0x40u    /* saged --suspend=off */
#define SAGE_INSTANCE_WHY_NO_DRIVER 0x80u /* the broker's driver has no checkpoint API */
/* Its checkpoint would pass its cgroup's memory.max (the memory policy). */
#define SAGE_INSTANCE_WHY_HOST_MEMORY 0x100u
#define SAGE_INSTANCE_WHY_ALL 0x1ffu
/* SageInstanceEntry.gpu_bytes when nobody could measure it (no NVML). */
#define SAGE_INSTANCE_BYTES_UNKNOWN UINT64_MAX
/* SageInstanceEntry.activity bits. */
#define SAGE_INSTANCE_ACTIVITY_IDLE 0x1u /* libsage reported it idle (INSTANCE_IDLE), nothing since */
#define SAGE_INSTANCE_ACTIVITY_ALL 0x1u

typedef struct SageInstanceEntry {
        uint32_t pid;
        uint32_t state; /* SAGE_INSTANCE_ACTIVE .. FAILED */
        uint64_t namespace_id;
        uint8_t uuid[16];    /* the device's, as cuDeviceGetUuid gives it */
        uint32_t flags;      /* SAGE_INSTANCE_* as registered */
        uint32_t why_not;    /* SAGE_INSTANCE_WHY_* (0: suspendable) */
        uint32_t suspend_ms; /* the last suspend's duration (0: none yet) */
        uint32_t resume_ms;  /* the last resume's */
        uint64_t gpu_bytes;  /* device memory in use (NVML; 0 while suspended; SAGE_INSTANCE_BYTES_UNKNOWN) */
        uint64_t idle_ns;    /* since the last state change */
        uint64_t host_bytes; /* host memory its checkpoint holds while suspended (0 otherwise) */
        uint32_t activity;   /* SAGE_INSTANCE_ACTIVITY_* */
        uint32_t reserved;   /* 0 */
} SageInstanceEntry;

typedef struct SageInstanceRegister {
        uint8_t uuid[16];
        uint32_t idle_suspend_ms; /* with flag GATE only: suspend after this long idle (0: never) */
} SageInstanceRegister;

typedef struct SageGateStatus {
        uint32_t status; /* SAGE_GATE_* */
        uint32_t why;    /* SUSPEND_PREPARED with REFUSED: SAGE_INSTANCE_WHY_*; else 0 */
} SageGateStatus;

typedef struct SageInstancesReply {
        uint32_t n_entries;
        uint8_t more; /* ask again with after_pid = last pid */
        SageInstanceEntry entries[SAGE_PROTO_INSTANCES_MAX];
} SageInstancesReply;

typedef struct SageInstanceOpReply {
        uint32_t state;
        uint32_t elapsed_ms;
} SageInstanceOpReply;

const char *sage_instance_state_name(unsigned state);
/* The first reason of `why` (SAGE_INSTANCE_WHY_*), in a few words ("" for 0). */
const char *sage_instance_why_name(uint32_t why);

/*
 * Devices: every `device` on the wire (LOOKUP, PUBLISH, LIST, IPC_*) is the
 * broker's ordinal, never the client's. A client sees its GPU under another
 * ordinal (CUDA_VISIBLE_DEVICES renumbers from 0; in a container its GPU is
 * device 0), so it asks the broker for its table and finds its own GPU in it
 * by UUID (libsage: no UUID in the table, no sharing on that GPU).
 *
 *   DEVICES                    (empty)
 *   DEVICES_REPLY              0 4 n, then n entries of SAGE_PROTO_DEVICE_ENTRY_SIZE
 *                              bytes (entry i is ordinal i): 0 16 UUID, 16 8 memory
 *                              (bytes), 24 4 flags (SAGE_DEVICE_*), 28 4 zero
 *
 * The table lists every device the broker's driver reports, served or not
 * (--devices), so that ordinals and UUIDs stay those of the driver; n is 0
 * for a broker without a driver.
 */
#define SAGE_PROTO_DEVICES_MAX 64
#define SAGE_PROTO_DEVICE_ENTRY_SIZE 32
#define SAGE_DEVICE_SERVED 0x1u /* the broker serves it: extents and IPC on it work */
#define SAGE_DEVICE_FLAGS_ALL SAGE_DEVICE_SERVED

typedef struct SageDeviceEntry {
        uint8_t uuid[16]; /* as cuDeviceGetUuid gives it */
        uint64_t memory;  /* total bytes (0 when not served) */
        uint32_t flags;   /* SAGE_DEVICE_* */
} SageDeviceEntry;

typedef struct SageDevicesReply {
        uint32_t n_devices;
        SageDeviceEntry devices[SAGE_PROTO_DEVICES_MAX];
} SageDevicesReply;

/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (as nvidia-smi -L and CUDA_VISIBLE_DEVICES write it) into buf (>= 41 bytes). */
#define SAGE_UUID_STRING_SIZE 41
const char *sage_uuid_format(const uint8_t uuid[16], char *buf, size_t size);
/* The other way ("GPU-" and 32 hex digits, dashes anywhere after it): 0, or -EINVAL. */
int sage_uuid_parse(const char *text, uint8_t uuid[16]);

typedef struct SageErrorReply {
        uint32_t code; /* SageProtoError */
        char message[SAGE_PROTO_ERROR_MESSAGE_MAX + 1];
} SageErrorReply;

typedef struct SageMessage {
        SageHeader header;
        union {
                SageHello hello;
                SageHelloReply hello_reply;
                SageExtentKey lookup;
                SageLookupReply lookup_reply; /* + an fd on a hit */
                SagePublish publish;          /* header.flags: SAGE_PUBLISH_*; + the fd */
                SagePublishReply publish_reply;
                uint64_t release; /* extent id */
                SageStats stats_reply;
                SageList list;
                SageListReply list_reply;
                SageEvict evict; /* header.flags: SAGE_EVICT_* */
                SageEvictReply evict_reply;
                SageIpcAllocation ipc_export; /* + the fd */
                SageIpcToken ipc_export_reply;
                SageIpcToken ipc_import;
                SageIpcAllocation ipc_import_reply; /* + a duplicate of the exported fd */
                SageIpcToken ipc_revoke;
                uint32_t label; /* LABEL: the label number (namespace id >> 32) */
                SageLabelReply label_reply;
                SageInstanceRegister instance_register; /* header.flags: SAGE_INSTANCE_* */
                uint32_t instances;                     /* INSTANCES: after_pid */
                SageInstancesReply instances_reply;
                uint32_t suspend; /* pid */
                SageInstanceOpReply suspend_reply;
                uint32_t resume; /* pid */
                SageInstanceOpReply resume_reply;
                SageDevicesReply devices_reply;
                SageInstanceOpReply instance_resume_reply;
                uint32_t instance_flags; /* SAGE_INSTANCE_LATER bits */
                SageGateStatus suspend_prepared;
                SageGateStatus instance_resumed;
                SageGateStatus instance_remapped;
                SageErrorReply error;
        };
} SageMessage;

/*
 * Encode `m` (header.type, flags, request_id taken from it; magic, version
 * and payload length filled in; an ERROR keeps a header.version of
 * SAGE_PROTO_ERROR_VERSION_MIN or later, to answer a peer of that version) into buf. Returns the message length, or
 * -ENOBUFS / -EINVAL.
 */
ssize_t sage_proto_encode(const SageMessage *m, void *buf, size_t size);

/*
 * Decode one message. Returns 0, or a positive SageProtoError for malformed
 * input; never reads outside [buf, buf+size). For LIST replies, `list_storage`
 * (SAGE_PROTO_LIST_MAX entries) receives the entries; it may be NULL
 * otherwise (a LIST reply then fails with SAGE_ERR_INTERNAL). Decoded notes
 * (PUBLISH, LOOKUP_REPLY) point into `buf`: copy them before reusing it.
 * Another version is SAGE_ERR_VERSION (header decoded, version in it),
 * except an ERROR, whose layout every version shares.
 */
int sage_proto_decode(const void *buf, size_t size, SageMessage *out, SageListEntry *list_storage);

/* How many fds a message of this type carries (requests and replies). */
size_t sage_proto_expected_fds(const SageMessage *m);
/* The HELLO feature a request or notice type needs (0: none; proto.def). */
uint64_t sage_proto_feature(unsigned type);
/* Is `type` a notice (proto.def's SAGE_NOTICE), and of which direction? */
bool sage_proto_notice_to_broker(unsigned type);
bool sage_proto_notice_to_client(unsigned type);

/* Convenience constructors. */
void sage_proto_init(SageMessage *m, unsigned type, uint32_t request_id);
void sage_proto_error(SageMessage *m, uint32_t request_id, int code, const char *format, ...)
        __attribute__((format(printf, 4, 5)));

/*
 * Socket helpers. Sends are MSG_NOSIGNAL (a dead peer never raises SIGPIPE
 * in the application). Receives use MSG_CMSG_CLOEXEC; fds beyond `max_fds`
 * and fds of truncated messages are closed, never leaked.
 *
 * sage_proto_send: returns 0, or negative errno (-EAGAIN on a non-blocking
 * socket whose peer is not reading).
 * sage_proto_recv: returns the message length, 0 at end of stream, negative
 * errno (-EMSGSIZE if truncated, -EBADMSG for bad ancillary data, or for
 * a zero-length message that carries fds: every fd received is closed or
 * handed over, on every path).
 * *n_fds receives the number of fds stored in fds[].
 */
int sage_proto_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds);
/* The same for any bytes, up to SAGE_PROTO_SENDMSG_FDS_MAX fds and with more
 * sendmsg flags (MSG_DONTWAIT): what a test that plays a hostile peer sends. */
#define SAGE_PROTO_SENDMSG_FDS_MAX 253 /* the kernel's SCM_MAX_FD */
int sage_proto_sendmsg(int sock, const void *buf, size_t len, const int *fds, size_t n_fds, int flags);
ssize_t sage_proto_recv(int sock, void *buf, size_t size, int *fds, size_t max_fds, size_t *n_fds);

/* Encode and send in one call. */
int sage_proto_send_message(int sock, const SageMessage *m, const int *fds, size_t n_fds);
