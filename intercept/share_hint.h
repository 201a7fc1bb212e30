/*
 * Predicted remap (SAGE_SHARE_PREDICT, share_hint.c): an allocation's hits
 * mapped when it is made, from what the program's last invocation uploaded
 * there, each then only confirmed by its upload's key.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"
#include "share_alloc.h"

/* Bounds on what a hint file may make this process do (it is untrusted input). */
#define SHARE_HINT_MAX 65536u    /* hints kept, every allocation's together */
#define SHARE_HINT_PER_ALLOC 512 /* pieces predicted in one allocation */
/*
 * An app's own VMM allocation (cuMemCreate, share_vmm.c) has the ordinal of
 * its creation among them with this bit: its hints serve answers asked
 * ahead (share_ahead.c: keys only) and never meet a cuMemAlloc'd
 * allocation's size and ordinal, so nothing is predicted or assembled at
 * idleness from them (the app maps that memory, not SAGE).
 */
#define SHARE_HINT_APP_VMM 0x80000000u

/*
 * One whole-granule piece an upload mapped or published in the program's
 * last invocation, or an assembled run ("run": several uploads, keyed with
 * its gaps at the first launch; its uploads are then kept in a host image
 * until the first launch or API write: share_hint_image).
 */
typedef struct ShareHint {
        uint64_t size;     /* the allocation's size, as the app asked (placement's key, share_place.h) */
        uint32_t ordinal;  /* among the process's allocations of that size */
        uint64_t off, len; /* from the reservation's start, granule multiples */
        SageHash key;      /* the broker's key of its bytes */
        bool run;          /* an assembled run (the line ends in " run") */
} ShareHint;

typedef struct ShareHints {
        char *path;      /* DIR/predict-<program>; NULL: prediction off */
        ShareHint *hint; /* sorted by (size, ordinal, off) */
        size_t n, cap;
        bool dirty;
} ShareHints;

/* Hints for this program from `dir` (SAGE_SHARE_PLACE's directory; "" or NULL: off). */
void share_hints_open(ShareHints *h, const char *dir);
void share_hints_close(ShareHints *h);
/*
 * The pieces predicted for allocation (size, ordinal) of `padded` bytes in
 * granules of `gran`: out[0..return) with off, len, key and run_hint,
 * sorted, apart, on granules inside it (a hint that is not is dropped).
 */
size_t share_hints_for(const ShareHints *h, uint64_t size, uint32_t ordinal, size_t gran, size_t padded, Piece *out,
                       size_t cap);
/*
 * What `a` holds now becomes its hints: every piece one upload filled whole,
 * hit or candidate, and every assembled run, hit or candidate; an allocation whose prediction was spoiled (a piece
 * written or covered in part before its upload) is marked never to be
 * predicted again (one line "size ordinal 0 0 key"), and a marked one stays.
 */
void share_hints_learn(ShareHints *h, const SageShareAlloc *a);
/*
 * The allocations the hints predict, (size[i], ordinal[i]) for i < the
 * count returned (at most cap), by size and ordinal, but the app's own
 * VMM (SHARE_HINT_APP_VMM), which SAGE does not make; one marked spoiled
 * is listed, and share_hints_for gives it no piece. What the warm-up
 * thread makes ahead (share_predict_premake).
 */
size_t share_hints_allocs(const ShareHints *h, uint64_t *size, uint32_t *ordinal, size_t cap);
/*
 * Was [off, off+len) of allocation (size, ordinal) an assembled run the
 * last invocation shared (a " run" line)? Assembly at idleness
 * (share_idle.c) leaves such runs for then.
 */
bool share_hints_has_run(const ShareHints *h, uint64_t size, uint32_t ordinal, size_t off, size_t len);
/* Write the hints back if they changed. 0 or -errno. */
int share_hints_save(ShareHints *h);

/* Give back predicted pieces no allocation took: their (unmapped) handles and broker references. */
void share_hint_give_back(ShareVmm *v, Piece *pre, size_t n);

/* The unconfirmed piece that is exactly [lo, hi) of `a`, or NULL. */
Piece *share_hint_unconfirmed_at(SageShareAlloc *a, size_t lo, size_t hi);
/* Its upload [o, o+n) had its key: p is a hit like any other from now on (span, launch guard). */
void share_hint_confirm(ShareVmm *v, SageShareAlloc *a, Piece *p, size_t o, size_t n);
/*
 * An upload [o, o+n) of `src` (all of it inside unconfirmed run piece `p`,
 * run_hint, or an end of it whose whole granules were served): the bytes
 * of it inside p go to p's host image instead of the device (made at the
 * first, zeros where no upload writes, as the run was keyed: gaps
 * included), the upload's range to p's uploads (p->filled). False: no
 * memory for the image (the caller makes the piece private and copies).
 */
bool share_hint_image(Piece *p, size_t o, size_t n, const void *src);
/*
 * Images made ahead for allocation `a` made ahead (share_predict_premake),
 * so that the app's uploads into its predicted runs meet no page fault (an
 * image is taken at its run's first upload). Under the lock: the pieces
 * that want one (up to `cap`: their indices and lengths) and, later, each image
 * attached to its piece (given back if the piece no longer wants it);
 * outside it, each made with its pages faulted in (NULL: no memory).
 */
size_t share_hint_images_wanted(const SageShareAlloc *a, size_t *idx, size_t *len, size_t cap);
unsigned char *share_hint_image_faulted(size_t len);
void share_hint_image_attach(SageShareAlloc *a, size_t i, unsigned char *image, size_t len);
/*
 * The predicted run holding the head [o, lo) (head) or the tail [hi, o+n)
 * of an upload [o, o+n) whose whole granules are [lo, hi), ending at lo
 * (starting at hi): one its middle does not reach into. NULL: none.
 */
Piece *share_hint_end_run(SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, bool head);
/*
 * At the end of such an upload: its ends in predicted runs go to their
 * images when its whole granules were `served` (true: the caller copies
 * nothing); else those runs become private first (their images copied in,
 * their allocation's prediction not spoiled), so the caller's copy of the
 * ends lands in private memory.
 */
bool share_hint_image_ends(ShareVmm *v, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, const void *src,
                           bool served);
/* The unconfirmed run piece of `a` that holds all of [o, o+n), or NULL. */
Piece *share_hint_run_at(SageShareAlloc *a, size_t o, size_t n);
/*
 * Something other than an upload may write or read now (a launch, an API
 * write, a device-to-host copy): a run piece whose image has its key is a
 * hit from now on, like one assembly mapped (its uploads its filled
 * ranges, SHARE_PREDICTED_RUNS); every other unconfirmed piece gets private
 * backing first, its image's uploads copied in (a run's) or no copy (what
 * no upload wrote is uninitialized memory to the app), since the launch
 * guard knows only pieces an upload spans. `key` hashes an image (NULL:
 * no run is confirmed). `runs_only` (a read: a device-to-host copy...):
 * only the runs holding uploads, the rest left predicted. How many could
 * not (an image stays with its run then: nothing of the app's is lost).
 */
size_t share_hint_unshare_all(ShareVmm *v, int (*key)(const void *, size_t, SageHash *), bool runs_only);
