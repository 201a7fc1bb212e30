/*
 * driver_facts: what the real driver answers where tests/fakecuda/README.md
 * still says "not measured" (issue 17). Prints one fact a line,
 * `fact NAME: RESULT` (RESULT: a CUresult name, then details), and with OUT
 * set writes OUT/driver-facts.json too. run.sh builds it with nvcc and runs
 * it as root:   probe BINDIR   (BINDIR: kernels.cubin and kernels.ptx)
 *
 * Each group of facts runs in a process of its own (its own CUDA state,
 * bounded by an alarm, its process group killed afterwards); the facts come
 * back over a pipe. This process never initialises CUDA, so a group can
 * fork the processes it needs before any of them calls cuInit.
 *
 *   import   cuMemImportFromShareableHandle of fds the driver did not export
 *            (a regular file, a memfd, /dev/null, a pipe, a closed number)
 *            and of ones it did (its own, another process's, one whose
 *            allocation handle was released before the import)
 *   param    cuFuncGetParamInfo on a cubin's kernels, a kernel without
 *            parameters, a PTX-JIT kernel; strip-*: the same cubin with its
 *            parameter-layout records made padding (kparam: the
 *            EIATTR_KPARAM_INFO records; cbank: also the constant-bank
 *            ones; noinfo: the kernel's .nv.info section renamed away):
 *            a kernel whose layout the driver cannot describe, if it loads
 *   reuse    does cuMemAlloc hand out a freed address again?
 *   release  cuMemRelease of a handle released already (cuda.h: undefined),
 *            while a mapping keeps its memory and after the unmap
 *   ckpt     the checkpoint API called by uid 65534 on a root process, by
 *            callers without cuInit, by a process on itself; checkpoint and
 *            restore of a process holding managed memory, and of an exporter
 *            whose VMM memory another process maps (what the importer reads)
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../tests/gpu/fd_pass.h"

#define MIB ((size_t)1 << 20)
#define PATTERN 0x5a5a1234u
#define FOREIGN_PATTERN 0x0f0f7777u
#define NOBODY 65534
#define ANSWER_MS 4000 /* a peer that says nothing for this long hangs */

/* ------------------------------------------------------------ facts */
static int report_fd = STDOUT_FILENO; /* in a group: the pipe to the parent */

static void fact(const char *name, const char *fmt, ...) {
        char value[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(value, sizeof value, fmt, ap);
        va_end(ap);
        dprintf(report_fd, "fact %s: %s\n", name, value);
}

static const char *ename(CUresult r) {
        const char *n = NULL;
        return cuGetErrorName(r, &n) == CUDA_SUCCESS && n ? n : "unknown";
}

/* cuInit and device 0's primary context, current. */
static CUresult context(void) {
        CUdevice dev;
        CUcontext ctx;
        CUresult r = cuInit(0);
        if (r == CUDA_SUCCESS)
                r = cuDeviceGet(&dev, 0);
        if (r == CUDA_SUCCESS)
                r = cuDevicePrimaryCtxRetain(&ctx, dev);
        return r == CUDA_SUCCESS ? cuCtxSetCurrent(ctx) : r;
}

/* ------------------------------------------------------------ peers */
/* A process of a group, driven by one-byte commands over two pipes. */
typedef struct Peer {
        pid_t pid;
        int to, from;
} Peer;

static bool peer_start(Peer *p, void (*fn)(int in, int out, void *arg), void *arg) {
        int down[2], up[2];
        if (pipe(down) != 0 || pipe(up) != 0)
                return false;
        p->pid = fork();
        if (p->pid == 0) {
                close(down[1]);
                close(up[0]);
                fn(down[0], up[1], arg);
                _exit(0);
        }
        close(down[0]);
        close(up[1]);
        p->to = down[1];
        p->from = up[0];
        return p->pid > 0;
}

static void say(int fd, char c) {
        if (write(fd, &c, 1) != 1)
                _exit(1);
}

/* The next byte from fd within timeout_ms, or 0 (none: the peer hangs or died). */
static char hear(int fd, int timeout_ms) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        char c = 0;
        if (poll(&pfd, 1, timeout_ms) == 1 && read(fd, &c, 1) == 1)
                return c;
        return 0;
}

