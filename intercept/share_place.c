/*
 * Learned placement (SAGE_SHARE_PLACE=DIR, issue 14).
 *
 * A mapping swaps 2 MiB granules whole, and a framework's caching allocator
 * puts small activations into the free tail of the pool segment that holds
 * the last weights: the granule holding both can never be shared (a kernel
 * writes the activation), so PyTorch's ResNet-50 lost the same 5 granules
 * in every invocation. SAGE cannot move what the app placed, but it chooses
 * where an allocation starts in its own reservation: starting it `lead`
 * bytes in (a multiple of 512, so the alignment cuMemAlloc's callers rely
 * on holds) puts the end of the uploads on a granule, and the tail's
 * activations in granules of their own. The physical memory is the same
 * (the extra granule at the end replaces the mixed one).
 *
 * The lead is learned: where the launch guard finds a kernel pointing
 * after every upload of an allocation, inside a granule uploads filled in
 * part, the allocation's next invocation starts it so that this point is a
 * granule's first byte. Hints are per program (executable and command
 * line), per allocation size and the allocation's ordinal among those of
 * that size, in one small text file per program under DIR. A wrong or
 * stale hint costs at most a granule of address space per allocation,
 * never a byte of the app's: the lead is checked, and bytes outside the
 * app's range are never the app's.
 */
#include "share_place.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"

static int cmp_hint(const void *x, const void *y) {
        const PlaceHint *a = x, *b = y;

        if (a->size != b->size)
                return a->size < b->size ? -1 : 1;
        return a->ordinal < b->ordinal ? -1 : a->ordinal > b->ordinal;
}

/* Up to `cap` bytes of `path` into buf; the count read (0 on failure). */
static size_t read_small(const char *path, char *buf, size_t cap) {
        size_t n = 0;
        ssize_t r;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return 0;
        while (n < cap && (r = read(fd, buf + n, cap - n)) > 0)
                n += (size_t)r;
        close(fd);
        return n;
}

/* The program's name for its hint file: its executable and command line, hashed. */
static SageHash program_key(void) {
        char buf[8192];
        size_t n;
        ssize_t l = readlink("/proc/self/exe", buf, sizeof(buf) / 2);

        n = l > 0 ? (size_t)l : 0;
        buf[n++] = 0;
        n += read_small("/proc/self/cmdline", buf + n, sizeof(buf) - n);
        return sage_hash(buf, n);
}

static bool valid_lead(uint64_t lead) {
        return lead % SHARE_PLACE_ALIGN == 0 && lead < (64u << 20);
}

static void load(SharePlace *p) {
        FILE *f = fopen(p->path, "re");
        unsigned long long size, ordinal, lead;

        if (!f)
                return;
        while (p->nhint < SHARE_PLACE_MAX && fscanf(f, "%llu %llu %llu", &size, &ordinal, &lead) == 3)
                if (size && ordinal <= UINT32_MAX && valid_lead(lead)) {
                        p->hint[p->nhint++] = (PlaceHint){ size, (uint32_t)ordinal, (uint32_t)lead };
                }
        fclose(f);
        qsort(p->hint, p->nhint, sizeof(*p->hint), cmp_hint);
}

char *share_place_file(const char *dir, const char *kind) {
        char name[33], *path;
        size_t n = strlen(dir) + strlen(kind) + sizeof(name) + 2;

        sage_hash_format(program_key(), name);
        if ((path = malloc(n)))
                snprintf(path, n, "%s/%s-%s", dir, kind, name);
        return path;
}

void share_place_open(SharePlace *p, const char *dir) {
        share_place_close(p);
        if (!dir || !*dir)
                return;
        p->hint = calloc(SHARE_PLACE_MAX, sizeof(*p->hint));
        p->seen = calloc(SHARE_PLACE_MAX, sizeof(*p->seen));
        if (!p->hint || !p->seen || !(p->path = share_place_file(dir, "place"))) {
                share_place_close(p);
                return;
        }
        load(p);
}

