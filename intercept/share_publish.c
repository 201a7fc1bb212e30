/*
 * The publisher of sharing: read-only is learned, not assumed. A candidate
 * (a piece one upload filled, or an assembled run) is read back and hashed
 * when its allocation is freed or the process exits; only if it still holds
 * what was uploaded does it go to the broker, with the kernel-parameter
 * uses the launch guard saw as its notes. The broker verifies the bytes
 * against the content key again and copies them into memory of its own.
 */
#include "share_publish.h"

#include <stdlib.h>
#include <unistd.h>

#include "share_guard.h"
#include "share_key.h"
#include "stats.h"

const char *share_publish_verdict(const Piece *p, const SageHash *now) {
        if (!p->candidate)
                return "not a candidate";
        if (!now)
                return "its device bytes could not be read back";
        if (!sage_hash_equal(*now, p->content))
                return "its content changed after the uploads";
        return NULL;
}

typedef struct DeviceReader {
        const SageShareDriver *drv;
        CUdeviceptr at;
} DeviceReader;

static int read_device(void *ctx, size_t off, void *buf, size_t n) {
        const DeviceReader *r = ctx;
        return r->drv->copy_dtoh(buf, r->at + off, n) == CUDA_SUCCESS ? 0 : -1;
}

int share_device_content(ShareVmm *v, CUdeviceptr at, size_t len, void *buf, SageHash *out) {
        DeviceReader reader = { v->drv, at };
        return sage_share_device_key(read_device, &reader, len, buf, out);
}

static void publish_one(ShareVmm *v, SageShareAlloc *a, Piece *p, const SharePublisher *pub, void *buf, bool *gone) {
        SageHash now;
        const char *why;
        void *notes;
        uint32_t notes_len = 0;
        int fd = -1, r;
        bool read = share_device_content(v, a->va + p->off, p->len, buf, &now) == 0;

        if ((why = share_publish_verdict(p, read ? &now : NULL))) {
                if (read) /* unreadable: the driver failed, not the app; no drop is counted */
                        share_vmm_drop_candidate(a, p, why);
                p->candidate = false;
                return;
        }
        p->candidate = false;
        if (v->drv->export_fd(&fd, p->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0) != CUDA_SUCCESS)
                return;
        notes = share_notes_build(p, &notes_len); /* NULL, length 0: published without notes */
        r = pub->publish(pub->ctx, a, p, fd, notes, notes_len);
        free(notes);
        close(fd);
        if (r == 0)
                sage_stats_count(SAGE_STAT_SHARE_PUBLISHED);
        else if (r < 0)
                *gone = true;
}

void share_publish_candidates(ShareVmm *v, SageShareAlloc *a, const SharePublisher *pub) {
        void *buf = NULL;
        CUcontext popped;
        bool any = false, gone = false;

        for (size_t i = 0; i < a->npieces; i++)
                any |= a->pieces[i].candidate;
        if (!any || v->drv->ctx_push(a->ctx) != CUDA_SUCCESS)
                return;
        if (v->drv->vmm.ctx_synchronize() == CUDA_SUCCESS &&
            v->drv->alloc_host(&buf, sage_share_key_chunk()) == CUDA_SUCCESS)
                for (size_t i = 0; i < a->npieces && !gone; i++)
                        if (a->pieces[i].candidate)
                                publish_one(v, a, &a->pieces[i], pub, buf, &gone);
        if (buf)
                v->drv->free_host(buf);
        v->drv->ctx_pop(&popped);
}