/* Sends `cmd` and waits for the peer's answer: true when it came. */
static bool ask(const Peer *p, char cmd, int timeout_ms) {
        say(p->to, cmd);
        return hear(p->from, timeout_ms) != 0;
}

/* ------------------------------------------------------------ VMM */
static CUmemAllocationProp fd_prop(void) {
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                                     .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 } };
        return prop;
}

static size_t granularity(void) {
        CUmemAllocationProp prop = fd_prop();
        size_t g = 0;
        cuMemGetAllocationGranularity(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
        return g ? g : 2 * MIB;
}

/* Maps handle h (size bytes) read-write at a fresh reservation: *va. */
static CUresult map(CUmemGenericAllocationHandle h, size_t size, CUdeviceptr *va) {
        CUmemAccessDesc access = { .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 },
                                   .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        CUresult r = cuMemAddressReserve(va, size, 0, 0, 0);
        if (r == CUDA_SUCCESS)
                r = cuMemMap(*va, size, 0, h, 0);
        return r == CUDA_SUCCESS ? cuMemSetAccess(*va, size, &access, 1) : r;
}

/* A new exportable allocation filled with `pattern`, its POSIX fd (or -1), mapped at *va. */
static int filled_export(size_t size, unsigned pattern, CUmemGenericAllocationHandle *h, CUdeviceptr *va) {
        CUmemAllocationProp prop = fd_prop();
        int fd = -1;
        CUresult r = cuMemCreate(h, size, &prop, 0);
        if (r == CUDA_SUCCESS)
                r = map(*h, size, va);
        if (r == CUDA_SUCCESS)
                r = cuMemsetD32(*va, pattern, size / 4);
        if (r == CUDA_SUCCESS)
                r = cuCtxSynchronize();
        if (r == CUDA_SUCCESS)
                r = cuMemExportToShareableHandle(&fd, *h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
        return r == CUDA_SUCCESS ? fd : -1;
}

/* The first word at va as "word=0x...", or the copy's error. */
static const char *first_word(CUdeviceptr va, char *buf, size_t len) {
        unsigned w = 0;
        CUresult r = cuMemcpyDtoH(&w, va, sizeof w);
        if (r == CUDA_SUCCESS)
                snprintf(buf, len, "word=0x%08x", w);
        else
                snprintf(buf, len, "read=%s", ename(r));
        return buf;
}

/* ------------------------------------------------------------ import */
/* Imports fd (closing it) and, when that works, reads its first word. */
static void import_fact(const char *name, int fd, size_t size) {
        CUmemGenericAllocationHandle h;
        CUdeviceptr va;
        char word[64] = "";
        CUresult r = cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        if (fd >= 0)
                close(fd);
        if (r == CUDA_SUCCESS) {
                CUresult m = map(h, size, &va);
                if (m == CUDA_SUCCESS)
                        first_word(va, word, sizeof word);
                else
                        snprintf(word, sizeof word, "map=%s", ename(m));
        }
        fact(name, "%s%s%s", ename(r), *word ? " " : "", word);
}

/* Another process's export: sends its fd at 's', exits at 'x'. */
static void foreign_exporter(int in, int out, void *arg) {
        int sock = *(int *)arg;
        CUmemGenericAllocationHandle h;
        CUdeviceptr va;
        int fd = context() == CUDA_SUCCESS ? filled_export(granularity(), FOREIGN_PATTERN, &h, &va) : -1;
        while (hear(in, 20000) == 's') {
                if (fd_send(sock, fd, "f", 1) < 0)
                        _exit(1);
                say(out, 'k');
        }
}

static void group_import(const char *bindir) {
        int sv[2];
        Peer exporter;
        (void)bindir;
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || !peer_start(&exporter, foreign_exporter, &sv[1])) {
                fact("import_setup", "no socket or process");
                return;
        }
        CUresult r = context();
        if (r != CUDA_SUCCESS) {
                fact("import_context", "%s", ename(r));
                return;
        }
        size_t g = granularity();
        char path[] = "/tmp/driver-facts-XXXXXX";
        int file = mkstemp(path), mem = memfd_create("driver-facts", 0), pp[2] = { -1, -1 }, closed = 999;
        unlink(path);
        if (ftruncate(file, (off_t)g) != 0 || ftruncate(mem, (off_t)g) != 0 || pipe(pp) != 0)
                fact("import_setup", "a file, memfd or pipe failed: %s", strerror(errno));
        while (fcntl(closed, F_GETFD) != -1) /* a number nothing has open */
                closed++;
        import_fact("import_regular_file", file, g);
        import_fact("import_memfd", mem, g);
        import_fact("import_dev_null", open("/dev/null", O_RDWR), g);
        import_fact("import_pipe", pp[0], g);
        import_fact("import_closed_fd", closed, g);

        CUmemGenericAllocationHandle h;
        CUdeviceptr va;
        import_fact("import_own_export", filled_export(g, PATTERN, &h, &va), g);
        int fd = filled_export(g, PATTERN, &h, &va);
        cuMemUnmap(va, g);
        fact("import_released_export_release", "%s", ename(cuMemRelease(h)));
        import_fact("import_released_export", fd, g);
        char c;
        int foreign = ask(&exporter, 's', 20000) ? fd_recv(sv[0], &c, 1, NULL) : -1;
        fact("import_foreign_fd_received", "%s", foreign >= 0 ? "yes" : "no");
        import_fact("import_foreign_process", foreign, g); /* word=0x0f0f7777: the exporter's bytes */
}

/* ------------------------------------------------------------ param */
static void param_fact(const char *name, CUfunction f, size_t index) {
        size_t offset = 0, size = 0;
        CUresult r = cuFuncGetParamInfo(f, index, &offset, &size);
        if (r == CUDA_SUCCESS)
                fact(name, "%s offset=%zu size=%zu", ename(r), offset, size);
        else
                fact(name, "%s", ename(r));
}

/* The file's bytes, NUL-terminated (PTX is text); NULL if unreadable. */
static unsigned char *slurp(const char *dir, const char *name, size_t *len) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, name);
        int fd = open(path, O_RDONLY);
        unsigned char *buf = fd >= 0 && fstat(fd, &st) == 0 ? calloc(1, (size_t)st.st_size + 1) : NULL;
        if (buf && read(fd, buf, (size_t)st.st_size) != st.st_size) {
                free(buf);
                buf = NULL;
        }
        if (fd >= 0)
                close(fd);
        *len = buf ? (size_t)st.st_size : 0;
        return buf;
}

