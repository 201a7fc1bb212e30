/*
 * A stand-in for a framework's CUDA library (libtorch_cuda, a jaxlib plugin):
 * its name says nothing of CUDA, but it links the driver, so loading it
 * brings libcuda.so.1 in as a dependency. setup_test dlopen()s it and looks
 * up its entry point, as Python imports an extension module.
 */
#include <cuda.h>

__attribute__((visibility("default"))) int framework_entry(void);

int framework_entry(void) {
        int version = 0;

        /* A reference to the driver, so the link keeps libcuda.so.1 as needed. */
        return cuDriverGetVersion(&version) == CUDA_SUCCESS ? version : -1;
}
