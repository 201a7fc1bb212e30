/*
 * Container identities.
 *
 * A uid says little once containers exist: every container's root is uid 0,
 * and two tenants' containers may well run as one uid. So a client of the
 * main socket whose pid, mount or user namespace differs from saged's is
 * taken to live in a container, and gets a namespace family of that
 * container's own, numbered here; a client that shares all three with
 * saged is on the host and keeps label 0. Pods that are meant to share
 * reach the broker through a labelled socket the platform gives them
 * (label.c), where this module is not asked.
 *
 * The peer is the process that connected, never one that took its pid
 * later: the pidfd comes from SO_PEERPIDFD (Linux 6.5), which names that
 * very process, and the namespaces from the pidfd itself
 * (PIDFD_GET_*_NAMESPACE, 6.11), so no pid is looked up at all. Older
 * kernels get the pid's /proc/PID/ns files, checked against the pidfd
 * after opening (the process must still be there, so the pid was not
 * reused in between). A client whose namespaces cannot be established (it
 * exited already; a broker not running as root may not read another uid's
 * or a non-dumpable process's) gets a private namespace: a number of its
 * own, in no table, that nobody else is ever given. It is served, and
 * shares with nobody, which is always safe.
 *
 * Namespace inode numbers are reused once a namespace dies, so an inode
 * alone is no identity. An entry here holds the container's namespace
 * files open, which keeps those namespaces (and their inodes) alive: no
 * later container can show the same triple while the entry lives. The
 * mount namespace is the exception where the kernel gives it a 64-bit id
 * that is never reused (NS_GET_MNTNS_ID, Linux 6.8): pinning it would keep
 * the dead container's mounts (its root file system) alive and could keep
 * the runtime from tearing it down, so that id is kept instead. The
 * entry lives while the container has clients or extents; numbers only
 * grow, so one dropped is never handed out again, and an extent left
 * under a number whose entry went (evicted later by the LRU) is nobody's.
 * The table is bounded: when full, the least recently used container
 * without clients gives its (unreferenced) extents and its entry back.
 */
#include "identity.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
/* linux/pidfd.h of Linux 6.11; older headers lack them. */
/* linux/nsfs.h of Linux 6.8: a mount namespace's 64-bit id, never reused. */
#ifndef NS_GET_MNTNS_ID
#define NS_GET_MNTNS_ID _IOR(0xb7, 0x5, uint64_t)
#endif
#ifndef PIDFD_GET_MNT_NAMESPACE
#define PIDFD_GET_MNT_NAMESPACE _IO(0xFF, 3)
#define PIDFD_GET_PID_NAMESPACE _IO(0xFF, 5)
#define PIDFD_GET_USER_NAMESPACE _IO(0xFF, 9)
#endif

enum {
        NS_PID,
        NS_MNT,
        NS_USER,
        N_NS
};

static const struct {
        const char *name;
        unsigned long ioctl;
} namespaces[N_NS] = {
        [NS_PID] = { "pid", PIDFD_GET_PID_NAMESPACE },
        [NS_MNT] = { "mnt", PIDFD_GET_MNT_NAMESPACE },
        [NS_USER] = { "user", PIDFD_GET_USER_NAMESPACE },
};

/* A namespace: its nsfs inode, or for a mount namespace whose kernel tells
 * it, { NS_UNIQUE, its never-reused id }. */
typedef struct NsId {
        uint64_t dev, ino;
} NsId;
#define NS_UNIQUE UINT64_MAX

typedef struct Identity {
        uint32_t number;
        NsId ns[N_NS];
        int fds[N_NS]; /* pin the namespaces, hence their inode numbers */
        size_t n_clients;
        uint64_t last_used_ns;
        bool has_extents; /* scratch of sweep() */
} Identity;

struct IdentityTable {
        IdentityMode mode;
        ExtentStore *store;
        size_t max;
        IdentityForgetFn forget;
        void *userdata;
        NsId self[N_NS];
        Identity *items; /* ascending by number: appended in number order, removed in place */
        size_t n;
        uint64_t next; /* offset of the next number from IDENTITY_FIRST */
};

static void close_fds(int fds[N_NS]) {
        for (int i = 0; i < N_NS; i++)
                if (fds[i] >= 0) {
                        close(fds[i]);
                        fds[i] = -1;
                }
}

/* Where the mount namespace has a unique id, its fd is closed: nothing to pin. */
static int ns_ids(int fds[N_NS], NsId ids[N_NS]) {
        for (int i = 0; i < N_NS; i++) {
                struct stat st;
                uint64_t id;
                if (i == NS_MNT && ioctl(fds[i], NS_GET_MNTNS_ID, &id) == 0) {
                        ids[i] = (NsId){ .dev = NS_UNIQUE, .ino = id };
                        close(fds[i]);
                        fds[i] = -1;
                        continue;
                }
                if (fstat(fds[i], &st) < 0)
                        return -errno;
                ids[i] = (NsId){ .dev = st.st_dev, .ino = st.st_ino };
        }
        return 0;
}