static void group_param(const char *bindir) {
        CUmodule mod, jit;
        CUfunction two, none, jit_two;
        size_t len;
        unsigned char *cubin = slurp(bindir, "kernels.cubin", &len), *ptx = slurp(bindir, "kernels.ptx", &len);
        CUresult r = context();
        if (r == CUDA_SUCCESS)
                r = cubin ? cuModuleLoadData(&mod, cubin) : CUDA_ERROR_FILE_NOT_FOUND;
        fact("param_cubin_load", "%s", ename(r));
        if (r == CUDA_SUCCESS && cuModuleGetFunction(&two, mod, "two_params") == CUDA_SUCCESS &&
            cuModuleGetFunction(&none, mod, "no_params") == CUDA_SUCCESS) {
                param_fact("param_info_first", two, 0);
                param_fact("param_info_second", two, 1);
                param_fact("param_info_past_last", two, 2);
                param_fact("param_info_no_params", none, 0);
        }
        r = ptx ? cuModuleLoadData(&jit, ptx) : CUDA_ERROR_FILE_NOT_FOUND;
        fact("param_ptx_load", "%s", ename(r));
        if (r == CUDA_SUCCESS && cuModuleGetFunction(&jit_two, jit, "two_params") == CUDA_SUCCESS)
                param_fact("param_info_ptx_jit", jit_two, 1);
}

