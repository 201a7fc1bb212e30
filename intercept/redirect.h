/* Context redirect: explicit contexts served by the warm primary context. */
#pragma once

#include <stdint.h>

#include "hooks.h"

typedef enum SageTrackOp {
        SAGE_TRACK_NONE = 0,
        SAGE_TRACK_CREATE,
        SAGE_TRACK_DESTROY,
} SageTrackOp;

typedef enum SageResource {
        SAGE_RESOURCE_DEVICE_MEMORY,
        SAGE_RESOURCE_HOST_MEMORY,
        SAGE_RESOURCE_IPC_MAPPING,
        SAGE_RESOURCE_MODULE,
        SAGE_RESOURCE_STREAM,
        SAGE_RESOURCE_EVENT,
        SAGE_RESOURCE_COUNT,
} SageResource;

typedef struct SageTrackInfo {
        SageTrackOp op;
        SageResource resource;
        unsigned arg; /* index of the traced argument holding the handle */
} SageTrackInfo;

extern const SageTrackInfo sage_track_table[SAGE_SYM_COUNT];

/* A tracked call succeeded while a redirected context is alive (hooks.c). */
void sage_redirect_track(SageSym sym, uint64_t handle);
