/* Sharing-based memory, client side (experimental, SAGE_SHARE=1). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "hooks.h"

/* Is `va` the start of an allocation SAGE's VMM allocator backs? Frees it if so. */
bool sage_share_free(CUdeviceptr va, CUresult *result);