/* EIATTR records of .nv.info.<kernel>: u8 format, u8 attribute, u16 size
 * (EIFMT_SVAL: that many bytes follow; other formats: the value itself). */
#define EIFMT_SVAL 0x04
#define EIATTR_PAD 0x01
#define EIATTR_PARAM_CBANK 0x0a
#define EIATTR_KPARAM_INFO 0x17
#define EIATTR_CBANK_PARAM_SIZE 0x19

/* Turns the records whose attribute is in `attrs` into padding, or (attrs
 * NULL) renames the .nv.info.two_params section: how many it changed, -1
 * when the bytes are no ELF64 cubin. */
static int strip(unsigned char *elf, size_t len, const unsigned char *attrs, size_t nattrs) {
        Elf64_Ehdr eh;
        if (len < sizeof eh)
                return -1;
        memcpy(&eh, elf, sizeof eh);
        if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
            eh.e_shoff + (size_t)eh.e_shnum * sizeof(Elf64_Shdr) > len || eh.e_shstrndx >= eh.e_shnum)
                return -1;
        Elf64_Shdr names;
        memcpy(&names, elf + eh.e_shoff + eh.e_shstrndx * sizeof(Elf64_Shdr), sizeof names);
        int changed = 0;
        for (unsigned i = 0; i < eh.e_shnum; i++) {
                Elf64_Shdr sh;
                memcpy(&sh, elf + eh.e_shoff + i * sizeof sh, sizeof sh);
                if (names.sh_offset + sh.sh_name + 32 > len || sh.sh_offset + sh.sh_size > len)
                        continue;
                char *name = (char *)elf + names.sh_offset + sh.sh_name;
                if (strncmp(name, ".nv.info.", 9) != 0)
                        continue;
                if (!attrs) {
                        if (strcmp(name, ".nv.info.two_params") == 0) {
                                name[4] = 'X'; /* ".nv.Xnfo.two_params": no info for the kernel */
                                changed++;
                        }
                        continue;
                }
                for (unsigned char *p = elf + sh.sh_offset, *end = p + sh.sh_size; p + 4 <= end;) {
                        size_t body = p[0] == EIFMT_SVAL ? (size_t)(p[2] | p[3] << 8) : 0;
                        if (p + 4 + body > end)
                                break;
                        if (memchr(attrs, p[1], nattrs)) {
                                p[1] = EIATTR_PAD;
                                changed++;
                        }
                        p += 4 + body;
                }
        }
        return changed;
}

static void stripped_facts(const char *bindir, const char *variant, const unsigned char *attrs, size_t nattrs) {
        char name[96];
        size_t len;
        CUmodule mod;
        CUlibrary lib;
        CUfunction f;
        CUkernel k;
        CUdeviceptr d = 0;
        unsigned char *cubin = slurp(bindir, "kernels.cubin", &len);
        snprintf(name, sizeof name, "param_strip_%s_records", variant);
        fact(name, "%d", cubin ? strip(cubin, len, attrs, nattrs) : -1);
        CUresult r = context();
        if (r == CUDA_SUCCESS)
                r = cubin ? cuModuleLoadData(&mod, cubin) : CUDA_ERROR_FILE_NOT_FOUND;
        snprintf(name, sizeof name, "param_strip_%s_load", variant);
        fact(name, "%s", ename(r));
        if (r != CUDA_SUCCESS || cuModuleGetFunction(&f, mod, "two_params") != CUDA_SUCCESS)
                return;
        snprintf(name, sizeof name, "param_strip_%s_info", variant);
        param_fact(name, f, 0);
        /* Does the kernel still run right without its layout? */
        int value = 42, got = 0;
        void *args[] = { &d, &value };
        r = cuMemAlloc(&d, sizeof got);
        if (r == CUDA_SUCCESS)
                r = cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL);
        if (r == CUDA_SUCCESS)
                r = cuCtxSynchronize();
        if (r == CUDA_SUCCESS)
                r = cuMemcpyDtoH(&got, d, sizeof got);
        snprintf(name, sizeof name, "param_strip_%s_launch", variant);
        fact(name, "%s value=%d (42 wanted)", ename(r), got);
        r = cuLibraryLoadData(&lib, cubin, NULL, NULL, 0, NULL, NULL, 0);
        if (r == CUDA_SUCCESS)
                r = cuLibraryGetKernel(&k, lib, "two_params");
        size_t offset = 0, size = 0;
        if (r == CUDA_SUCCESS)
                r = cuKernelGetParamInfo(k, 0, &offset, &size);
        snprintf(name, sizeof name, "param_strip_%s_kernel_info", variant);
        fact(name, "%s", ename(r));
}

