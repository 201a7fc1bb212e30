/*
 * Does the real driver's cuInit (and the primary-context retain) need
 * glibc's loader lock? libsage's eager warm-up runs them in its thread while
 * the application may be inside a library constructor (holding that lock)
 * and calling the driver itself; if the driver's start-up took the loader
 * lock, that would still deadlock inside the driver (intercept/warmup.c,
 * "The loader lock"). Without libsage: one thread holds the lock (a dlopen
 * whose constructor waits), another calls cuInit + cuDevicePrimaryCtxRetain.
 *   probe LIBHOLDER   (run.sh builds both)
 * Prints "RESULT: cuInit+retain do not need the loader lock (N ms)" or
 * "RESULT: cuInit+retain BLOCKED while the loader lock was held".
 */
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static int done;
static CUresult init_r = CUDA_ERROR_UNKNOWN, retain_r = CUDA_ERROR_UNKNOWN;
static CUresult (*p_init)(unsigned);
static CUresult (*p_device_get)(CUdevice *, int);
static CUresult (*p_retain)(CUcontext *, CUdevice);

static double now_ms(void) {
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void *holder(void *path) {
        if (!dlopen(path, RTLD_NOW | RTLD_LOCAL))
                fprintf(stderr, "dlopen %s: %s\n", (char *)path, dlerror());
        return NULL;
}

static void *driver(void *arg) {
        CUdevice dev;
        CUcontext ctx;

        (void)arg;
        init_r = p_init(0);
        if (init_r == CUDA_SUCCESS && p_device_get(&dev, 0) == CUDA_SUCCESS)
                retain_r = p_retain(&ctx, dev);
        pthread_mutex_lock(&lock);
        done = 1;
        pthread_cond_signal(&done_cond);
        pthread_mutex_unlock(&lock);
        return NULL;
}

int main(int argc, char **argv) {
        int in[2], out[2];
        char c, env[16];
        pthread_t h, d;
        struct timespec deadline;
        void *cuda;
        double t0;
        int blocked = 0;

        if (argc != 2) {
                fprintf(stderr, "usage: %s LIBHOLDER\n", argv[0]);
                return 2;
        }
        cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!cuda) {
                printf("SKIP: %s\n", dlerror());
                return 77;
        }
        *(void **)&p_init = dlsym(cuda, "cuInit");
        *(void **)&p_device_get = dlsym(cuda, "cuDeviceGet");
        *(void **)&p_retain = dlsym(cuda, "cuDevicePrimaryCtxRetain");
        if (!p_init || !p_device_get || !p_retain || pipe(in) < 0 || pipe(out) < 0)
                return 2;
        snprintf(env, sizeof(env), "%d", in[1]);
        setenv("LOADER_PROBE_IN", env, 1);
        snprintf(env, sizeof(env), "%d", out[0]);
        setenv("LOADER_PROBE_OUT", env, 1);
        pthread_create(&h, NULL, holder, argv[1]);
        if (read(in[0], &c, 1) != 1)
                return 2; /* the constructor now holds the loader lock */
        t0 = now_ms();
        pthread_create(&d, NULL, driver, NULL);
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 20;
        pthread_mutex_lock(&lock);
        while (!done)
                if (pthread_cond_timedwait(&done_cond, &lock, &deadline) == ETIMEDOUT) {
                        blocked = 1;
                        break;
                }
        pthread_mutex_unlock(&lock);
        if (blocked)
                printf("RESULT: cuInit+retain BLOCKED while the loader lock was held (> 20 s)\n");
        else
                printf("RESULT: cuInit+retain do not need the loader lock (%.1f ms; cuInit %d, retain %d)\n",
                       now_ms() - t0, (int)init_r, (int)retain_r);
        (void)!write(out[1], "g", 1); /* release the constructor */
        pthread_join(h, NULL);
        pthread_join(d, NULL);
        if (blocked)
                printf("after release: cuInit %d, retain %d (%.1f ms)\n", (int)init_r, (int)retain_r, now_ms() - t0);
        return blocked;
}
