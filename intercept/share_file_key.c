/*
 * File-identity keys of sharing (share_key.c has the content keys).
 *
 * A source that lies in a mapping of a regular file (safetensors, a weight
 * file mmap()ed by a C program) whose content cannot change (fs-verity,
 * immutable, squashfs/erofs: file_immutable.c) is known by the file's
 * (device, inode, size, mtime, ctime) and the range's file offset and
 * length, so a later process needs neither to read nor to hash it.
 * Identity is no proof of content for any other file (an in-place write
 * through MAP_SHARED keeps size and times): those get the content key.
 * A private mapping whose pages were written by the process is no longer
 * the file: /proc/self/pagemap tells (a present page that is not a file
 * page, or a swapped one, was copied on write), and such a source gets the
 * content key.
 */
#include "share_file_key.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "file_immutable.h"
#include "maps_watch.h"
#include "stats.h"

typedef struct FileIdentity {
        uint64_t tag; /* distinguishes file keys from content keys */
        uint64_t dev, ino, size;
        int64_t mtime_s, mtime_ns, ctime_s, ctime_ns;
        uint64_t offset, length;
} FileIdentity;

typedef ShareVma Vma;

/*
 * The file mappings of the last parse are kept in `cache` while the memory
 * map's generation (maps_watch.c) has not moved. Callers serialize.
 */
static void parse_maps(ShareVmaCache *c) {
        FILE *f = fopen("/proc/self/maps", "re");
        char line[1024];

        c->n = 0;
        c->generation = 0;
        if (!f)
                return;
        c->generation = atomic_load(&sage_maps_generation);
        while (fgets(line, sizeof(line), f)) {
                unsigned long long start, end, pgoff, ino;
                unsigned major, minor;
                char perms[8];
                int path_at = 0;
                Vma *v;

                if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &pgoff, &major, &minor, &ino,
                           &path_at) < 7 ||
                    ino == 0 || line[path_at] != '/')
                        continue;
                if (c->n == c->cap) {
                        size_t cap = c->cap ? 2 * c->cap : 256;
                        Vma *grown = realloc(c->vmas, cap * sizeof(*grown));
                        if (!grown)
                                break;
                        c->vmas = grown;
                        c->cap = cap;
                }
                v = &c->vmas[c->n++];
                *v = (Vma){ (uintptr_t)start, (uintptr_t)end, pgoff, ino, major, minor, perms[3] == 's', "" };
                snprintf(v->path, sizeof(v->path), "%s", line + path_at);
                v->path[strcspn(v->path, "\n")] = 0;
        }
        fclose(f);
}

/*
 * The kernel's lookup of one mapping (PROCMAP_QUERY on /proc/self/maps,
 * Linux 6.11; declared here for older headers): a tree walk instead of the
 * whole map printed and parsed, which a PyTorch process (thousands of
 * mappings, every mmap moving the generation) paid at each upload of
 * 16 MiB or more: bert's one embedding upload cost 3-7 ms of SHARE_NS_FILE_KEY
 * on the H100 (docs/results/2026-12-06-h100-2b99c80).
 */
struct share_procmap_query {
        uint64_t size, query_flags, query_addr;
        uint64_t vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
        uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
        uint64_t vma_name_addr, build_id_addr;
};
_Static_assert(sizeof(struct share_procmap_query) == 104, "the kernel's struct procmap_query");
#define SHARE_PROCMAP_QUERY _IOWR('f', 17, struct share_procmap_query)
#define SHARE_PROCMAP_VMA_SHARED 0x08u

/* The mapping holding lo: 1 a file mapping (*out), 0 none, -1 the kernel cannot say (no PROCMAP_QUERY). */
static int query_vma(ShareVmaCache *c, uintptr_t lo, Vma *out) {
        struct share_procmap_query q = { .size = sizeof(q), .query_addr = lo };
        int fd, r;

        if (c->no_query || (fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)) < 0)
                return -1;
        q.vma_name_addr = (uint64_t)(uintptr_t)out->path;
        q.vma_name_size = sizeof(out->path);
        r = ioctl(fd, SHARE_PROCMAP_QUERY, &q);
        if (r < 0) {
                c->no_query = errno == ENOTTY;
                r = errno == ENOENT || errno == E2BIG ? 0 : -1; /* no mapping there; a path too long for us */
        } else
                r = q.inode != 0 && q.vma_name_size && out->path[0] == '/';
        close(fd);
        if (r == 1) {
                out->start = (uintptr_t)q.vma_start;
                out->end = (uintptr_t)q.vma_end;
                out->pgoff = q.vma_offset;
                out->ino = q.inode;
                out->major = q.dev_major;
                out->minor = q.dev_minor;
                out->shared = q.vma_flags & SHARE_PROCMAP_VMA_SHARED;
        }
        return r;
}