static void group_strip_kparam(const char *bindir) {
        static const unsigned char attrs[] = { EIATTR_KPARAM_INFO };
        stripped_facts(bindir, "kparam", attrs, sizeof attrs);
}

static void group_strip_cbank(const char *bindir) {
        static const unsigned char attrs[] = { EIATTR_KPARAM_INFO, EIATTR_PARAM_CBANK, EIATTR_CBANK_PARAM_SIZE };
        stripped_facts(bindir, "cbank", attrs, sizeof attrs);
}

static void group_strip_noinfo(const char *bindir) {
        stripped_facts(bindir, "noinfo", NULL, 0);
}

/* ------------------------------------------------------------ reuse */
static CUdeviceptr alloc(size_t size) {
        CUdeviceptr p = 0;
        return cuMemAlloc(&p, size) == CUDA_SUCCESS ? p : 0;
}

static void group_reuse(const char *bindir) {
        (void)bindir;
        CUresult r = context();
        if (r != CUDA_SUCCESS) {
                fact("reuse_context", "%s", ename(r));
                return;
        }
        static const struct {
                const char *name;
                size_t first, second;
        } cases[] = {
                { "alloc_reuse_1mib", MIB, MIB },
                { "alloc_reuse_64mib", 64 * MIB, 64 * MIB },
                { "alloc_reuse_smaller", 4 * MIB, MIB },
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                CUdeviceptr a = alloc(cases[i].first);
                cuMemFree(a);
                CUdeviceptr b = alloc(cases[i].second);
                cuMemFree(b);
                fact(cases[i].name, "%s freed=0x%llx next=0x%llx", a && b == a ? "same" : "other",
                     (unsigned long long)a, (unsigned long long)b);
        }
        CUdeviceptr a = alloc(MIB), b = alloc(MIB);
        cuMemFree(a);
        cuMemFree(b);
        CUdeviceptr c = alloc(MIB);
        fact("alloc_reuse_order", "%s", !c ? "no memory" : c == b ? "last freed" : c == a ? "first freed" : "neither");
}

/* ------------------------------------------------------------ release */
static void group_release(const char *bindir) {
        CUmemAllocationProp prop = fd_prop();
        CUmemGenericAllocationHandle h;
        CUdeviceptr va = 0;
        size_t g = granularity();
        char word[64];
        CUresult r = context();

        (void)bindir;
        if (r == CUDA_SUCCESS)
                r = cuMemCreate(&h, g, &prop, 0);
        if (r == CUDA_SUCCESS)
                r = map(h, g, &va);
        if (r == CUDA_SUCCESS)
                r = cuMemsetD32(va, PATTERN, g / 4);
        if (r != CUDA_SUCCESS) {
                fact("release_setup", "%s", ename(r));
                return;
        }
        fact("release_mapped_first", "%s", ename(cuMemRelease(h)));
        fact("release_mapped_again", "%s", ename(cuMemRelease(h)));
        fact("release_mapped_memory", "%s", first_word(va, word, sizeof word));
        fact("release_unmap", "%s", ename(cuMemUnmap(va, g)));
        fact("release_unmapped_again", "%s", ename(cuMemRelease(h)));
        cuMemAddressFree(va, g);
}

