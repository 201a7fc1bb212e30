/* A module image in a shared object, loaded by the tests through
 * cuModuleLoad(path) and cuLibraryLoadFromFile(path). */
#include <stddef.h>

#include "fakecuda.h"

/* scale(float *data, unsigned n, float factor) */
static void scale(const FakeKernelLaunch *launch, void **params) {
        float *data = *(float **)params[0];
        unsigned n = *(unsigned *)params[1];
        float factor = *(float *)params[2];
        for (unsigned i = 0; i < n; i++)
                data[i] *= factor;
}

static const size_t scale_params[] = { sizeof(float *), sizeof(unsigned), sizeof(float), 0 };

static const FakeKernelEntry kernels[] = {
        { "scale", scale, scale_params },
};

__attribute__((visibility("default"))) const FakeModuleImage fakecuda_module_image = {
        FAKECUDA_IMAGE_MAGIC,
        1,
        kernels,
};
