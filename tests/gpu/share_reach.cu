/*
 * Deferred backing's other ways into memory, on the real driver
 * (docs/sharing.md "Deferred backing"; scripts/gpu-test.sh runs it natively
 * and twice under SAGE_SHARE=1 with a broker). After a first kernel, each
 * buffer is cudaMalloc'd and reached first by one of: what Triton's launcher
 * does before every launch (cuPointerGetAttribute DEVICE_POINTER of each
 * argument; it refuses a pointer the driver does not answer for), then the
 * launch; cuPointerGetAttributes (CuPy, DLPack); cuStreamWriteValue32;
 * cuStreamBatchMemOp (two writes, then a wait for the first). Then weights
 * are uploaded, freed (published) and uploaded again (mapped on the second
 * run), then written by a stream write and a batch: they must turn private
 * first. stdout: what each found, checksums.
 */
#define SAGE_GPU_NEED_DRIVER
#include "gpu_check.h"
#include "gpu_checksum.cuh"

#define BYTES (64ull << 20)

static unsigned word_at(CUdeviceptr p) {
        unsigned v = 0;
        RT_CHECK(cudaDeviceSynchronize());
        RT_CHECK(cudaMemcpy(&v, (void *)p, sizeof(v), cudaMemcpyDeviceToHost));
        return v;
}

static void batch_write(CUdeviceptr p, unsigned v) {
        CUstreamBatchMemOpParams ops[3] = {};

        ops[0].writeValue.operation = CU_STREAM_MEM_OP_WRITE_VALUE_32;
        ops[0].writeValue.address = p;
        ops[0].writeValue.value = v;
        ops[1].writeValue.operation = CU_STREAM_MEM_OP_WRITE_VALUE_64;
        ops[1].writeValue.address = p + 8;
        ops[1].writeValue.value64 = (unsigned long long)v << 32 | v;
        ops[2].waitValue.operation = CU_STREAM_MEM_OP_WAIT_VALUE_32;
        ops[2].waitValue.address = p;
        ops[2].waitValue.value = v;
        ops[2].waitValue.flags = CU_STREAM_WAIT_VALUE_EQ;
        CU_CHECK(cuStreamBatchMemOp(0, 3, ops, 0));
}

int main(void) {
        CUpointer_attribute attrs[] = { CU_POINTER_ATTRIBUTE_DEVICE_POINTER, CU_POINTER_ATTRIBUTE_MEMORY_TYPE };
        unsigned long long *host, *d_out;
        void *d, *q, *qs, *w, *b, *weights;
        CUdeviceptr dp = 0, dps = 0;
        unsigned type = 0;
        void *data[] = { &dps, &type };

        RT_CHECK(cudaSetDevice(0));
        RT_CHECK(cudaMallocHost((void **)&host, BYTES));
        fill_words(host, BYTES, 5);
        RT_CHECK(cudaMalloc((void **)&d_out, sizeof(*d_out)));
        RT_CHECK(cudaMalloc(&d, BYTES));
        RT_CHECK(cudaMemset(d, 1, BYTES));
        printf("first launch %016llx\n", sum_of(d, BYTES, d_out));

        RT_CHECK(cudaMalloc(&q, BYTES)); /* Triton: the query, then the launch */
        CU_CHECK(cuPointerGetAttribute(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, (CUdeviceptr)q + 8));
        RT_CHECK(cudaMemset(q, 2, BYTES));
        printf("triton query %d %016llx\n", dp == (CUdeviceptr)q + 8, sum_of(q, BYTES, d_out));
        RT_CHECK(cudaMalloc(&qs, BYTES));
        CU_CHECK(cuPointerGetAttributes(2, attrs, data, (CUdeviceptr)qs + 8));
        printf("attributes %d %u\n", dps == (CUdeviceptr)qs + 8, type);
        RT_CHECK(cudaMalloc(&w, BYTES));
        CU_CHECK(cuStreamWriteValue32(0, (CUdeviceptr)w + 64, 0x5a5a1234u, 0));
        printf("write value %08x\n", word_at((CUdeviceptr)w + 64));
        RT_CHECK(cudaMalloc(&b, BYTES));
        batch_write((CUdeviceptr)b + 128, 0x77u);
        printf("batch %08x %08x\n", word_at((CUdeviceptr)b + 128), word_at((CUdeviceptr)b + 140));

        /* Published at its free (unwritten): the second run maps it, and the same bytes again below. */
        RT_CHECK(cudaMalloc(&weights, BYTES));
        RT_CHECK(cudaMemcpy(weights, host, BYTES, cudaMemcpyHostToDevice));
        printf("weights %016llx\n", sum_of(weights, BYTES, d_out));
        RT_CHECK(cudaFree(weights));
        RT_CHECK(cudaMalloc(&weights, BYTES));
        RT_CHECK(cudaMemcpy(weights, host, BYTES, cudaMemcpyHostToDevice));
        CU_CHECK(cuStreamWriteValue32(0, (CUdeviceptr)weights + 64, 0x5a5a1234u, 0));
        batch_write((CUdeviceptr)weights + BYTES / 2, 0x99u);
        RT_CHECK(cudaDeviceSynchronize());
        printf("written weights %016llx\n", sum_of(weights, BYTES, d_out));

        for (void *p : { d, q, qs, w, b, weights, (void *)d_out })
                RT_CHECK(cudaFree(p));
        RT_CHECK(cudaFreeHost(host));
        return 0;
}
