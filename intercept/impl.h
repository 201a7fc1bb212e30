/* The logic behind IMPL hooks (hooks.def): sage_impl_<name>(real, args...). */
#pragma once

#include "hooks.h"

CUresult sage_impl_cuGetProcAddress(sage_fn_cuGetProcAddress_t real, const char *symbol, void **pfn,
                                    int cudaVersion, cuuint64_t flags);
CUresult sage_impl_cuGetProcAddress_v2(sage_fn_cuGetProcAddress_v2_t real, const char *symbol, void **pfn,
                                       int cudaVersion, cuuint64_t flags, CUdriverProcAddressQueryResult *symbolStatus);
CUresult sage_impl_cuInit(sage_fn_cuInit_t real, unsigned int Flags);