/*
 * The file mapping that holds [lo, hi), if any: the kernel's lookup where
 * it has one, else the memory map parsed. A kept parse answers only
 * for a mapping it watches (any change to it moves the generation); any
 * other answer comes from a fresh parse, and that mapping is watched from
 * then on.
 */
static bool find_vma(ShareVmaCache *c, uintptr_t lo, uintptr_t hi, Vma *out) {
        bool kept = sage_maps_watch_active() && c->generation && c->generation == atomic_load(&sage_maps_generation);
        int queried = query_vma(c, lo, out);

        if (queried >= 0)
                return queried && hi <= out->end;

        for (int pass = kept ? 0 : 1; pass < 2; pass++) {
                if (pass == 1)
                        parse_maps(c);
                for (size_t i = 0; i < c->n; i++) {
                        const Vma *v = &c->vmas[i];
                        if (lo < v->start || lo >= v->end)
                                continue;
                        if (hi > v->end)
                                return false;
                        if (pass == 0 && !sage_maps_watched(v->start, v->end))
                                break; /* not watched: parse afresh */
                        if (pass == 1 && !sage_maps_watch(v->start, v->end))
                                c->generation = 0; /* cannot watch it: keep nothing */
                        *out = *v;
                        return true;
                }
        }
        return false;
}

/* Has the process written any page of [lo, hi) of a private file mapping? */
static bool private_pages_written(uintptr_t lo, uintptr_t hi) {
        long page = sysconf(_SC_PAGESIZE);
        uint64_t first = lo / (uint64_t)page, last = (hi - 1) / (uint64_t)page, buf[4096];
        int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        bool written = false;

        if (fd < 0)
                return true;
        for (uint64_t p = first; p <= last && !written;) {
                size_t want = (size_t)(last - p + 1) < 4096 ? (size_t)(last - p + 1) : 4096;
                ssize_t got = pread(fd, buf, want * sizeof(uint64_t), (off_t)(p * sizeof(uint64_t)));
                if (got <= 0) {
                        written = true;
                        break;
                }
                for (size_t i = 0; i < (size_t)got / sizeof(uint64_t); i++) {
                        bool present = buf[i] >> 63 & 1, swapped = buf[i] >> 62 & 1, file = buf[i] >> 61 & 1;
                        if (swapped || (present && !file)) {
                                written = true;
                                break;
                        }
                }
                p += (size_t)got / sizeof(uint64_t);
        }
        close(fd);
        return written;
}

/*
 * The mapped file, opened by the path the memory map names, if it is still
 * the mapped inode and the kernel says its content cannot change. Facts
 * and identity come from one descriptor, so they are of one file.
 */
static bool open_unchangeable(const Vma *vma, struct stat *st) {
        int fd = open(vma->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        SageFileFacts facts;
        bool ok;

        if (fd < 0)
                return false;
        ok = fstat(fd, st) == 0 && S_ISREG(st->st_mode) && (uint64_t)st->st_ino == vma->ino &&
             major(st->st_dev) == vma->major && minor(st->st_dev) == vma->minor;
        if (ok) {
                sage_file_facts_read(fd, &facts);
                if (sage_file_trust(&facts) == SAGE_FILE_MAY_CHANGE) {
                        sage_stats_count(SAGE_STAT_SHARE_FILE_MUTABLE);
                        ok = false;
                }
        }
        close(fd);
        return ok;
}

bool sage_share_file_key(ShareVmaCache *cache, const void *data, size_t size, SageHash *out) {
        uintptr_t lo = (uintptr_t)data, hi = lo + size;
        FileIdentity id;
        struct stat st;
        Vma vma;

        if (!size || hi < lo || !find_vma(cache, lo, hi, &vma))
                return false;
        if (!open_unchangeable(&vma, &st))
                return false; /* a file that may change is keyed by its content */
        if (vma.pgoff + (lo - vma.start) + size > (uint64_t)st.st_size)
                return false; /* beyond the end of the file: zero-filled, not the file */
        if (!vma.shared && private_pages_written(lo, hi))
                return false;
        memset(&id, 0, sizeof(id));
        id.tag = 0x59454b454c4946ull; /* "FILEKEY" */
        id.dev = (uint64_t)st.st_dev;
        id.ino = (uint64_t)st.st_ino;
        id.size = (uint64_t)st.st_size;
        id.mtime_s = st.st_mtim.tv_sec;
        id.mtime_ns = st.st_mtim.tv_nsec;
        id.ctime_s = st.st_ctim.tv_sec;
        id.ctime_ns = st.st_ctim.tv_nsec;
        id.offset = vma.pgoff + (lo - vma.start);
        id.length = size;
        *out = sage_hash(&id, sizeof(id));
        return true;
}