void share_place_close(SharePlace *p) {
        free(p->path);
        free(p->hint);
        free(p->seen);
        *p = (SharePlace){ 0 };
}

static PlaceHint *find(const SharePlace *p, uint64_t size, uint32_t ordinal) {
        PlaceHint key = { size, ordinal, 0 };
        return bsearch(&key, p->hint, p->nhint, sizeof(key), cmp_hint);
}

/* The index of `size` in p->seen (the allocations of that size made so far); p->nseen if none was. */
static size_t seen_at(const SharePlace *p, size_t size) {
        size_t i;

        for (i = 0; i < p->nseen && p->seen[i].size != size; i++)
                ;
        return i;
}

/* The lead learned for (size, ordinal) if it leaves room in a granule of `gran`; else 0. */
static size_t lead_of(const SharePlace *p, size_t size, uint32_t ordinal, size_t gran) {
        PlaceHint *h = find(p, size, ordinal);

        return h && h->lead + SHARE_PLACE_ALIGN <= gran ? h->lead : 0;
}

size_t share_place_next(SharePlace *p, size_t size, size_t gran, uint32_t *ordinal) {
        size_t i;

        *ordinal = 0;
        if (!p->path)
                return 0;
        if ((i = seen_at(p, size)) == p->nseen) {
                if (p->nseen == SHARE_PLACE_MAX)
                        return 0;
                p->seen[p->nseen++] = (PlaceHint){ .size = size };
        }
        *ordinal = p->seen[i].ordinal++;
        return lead_of(p, size, *ordinal, gran);
}

size_t share_place_lead(const SharePlace *p, size_t size, uint32_t ordinal, size_t gran, bool *passed) {
        size_t i = seen_at(p, size);

        *passed = i < p->nseen && p->seen[i].ordinal > ordinal;
        return p->path ? lead_of(p, size, ordinal, gran) : 0;
}

void share_place_learn(SharePlace *p, size_t size, uint32_t ordinal, size_t lead) {
        PlaceHint *h;

        if (!p->path || !valid_lead(lead))
                return;
        if ((h = find(p, size, ordinal))) {
                p->dirty |= h->lead != lead;
                h->lead = (uint32_t)lead;
                return;
        }
        if (p->nhint == SHARE_PLACE_MAX)
                return;
        p->hint[p->nhint++] = (PlaceHint){ size, ordinal, (uint32_t)lead };
        qsort(p->hint, p->nhint, sizeof(*p->hint), cmp_hint);
        p->dirty = true;
}

int share_place_write(const char *path, bool *dirty, void (*write)(FILE *, void *), void *ctx) {
        char *tmp;
        size_t n = strlen(path) + 32;
        FILE *f;
        int fd, r = 0;

        if (!*dirty)
                return 0;
        if (!(tmp = malloc(n)))
                return -ENOMEM;
        snprintf(tmp, n, "%s.%ld", path, (long)getpid());
        /* A new file of our own: never through a link someone put in a folder others may write. */
        if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0 ||
            !(f = fdopen(fd, "w"))) {
                r = -errno;
                if (fd >= 0)
                        close(fd);
                free(tmp);
                return r;
        }
        write(f, ctx);
        if (fclose(f) != 0 || rename(tmp, path) != 0) {
                r = -errno;
                unlink(tmp);
        } else {
                *dirty = false;
        }
        free(tmp);
        return r;
}

static void write_hints(FILE *f, void *ctx) {
        const SharePlace *p = ctx;

        for (size_t i = 0; i < p->nhint; i++)
                fprintf(f, "%llu %u %u\n", (unsigned long long)p->hint[i].size, p->hint[i].ordinal, p->hint[i].lead);
}

int share_place_save(SharePlace *p) {
        return p->path ? share_place_write(p->path, &p->dirty, write_hints, p) : 0;
}

bool share_place_lead_for(size_t x, size_t gran, size_t *lead) {
        size_t l = (gran - x % gran) % gran;

        if (!gran || !valid_lead(l) || l + SHARE_PLACE_ALIGN > gran)
                return false;
        *lead = l;
        return true;
}
