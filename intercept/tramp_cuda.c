/* cuda.h as the driver itself is built: every exported name declared (tramp_gen.py reads it preprocessed). */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
