/* The launch guard of sharing and the notes it publishes uses with (share_guard.c). */
#pragma once

#include <cuda.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "share_alloc.h"

#define SAGE_SHARE_NOTES_MAX 32768
#define SHARE_GUARD_LAYOUT_SLOTS 16384

/* The parameter layout of one kernel, as the driver describes it. */
typedef struct ShareLayout {
        const void *func; /* CUfunction or CUkernel, as launched */
        uint64_t name;    /* hash of the kernel's name */
        unsigned n;       /* UINT32_MAX: the driver cannot tell */
        uint32_t *offset, *size;
} ShareLayout;

/* The guard part of sharing: kernel layouts, open addressing (the caller serializes). */
typedef struct ShareGuard {
        ShareLayout layouts[SHARE_GUARD_LAYOUT_SLOTS];
        size_t nlayouts;
} ShareGuard;

/* Can the driver describe kernel parameters (cuFuncGetParamInfo, cuFuncGetName)? */
bool share_guard_available(const SageShareDriver *drv);
/* When the guard may make a piece private: the context synchronize it takes breaks any open capture. */
typedef enum ShareGuardWhen {
        SHARE_GUARD_NOW,      /* no capture open */
        SHARE_GUARD_DEFER,    /* another stream captures: the piece is marked private_due instead */
        SHARE_GUARD_CAPTURED, /* the launch is captured (it runs with its graph): due, and its uses kept */
} ShareGuardWhen;
/*
 * A launch of `f` with `params` (or the buffer of `extra`): record the uses
 * of candidate pieces, privatize shared pieces used in a way their notes
 * do not allow (every shared piece, when the layout is unknown), or while a
 * capture is open mark them private_due: making one private synchronizes
 * the context, which the driver refuses while any capture is open and which
 * breaks it. A captured launch's uses are kept (share_guard_due_over).
 */
void share_guard_scan(ShareGuard *g, ShareVmm *v, CUfunction f, void **params, void **extra, ShareGuardWhen when);
/*
 * Make every private_due piece private (SHARE_GUARD_UNSHARED each): when
 * the last capture ends, and before a launch or a graph call (its launch
 * too) made while none is open. One whose privatization fails or that is
 * parked stays due.
 */
void share_guard_settle(ShareVmm *v);
/*
 * Is shared piece `with`, about to replace the pieces [i0, i1) of `a`, due
 * at once? So when one of those was due, or a use a captured launch made of
 * its range (its graph may run any time; graphs are not scanned when they
 * are launched) is not among its notes.
 */
bool share_guard_due_over(const SageShareAlloc *a, size_t i0, size_t i1, const Piece *with);

/* A use a captured launch made of an allocation: where, and what (share_guard.c's use key). */
typedef struct ShareGraphUse {
        size_t off;
        uint64_t key;
} ShareGraphUse;
#define SHARE_GUARD_GRAPH_USES 1024
/* Free the layouts the guard learned. */
void share_guard_clear(ShareGuard *g);

/* The notes a candidate is published with (malloc'ed; NULL: none), and their use on a mapped piece. */
void *share_notes_build(const Piece *p, uint32_t *len);
void share_notes_apply(Piece *p, const void *notes, uint32_t len);
