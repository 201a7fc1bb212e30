/*
 * The spool (saged --spool DIR): host files holding the bytes of the
 * extents suspended instances parked, so that a broker restarted while
 * they sleep can give them back (docs/suspend.md, "Failure paths").
 * Private to daemon/.
 */
#pragma once

#include <stdint.h>

#include "gpu.h"
#include "instances.h"

typedef struct Server Server;
typedef struct Spool Spool;

/* Default --spool-budget: host bytes the spool's extent files may take. */
#define SPOOL_DEFAULT_BUDGET (8ull << 30)

/*
 * Open (create, mode 0700) the spool directory, refusing one that others
 * than saged's user may write or that saged does not own; forget what
 * belongs to processes that are gone. 0 or -errno.
 */
int spool_open(Spool **out, const char *dir, uint64_t budget);
Spool *spool_close(Spool *spool);

typedef struct SpoolPlan SpoolPlan;
/* Loop, before the checkpoint of `in`: what is to be written for what it parked (NULL: nothing, or no room). */
SpoolPlan *spool_plan(Server *s, Instance *in);
/* Worker thread, after the checkpoint succeeded: write the plan's new extent files and the instance's list. */
void spool_plan_write(Gpu *gpu, SpoolPlan *plan);
/* Loop, at the operation's end: the instance (NULL if it went) keeps what was written if it is suspended,
 * else it goes. Frees the plan. */
void spool_plan_finish(Server *s, Instance *in, SpoolPlan *plan, bool suspended);
/* A previous broker's instance was adopted: load and pin what its list names. */
void spool_instance_adopted(Server *s, Instance *in);
/* The instance runs again, or went: its list goes, and extent files nobody else lists. */
void spool_instance_forget(Server *s, Instance *in);
/* saged shuts down: keep the files (a restarted broker needs them), free the memory. */
void spool_instance_drop(Instance *in);

/* gpu_spool.c: an extent's bytes to `fd` (0 or -errno), and a new extent from `fd` that must hash to `want`
 * (0 or a SageProtoError). */
int gpu_extent_save(Gpu *gpu, const GpuExtent *extent, int fd);
int gpu_extent_load(Gpu *gpu, uint32_t device, int fd, uint64_t size, SageHash want, GpuExtent **out);