/* ------------------------------------------------------------ ckpt */
/* A target holding device and managed memory with PATTERN; 'c': are they intact? */
static void managed_target(int in, int out, void *arg) {
        CUdeviceptr d = 0, m = 0;
        (void)arg;
        CUresult r = context();
        if (r == CUDA_SUCCESS)
                r = cuMemAlloc(&d, 8 * MIB);
        if (r == CUDA_SUCCESS)
                r = cuMemAllocManaged(&m, 8 * MIB, CU_MEM_ATTACH_GLOBAL);
        if (r == CUDA_SUCCESS)
                r = cuMemsetD32(d, PATTERN, 2 * MIB);
        if (r == CUDA_SUCCESS)
                r = cuMemsetD32(m, PATTERN, 2 * MIB);
        if (r == CUDA_SUCCESS)
                r = cuCtxSynchronize();
        fact("ckpt_target_setup", "%s", ename(r));
        say(out, 'r');
        while (hear(in, 30000) == 'c') {
                char dw[64], mw[64];
                fact("ckpt_managed_target_after", "device %s managed %s (0x%08x wanted)", first_word(d, dw, sizeof dw),
                     first_word(m, mw, sizeof mw), PATTERN);
                say(out, 'k');
        }
}

/* The exporter (arg: the socket to the importer): 'c' reads its own memory. */
static void exporter_target(int in, int out, void *arg) {
        CUmemGenericAllocationHandle h;
        CUdeviceptr va = 0;
        char w[64];
        int fd = context() == CUDA_SUCCESS ? filled_export(granularity(), PATTERN, &h, &va) : -1;
        if (fd_send(*(int *)arg, fd, "e", 1) < 0)
                _exit(1);
        say(out, 'r');
        while (hear(in, 30000) == 'c') {
                fact("ckpt_exporter_own_after_restore", "%s", first_word(va, w, sizeof w));
                say(out, 'k');
        }
}

/* The importer (arg: the socket): maps the export; '1' and '2' read it. */
static void importer(int in, int out, void *arg) {
        CUmemGenericAllocationHandle h;
        CUdeviceptr va = 0;
        char c, w[64];
        int fd = fd_recv(*(int *)arg, &c, 1, NULL);
        CUresult r = context();
        if (r == CUDA_SUCCESS)
                r = cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        if (r == CUDA_SUCCESS)
                r = map(h, granularity(), &va);
        fact("ckpt_importer_setup", "%s", ename(r));
        say(out, 'r');
        for (char cmd; (cmd = hear(in, 30000)) == '1' || cmd == '2';) {
                fact(cmd == '1' ? "ckpt_importer_reads_checkpointed" : "ckpt_importer_reads_restored", "%s",
                     first_word(va, w, sizeof w));
                say(out, 'k');
        }
}

/* A process acting on itself: 's' asks for its own state, locks itself. */
static void self_target(int in, int out, void *arg) {
        CUprocessState st = CU_PROCESS_STATE_FAILED;
        (void)arg;
        CUresult r = context();
        say(out, 'r');
        if (hear(in, 30000) != 's')
                return;
        r = r == CUDA_SUCCESS ? cuCheckpointProcessGetState(getpid(), &st) : r;
        fact("ckpt_self_get_state", "%s state=%d", ename(r), (int)st);
        CUcheckpointLockArgs la = { .timeoutMs = 2000 };
        r = cuCheckpointProcessLock(getpid(), &la);
        fact("ckpt_self_lock", "%s", ename(r));
        if (r == CUDA_SUCCESS)
                fact("ckpt_self_unlock", "%s", ename(cuCheckpointProcessUnlock(getpid(), NULL)));
        say(out, 'k');
}

