/* fake_core.c: initialization, devices and error strings of the fake driver.
 *
 * The environment is read once, in the first cuInit (under init_lock, so
 * concurrent first callers wait for it as with the real driver, including
 * the SAGE_FAKE_INIT_MS delay). Until cuInit succeeds every other entry point
 * answers CUDA_ERROR_NOT_INITIALIZED; a failed cuInit (SAGE_FAKE_FAIL_INIT, no
 * visible device) is remembered and returned again by later calls.
 * CUDA_VISIBLE_DEVICES is a comma list of simulated GPU indices or UUIDs
 * ("GPU-" and the UUID in nvidia-smi's form, or a prefix of it that names
 * one GPU); as the real driver does (CUDA C Programming Guide, "CUDA
 * Environment Variables": only the devices listed are visible, in that
 * order, numbered from 0; an invalid entry makes it ignore the rest of the
 * list; an empty list hides every device), parsing stops at the first entry
 * that names no device. A device listed twice also ends the list (assumed:
 * the documentation does not say; real drivers treat it as invalid).
 * Each simulated GPU has a stable UUID of its own (fake_gpu_uuid).
 */
#include "fake_internal.h"

#include <fcntl.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <strings.h>
#include <time.h>

FakeState fake = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .init_lock = PTHREAD_MUTEX_INITIALIZER,
        .next_id = 1,
};

void fake_lock(void) {
        pthread_mutex_lock(&fake.lock);
}
void fake_unlock(void) {
        pthread_mutex_unlock(&fake.lock);
}

bool fake_listed_locked(const void *head, const void *obj) {
        /* memcpy reads the `next` member whatever the struct's type */
        for (const void *p = head; p; memcpy(&p, p, sizeof p))
                if (p == obj)
                        return true;
        return false;
}

bool fake_listed(const void *head_addr, const void *obj) {
        fake_lock();
        const void *head;
        memcpy(&head, head_addr, sizeof head);
        bool listed = fake_listed_locked(head, obj);
        fake_unlock();
        return listed;
}

CUresult fake_unlist(void *head_addr, const void *obj, CUresult missing) {
        fake_lock();
        bool found = false;
        /* `link` is where the pointer to the next node is kept: the head, then each node's `next` */
        for (void *link = head_addr, *p; !found && (memcpy(&p, link, sizeof p), p); link = p) {
                if (p == obj) {
                        memcpy(link, p, sizeof(void *)); /* the node's next */
                        found = true;
                }
        }
        fake_unlock();
        return found ? CUDA_SUCCESS : missing;
}

CUresult fake_destroy(void *head_addr, void *obj, CUresult missing, void (*release)(void *)) {
        FAKE_REQUIRE_INIT();
        FAKE_TRY(fake_unlist(head_addr, obj, missing));
        release(obj);
        return CUDA_SUCCESS;
}

void *fake_list_add(void *head_addr, const void *init, size_t size) {
        void *obj = malloc(size);
        if (!obj)
                return NULL;
        memcpy(obj, init, size);
        fake_lock();
        memcpy(obj, head_addr, sizeof(void *)); /* its next: the old head */
        memcpy(head_addr, &obj, sizeof obj);
        fake_unlock();
        return obj;
}

bool fake_initialized(void) {
        return __atomic_load_n(&fake.init_done, __ATOMIC_ACQUIRE) && fake.init_result == CUDA_SUCCESS &&
               fake.init_pid == getpid();
}

double fake_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void fake_sleep_ms(unsigned ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
}

size_t fake_page_round(size_t n) {
        return (n + 4095) & ~(size_t)4095;
}

/* "512M", "4G", "64k", "1024": bytes. Bad input gives the default. */
static size_t env_size(const char *name, size_t def) {
        const char *s = getenv(name);
        if (!s || !*s)
                return def;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s)
                return def;
        static const char units[] = "KMGT"; /* each 1024 times the one before */
        const char *unit = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
        if (unit) {
                v <<= 10 * (unit - units + 1);
                end++;
        }
        if (*end == 'i')
                end++;
        if (toupper((unsigned char)*end) == 'B')
                end++;
        return *end ? def : (size_t)v;
}

static unsigned env_uint(const char *name, unsigned def) {
        const char *s = getenv(name);
        if (!s || !*s)
                return def;
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        return *end ? def : (unsigned)v;
}

/* Distinct from the first byte on (as real UUIDs are: a short form such
 * as "GPU-8932f937" names one GPU), readable as the fake's in the rest. */
void fake_gpu_uuid(int gpu, unsigned char out[16]) {
        uint32_t h = (uint32_t)(gpu + 1) * 2654435761u;
        for (int i = 0; i < 4; i++)
                out[i] = (unsigned char)(h >> (24 - 8 * i));
        memcpy(out + 4, "SAGEFAKEGPU", 11);
        out[15] = (unsigned char)gpu;
}

