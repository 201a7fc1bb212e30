/* The logic behind IMPL hooks (hooks.def): sage_impl_<name>(real, args...). */
#pragma once

#include "hooks.h"

CUresult sage_impl_cuGetProcAddress(sage_fn_cuGetProcAddress_t real, const char *symbol, void **pfn,
                                    int cudaVersion, cuuint64_t flags);
CUresult sage_impl_cuGetProcAddress_v2(sage_fn_cuGetProcAddress_v2_t real, const char *symbol, void **pfn,
                                       int cudaVersion, cuuint64_t flags, CUdriverProcAddressQueryResult *symbolStatus);
CUresult sage_impl_cuInit(sage_fn_cuInit_t real, unsigned int Flags);
CUresult sage_impl_cuCtxCreate_v2(sage_fn_cuCtxCreate_v2_t real, CUcontext *pctx, unsigned int flags, CUdevice dev);
CUresult sage_impl_cuCtxCreate_v3(sage_fn_cuCtxCreate_v3_t real, CUcontext *pctx, CUexecAffinityParam *paramsArray,
                                  int numParams, unsigned int flags, CUdevice dev);
CUresult sage_impl_cuCtxCreate_v4(sage_fn_cuCtxCreate_v4_t real, CUcontext *pctx, CUctxCreateParams *params,
                                  unsigned int flags, CUdevice dev);
CUresult sage_impl_cuCtxDestroy_v2(sage_fn_cuCtxDestroy_v2_t real, CUcontext ctx);
CUresult sage_impl_cuDevicePrimaryCtxReset(sage_fn_cuDevicePrimaryCtxReset_t real, CUdevice dev);
CUresult sage_impl_cuDevicePrimaryCtxReset_v2(sage_fn_cuDevicePrimaryCtxReset_v2_t real, CUdevice dev);
CUresult sage_impl_cuMemAlloc_v2(sage_fn_cuMemAlloc_v2_t real, CUdeviceptr *dptr, size_t bytesize);
CUresult sage_impl_cuMemFree_v2(sage_fn_cuMemFree_v2_t real, CUdeviceptr dptr);
CUresult sage_impl_cuMemcpyHtoD_v2(sage_fn_cuMemcpyHtoD_v2_t real, CUdeviceptr dst, const void *src, size_t bytes);
CUresult sage_impl_cuMemcpyHtoD_v2_ptds(sage_fn_cuMemcpyHtoD_v2_ptds_t real, CUdeviceptr dst, const void *src,
                                        size_t bytes);