/* A caller forked from the coordinator (no CUDA yet): as `uid`, with or
 * without its own cuInit, asks for target's state and tries to lock it. */
static void caller(const char *prefix, uid_t uid, bool init, pid_t target) {
        char name[96];
        pid_t pid = fork();
        if (pid != 0) {
                waitpid(pid, NULL, 0);
                return;
        }
        if (uid != 0 && (setgroups(0, NULL) != 0 || setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0)) {
                snprintf(name, sizeof name, "%s_setuid", prefix);
                fact(name, "failed: %s", strerror(errno));
                _exit(0);
        }
        if (init) {
                snprintf(name, sizeof name, "%s_init", prefix);
                fact(name, "%s", ename(cuInit(0)));
        }
        CUprocessState st = CU_PROCESS_STATE_FAILED;
        CUresult r = cuCheckpointProcessGetState(target, &st);
        snprintf(name, sizeof name, "%s_get_state", prefix);
        fact(name, "%s state=%d", ename(r), (int)st);
        CUcheckpointLockArgs la = { .timeoutMs = 2000 };
        r = cuCheckpointProcessLock(target, &la);
        snprintf(name, sizeof name, "%s_lock", prefix);
        fact(name, "%s", ename(r));
        if (r == CUDA_SUCCESS) {
                snprintf(name, sizeof name, "%s_unlock", prefix);
                fact(name, "%s", ename(cuCheckpointProcessUnlock(target, NULL)));
        }
        _exit(0);
}

/* Lock + checkpoint (suspend) or restore + unlock (resume) of pid, as facts. */
static void cycle(const char *prefix, pid_t pid, bool suspend) {
        char name[96];
        CUresult r;
        snprintf(name, sizeof name, "%s_%s", prefix, suspend ? "lock" : "restore");
        fact(name, "%s",
             ename(r = suspend ? cuCheckpointProcessLock(pid, NULL) : cuCheckpointProcessRestore(pid, NULL)));
        snprintf(name, sizeof name, "%s_%s", prefix, suspend ? "checkpoint" : "unlock");
        if (r == CUDA_SUCCESS)
                fact(name, "%s",
                     ename(suspend ? cuCheckpointProcessCheckpoint(pid, NULL) : cuCheckpointProcessUnlock(pid, NULL)));
}

static void group_ckpt(const char *bindir) {
        int sv[2];
        Peer managed, exporter, imp, self;
        (void)bindir;
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || !peer_start(&managed, managed_target, NULL) ||
            !peer_start(&exporter, exporter_target, &sv[0]) || !peer_start(&imp, importer, &sv[1]) ||
            !peer_start(&self, self_target, NULL)) {
                fact("ckpt_setup", "no socket or process");
                return;
        }
        if (!hear(managed.from, 30000) || !hear(exporter.from, 30000) || !hear(imp.from, 30000) ||
            !hear(self.from, 30000)) {
                fact("ckpt_setup", "a target did not come up");
                return;
        }
        caller("ckpt_uid65534", NOBODY, true, managed.pid);
        caller("ckpt_uid65534_noinit", NOBODY, false, managed.pid);
        caller("ckpt_root_noinit", 0, false, managed.pid);
        fact("ckpt_root_init", "%s", ename(cuInit(0))); /* no fork after this */

        cycle("ckpt_managed", managed.pid, true);
        cycle("ckpt_managed", managed.pid, false);
        fact("ckpt_managed_target_answers", "%s", ask(&managed, 'c', ANSWER_MS) ? "yes" : "no (hangs)");
        fact("ckpt_self_answers", "%s", ask(&self, 's', ANSWER_MS) ? "yes" : "no (hangs: it cannot lock itself)");

        cycle("ckpt_exporter", exporter.pid, true);
        fact("ckpt_importer_answers_checkpointed", "%s", ask(&imp, '1', ANSWER_MS) ? "yes" : "no (hangs)");
        cycle("ckpt_exporter", exporter.pid, false);
        fact("ckpt_importer_answers_restored", "%s", ask(&imp, '2', ANSWER_MS) ? "yes" : "no (hangs)");
        fact("ckpt_exporter_answers", "%s", ask(&exporter, 'c', ANSWER_MS) ? "yes" : "no (hangs)");
}

