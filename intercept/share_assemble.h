/* Assembly: keying what no single upload covers whole (share_assemble.c). */
#pragma once

#include "share_state.h"

/*
 * Granules that uploads filled in part (or several uploads together) are
 * keyed by their content before anything else writes them: called before a
 * launch or an API write while s->vmm.pending. Takes the lock.
 */
void share_assemble(SageShare *s);