/* The simulated GPU `entry` (up to a comma or the end) names, or -1. */
static int visible_entry(const char *entry, size_t len, unsigned gpus) {
        static const char hex[] = "0123456789abcdef";
        int found = -1;

        if (len > 4 && strncasecmp(entry, "GPU-", 4) == 0) {
                for (unsigned g = 0; g < gpus; g++) {
                        unsigned char u[16];
                        char text[64];
                        size_t n = 0;
                        fake_gpu_uuid((int)g, u);
                        n += (size_t)snprintf(text, sizeof text, "GPU-");
                        for (int i = 0; i < 16; i++) {
                                if (i == 4 || i == 6 || i == 8 || i == 10)
                                        text[n++] = '-';
                                text[n++] = hex[u[i] >> 4];
                                text[n++] = hex[u[i] & 15];
                        }
                        text[n] = 0;
                        if (len <= n && strncasecmp(text, entry, len) == 0) {
                                if (found >= 0)
                                        return -1; /* a prefix of two UUIDs names no device */
                                found = (int)g;
                        }
                }
                return found;
        }
        char *end;
        long idx = strtol(entry, &end, 10);
        if (end == entry || (size_t)(end - entry) != len || idx < 0 || idx >= (long)gpus)
                return -1;
        return (int)idx;
}

static void read_environment(void) {
        fake.init_ms = env_uint("SAGE_FAKE_INIT_MS", 0);
        fake.ctx_ms = env_uint("SAGE_FAKE_CTX_MS", 0);
        fake.map_ms = env_uint("SAGE_FAKE_MAP_MS", 0);
        fake.import_ms = env_uint("SAGE_FAKE_IMPORT_MS", 0);
        atomic_store(&fake.fail_imports, env_uint("SAGE_FAKE_FAIL_IMPORT", 0));
        fake.pin_ms = env_uint("SAGE_FAKE_PIN_MS", 0);
        fake.register_refuse = (CUresult)env_uint("SAGE_FAKE_REGISTER_REFUSE", 0);
        fake.mem_total = env_size("SAGE_FAKE_MEM", (size_t)4 << 30);
        fake.local_threads = env_size("SAGE_FAKE_LOCAL_THREADS", 0);
        fake.restore_squeeze = getenv("SAGE_FAKE_RESTORE_FREE") != NULL;
        fake.restore_free = env_size("SAGE_FAKE_RESTORE_FREE", 0);
        unsigned gpus = env_uint("SAGE_FAKE_DEVICES", 1);
        if (gpus > FAKE_MAX_DEVICES)
                gpus = FAKE_MAX_DEVICES;

        const char *visible = getenv("CUDA_VISIBLE_DEVICES");
        fake.device_count = 0;
        if (!visible) {
                for (unsigned i = 0; i < gpus; i++)
                        fake.physical[fake.device_count++] = (int)i;
                return;
        }
        const char *p = visible;
        while (*p && fake.device_count < FAKE_MAX_DEVICES) {
                while (isspace((unsigned char)*p))
                        p++;
                size_t len = strcspn(p, ",");
                while (len && isspace((unsigned char)p[len - 1]))
                        len--;
                int gpu = visible_entry(p, len, gpus);
                for (int i = 0; i < fake.device_count && gpu >= 0; i++)
                        if (fake.physical[i] == gpu)
                                gpu = -1;
                if (gpu < 0)
                        break;
                fake.physical[fake.device_count++] = gpu;
                p += strcspn(p, ",");
                if (*p != ',')
                        break;
                p++;
        }
}

/*
 * A driver library tears itself down at exit: static destructors and exit
 * handlers it registers when it is loaded run on the exiting thread, while
 * any other thread may still be inside the driver (real drivers then crash
 * on their destroyed locks). The simulated driver registers the same kind
 * of handler and reports the overlap, during the SAGE_FAKE_INIT_MS delay,
 * instead of crashing at random.
 */
static bool init_sleeping;

static void exit_teardown(void) {
        static const char msg[] = "fakecuda: torn down at exit while cuInit runs on another thread\n";

        if (__atomic_load_n(&init_sleeping, __ATOMIC_ACQUIRE)) {
                if (write(2, msg, sizeof(msg) - 1) < 0) {
                        /* nothing more to say */
                }
                abort();
        }
}

__attribute__((constructor)) static void register_exit_teardown(void) {
        atexit(exit_teardown);
}

