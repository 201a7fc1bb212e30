/*
 * Answers asked ahead (share_ahead.h). A hit's lookup is a broker round
 * trip and its import a driver call that, with 16 processes at once, the
 * driver makes wait ~2 ms (scripts/probes/vmm-contend); a process whose
 * program ran before knows which keys its uploads will hit (the hints its
 * last invocation left, share_hint.c). So the warm-up thread, once the
 * context is there and while a Python function still imports its
 * framework and reads its weights, asks for every hinted whole-granule key
 * in windows of 32 and imports each hit: an upload whose key is one of
 * them then maps the extent at once. Nothing is trusted that a lookup
 * would not: the upload still hashes its bytes and takes an answer only
 * for the same key, size and GPU (what the broker's lookup matches); a
 * miss answer is asked again (another process may have published since).
 * An upload that comes while the warm-up is at it waits for it (its own
 * lookup would be the same round trip and import). What nothing took
 * (handles, references, notes) is kept past launches, since a framework
 * launches before it uploads, until the process is suspended or exits.
 */
#include "share_ahead.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "options.h"
#include "share_guard.h"
#include "stats.h"
#include "util.h"

/* Keys asked per window: one round trip (the broker client pipelines this many). */
#define WINDOW 32
/* Keys asked ahead at most, every allocation's (fds held until imported or taken). */
#define AHEAD_MAX 1024
/* A hit asked ahead may hold an fd of the app's table: at most this share of its limit. */
#define AHEAD_FD_SHARE 4
/* The longest an upload waits for the warm-up's answers (a broker that stopped answering: its lookups fail too). */
#define WAIT_MAX_NS (2ull * 1000 * 1000 * 1000)

/* The answers asked ahead, until the first launch or write. */
struct ShareAhead {
        ShareAnswer *ans;
        size_t n;
};

void share_ahead_drop_answer(SageShare *s, ShareAnswer *x) {
        if (x->fd >= 0 || x->imported) {
                if (x->fd >= 0)
                        close(x->fd);
                if (x->imported)
                        s->drv.vmm.release(x->handle);
                s->vmm.release_extent(s->vmm.release_ctx, x->id);
        }
        free(x->notes);
        x->fd = -1;
        x->imported = false;
        x->notes = NULL;
}

void share_ahead_ask(SageShare *s, ShareAnswer *ans, size_t n) {
        ShareLookupReq q[WINDOW];
        char *notes = malloc(WINDOW * (size_t)SAGE_SHARE_NOTES_MAX);

        for (size_t base = 0; notes && base < n && s->broker; base += WINDOW) {
                size_t m = n - base < WINDOW ? n - base : WINDOW;
                for (size_t k = 0; k < m; k++)
                        q[k] = (ShareLookupReq){ .key = ans[base + k].key,
                                                 .len = ans[base + k].len,
                                                 .device = ans[base + k].device,
                                                 .notes = notes + k * (size_t)SAGE_SHARE_NOTES_MAX };
                share_lookup_many(s, q, m);
                sage_stats_count(SAGE_STAT_SHARE_PREDICT_WINDOWS);
                for (size_t k = 0; k < m; k++) {
                        ShareAnswer *x = &ans[base + k];
                        uint32_t len = q[k].notes_len < SAGE_SHARE_NOTES_MAX ? q[k].notes_len : 0;
                        x->asked = true;
                        if (q[k].result != 0 || q[k].fd < 0)
                                continue;
                        x->id = q[k].id;
                        x->fd = q[k].fd;
                        if (len && (x->notes = malloc(len))) {
                                memcpy(x->notes, q[k].notes, len);
                                x->notes_len = len;
                        }
                }
        }
        free(notes);
}

static size_t ahead_max(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
            rl.rlim_cur / AHEAD_FD_SHARE >= AHEAD_MAX)
                return AHEAD_MAX;
        return rl.rlim_cur / AHEAD_FD_SHARE;
}

/* The hints' keys to ask (not yet asked), or NULL. */
static struct ShareAhead *hinted(const SageShare *s, uint32_t device, bool whole_only) {
        struct ShareAhead *ah = calloc(1, sizeof(*ah));
        size_t max = ahead_max(), n = s->hints.n < max ? s->hints.n : max;

        if (!ah || !n || !(ah->ans = calloc(n, sizeof(*ah->ans)))) {
                free(ah);
                return NULL;
        }
        for (size_t i = 0; i < s->hints.n && ah->n < n; i++) {
                const ShareHint *h = &s->hints.hint[i];
                if (h->len && !(whole_only && h->run)) /* not an allocation's never-again mark (share_hint.c) */
                        ah->ans[ah->n++] = (ShareAnswer){ .key = h->key, .len = h->len, .device = device, .fd = -1 };
        }
        return ah;
}

/*
 * Held from now: predicted remap's (all keys) until the first launch or API
 * write (ahead_held: settle gives them back); the uploads' (whole-granule
 * keys only) past launches, since a framework launches before its uploads
 * (PyTorch's set-up fills a tensor), until suspended (sage_share_park) or exit.
 */
