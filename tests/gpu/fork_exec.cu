/*
 * A CUDA parent that starts CUDA children: the shape of a serving process
 * that initialises the GPU and then spawns workers (Python's multiprocessing
 * 'spawn', a job runner, a shell wrapper). The preload is inherited by every
 * process of the tree, so each must work on its own: the parent after it has
 * forked with a live context (libsage's atfork handlers, its warm-up thread,
 * its trace), the children from a fresh exec.
 *
 *   1. the parent uploads weights and runs a kernel;
 *   2. a child through fork + execv of this program (--child NAME);
 *   3. a child through posix_spawn of `sh -c '"$0" --child NAME && echo ...'`:
 *      glibc's posix_spawn is a CLONE_VFORK that runs no atfork handler, and
 *      the shell stays between the two (the trailing echo keeps it from
 *      exec'ing the program in its place) with the preload loaded and no
 *      driver call of its own;
 *   4. a child forked without exec that touches no CUDA and returns through
 *      exit(): it runs the atexit handlers it inherited;
 *   5. the parent again: its context still works after its children.
 *
 * Every process uploads the same weights (under `+share` the later ones can
 * map what the first published) and prints checksums it also verified on the
 * host: stdout is the same natively and under SAGE, in this order, because
 * the parent waits for each child before it goes on.
 */
#include "gpu_check.h"
#include "gpu_checksum.cuh"

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define WEIGHT_BYTES ((size_t)16 << 20)
#define WEIGHT_SEED 7ull

/* out[i] = w[i] * k + k: a private buffer the kernel writes from the weights. */
__global__ void scale_words(const unsigned long long *w, unsigned long long *out, size_t n, unsigned long long k) {
        for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                out[i] = w[i] * k + k;
}

/* checksum()'s sum on the host (wrapping 64-bit arithmetic, exact in any order) of the
 * weights (k == 0) or of scale_words()'s output for k. */
static unsigned long long host_sum(const unsigned long long *w, size_t n, unsigned long long k) {
        unsigned long long s = 0;
        for (size_t i = 0; i < n; i++)
                s += (k ? w[i] * k + k : w[i]) * (2 * i + 1);
        return s;
}

/* One process's GPU work, checked against the host and printed as `who: ...`. */
static void gpu_work(const char *who, unsigned long long k) {
        size_t n = WEIGHT_BYTES / 8;
        unsigned long long *host = (unsigned long long *)malloc(WEIGHT_BYTES);
        FAIL_IF(!host, "out of host memory");
        fill_words(host, WEIGHT_BYTES, WEIGHT_SEED);

        unsigned long long *w = NULL, *out = NULL, *d_sum = NULL;
        RT_CHECK(cudaMalloc((void **)&w, WEIGHT_BYTES));
        RT_CHECK(cudaMemcpy(w, host, WEIGHT_BYTES, cudaMemcpyHostToDevice));
        RT_CHECK(cudaMalloc((void **)&out, WEIGHT_BYTES));
        RT_CHECK(cudaMalloc((void **)&d_sum, sizeof(*d_sum)));
        scale_words<<<264, 256>>>(w, out, n, k);
        LAUNCH_CHECK();
        unsigned long long sw = sum_of(w, WEIGHT_BYTES, d_sum), so = sum_of(out, WEIGHT_BYTES, d_sum);
        FAIL_IF(sw != host_sum(host, n, 0), "%s: weights checksum %016llx, host %016llx", who, sw,
                host_sum(host, n, 0));
        FAIL_IF(so != host_sum(host, n, k), "%s: output checksum %016llx, host %016llx", who, so, host_sum(host, n, k));
        RT_FREE(w, out, d_sum);
        free(host);
        printf("%s: weights %016llx output %016llx\n", who, sw, so);
        fflush(stdout);
}

static void wait_child(pid_t pid, const char *what) {
        int status = 0;
        FAIL_IF(waitpid(pid, &status, 0) != pid, "waitpid of the %s: %s", what, strerror(errno));
        FAIL_IF(!WIFEXITED(status) || WEXITSTATUS(status) != 0, "the %s ended with status 0x%x", what, status);
}

int main(int argc, char **argv) {
        if (argc == 4 && strcmp(argv[1], "--child") == 0) {
                gpu_work(argv[2], strtoull(argv[3], NULL, 10));
                return 0;
        }
        FAIL_IF(argc != 1, "usage: fork_exec [--child NAME K]");
        /* The path the children exec: $0 inside `sh -c` must name this program, not /proc/self/exe. */
        char self[PATH_MAX];
        FAIL_IF(!realpath("/proc/self/exe", self), "realpath /proc/self/exe: %s", strerror(errno));

        gpu_work("parent", 3);

        fflush(stdout);
        pid_t pid = fork();
        FAIL_IF(pid < 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                char *args[] = { self, (char *)"--child", (char *)"exec-child", (char *)"5", NULL };
                execv(self, args);
                _exit(127);
        }
        wait_child(pid, "fork+exec child");

        char *sh_args[] = { (char *)"sh", (char *)"-c", (char *)"\"$0\" --child shell-child 9 && echo shell: ok", self,
                            NULL };
        int err = posix_spawn(&pid, "/bin/sh", NULL, NULL, sh_args, environ);
        FAIL_IF(err != 0, "posix_spawn /bin/sh: %s", strerror(err));
        wait_child(pid, "sh -c child");

        pid = fork();
        FAIL_IF(pid < 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                printf("fork-child: no CUDA, exit(0)\n");
                fflush(stdout);
                exit(0);
        }
        wait_child(pid, "fork child without exec");

        gpu_work("parent-after", 11);
        return 0;
}