FAKE_EXPORT CUresult cuInit(unsigned int Flags) {
        if (Flags != 0)
                return CUDA_ERROR_INVALID_VALUE;
        if (__atomic_load_n(&fake.init_done, __ATOMIC_ACQUIRE))
                /* Like the real driver, a fork()ed child of an initialised process cannot use CUDA. */
                return fake.init_pid == getpid() ? fake.init_result : CUDA_ERROR_NOT_INITIALIZED;
        pthread_mutex_lock(&fake.init_lock);
        if (!fake.init_done) {
                read_environment();
                for (int i = 0; i < FAKE_MAX_DEVICES; i++)
                        pthread_mutex_init(&fake.primary_create_lock[i], NULL);
                /* Tells a test, deterministically, that a cuInit is now inside the driver. */
                const char *mark = getenv("SAGE_FAKE_INIT_MARK");
                if (mark && *mark) {
                        int fd = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                        if (fd >= 0)
                                close(fd);
                }
                if (fake.init_ms) {
                        __atomic_store_n(&init_sleeping, true, __ATOMIC_RELEASE);
                        fake_sleep_ms(fake.init_ms);
                        __atomic_store_n(&init_sleeping, false, __ATOMIC_RELEASE);
                }
                const char *fail = getenv("SAGE_FAKE_FAIL_INIT");
                if (fail && *fail)
                        fake.init_result = (CUresult)atoi(fail);
                else if (fake.device_count == 0)
                        fake.init_result = CUDA_ERROR_NO_DEVICE;
                else
                        fake.init_result = CUDA_SUCCESS;
                fake.init_pid = getpid();
                if (fake.init_result == CUDA_SUCCESS)
                        fake_checkpoint_start();
                __atomic_store_n(&fake.init_done, true, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&fake.init_lock);
        return fake.init_result;
}

FAKE_EXPORT CUresult cuDriverGetVersion(int *driverVersion) {
        if (!driverVersion)
                return CUDA_ERROR_INVALID_VALUE;
        *driverVersion = FAKE_DRIVER_VERSION;
        return CUDA_SUCCESS;
}

static bool valid_device(CUdevice dev) {
        return dev >= 0 && dev < fake.device_count;
}

CUresult fake_device_check(CUdevice dev) {
        FAKE_REQUIRE_INIT();
        return valid_device(dev) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

/* A device query's checks, in the driver's order: initialised, its arguments, the device. */
static CUresult device_query_check(bool bad_args, CUdevice dev) {
        FAKE_REQUIRE_INIT_ARGS(bad_args);
        return fake_device_check(dev);
}

FAKE_EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal) {
        FAKE_GATE();
        FAKE_TRY(device_query_check(!device, ordinal));
        *device = ordinal;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetCount(int *count) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!count);
        *count = fake.device_count;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
        FAKE_GATE();
        FAKE_TRY(device_query_check(!name || len <= 0, dev));
        snprintf(name, (size_t)len, "SAGE simulated GPU");
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev) {
        FAKE_GATE();
        FAKE_TRY(device_query_check(!uuid, dev));
        fake_gpu_uuid(fake.physical[dev], (unsigned char *)uuid->bytes);
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult fake_cuDeviceGetUuid(CUuuid *uuid, CUdevice dev) {
        FAKE_GATE();
        return cuDeviceGetUuid_v2(uuid, dev);
}

FAKE_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
        FAKE_GATE();
        FAKE_TRY(device_query_check(!bytes, dev));
        *bytes = fake.mem_total;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev) {
        FAKE_GATE();
        FAKE_TRY(device_query_check(!pi, dev));
        int v = 0; /* unknown attributes read as 0 */
        switch (attrib) {
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: v = 9; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: v = 0; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: v = 132; break;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X:
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: v = 64; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: v = 2147483647; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y:
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: v = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: v = 49152; break;
        case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: v = 65536; break;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: v = 32; break;
        case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: v = 1980000; break;
        case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: v = 6144; break;
        case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: v = 0x10 + fake.physical[dev]; break;
        case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY:
        case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
        case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY:
        case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS:
        case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
        case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED:
        case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED:
        case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: v = 1; break;
        default: break;
        }
        *pi = v;
        return CUDA_SUCCESS;
}

/* The simulated GPUs are a node without peer access (fake_vmm.c, cuMemSetAccess; fake_ipc.c). */
FAKE_EXPORT CUresult cuDeviceCanAccessPeer(int *canAccessPeer, CUdevice dev, CUdevice peerDev) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!canAccessPeer);
        if (!valid_device(dev) || !valid_device(peerDev))
                return CUDA_ERROR_INVALID_DEVICE;
        *canAccessPeer = 0;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice dev) {
        FAKE_GATE();
        FAKE_TRY(device_query_check(!pciBusId || len <= 0, dev));
        snprintf(pciBusId, (size_t)len, "00000000:%02X:00.0", 0x10 + fake.physical[dev]);
        return CUDA_SUCCESS;
}

/* ------------------------------------------------------------ errors */
typedef struct FakeErrorName {
        int code;
        const char *name, *message;
} FakeErrorName;

static const FakeErrorName error_names[] = {
#define FAKE_ERROR(code, name, message) { code, name, message },
#include "fake_errors.def"
#undef FAKE_ERROR
};

static const FakeErrorName *error_lookup(CUresult error) {
        for (size_t i = 0; i < sizeof error_names / sizeof error_names[0]; i++)
                if (error_names[i].code == (int)error)
                        return &error_names[i];
        return NULL;
}

FAKE_EXPORT CUresult cuGetErrorName(CUresult error, const char **pStr) {
        if (!pStr)
                return CUDA_ERROR_INVALID_VALUE;
        const FakeErrorName *e = error_lookup(error);
        *pStr = e ? e->name : NULL;
        return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FAKE_EXPORT CUresult cuGetErrorString(CUresult error, const char **pStr) {
        if (!pStr)
                return CUDA_ERROR_INVALID_VALUE;
        const FakeErrorName *e = error_lookup(error);
        *pStr = e ? e->message : NULL;
        return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