static void hold(SageShare *s, struct ShareAhead *ah, bool whole_only) {
        s->ahead = ah;
        if (!whole_only)
                atomic_store(&s->ahead_held, true);
        for (size_t i = 0; i < ah->n; i++)
                sage_stats_count(ah->ans[i].fd >= 0 || ah->ans[i].imported ? SAGE_STAT_SHARE_AHEAD_FOUND
                                                                           : SAGE_STAT_SHARE_AHEAD_MISSED);
}

void share_ahead_ask_hints(SageShare *s, uint32_t device, bool whole_only) {
        struct ShareAhead *ah;

        s->ahead_asked = true;
        if (!(ah = hinted(s, device, whole_only)))
                return;
        share_ahead_ask(s, ah->ans, ah->n);
        hold(s, ah, whole_only);
}

ShareAnswer *share_ahead_find(SageShare *s, SageHash key, uint64_t len, uint32_t device) {
        for (size_t i = 0; s->ahead && i < s->ahead->n; i++) {
                ShareAnswer *x = &s->ahead->ans[i];
                if (x->asked && !x->taken && x->device == device && x->len == len && sage_hash_equal(x->key, key)) {
                        x->taken = true;
                        return x;
                }
        }
        return NULL;
}

void share_ahead_drop(SageShare *s) {
        share_ahead_wait(s); /* the warm-up thread's, if under way, is held next */
        atomic_store(&s->ahead_held, false);
        if (!s->ahead)
                return;
        for (size_t i = 0; i < s->ahead->n; i++)
                share_ahead_drop_answer(s, &s->ahead->ans[i]);
        free(s->ahead->ans);
        free(s->ahead);
        s->ahead = NULL;
}

bool share_ahead_prepare(SageShare *s) {
        struct ShareAhead *ah = NULL;
        bool whole_only = !sage_options()->share_predict; /* predict maps runs at allocation */
        uint64_t t = sage_now_ns();
        size_t imported = 0, found = 0, asked;
        uint32_t device;
        CUdevice dev;

        if (!sage_options()->share_ahead)
                return false;
        pthread_mutex_lock(&s->lock);
        if (!s->ahead_asked && s->state == 1 && s->broker && s->hints.n &&
            s->drv.ctx_get_device(&dev) == CUDA_SUCCESS && share_broker_device(s, dev, &device) == 0 &&
            (ah = hinted(s, device, whole_only))) {
                s->ahead_asked = true;
                share_ahead_ask(s, ah->ans, ah->n);
                s->ahead_busy = true; /* an upload that needs an answer now waits for these */
        }
        pthread_mutex_unlock(&s->lock);
        if (!ah)
                return false;
        /* Outside the lock: the app's allocations go on meanwhile. */
        for (size_t i = 0; i < ah->n; i++) {
                ShareAnswer *x = &ah->ans[i];
                found += x->fd >= 0;
                if (x->fd < 0 || s->drv.import_fd(&x->handle, (void *)(uintptr_t)x->fd,
                                                  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != CUDA_SUCCESS)
                        continue; /* an fd not imported is imported by the upload that takes it */
                close(x->fd);
                x->fd = -1;
                x->imported = true;
                imported++;
        }
        asked = ah->n; /* ah is the holder's once held: another thread may give it back */
        pthread_mutex_lock(&s->lock);
        s->ahead_busy = false;
        hold(s, ah, whole_only);
        pthread_cond_broadcast(&s->ahead_done);
        pthread_mutex_unlock(&s->lock);
        sage_stats_add(SAGE_STAT_SHARE_AHEAD_IMPORTED, imported);
        sage_stats_add(SAGE_STAT_SHARE_NS_AHEAD, sage_now_ns() - t);
        sage_info("share: %zu hinted keys asked ahead, %zu held, %zu extents imported (%.1f ms)", asked, found,
                  imported, (double)(sage_now_ns() - t) / 1e6);
        return found && found == asked;
}

void share_ahead_wait(SageShare *s) {
        struct timespec until;

        if (!s->ahead_busy)
                return;
        clock_gettime(CLOCK_REALTIME, &until); /* ahead_done's clock (PTHREAD_COND_INITIALIZER) */
        until.tv_sec += WAIT_MAX_NS / 1000000000ull;
        while (s->ahead_busy && pthread_cond_timedwait(&s->ahead_done, &s->lock, &until) == 0)
                ;
}

bool share_ahead_take(SageShare *s, Piece *p, uint32_t device, int *fd) {
        ShareAnswer *x;

        if (!sage_options()->share_ahead || !s->hints.n)
                return false;
        share_ahead_wait(s);
        if (!s->ahead_asked) /* no warm-up thread did it: the first hit asks for all (one round trip a window) */
                share_ahead_ask_hints(s, device, true);
        for (size_t i = 0; s->ahead && i < s->ahead->n; i++) {
                x = &s->ahead->ans[i];
                if (x->taken || x->device != device || x->len != p->len || !sage_hash_equal(x->key, p->key) ||
                    (x->fd < 0 && !x->imported))
                        continue; /* a miss then: asked again by the caller */
                x->taken = true;
                p->extent_id = x->id;
                share_notes_apply(p, x->notes, x->notes_len);
                if (x->imported)
                        p->handle = x->handle;
                *fd = x->fd;
                x->fd = -1;
                x->imported = false;
                sage_stats_count(SAGE_STAT_SHARE_AHEAD_HITS);
                return true;
        }
        return false;
}
