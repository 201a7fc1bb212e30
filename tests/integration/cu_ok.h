/*
 * The integration test programs' driver check (setup_test.c, share_test.c,
 * workload.c): a call that must succeed, or the program says which failed
 * and exits 3, which their check scripts tell apart from a wrong result.
 * Their common start, device 0's primary context current, through the entry
 * points each reaches the driver by (linked, or its own dlsym'd table).
 */
#pragma once

#include <cuda.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define OK(call)                                                                                               \
        do {                                                                                                   \
                CUresult r_ = (call);                                                                          \
                if (r_ != CUDA_SUCCESS) {                                                                      \
                        fprintf(stderr, "%s: %s failed: %d\n", program_invocation_short_name, #call, (int)r_); \
                        exit(3);                                                                               \
                }                                                                                              \
        } while (0)

static inline CUdevice ok_primary_context(CUresult (*init)(unsigned), CUresult (*device_get)(CUdevice *, int),
                                          CUresult (*retain)(CUcontext *, CUdevice),
                                          CUresult (*set_current)(CUcontext)) {
        CUdevice dev;
        CUcontext primary;

        OK(init(0));
        OK(device_get(&dev, 0));
        OK(retain(&primary, dev));
        OK(set_current(primary));
        return dev;
}
