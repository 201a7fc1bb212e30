/* fake_export.c: cuGetExportTable's one private table (fakecuda.h).
 *
 * The real driver hands cudart undocumented tables of its own functions by
 * UUID; their first word is the table's size in bytes. This one has that
 * shape, so an interposer that wraps tables (SAGE's trampolines) can be
 * tested: two functions that pass the checkpoint gate as every entry point
 * does, a data word an interposer must leave alone, and `hold`, a call
 * that stays in flight until its test says (a drain must wait for it). Any other UUID:
 * CUDA_ERROR_NOT_SUPPORTED, which cudart copes with for optional tables.
 */
#include "fake_internal.h"

#include <string.h>
#include <unistd.h>

#include "fakecuda.h"

static double export_checksum(long a, long b, long c, long d, long e, long f, double x0, double x1, double x2,
                              double x3, double x4, double x5, double x6, double x7, long s0) {
        FAKE_GATE();
        return (double)(a * 1 + b * 3 + c * 5 + d * 7 + e * 11 + f * 13) + x0 * 17 + x1 * 19 + x2 * 23 + x3 * 29 +
               x4 * 31 + x5 * 37 + x6 * 41 + x7 * 43 + (double)s0 * 47;
}

static int export_device_count(int *count) {
        FAKE_GATE();
        return cuDeviceGetCount(count);
}

static int export_hold(int fd) {
        unsigned char byte = 'H';

        FAKE_GATE();
        if (write(fd, &byte, 1) != 1 || read(fd, &byte, 1) != 1)
                return -1;
        return byte;
}

static const unsigned export_data = 0x5a6e;

static const FakecudaExportTable export_table = {
        .size = sizeof(FakecudaExportTable),
        .checksum = export_checksum,
        .device_count = export_device_count,
        .data = &export_data,
        .hold = export_hold,
};

FAKE_EXPORT const FakecudaExportTable *fakecudaExportTable(void) {
        return &export_table;
}

/* Not gated: it never reaches the GPU (check_gates.py). */
FAKE_EXPORT CUresult cuGetExportTable(const void **ppExportTable, const CUuuid *pExportTableId) {
        static const unsigned char id[16] = FAKECUDA_EXPORT_TABLE_ID;

        if (!ppExportTable || !pExportTableId)
                return CUDA_ERROR_INVALID_VALUE;
        if (memcmp(pExportTableId->bytes, id, sizeof(id)) != 0) {
                *ppExportTable = NULL;
                return CUDA_ERROR_NOT_SUPPORTED;
        }
        *ppExportTable = &export_table;
        return CUDA_SUCCESS;
}
