/* IPC_EXPORT's check that an fd is a CUDA shareable handle worth registering. */
#pragma once

#include "gpu.h"
#include "proto.h"

/* 0, or a positive SageProtoError (BAD_FD, SIZE_MISMATCH, BAD_DEVICE) with
 * *why saying what was wrong. `gpu` may be NULL (no driver: file type only).
 * The fd is not consumed. */
int ipc_handle_check(Gpu *gpu, int fd, const SageIpcAllocation *allocation, const char **why);
