/*
 * An in-test driver for sharing's parts (intercept/share_*.c): VMM handles
 * as host buffers, a reserved address space, mappings that unmap whole
 * only and honour their access flags, kernels with described (or not)
 * parameters. No simulated libcuda, no threads: each test sees exactly the
 * driver calls a part makes.
 */
#pragma once

#include <cuda.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../intercept/stats.h"
#include "../../intercept/share_alloc.h"

#define FAKE_GRAN ((size_t)2 << 20)

/* A kernel: CUfunction is a pointer to one. nparams UINT32_MAX: the driver cannot describe it. */
typedef struct FakeKernel {
        const char *name;
        unsigned nparams;
        size_t size[8];
} FakeKernel;

typedef struct FakeState {
        int creates, releases, maps, unmaps, copies, syncs, accesses; /* calls seen */
        int fail_create_at;                       /* nonzero: the n-th create from now fails (out of memory) */
        int fail_access_at;                       /* nonzero: the n-th set_access from now fails */
        int fail_copy_at;                         /* nonzero: the n-th device copy from now fails */
        int live_handles;                         /* created or imported, not released */
        CUmemGenericAllocationHandle next_import; /* what import_fd gives (0: fails) */
        int bad_unmaps;                           /* unmaps of anything but a whole mapping */
        int bad_writes;                           /* device copies into read-only mappings */
        /* read-back (share_readback.c): async copies land only when their stream is synchronized */
        int dtoh_copies, dtoh_async, stream_syncs, streams_made, streams_live;
        int htod_copies, htod_async; /* uploads (a predicted run's image copied in: share_hint.c), on a stream */
        int stream_queries, queries_not_ready; /* cuStreamQuery: asked, and answered "not ready" (copies pending) */
        int unsynced_copies;                   /* async copies still pending when their stream was destroyed */
        bool fail_stream;                      /* stream_create fails */
        bool fail_alloc_host;                  /* alloc_host fails (pinned memory short) */
        int fail_stream_sync_at;               /* nonzero: the n-th stream synchronize from now fails */
        bool eager_copies; /* async copies land at once (else at the synchronize): either may happen */
        size_t import_len; /* nonzero: with no next_import, each import is a new handle of this many bytes */
                           /* FAKE_IMPORT_FD_SIZE: of as many bytes as the fd's file has (a memfd per extent) */
        int imports;
} FakeState;

#define FAKE_IMPORT_FD_SIZE SIZE_MAX

extern FakeState fake;
extern const SageShareDriver fake_driver;

/* Forget every handle and mapping; counters count from here. */
void fake_reset(void);
/* A counter of libsage's (stats.def) since the last fake_reset. */
uint64_t fake_stat(SageStat stat);
/* Live mappings and reserved ranges (address_free balances reserve). */
int fake_live_maps(void);
int fake_live_reservations(void);
/* A handle holding `len` bytes of `byte`, as the broker's extent would. */
CUmemGenericAllocationHandle fake_handle(size_t len, unsigned char byte);
/* The host bytes behind device address `va` (NULL: unmapped), and its access. */
unsigned char *fake_at(CUdeviceptr va, CUmemAccess_flags *access);
/* Fill / test [va, va+len) through the mappings. */
void fake_fill(CUdeviceptr va, size_t len, unsigned char byte);
bool fake_holds(CUdeviceptr va, size_t len, unsigned char byte);
/* Read [va, va+len) through the mappings, as no driver call (nothing counted). */
bool fake_read(CUdeviceptr va, size_t len, void *dst);
