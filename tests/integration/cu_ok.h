/*
 * The integration test programs' driver check (setup_test.c, share_test.c,
 * workload.c): a call that must succeed, or the program says which failed
 * and exits 3, which their check scripts tell apart from a wrong result.
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
