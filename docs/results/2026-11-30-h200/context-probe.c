/* How many processes can hold a CUDA context on GPU 0 at once? children in waves of 16. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
int main(int argc, char **argv) {
        int max = argc > 1 ? atoi(argv[1]) : 200, ok = 0, fail = 0;
        pid_t *pids = calloc(max, sizeof(pid_t));
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int base = 0; base < max && !fail; base += 16) {
                int fds[16][2], n = 0;
                for (int i = 0; i < 16 && base + i < max; i++, n++) {
                        pipe(fds[i]);
                        pid_t p = fork();
                        if (p == 0) {
                                CUdevice d; CUcontext c; CUdeviceptr x; char r = 'n';
                                close(fds[i][0]);
                                CUresult e = cuInit(0);
                                if (!e) e = cuDeviceGet(&d, 0);
                                if (!e) e = cuDevicePrimaryCtxRetain(&c, d);
                                if (!e) e = cuCtxSetCurrent(c);
                                if (!e) e = cuMemAlloc(&x, 1 << 20);
                                if (!e) r = 'y'; else { const char *s = ""; cuGetErrorString(e, &s); fprintf(stderr, "child %d: %d %s\n", base + i, (int)e, s); }
                                write(fds[i][1], &r, 1);
                                if (r == 'y') pause();
                                _exit(0);
                        }
                        pids[base + i] = p;
                        close(fds[i][1]);
                }
                for (int i = 0; i < n; i++) {
                        char r = 'n';
                        if (read(fds[i][0], &r, 1) != 1) r = 'n';
                        if (r == 'y') ok++; else fail++;
                        close(fds[i][0]);
                }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        fflush(stdout);
        system("nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader");
        printf("contexts held at once: %d (failed %d) in %.1f s, CUDA_DEVICE_MAX_CONNECTIONS=%s\n", ok, fail,
               (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, getenv("CUDA_DEVICE_MAX_CONNECTIONS") ? getenv("CUDA_DEVICE_MAX_CONNECTIONS") : "(default)");
        for (int i = 0; i < max; i++) if (pids[i] > 0) kill(pids[i], SIGKILL);
        while (wait(NULL) > 0) ;
        return 0;
}
