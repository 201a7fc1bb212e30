/*
 * The keys of sharing (share.c): what an upload's bytes are known by.
 *
 * - Content: XXH3-128 of each 4 MiB chunk (hashed by up to 16 threads),
 *   then of the chunk hashes. Device read-back (publishing) hashes the same
 *   chunks, so the two compare.
 * - File identity: a source that lies in a mapping of a regular file
 *   (safetensors, a weight file mmap()ed by a C program) whose content
 *   cannot change (fs-verity, immutable, squashfs/erofs: file_immutable.c)
 *   is known by the file's (device, inode, size, mtime, ctime) and the
 *   range's file offset and length, so a later process needs neither to
 *   read nor to hash it. Identity is no proof of content for any other
 *   file (an in-place write through MAP_SHARED keeps size and times): those
 *   get the content key.
 *   A private mapping whose pages were written by the process is no longer
 *   the file: /proc/self/pagemap tells (a present page that is not a file
 *   page, or a swapped one, was copied on write), and such a source gets the
 *   content key.
 */
#include "share_key.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "file_immutable.h"
#include "intercept.h"
#include "maps_watch.h"
#include "util.h"

#define CHUNK SAGE_CONTENT_KEY_CHUNK /* common/hash.h: the broker verifies the same key */
#define MAX_HASH_THREADS 16

/* ---------------------------------------------------------------- content */

typedef struct HashJob {
        const unsigned char *data;
        size_t size;
        SageHash *chunks;
        size_t nchunks;
        unsigned thread, threads;
} HashJob;

static void *hash_worker(void *arg) {
        HashJob *j = arg;

        for (size_t i = j->thread; i < j->nchunks; i += j->threads) {
                size_t off = i * (size_t)CHUNK;
                size_t n = j->size - off < CHUNK ? j->size - off : CHUNK;
                j->chunks[i] = sage_hash(j->data + off, n);
        }
        return NULL;
}

int sage_share_content_key(const void *data, size_t size, SageHash *out) {
        size_t nchunks = (size + CHUNK - 1) / CHUNK;
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        unsigned threads = (unsigned)(cpus < 1 ? 1 : cpus > MAX_HASH_THREADS ? MAX_HASH_THREADS : cpus);
        SageHash *chunks = calloc(nchunks ? nchunks : 1, sizeof(*chunks));
        HashJob jobs[MAX_HASH_THREADS];
        pthread_t tids[MAX_HASH_THREADS];
        unsigned started = 0;

        if (!chunks)
                return -1;
        if (threads > nchunks)
                threads = nchunks ? (unsigned)nchunks : 1;
        for (unsigned t = 0; t < threads; t++) {
                jobs[t] = (HashJob){ data, size, chunks, nchunks, t, threads };
                if (t > 0 && pthread_create(&tids[t], NULL, hash_worker, &jobs[t]) == 0)
                        started |= 1u << t;
        }
        hash_worker(&jobs[0]);
        for (unsigned t = 1; t < threads; t++) {
                if (started & (1u << t))
                        pthread_join(tids[t], NULL);
                else
                        hash_worker(&jobs[t]);
        }
        *out = sage_content_key_combine(chunks, nchunks);
        free(chunks);
        return 0;
}

int sage_share_device_key(int (*read)(void *ctx, size_t off, void *buf, size_t n), void *ctx, size_t size,
                          void *buf, SageHash *out) {
        size_t nchunks = (size + CHUNK - 1) / CHUNK;
        SageHash *chunks = calloc(nchunks ? nchunks : 1, sizeof(*chunks));

        if (!chunks)
                return -1;
        for (size_t i = 0; i < nchunks; i++) {
                size_t off = i * (size_t)CHUNK, n = size - off < CHUNK ? size - off : CHUNK;
                if (read(ctx, off, buf, n) < 0) {
                        free(chunks);
                        return -1;
                }
                chunks[i] = sage_hash(buf, n);
        }
        *out = sage_content_key_combine(chunks, nchunks);
        free(chunks);
        return 0;
}

size_t sage_share_key_chunk(void) {
        return CHUNK;
}

/* ---------------------------------------------------------------- file identity */

typedef struct FileIdentity {
        uint64_t tag; /* distinguishes file keys from content keys */
        uint64_t dev, ino, size;
        int64_t mtime_s, mtime_ns, ctime_s, ctime_ns;
        uint64_t offset, length;
} FileIdentity;

/* A file mapping of /proc/self/maps. */
typedef struct Vma {
        uintptr_t start, end;
        uint64_t pgoff, ino;
        unsigned major, minor;
        bool shared;
        char path[512];
} Vma;

/*
 * The file mappings of the last parse, kept while the memory map's
 * generation (maps_watch.c) has not moved. Callers hold sage_share_lock.
 */
static Vma *vmas;
static size_t nvmas, capvmas;
static unsigned long vmas_generation;

static void parse_maps(void) {
        FILE *f = fopen("/proc/self/maps", "re");
        char line[1024];

        nvmas = 0;
        vmas_generation = 0;
        if (!f)
                return;
        vmas_generation = atomic_load(&sage_maps_generation);
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
                if (nvmas == capvmas) {
                        size_t cap = capvmas ? 2 * capvmas : 256;
                        Vma *grown = realloc(vmas, cap * sizeof(*grown));
                        if (!grown)
                                break;
                        vmas = grown;
                        capvmas = cap;
                }
                v = &vmas[nvmas++];
                *v = (Vma){ (uintptr_t)start, (uintptr_t)end, pgoff, ino, major, minor, perms[3] == 's', "" };
                snprintf(v->path, sizeof(v->path), "%s", line + path_at);
                v->path[strcspn(v->path, "\n")] = 0;
        }
        fclose(f);
}

/*
 * The file mapping that holds [lo, hi), if any. A kept parse answers only
 * for a mapping it watches (any change to it moves the generation); any
 * other answer comes from a fresh parse, and that mapping is watched from
 * then on.
 */
static bool find_vma(uintptr_t lo, uintptr_t hi, Vma *out) {
        bool kept = sage_maps_watch_active() && vmas_generation &&
                    vmas_generation == atomic_load(&sage_maps_generation);

        for (int pass = kept ? 0 : 1; pass < 2; pass++) {
                if (pass == 1)
                        parse_maps();
                for (size_t i = 0; i < nvmas; i++) {
                        if (lo < vmas[i].start || lo >= vmas[i].end)
                                continue;
                        if (hi > vmas[i].end)
                                return false;
                        if (pass == 0 && !sage_maps_watched(vmas[i].start, vmas[i].end))
                                break; /* not watched: parse afresh */
                        if (pass == 1 && !sage_maps_watch(vmas[i].start, vmas[i].end))
                                vmas_generation = 0; /* cannot watch it: keep nothing */
                        *out = vmas[i];
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

bool sage_share_file_key(const void *data, size_t size, SageHash *out) {
        uintptr_t lo = (uintptr_t)data, hi = lo + size;
        FileIdentity id;
        struct stat st;
        Vma vma;

        if (!size || hi < lo || !find_vma(lo, hi, &vma))
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
