/*
 * Finding the file mapping of an upload's source (intercept/share_file_key.c)
 * on a real file mapped by this process: the kernel's PROCMAP_QUERY lookup
 * where it has one (Linux 6.11), else /proc/self/maps parsed. Every answer
 * must be the parse's: a mapped file found (here one that may change: no
 * identity key, SHARE_FILE_MUTABLE counted), anonymous memory and a range
 * past the mapping's end not; the parse (forced) answers the same. With
 * the lookup, the memory map is never parsed (a PyTorch process paid 3-7 ms
 * for that at each large upload).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../intercept/maps_watch.h"
#include "../../intercept/share_file_key.h"
#include "../../intercept/stats.h"
#include "check.h"

/* maps_watch.c interposes mmap: not in this test. Nothing watched, so every answer comes from a lookup. */
static atomic_ulong generation;
const atomic_ulong *sage_maps_generation_counter(void) {
        return &generation;
}
bool sage_maps_watch(uintptr_t lo, uintptr_t hi) {
        return false;
}
bool sage_maps_watched(uintptr_t lo, uintptr_t hi) {
        return false;
}
bool sage_maps_watch_active(void) {
        return false;
}

#define LEN ((size_t)4 << 20)

/* Does this kernel answer PROCMAP_QUERY (a struct of 104 bytes, 'f' 17)? */
static bool kernel_queries(void) {
        uint64_t q[13] = { sizeof(q) };
        int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
        bool yes = fd >= 0 && (ioctl(fd, _IOWR('f', 17, uint64_t[13]), q) == 0 || errno != ENOTTY);

        if (fd >= 0)
                close(fd);
        return yes;
}

int main(void) {
        char path[] = "/tmp/sage-file-key-XXXXXX";
        int fd = mkstemp(path);
        ShareVmaCache cache = { 0 };
        SageHash key;
        unsigned char *file, *anon;
        bool queries = kernel_queries();

        CHECK(fd >= 0 && ftruncate(fd, (off_t)LEN) == 0);
        file = mmap(NULL, LEN, PROT_READ, MAP_PRIVATE, fd, 0);
        anon = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(file != MAP_FAILED && anon != MAP_FAILED);
        close(fd);

        /* The kernel's lookup where it has one, then the parse (forced): the same answers. */
        for (int parse = 0; parse < 2; parse++) {
                cache.no_query = parse;
                /* A file that may change (on /tmp): found and opened, so keyed by content. */
                CHECK(!sage_share_file_key(&cache, file + 4096, 8192, &key));
                CHECK(sage_stats_get(SAGE_STAT_SHARE_FILE_MUTABLE) == (uint64_t)parse + 1);
                /* Anonymous memory, a range past the mapping's end, an empty one: no file mapping at all. */
                CHECK(!sage_share_file_key(&cache, anon, LEN, &key));
                CHECK(!sage_share_file_key(&cache, file + LEN - 4096, 8192, &key));
                CHECK(!sage_share_file_key(&cache, file, 0, &key));
                CHECK(sage_stats_get(SAGE_STAT_SHARE_FILE_MUTABLE) == (uint64_t)parse + 1);
                fprintf(stderr, "%s: %zu mappings parsed\n",
                        parse     ? "parsed"
                        : queries ? "PROCMAP_QUERY answered"
                                  : "PROCMAP_QUERY not known",
                        cache.n);
                CHECK(parse || !queries || (cache.n == 0 && !cache.no_query));
                CHECK(!parse || cache.n > 0);
        }
        free(cache.vmas);
        munmap(file, LEN);
        munmap(anon, LEN);
        unlink(path);
        return 0;
}
