/*
 * The spool: what a suspended instance parked survives the broker.
 *
 * A gate instance releases the broker's extents before its checkpoint; the
 * broker pins them (instance_gate.c), but pins and extents live in the
 * broker's memory and GPU allocations, which die with it. With --spool DIR,
 * once such an instance is suspended the broker writes each pinned extent's
 * bytes to a file of its own (once per namespace and key, however many
 * instances list it: sealed extents never change) and the instance's list
 * of them. A restarted broker that adopts the instance (it registers again
 * flagged CHECKPOINTED and the driver agrees) loads what the list names,
 * checking every byte against its content key, and pins it for the
 * instance, whose re-map then finds every key.
 *
 *   DIR/i-PID-START   an instance's list: namespace, pid, start time, keys
 *   DIR/x-NS-HASH-SIZE-DEV  an extent: namespace, key, flags, notes, bytes
 *
 * Files are the broker's (DIR mode 0700, files 0600, refused if others may
 * write DIR), written under a temporary name and renamed, and counted
 * against --spool-budget (extent bytes). A list goes when its instance runs
 * again or goes; an extent file with the last list naming it. A list whose
 * process is gone (pid and start time from /proc) is removed when a broker
 * opens the spool. Lists name processes by pid and start time, so a reused
 * pid never adopts another's list, and only a list of the adopter's own
 * namespace is loaded.
 *
 * The bytes are written by the suspend's worker thread once the checkpoint
 * succeeded (spool_plan_write: it touches only its plan, which holds
 * references to the extents, the Gpu and the files); the loop plans and
 * takes the result. Loading, rare (a restart), runs on the event loop.
 */
#include "instance_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "instance_ops.h"
#include "log.h"
#include "server_private.h"

#define LIST_MAGIC "SAGESPI1"
#define EXTENT_MAGIC "SAGESPX1"

typedef struct SpoolFile {
        uint64_t namespace_id;
        SageExtentKey key;
        uint64_t bytes; /* counted against the budget */
        unsigned users; /* lists naming it */
        struct SpoolFile *next;
} SpoolFile;

struct Spool {
        int dir_fd;
        uint64_t budget, bytes;
        SpoolFile *files;
};

/* What an instance's list names (Instance.spool). */
typedef struct SpoolList {
        char name[48];
        size_t n;
        SpoolFile **files;
} SpoolList;

typedef struct ListHeader {
        char magic[8];
        uint64_t namespace_id;
        int32_t pid;
        uint32_t n;
        uint64_t start;
} ListHeader;

typedef struct ListEntry {
        uint64_t namespace_id;
        SageExtentKey key;
} ListEntry;

typedef struct ExtentHeader {
        char magic[8];
        ListEntry id;
        uint32_t flags;
        uint32_t notes_len;
} ExtentHeader;

/* The process's start time (clock ticks after boot, /proc/PID/stat field 22); 0 if it is gone. */
static uint64_t start_time(pid_t pid) {
        char path[32], text[1024], *p;
        unsigned long long start = 0;
        ssize_t n;
        int fd;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
                return 0;
        n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n <= 0)
                return 0;
        text[n] = 0;
        /* After the command (which may hold spaces and parentheses): state is field 3. */
        if (!(p = strrchr(text, ')')) ||
            sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                   &start) != 1)
                return 0;
        return start;
}

static void extent_name(char *out, size_t size, const ListEntry *id) {
        snprintf(out, size, "x-%016llx-%016llx%016llx-%llx-%u", (unsigned long long)id->namespace_id,
                 (unsigned long long)id->key.hash.high, (unsigned long long)id->key.hash.low,
                 (unsigned long long)id->key.size, id->key.device);
}

static bool same_id(const SpoolFile *f, const ListEntry *id) {
        return f->namespace_id == id->namespace_id && sage_hash_equal(f->key.hash, id->key.hash) &&
               f->key.size == id->key.size && f->key.device == id->key.device;
}