/* ------------------------------------------------------------ main */
static const struct {
        const char *name;
        void (*run)(const char *bindir);
        unsigned seconds; /* its bound: all of them together stay under a minute */
} groups[] = {
        { "import", group_import, 6 },
        { "param", group_param, 5 },
        { "strip-kparam", group_strip_kparam, 4 },
        { "strip-cbank", group_strip_cbank, 4 },
        { "strip-noinfo", group_strip_noinfo, 4 },
        { "reuse", group_reuse, 4 },
        { "release", group_release, 4 },
        { "ckpt", group_ckpt, 22 },
};

static char json[1 << 16];
static size_t json_len;

/* Prints a fact line and adds it to the JSON object. */
static void keep(const char *line) {
        const char *colon = strstr(line, ": ");
        printf("%s\n", line);
        if (strncmp(line, "fact ", 5) != 0 || !colon)
                return;
        char esc[600];
        size_t n = 0;
        for (const char *p = colon + 2; *p && n + 2 < sizeof esc; p++) {
                if (*p == '"' || *p == '\\')
                        esc[n++] = '\\';
                esc[n++] = *p;
        }
        esc[n] = 0;
        json_len += (size_t)snprintf(json + json_len, sizeof json - json_len, "%s\n    \"%.*s\": \"%s\"",
                                     json_len ? "," : "", (int)(colon - line - 5), line + 5, esc);
        if (json_len >= sizeof json)
                json_len = sizeof json - 1;
}

static void run_group(size_t i, const char *bindir) {
        int p[2];
        if (pipe(p) != 0)
                return;
        pid_t pid = fork();
        if (pid == 0) {
                setpgid(0, 0);
                close(p[0]);
                report_fd = p[1];
                alarm(groups[i].seconds);
                groups[i].run(bindir);
                _exit(0);
        }
        close(p[1]);
        setpgid(pid, pid);
        int st = 0;
        waitpid(pid, &st, 0);
        kill(-pid, SIGKILL); /* the processes the group started */
        FILE *in = fdopen(p[0], "r");
        char line[1024];
        while (in && fgets(line, sizeof line, in)) {
                line[strcspn(line, "\n")] = 0;
                keep(line);
        }
        if (in)
                fclose(in);
        if (WIFSIGNALED(st)) {
                snprintf(line, sizeof line, "fact group_%s_ended: signal %d%s", groups[i].name, WTERMSIG(st),
                         WTERMSIG(st) == SIGALRM ? " (bound reached: something hung)" : "");
                keep(line);
        }
}

int main(int argc, char **argv) {
        if (argc < 2) {
                fprintf(stderr, "usage: probe BINDIR [GROUP...]   (run.sh runs it)\n");
                return 2;
        }
        int version = 0;
        cuDriverGetVersion(&version);
        printf("driver_facts: driver API version %d, uid %d\n", version, (int)getuid());
        fflush(stdout);
        for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
                bool chosen = argc == 2;
                for (int a = 2; a < argc; a++)
                        chosen |= strcmp(argv[a], groups[i].name) == 0;
                if (chosen)
                        run_group(i, argv[1]);
                fflush(stdout);
        }
        const char *out = getenv("OUT");
        if (out && *out) {
                char path[4096];
                snprintf(path, sizeof path, "%s/driver-facts.json", out);
                FILE *f = fopen(path, "w");
                if (!f)
                        return 1;
                fprintf(f, "{\n  \"driver_version\": %d,\n  \"facts\": {%s\n  }\n}\n", version, json);
                fclose(f);
        }
        return 0;
}