int identity_table_new(IdentityTable **out, IdentityMode mode, ExtentStore *store, size_t max, IdentityForgetFn forget,
                       void *userdata) {
        int fds[N_NS] = { -1, -1, -1 };
        IdentityTable *t;
        int r = 0;

        if (mode == IDENTITY_ISOLATE) {
                for (int i = 0; i < N_NS && r == 0; i++) {
                        char path[32];
                        snprintf(path, sizeof(path), "/proc/self/ns/%s", namespaces[i].name);
                        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
                        if (fds[i] < 0)
                                r = -errno;
                }
        }
        t = calloc(1, sizeof(*t));
        if (!t)
                r = -ENOMEM;
        if (r == 0 && mode == IDENTITY_ISOLATE)
                r = ns_ids(fds, t->self);
        close_fds(fds);
        if (r < 0) {
                free(t);
                return r;
        }
        t->mode = mode;
        t->store = store;
        t->max = max && max < IDENTITY_MAX ? max : IDENTITY_MAX;
        t->forget = forget;
        t->userdata = userdata;
        *out = t;
        return 0;
}

IdentityTable *identity_table_free(IdentityTable *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n; i++)
                close_fds(t->items[i].fds);
        free(t->items);
        free(t);
        return NULL;
}

int identity_peer_pidfd(int fd, const struct ucred *cred) {
        int pidfd = -1;
        socklen_t len = sizeof(pidfd);

        if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0)
                return pidfd;
        if (errno != ENOPROTOOPT && errno != EINVAL)
                return -errno;
        /* Before Linux 6.5: the pid may name another process by now (the
         * connecting one exited, the pid was reused); see daemon/README.md. */
        if (cred->pid <= 0)
                return -ESRCH;
        pidfd = pidfd_open(cred->pid, 0);
        return pidfd < 0 ? -errno : pidfd;
}

/* The pid of a pidfd's process in saged's pid namespace, from fdinfo (<= 0: gone or invisible). */
static pid_t pidfd_pid(int pidfd) {
        char path[64], line[128];
        long pid = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
        f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "Pid: %ld", &pid) == 1)
                        break;
        fclose(f);
        return (pid_t)pid;
}

/* Kernels without the pidfd namespace ioctls: /proc/PID/ns, then make sure PID was still the pidfd's process. */
static int open_proc_namespaces(int pidfd, int fds[N_NS]) {
        pid_t pid = pidfd_pid(pidfd);

        if (pid <= 0)
                return -ESRCH;
        for (int i = 0; i < N_NS; i++) {
                char path[64];
                snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, namespaces[i].name);
                fds[i] = open(path, O_RDONLY | O_CLOEXEC);
                if (fds[i] < 0)
                        return -errno;
        }
        /* Not reaped yet, so the pid cannot have been reused while we opened. */
        if (pidfd_send_signal(pidfd, 0, NULL, 0) < 0 && errno != EPERM)
                return -ESRCH;
        return 0;
}

static int open_peer_namespaces(int fd, const struct ucred *cred, int fds[N_NS]) {
        _cleanup_close_ int pidfd = identity_peer_pidfd(fd, cred);
        int r = 0;

        if (pidfd < 0)
                return pidfd;
        for (int i = 0; i < N_NS; i++) {
                fds[i] = ioctl(pidfd, namespaces[i].ioctl, 0);
                if (fds[i] >= 0)
                        continue;
                r = -errno;
                if (i == 0 && (r == -ENOTTY || r == -EINVAL))
                        return open_proc_namespaces(pidfd, fds);
                return r;
        }
        return 0;
}

static Identity *find_by_ns(IdentityTable *t, const NsId ns[N_NS]) {
        for (size_t i = 0; i < t->n; i++)
                if (memcmp(t->items[i].ns, ns, sizeof(t->items[i].ns)) == 0)
                        return &t->items[i];
        return NULL;
}

