/*
 * Answers asked ahead (share_ahead.c): the keys the program's last
 * invocation hit, from its hints (share_hint.h), asked of the broker
 * before the uploads that will need them, many to a round trip, and on
 * the warm-up thread imported too; an upload whose key is one of them
 * then maps its extent with no round trip or import of its own.
 * Predicted remap (share_predict.c) takes its allocations' answers here.
 */
#pragma once

#include <cuda.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "share_state.h"

/* A key and the broker's answer: a hit's extent (a reference ours), its fd or handle, its notes (a copy). */
typedef struct ShareAnswer {
        SageHash key;
        uint64_t len, id;
        uint32_t device;
        int fd;                              /* >= 0: a hit not taken yet, not imported */
        bool imported;                       /* a hit imported ahead: `handle` (fd -1), not taken yet */
        CUmemGenericAllocationHandle handle; /* when imported */
        bool asked, taken;
        bool importing; /* by the warm-up thread now, its fd in use: nobody else takes it */
        void *notes;
        uint32_t notes_len;
} ShareAnswer;

/* Ask for the keys of ans[0..n), a window at a time: each gets its answer (asked set). Under the lock. */
void share_ahead_ask(SageShare *s, ShareAnswer *ans, size_t n);
/*
 * Every key the hints hold (`whole_only`: not assembled runs), up to a
 * quarter of the app's fd limit (each hit holds an fd until imported or
 * taken), asked now on `device`; kept until the first launch or API write
 * (share_ahead_drop), `whole_only` ones until suspended or exit. Once per
 * process. Under the lock.
 */
void share_ahead_ask_hints(SageShare *s, uint32_t device, bool whole_only);
/* The answer asked ahead for (key, len) on `device`, now the caller's (hit or not); NULL: not asked. Under the lock. */
ShareAnswer *share_ahead_find(SageShare *s, SageHash key, uint64_t len, uint32_t device);
/* Give back an answer's hit nobody took: its fd or handle, its reference, its notes. Under the lock. */
void share_ahead_drop_answer(SageShare *s, ShareAnswer *x);
/*
 * An upload's whole granules [p->off, +p->len) have key p->key: a hit asked
 * ahead for it (the hints' keys asked at the first such upload if nobody
 * did; never one the warm-up thread imports now) becomes p's extent: true
 * with p->extent_id and notes set and *fd to import, or *fd -1 and
 * p->handle imported; false: none (the caller asks the broker). Under the lock.
 */
bool share_ahead_take(SageShare *s, Piece *p, uint32_t device, int *fd);