static SpoolFile *find_file(Spool *sp, const ListEntry *id) {
        for (SpoolFile *f = sp->files; f; f = f->next)
                if (same_id(f, id))
                        return f;
        return NULL;
}

static SpoolFile *add_file(Spool *sp, const ListEntry *id, uint64_t bytes) {
        SpoolFile *f = calloc(1, sizeof(*f));

        if (!f)
                return NULL;
        *f = (SpoolFile){ .namespace_id = id->namespace_id, .key = id->key, .bytes = bytes, .next = sp->files };
        sp->files = f;
        sp->bytes += bytes;
        return f;
}

/* Drop files no list names (their disk copy too). */
static void prune(Spool *sp) {
        for (SpoolFile **p = &sp->files; *p;) {
                SpoolFile *f = *p;
                char name[96];
                if (f->users) {
                        p = &f->next;
                        continue;
                }
                extent_name(name, sizeof(name), &(ListEntry){ f->namespace_id, f->key });
                unlinkat(sp->dir_fd, name, 0);
                sp->bytes -= f->bytes;
                *p = f->next;
                free(f);
        }
}

static bool read_exact(int fd, void *p, size_t n) {
        return read(fd, p, n) == (ssize_t)n;
}

/* A list of a live process: count what it names. Else remove it. */
static void open_list(Spool *sp, const char *name) {
        int fd = openat(sp->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        ListHeader h;
        bool keep = false;

        if (fd >= 0 && read_exact(fd, &h, sizeof(h)) && memcmp(h.magic, LIST_MAGIC, 8) == 0 && h.pid > 0 &&
            start_time(h.pid) == h.start) {
                keep = true;
                for (uint32_t i = 0; i < h.n && keep; i++) {
                        ListEntry id;
                        SpoolFile *f;
                        struct stat st;
                        char xname[96];
                        keep = read_exact(fd, &id, sizeof(id));
                        extent_name(xname, sizeof(xname), &id);
                        if (keep && !(f = find_file(sp, &id)))
                                f = fstatat(sp->dir_fd, xname, &st, AT_SYMLINK_NOFOLLOW) == 0
                                            ? add_file(sp, &id, (uint64_t)st.st_size)
                                            : NULL;
                        if (keep && f)
                                f->users++;
                }
        }
        if (fd >= 0)
                close(fd);
        if (!keep)
                unlinkat(sp->dir_fd, name, 0);
}

static int open_dir(Spool **out, const char *dir, uint64_t budget);

int spool_open(Spool **out, const char *dir, uint64_t budget) {
        int r = open_dir(out, dir, budget);

        if (r < 0)
                sage_warn("--spool %s: %s%s", dir, strerror(-r),
                          r == -EPERM ? " (it must be saged's own, writable by no one else)" : "");
        return r;
}

static int open_dir(Spool **out, const char *dir, uint64_t budget) {
        Spool *sp = calloc(1, sizeof(*sp));
        struct dirent *d;
        struct stat st;
        DIR *listing;
        int fd;

        if (!sp)
                return -ENOMEM;
        sp->budget = budget ? budget : SPOOL_DEFAULT_BUDGET;
        sp->dir_fd = mkdir(dir, 0700) < 0 && errno != EEXIST
                             ? -1
                             : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (sp->dir_fd < 0) {
                int e = -errno;
                free(sp);
                return e;
        }
        /* Whoever may write there could hand a restarted broker bytes of their choosing (hashed, but still). */
        if (fstat(sp->dir_fd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 022)) {
                close(sp->dir_fd);
                free(sp);
                return -EPERM;
        }
        fd = dup(sp->dir_fd);
        listing = fd >= 0 ? fdopendir(fd) : NULL;
        if (!listing) {
                int e = -errno;
                if (fd >= 0)
                        close(fd);
                spool_close(sp);
                return e;
        }
        while ((d = readdir(listing)))
                if (strncmp(d->d_name, "i-", 2) == 0)
                        open_list(sp, d->d_name);
                else if (strncmp(d->d_name, "tmp-", 4) == 0)
                        unlinkat(sp->dir_fd, d->d_name, 0); /* a write the previous broker did not finish */
        rewinddir(listing);
        /* Extent files no live list names. */
        while ((d = readdir(listing))) {
                bool named = false;
                if (strncmp(d->d_name, "x-", 2) != 0)
                        continue;
                for (SpoolFile *f = sp->files; f && !named; f = f->next) {
                        char name[96];
                        extent_name(name, sizeof(name), &(ListEntry){ f->namespace_id, f->key });
                        named = strcmp(name, d->d_name) == 0;
                }
                if (!named)
                        unlinkat(sp->dir_fd, d->d_name, 0);
        }
        closedir(listing);
        sage_info("spool %s: %llu bytes kept for suspended instances", dir, (unsigned long long)sp->bytes);
        *out = sp;
        return 0;
}

Spool *spool_close(Spool *sp) {
        if (!sp)
                return NULL;
        while (sp->files) {
                SpoolFile *f = sp->files;
                sp->files = f->next;
                free(f);
        }
        if (sp->dir_fd >= 0)
                close(sp->dir_fd);
        free(sp);
        return NULL;
}

/* One extent of a plan: its file is named by `id`; `write`: this plan writes it. */
typedef struct PlanItem {
        Extent *extent; /* a reference the plan holds: alive while the worker reads it */
        ListEntry id;
        bool write;
} PlanItem;

struct SpoolPlan {
        int dir_fd;
        Instance list_of; /* pid and namespace of the instance (a copy: the worker reads nothing live) */
        uint64_t start;
        SpoolList *list;
        size_t n;
        PlanItem *items;
        bool written; /* the worker wrote every file and the list */
};

/* Write the plan's `e` under its final name, through a temporary one. Worker thread. */
static bool write_extent(Gpu *gpu, int dir_fd, const Extent *e, const ListEntry *id) {
        ExtentHeader h = { .id = *id, .flags = e->flags, .notes_len = e->notes_len };
        char name[96], tmp[104];
        bool ok;
        int fd;

        memcpy(h.magic, EXTENT_MAGIC, 8);
        extent_name(name, sizeof(name), id);
        snprintf(tmp, sizeof(tmp), "tmp-%s", name);
        fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return false;
        ok = write(fd, &h, sizeof(h)) == sizeof(h) &&
             (!e->notes_len || write(fd, e->notes, e->notes_len) == (ssize_t)e->notes_len) &&
             gpu_extent_save(gpu, e->payload, fd) == 0 && fsync(fd) == 0;
        close(fd);
        if (ok && renameat(dir_fd, tmp, dir_fd, name) == 0)
                return true;
        unlinkat(dir_fd, tmp, 0);
        return false;
}

static bool write_list(const SpoolPlan *plan) {
        ListHeader h = { .namespace_id = plan->list_of.namespace_id,
                         .pid = (int32_t)plan->list_of.pid,
                         .n = (uint32_t)plan->n,
                         .start = plan->start };
        char tmp[64];
        bool ok;
        int fd;

        memcpy(h.magic, LIST_MAGIC, 8);
        snprintf(tmp, sizeof(tmp), "tmp-%s", plan->list->name);
        fd = openat(plan->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return false;
        ok = write(fd, &h, sizeof(h)) == sizeof(h);
        for (size_t i = 0; ok && i < plan->n; i++)
                ok = write(fd, &plan->items[i].id, sizeof(ListEntry)) == sizeof(ListEntry);
        ok = ok && fsync(fd) == 0;
        close(fd);
        if (ok && renameat(plan->dir_fd, tmp, plan->dir_fd, plan->list->name) == 0)
                return true;
        unlinkat(plan->dir_fd, tmp, 0);
        return false;
}

static SpoolList *new_list(pid_t pid, uint64_t start, size_t n) {
        SpoolList *l = calloc(1, sizeof(*l));

        if (l && !(l->files = calloc(n ? n : 1, sizeof(*l->files)))) {
                free(l);
                return NULL;
        }
        if (l)
                snprintf(l->name, sizeof(l->name), "i-%d-%llu", (int)pid, (unsigned long long)start);
        return l;
}

/* Extent bytes one namespace's files hold. */
static uint64_t namespace_bytes(const Spool *sp, uint64_t namespace_id) {
        uint64_t bytes = 0;
        for (const SpoolFile *f = sp->files; f; f = f->next)
                if (f->namespace_id == namespace_id)
                        bytes += f->bytes;
        return bytes;
}

/* Give up on `plan` (loop): what it counted and wrote alone goes. */
static void plan_free(Server *s, SpoolPlan *plan) {
        for (size_t i = 0; i < plan->n; i++) {
                if (plan->list->files[i])
                        plan->list->files[i]->users--;
                extent_store_unref(s->store, plan->items[i].extent);
        }
        if (plan->list) {
                free(plan->list->files);
                free(plan->list);
        }
        free(plan->items);
        free(plan);
}

SpoolPlan *spool_plan(Server *s, Instance *in) {
        Extent **pinned;
        size_t n = instance_gate_pins(in, &pinned);
        uint64_t start = s->spool && n && !in->spool ? start_time(in->pid) : 0;
        SpoolPlan *plan = start ? calloc(1, sizeof(*plan)) : NULL;

        if (!plan)
                return NULL;
        *plan = (SpoolPlan){ .dir_fd = s->spool->dir_fd,
                             .list_of = { .pid = in->pid, .namespace_id = in->namespace_id },
                             .start = start,
                             .list = new_list(in->pid, start, n),
                             .items = calloc(n, sizeof(*plan->items)) };
        if (!plan->list || !plan->items) {
                plan_free(s, plan);
                return NULL;
        }
        for (size_t i = 0; i < n; i++) {
                PlanItem *it = &plan->items[i];
                uint64_t cost = sizeof(ExtentHeader) + pinned[i]->notes_len + pinned[i]->key.size;
                SpoolFile *f;

                *it = (PlanItem){ .extent = pinned[i], .id = { pinned[i]->namespace_id, pinned[i]->key } };
                extent_store_ref(s->store, it->extent);
                plan->n++;
                f = find_file(s->spool, &it->id);
                /* One namespace gets at most half of the budget: another's instances always find room. */
                if (!f && (s->spool->bytes + cost > s->spool->budget ||
                           namespace_bytes(s->spool, it->id.namespace_id) + cost > s->spool->budget / 2)) {
                        sage_warn("instance pid %d: its extents are not spooled: over --spool-budget", (int)in->pid);
                        plan_free(s, plan);
                        return NULL;
                }
                if (!f) { /* counted now, so that a plan running beside this one does not write it too */
                        f = add_file(s->spool, &it->id, cost);
                        it->write = f != NULL;
                }
                if (!f) {
                        plan_free(s, plan);
                        return NULL;
                }
                f->users++;
                plan->list->files[plan->list->n++] = f;
        }
        return plan;
}

void spool_plan_write(Gpu *gpu, SpoolPlan *plan) {
        bool ok = true;

        for (size_t i = 0; ok && i < plan->n; i++)
                if (plan->items[i].write)
                        ok = write_extent(gpu, plan->dir_fd, plan->items[i].extent, &plan->items[i].id);
        plan->written = ok && write_list(plan);
}

void spool_plan_finish(Server *s, Instance *in, SpoolPlan *plan, bool suspended) {
        if (in && suspended && plan->written && !in->spool) {
                for (size_t i = 0; i < plan->n; i++)
                        extent_store_unref(s->store, plan->items[i].extent);
                in->spool = plan->list;
                sage_info("instance pid %d: %zu parked extents spooled", (int)in->pid, plan->n);
                free(plan->items);
                free(plan);
                return;
        }
        if (in && suspended)
                sage_warn("instance pid %d: spooling its extents failed", (int)in->pid);
        if (plan->written)
                unlinkat(plan->dir_fd, plan->list->name, 0);
        plan_free(s, plan);
        prune(s->spool); /* files it wrote for itself alone */
}

/* Pin the extent `id` for `in`, loading it from its file if the store lacks it. */
static bool load_and_pin(Server *s, Instance *in, const ListEntry *id) {
        Extent *e = extent_store_lookup(s->store, id->namespace_id, &id->key);
        GpuExtent *x = NULL;
        ExtentHeader h;
        uint8_t notes[SAGE_PROTO_NOTES_MAX];
        char name[96];
        int fd, r = -1;

        if (e && !e->unverified)
                return instance_gate_pin(s, in, e);
        extent_name(name, sizeof(name), id);
        fd = openat(s->spool->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0 && read_exact(fd, &h, sizeof(h)) && memcmp(h.magic, EXTENT_MAGIC, 8) == 0 &&
            memcmp(&h.id, id, sizeof(*id)) == 0 && h.notes_len <= sizeof(notes) &&
            (!h.notes_len || read_exact(fd, notes, h.notes_len)))
                r = gpu_extent_load(s->gpu, id->key.device, fd, id->key.size, id->key.hash, &x);
        if (fd >= 0)
                close(fd);
        if (r == 0 && extent_store_insert(s->store, id->namespace_id, &id->key, h.flags, (uint32_t)in->pid, notes,
                                          h.notes_len, x, &e) != 0) {
                gpu_release(s->gpu, x);
                r = -1;
        }
        return r == 0 && instance_gate_pin(s, in, e);
}

void spool_instance_adopted(Server *s, Instance *in) {
        uint64_t start = s->spool ? start_time(in->pid) : 0;
        SpoolList *l = NULL;
        ListHeader h;
        size_t loaded = 0;
        int fd = -1;

        if (start) {
                char name[48];
                snprintf(name, sizeof(name), "i-%d-%llu", (int)in->pid, (unsigned long long)start);
                fd = openat(s->spool->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        }
        /* Only a list of this very process, written for its namespace. */
        if (fd < 0 || !read_exact(fd, &h, sizeof(h)) || memcmp(h.magic, LIST_MAGIC, 8) != 0 || h.pid != in->pid ||
            h.start != start || h.namespace_id != in->namespace_id || !(l = new_list(in->pid, start, h.n))) {
                if (fd >= 0)
                        close(fd);
                return;
        }
        for (uint32_t i = 0; i < h.n; i++) {
                ListEntry id;
                SpoolFile *f;
                if (!read_exact(fd, &id, sizeof(id)) || !(f = find_file(s->spool, &id)))
                        break;
                l->files[l->n++] = f; /* counted when the spool was opened */
                if (id.namespace_id == in->namespace_id && load_and_pin(s, in, &id))
                        loaded++;
        }
        close(fd);
        in->spool = l;
        sage_info("instance pid %d: %zu of %u spooled extents back", (int)in->pid, loaded, h.n);
}

void spool_instance_forget(Server *s, Instance *in) {
        SpoolList *l = in->spool;

        if (!l)
                return;
        if (s->spool) {
                for (size_t i = 0; i < l->n; i++)
                        l->files[i]->users--;
                unlinkat(s->spool->dir_fd, l->name, 0);
                prune(s->spool);
        }
        spool_instance_drop(in);
}

void spool_instance_drop(Instance *in) {
        SpoolList *l = in->spool;

        if (!l)
                return;
        free(l->files);
        free(l);
        in->spool = NULL;
}
