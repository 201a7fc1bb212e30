/*
 * An extent's bytes to a file and back (instance_spool.c): what lets a
 * restarted broker give a suspended instance back the extents it parked.
 * Both go through a mapping of the broker's own and a host buffer of one
 * content-key chunk, so loading hashes each chunk as it goes and an extent
 * whose bytes do not match its key is never created (a spool file is the
 * broker's, mode 0600, but a disk can still return garbage).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "gpu.h"
#include "gpu_driver.h"
#include "instance_spool.h"
#include "log.h"
#include "proto.h"

/* All of `n` bytes through read or write (`io`), retried on EINTR and short counts. */
static bool transfer_all(ssize_t (*io)(int, void *, size_t), int fd, uint8_t *p, size_t n) {
        while (n > 0) {
                ssize_t k = io(fd, p, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return false;
                p += k;
                n -= (size_t)k;
        }
        return true;
}

static ssize_t write_io(int fd, void *p, size_t n) {
        return write(fd, p, n);
}

int gpu_extent_save(Gpu *g, const GpuExtent *x, int fd) {
        uint8_t *buf = malloc(SAGE_CONTENT_KEY_BLOCK);
        CUdeviceptr va = 0;
        CUresult r = CUDA_ERROR_OUT_OF_MEMORY;
        int e = -EIO;

        if (buf && g->cu.cuCtxSetCurrent(g->context[x->device]) == CUDA_SUCCESS)
                r = sage_vmm_map_new(&g->vmm, x->size, (int)x->device, x->handle, CU_MEM_ACCESS_FLAGS_PROT_READ, &va);
        for (uint64_t done = 0; r == CUDA_SUCCESS && done < x->size;) {
                size_t n = x->size - done < SAGE_CONTENT_KEY_BLOCK ? x->size - done : SAGE_CONTENT_KEY_BLOCK;
                r = g->cu.cuMemcpyDtoH(buf, va + done, n);
                if (r == CUDA_SUCCESS && !transfer_all(write_io, fd, buf, n)) {
                        e = errno ? -errno : -EIO;
                        r = CUDA_ERROR_UNKNOWN;
                        break;
                }
                done += n;
                if (done == x->size)
                        e = 0;
        }
        if (r != CUDA_SUCCESS && e == -EIO)
                sage_warn("spool: reading extent bytes back failed: %s", gpu_error_name(g, r));
        if (va)
                sage_vmm_unmap_free(&g->vmm, va, x->size);
        free(buf);
        return e;
}

int gpu_extent_load(Gpu *g, uint32_t device, int fd, uint64_t size, SageHash want, GpuExtent **out) {
        CUmemAllocationProp prop = sage_vmm_prop((int)device);
        size_t n_chunks = sage_content_key_nchunks(size);
        SageHash *chunks = calloc(n_chunks ? n_chunks : 1, sizeof(*chunks));
        uint8_t *buf = malloc(SAGE_CONTENT_KEY_BLOCK);
        GpuExtent *x = calloc(1, sizeof(*x));
        CUdeviceptr va = 0;
        CUresult r;
        int e = SAGE_ERR_DRIVER;

        if (!chunks || !buf || !x) {
                e = SAGE_ERR_INTERNAL;
                goto out;
        }
        *x = (GpuExtent){ .device = device, .size = size, .fd = -1 };
        if (!gpu_serves(g, device) || !g->cu.cuMemcpyHtoD) {
                e = SAGE_ERR_BAD_DEVICE;
                goto out;
        }
        r = g->cu.cuCtxSetCurrent(g->context[device]);
        if (r == CUDA_SUCCESS)
                r = g->cu.cuMemCreate(&x->handle, size, &prop, 0);
        if (r == CUDA_SUCCESS)
                r = sage_vmm_map_new(&g->vmm, size, (int)device, x->handle, CU_MEM_ACCESS_FLAGS_PROT_READWRITE, &va);
        for (uint64_t done = 0; r == CUDA_SUCCESS && done < size; done += SAGE_CONTENT_KEY_BLOCK) {
                size_t n = size - done < SAGE_CONTENT_KEY_BLOCK ? size - done : SAGE_CONTENT_KEY_BLOCK;
                if (!transfer_all(read, fd, buf, n)) {
                        e = SAGE_ERR_INTERNAL;
                        r = CUDA_ERROR_UNKNOWN;
                        break;
                }
                sage_content_key_chunks(buf, n, &chunks[done / SAGE_CONTENT_KEY_CHUNK]);
                r = g->cu.cuMemcpyHtoD(va + done, buf, n);
        }
        if (r == CUDA_SUCCESS && !sage_hash_equal(sage_content_key_combine(chunks, n_chunks), want)) {
                sage_warn("spool: an extent's bytes do not match its content key; not loaded");
                e = SAGE_ERR_INTERNAL;
                r = CUDA_ERROR_INVALID_VALUE;
        }
        if (r == CUDA_SUCCESS)
                r = g->cu.cuMemExportToShareableHandle(&x->fd, x->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
        if (va)
                sage_vmm_unmap_free(&g->vmm, va, size);
        if (r == CUDA_SUCCESS && x->fd >= 0) {
                (void)fcntl(x->fd, F_SETFD, FD_CLOEXEC);
                *out = x;
                x = NULL;
                e = 0;
        }
out:
        if (x) {
                if (x->handle)
                        g->cu.cuMemRelease(x->handle);
                if (x->fd >= 0)
                        close(x->fd);
                free(x);
        }
        free(buf);
        free(chunks);
        return e;
}