static Identity *find_by_number(IdentityTable *t, uint32_t number) {
        size_t lo = 0, hi = t->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (t->items[mid].number == number)
                        return &t->items[mid];
                if (t->items[mid].number < number)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static void forget(IdentityTable *t, uint32_t number) {
        if (t->forget)
                t->forget(t->userdata, number);
}

static void remove_at(IdentityTable *t, size_t i) {
        sage_debug("container %u: no clients, no extents: forgotten", (unsigned)(t->items[i].number - IDENTITY_FIRST));
        close_fds(t->items[i].fds);
        forget(t, t->items[i].number);
        memmove(&t->items[i], &t->items[i + 1], (t->n - i - 1) * sizeof(*t->items));
        t->n--;
}

/* Forget containers that have neither clients nor extents: one pass over the store. */
static void sweep(IdentityTable *t) {
        for (size_t i = 0; i < t->n; i++)
                t->items[i].has_extents = false;
        for (Extent *e = extent_store_next(t->store, 0); e; e = extent_store_next(t->store, e->id)) {
                uint32_t label = (uint32_t)(e->namespace_id >> 32);
                Identity *id = identity_is_container(label) ? find_by_number(t, label) : NULL;
                if (id)
                        id->has_extents = true;
        }
        for (size_t i = t->n; i-- > 0;)
                if (t->items[i].n_clients == 0 && !t->items[i].has_extents)
                        remove_at(t, i);
}

/* Table full: the least recently used container without clients gives its extents back, then its entry. */
static bool reclaim(IdentityTable *t) {
        size_t victim = t->n;

        for (size_t i = 0; i < t->n; i++)
                if (t->items[i].n_clients == 0 &&
                    (victim == t->n || t->items[i].last_used_ns < t->items[victim].last_used_ns))
                        victim = i;
        if (victim == t->n)
                return false;
        uint32_t number = t->items[victim].number;
        /* Unreferenced: references come only from clients of the namespace, and it has none. */
        for (Extent *e = extent_store_next(t->store, 0), *next; e; e = next) {
                next = extent_store_next(t->store, e->id);
                if ((uint32_t)(e->namespace_id >> 32) == number && extent_store_evict(t->store, e) != 0)
                        return false;
        }
        sage_info("container %u: evicted to make room for another container", (unsigned)(number - IDENTITY_FIRST));
        remove_at(t, victim);
        return true;
}

static int add(IdentityTable *t, int fds[N_NS], const NsId ns[N_NS], uint32_t *number) {
        Identity *id;

        sweep(t);
        if (t->n == t->max && !reclaim(t))
                return IDENTITY_E_FULL;
        if (t->next > UINT32_MAX - IDENTITY_FIRST)
                return IDENTITY_E_FULL;
        if (!t->items) {
                t->items = calloc(IDENTITY_MAX, sizeof(*t->items));
                if (!t->items)
                        return -ENOMEM;
        }
        id = &t->items[t->n++];
        *id = (Identity){ .number = IDENTITY_FIRST + (uint32_t)t->next++, .n_clients = 1 };
        memcpy(id->ns, ns, sizeof(id->ns));
        memcpy(id->fds, fds, sizeof(id->fds));
        for (int i = 0; i < N_NS; i++)
                fds[i] = -1;
        id->last_used_ns = sage_now_ns();
        *number = id->number;
        sage_info("container %u: pid ns %llu, mnt ns %llu, user ns %llu", (unsigned)(id->number - IDENTITY_FIRST),
                  (unsigned long long)ns[NS_PID].ino, (unsigned long long)ns[NS_MNT].ino,
                  (unsigned long long)ns[NS_USER].ino);
        return 0;
}

static int attach_ns(IdentityTable *t, int fds[N_NS], const NsId ns[N_NS], uint32_t *number);

int identity_attach(IdentityTable *t, int fd, const struct ucred *cred, uint32_t *number) {
        int fds[N_NS] = { -1, -1, -1 };
        NsId ns[N_NS];
        int r;

        *number = 0;
        if (t->mode == IDENTITY_SHARE)
                return 0;
        r = open_peer_namespaces(fd, cred, fds);
        if (r == 0)
                r = ns_ids(fds, ns);
        if (r < 0) {
                close_fds(fds);
                if (r == -ENOMEM)
                        return r;
                /* Unsure who it is: a namespace nobody else has, or will have. */
                if (t->next > UINT32_MAX - IDENTITY_FIRST)
                        return IDENTITY_E_FULL;
                *number = IDENTITY_FIRST + (uint32_t)t->next++;
                sage_debug("client pid %d: namespaces unknown (%s): private namespace %u", (int)cred->pid, strerror(-r),
                           (unsigned)(*number - IDENTITY_FIRST));
                return 0;
        }
        return attach_ns(t, fds, ns, number);
}

/* A peer known by its namespaces; takes the fds (keeps or closes them). */
static int attach_ns(IdentityTable *t, int fds[N_NS], const NsId ns[N_NS], uint32_t *number) {
        Identity *id;
        int r;

        if (memcmp(ns, t->self, sizeof(t->self)) == 0) {
                close_fds(fds);
                return 0;
        }
        id = find_by_ns(t, ns);
        if (id) {
                close_fds(fds);
                id->n_clients++;
                id->last_used_ns = sage_now_ns();
                *number = id->number;
                return 0;
        }
        r = add(t, fds, ns, number);
        close_fds(fds);
        return r;
}

void identity_detach(IdentityTable *t, uint32_t number) {
        Identity *id = find_by_number(t, number);

        if (!id) {
                /* A private namespace: its only client is gone, and the number with it. */
                if (identity_is_container(number) && number < IDENTITY_FIRST + t->next)
                        forget(t, number);
                return;
        }
        if (id->n_clients > 0) {
                id->n_clients--;
                id->last_used_ns = sage_now_ns();
        }
}

int identity_attach_ids(IdentityTable *t, const uint64_t ids[6], uint32_t *number) {
        int fds[N_NS] = { -1, -1, -1 };
        NsId ns[N_NS];

        for (int i = 0; i < N_NS; i++)
                ns[i] = (NsId){ .dev = ids[2 * i], .ino = ids[2 * i + 1] };
        *number = 0;
        return attach_ns(t, fds, ns, number);
}

size_t identity_count(const IdentityTable *t) {
        return t->n;
}
