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
#include "share.h"
#include "share_guard.h"
#include "stats.h"
#include "util.h"

/* Keys asked per window: one round trip (the broker client pipelines this many). */
#define WINDOW 32
/* Keys asked ahead at most, every allocation's (fds held until imported or taken). */
#define AHEAD_MAX 1024
/* A hit asked ahead may hold an fd of the app's table: at most this share of its limit. */
#define AHEAD_FD_SHARE 4
/* The longest a give-back (a launch's, a suspend's, exit's) waits for the warm-up thread's import under way. */
#define WAIT_MAX_NS (2ull * 1000 * 1000 * 1000)

/* The answers asked ahead, until given back (share_ahead_drop). */
struct ShareAhead {
        ShareAnswer *ans;
        size_t n;
        bool abandoned; /* given back while the warm-up thread imported one: it frees them once it returns */
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
 * Held from now, visible to uploads at once (the warm-up thread imports them
 * one by one after): predicted remap's (SAGE_SHARE_PREDICT: runs' keys too
 * unless assembly at idleness takes the runs) until the first launch or API
 * write after an upload (ahead_held: settle gives them back); the uploads'
 * (whole-granule keys only) past launches before any was taken, since a
 * framework launches before it uploads (PyTorch's set-up fills a tensor),
 * then until the next launch after one was (the uploads have begun), a
 * suspend or exit.
 */
static size_t hold(SageShare *s, struct ShareAhead *ah) {
        size_t found = 0;

        s->ahead = ah;
        if (sage_options()->share_predict)
                atomic_store(&s->ahead_held, true);
        for (size_t i = 0; i < ah->n; i++)
                found += ah->ans[i].fd >= 0;
        sage_stats_add(SAGE_STAT_SHARE_AHEAD_FOUND, found);
        sage_stats_add(SAGE_STAT_SHARE_AHEAD_MISSED, ah->n - found);
        return found;
}

/* The hints' keys asked and held (share_ahead_ask_hints); NULL: none to ask. `*found`: the hits. */
static struct ShareAhead *ask_hints(SageShare *s, uint32_t device, bool whole_only, size_t *found) {
        struct ShareAhead *ah;

        s->ahead_asked = true;
        if (!(ah = hinted(s, device, whole_only)))
                return NULL;
        share_ahead_ask(s, ah->ans, ah->n);
        *found = hold(s, ah);
        return ah;
}

void share_ahead_ask_hints(SageShare *s, uint32_t device, bool whole_only) {
        size_t found;

        ask_hints(s, device, whole_only, &found);
}

/* Could `x` be taken for (key, len) on `device`: not taken, not being imported by the warm-up thread? */
static bool matches(const ShareAnswer *x, SageHash key, uint64_t len, uint32_t device) {
        return !x->taken && !x->importing && x->device == device && x->len == len && sage_hash_equal(x->key, key);
}

ShareAnswer *share_ahead_find(SageShare *s, SageHash key, uint64_t len, uint32_t device) {
        for (size_t i = 0; s->ahead && i < s->ahead->n; i++) {
                ShareAnswer *x = &s->ahead->ans[i];
                if (x->asked && matches(x, key, len, device)) {
                        x->taken = true;
                        return x;
                }
        }
        return NULL;
}

/* Every answer of `ah` given back, `ah` freed. Under the lock. */
static void give_back(SageShare *s, struct ShareAhead *ah) {
        for (size_t i = 0; i < ah->n; i++)
                share_ahead_drop_answer(s, &ah->ans[i]);
        free(ah->ans);
        free(ah);
}

/* Wait (bounded) until the warm-up thread imports nothing; true if it does not. Under the lock. */
static bool import_done(SageShare *s) {
        struct timespec until;

        clock_gettime(CLOCK_REALTIME, &until); /* ahead_done's clock (PTHREAD_COND_INITIALIZER) */
        until.tv_sec += WAIT_MAX_NS / 1000000000ull;
        while (s->ahead_importing && pthread_cond_timedwait(&s->ahead_done, &s->lock, &until) == 0)
                ;
        return !s->ahead_importing;
}

void share_ahead_drop(SageShare *s) {
        struct ShareAhead *ah = s->ahead;

        atomic_store(&s->ahead_held, false);
        s->premake_closed = true; /* nothing made ahead from now: the warm-up thread may not have begun */
        if (s->premade)           /* the allocations made ahead that no cuMemAlloc took */
                share_predict_premade_drop(s);
        if (!ah)
                return;
        s->ahead = NULL; /* no upload takes, no import starts, from now */
        if (import_done(s))
                give_back(s, ah);
        else
                ah->abandoned = true; /* the import under way gives them back when it returns */
}

void share_ahead_forget(SageShare *s) {
        struct ShareAhead *ah = s->ahead;

        s->ahead = NULL;
        s->ahead_importing = false; /* the warm-up thread that imports is the parent's */
        share_predict_premade_forget(s);
        atomic_store(&s->ahead_held, false);
        for (size_t i = 0; ah && i < ah->n; i++) {
                if (ah->ans[i].fd >= 0)
                        close(ah->ans[i].fd);
                free(ah->ans[i].notes);
        }
        if (ah)
                free(ah->ans);
        free(ah);
}

bool sage_share_park_ready(void) {
        SageShare *s = sage_share();
        bool ready;

        pthread_mutex_lock(&s->lock);
        s->ahead_closed = true; /* no warm-up thread asks and imports from here (an upload may ask, resumed) */
        share_ahead_drop(s);    /* an imported handle nothing maps would fail the restore */
        ready = !s->ahead_importing;
        pthread_mutex_unlock(&s->lock);
        return ready;
}

/*
 * The next answer of `ah` to import (its fd claimed; each tried once), from
 * the last: uploads come roughly in the hints' order, so an upload and the
 * importing thread meet once instead of each upload finding its own answer
 * being imported, in step. NULL: none left, or `ah` given back. Under the lock.
 */
static ShareAnswer *claim(SageShare *s, struct ShareAhead *ah, size_t *left) {
        while (s->ahead == ah && *left > 0) {
                ShareAnswer *x = &ah->ans[--*left];
                if (x->fd >= 0 && !x->taken && !x->imported) {
                        x->importing = true;
                        s->ahead_importing = true;
                        return x;
                }
        }
        return NULL;
}

bool share_ahead_prepare(SageShare *s) {
        struct ShareAhead *ah = NULL;
        bool whole_only = !share_predict_runs(); /* predict maps runs at allocation */
        uint64_t t = sage_now_ns();
        size_t imported = 0, found = 0, asked = 0, left = 0;
        CUmemGenericAllocationHandle h;
        ShareAnswer *x;
        uint32_t device;
        CUdevice dev;
        CUresult r;

        if (!sage_options()->share_ahead)
                return false;
        pthread_mutex_lock(&s->lock);
        if (!s->ahead_asked && !s->ahead_closed && s->state == 1 && s->broker && s->hints.n &&
            s->drv.ctx_get_device(&dev) == CUDA_SUCCESS && share_broker_device(s, dev, &device) == 0 &&
            (ah = ask_hints(s, device, whole_only, &found)))
                asked = left = ah->n;
        /*
         * Imported one at a time outside the lock, so the app's allocations and
         * uploads go on: an upload takes an answer not imported yet with its fd
         * (and imports it), and asks the broker itself for the one being
         * imported; it never waits for the imports of others.
         */
        while (ah && (x = claim(s, ah, &left))) {
                pthread_mutex_unlock(&s->lock);
                r = s->drv.import_fd(&h, (void *)(uintptr_t)x->fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
                pthread_mutex_lock(&s->lock);
                x->importing = s->ahead_importing = false;
                if (r == CUDA_SUCCESS && ah->abandoned) {
                        s->drv.vmm.release(h);
                } else if (r == CUDA_SUCCESS) { /* else the upload that takes it imports it */
                        close(x->fd);
                        x->fd = -1;
                        x->handle = h;
                        x->imported = true;
                        imported++;
                }
                pthread_cond_broadcast(&s->ahead_done);
                if (ah->abandoned) { /* given back while this import was under way: what it holds is ours */
                        give_back(s, ah);
                        break;
                }
        }
        pthread_mutex_unlock(&s->lock);
        if (!asked)
                return false;
        sage_stats_add(SAGE_STAT_SHARE_AHEAD_IMPORTED, imported);
        sage_stats_add(SAGE_STAT_SHARE_NS_AHEAD, sage_now_ns() - t);
        sage_info("share: %zu hinted keys asked ahead, %zu held, %zu extents imported (%.1f ms)", asked, found,
                  imported, (double)(sage_now_ns() - t) / 1e6);
        share_predict_premake(s); /* with SAGE_SHARE_PREDICT: the allocations too, their hits mapped */
        return found && found == asked;
}

bool share_ahead_take(SageShare *s, Piece *p, uint32_t device, int *fd) {
        ShareAnswer *x;

        if (!sage_options()->share_ahead || !s->hints.n)
                return false;
        if (!s->ahead_asked) /* no warm-up thread did it: the first hit asks for all (one round trip a window) */
                share_ahead_ask_hints(s, device, true);
        for (size_t i = 0; s->ahead && i < s->ahead->n; i++) {
                x = &s->ahead->ans[i];
                if (!matches(x, p->key, p->len, device) || (x->fd < 0 && !x->imported))
                        continue; /* a miss, or being imported: asked again by the caller */
                x->taken = true;
                p->extent_id = x->id;
                share_notes_apply(p, x->notes, x->notes_len);
                free(x->notes);
                x->notes = NULL;
                if (x->imported)
                        p->handle = x->handle;
                *fd = x->fd;
                x->fd = -1;
                x->imported = false;
                atomic_store(&s->ahead_held, true); /* the uploads have begun: the rest go back at the next launch */
                sage_stats_count(SAGE_STAT_SHARE_AHEAD_HITS);
                return true;
        }
        return false;
}
