/* fake_module.c: modules, libraries and kernel launches with host "kernels".
 *
 * A module image is a FakeModuleImage (fakecuda.h): a magic and a table of
 * named host functions. A module owns one CUfunction record per entry; a
 * library owns one CUkernel record per entry plus an embedded,
 * context-independent module for cuLibraryGetModule / cuKernelGetFunction.
 * Both handle kinds start with a magic word, so a launch accepts a CUkernel
 * where a CUfunction is expected, as the real API does. A launch calls the
 * host function synchronously with the grid/block dimensions and the
 * kernelParams array; with `extra` (CU_LAUNCH_PARAM_BUFFER_POINTER) it gets
 * a one-element array pointing to the packed argument buffer. On a capturing
 * stream the launch is recorded, copying argument values when the entry
 * declares param_sizes.
 */
#include "fake_internal.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static CUresult image_check(const void *image) {
        const FakeModuleImage *img = image;
        if (!img || memcmp(img->magic, FAKECUDA_IMAGE_MAGIC, sizeof img->magic) != 0 || (img->count && !img->kernels))
                return CUDA_ERROR_INVALID_IMAGE;
        return CUDA_SUCCESS;
}

static bool module_init(struct CUmod_st *m, const FakeModuleImage *img, void *dl, CUcontext ctx) {
        m->image = img;
        m->dl = dl;
        m->ctx = ctx;
        m->functions = calloc(img->count ? img->count : 1, sizeof *m->functions);
        if (!m->functions)
                return false;
        for (unsigned i = 0; i < img->count; i++)
                m->functions[i] = (struct CUfunc_st){ FAKE_FUNC_MAGIC, &img->kernels[i], m };
        return true;
}

static void module_fini(struct CUmod_st *m) {
        free(m->functions);
        if (m->dl)
                dlclose(m->dl);
}

static void module_free(void *m) {
        module_fini(m);
        free(m);
}

static void library_free(void *library) {
        CUlibrary l = library;
        module_fini(&l->module);
        free(l->kernels);
        free(l);
}

/* Unloads wait for the work queued so far: it may run their kernels. */
static CUresult unload(void *head_addr, void *obj, void (*release)(void *)) {
        FAKE_REQUIRE_INIT();
        fake_queue_drain();
        return fake_destroy(head_addr, obj, CUDA_ERROR_INVALID_HANDLE, release);
}

/* cuModuleLoad / cuLibraryLoadFromFile: the image lives in a shared object. */
typedef struct ImageFile {
        const FakeModuleImage *img;
        void *dl; /* the dlopen handle, which the module or library keeps */
} ImageFile;

static CUresult image_from_file(const char *path, ImageFile *f) {
        if (!path)
                return CUDA_ERROR_INVALID_VALUE;
        if (access(path, R_OK) != 0)
                return CUDA_ERROR_FILE_NOT_FOUND;
        f->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!f->dl)
                return CUDA_ERROR_INVALID_IMAGE;
        f->img = dlsym(f->dl, FAKECUDA_MODULE_SYMBOL);
        CUresult r = image_check(f->img);
        if (r != CUDA_SUCCESS) {
                dlclose(f->dl);
                f->dl = NULL;
        }
        return r;
}

/* A load that failed gives its shared object back. */
static CUresult load_failed(CUresult r, void *dl) {
        if (dl)
                dlclose(dl);
        return r;
}

static CUresult module_load(CUmodule *module, const FakeModuleImage *img, void *dl) {
        CUcontext ctx;
        CUresult r = fake_require_context(&ctx);
        if (r == CUDA_SUCCESS && !module)
                r = CUDA_ERROR_INVALID_VALUE;
        if (r == CUDA_SUCCESS)
                r = image_check(img);
        struct CUmod_st *m = r == CUDA_SUCCESS ? calloc(1, sizeof *m) : NULL;
        if (r == CUDA_SUCCESS && (!m || !module_init(m, img, dl, ctx))) {
                free(m);
                r = CUDA_ERROR_OUT_OF_MEMORY;
        }
        if (r != CUDA_SUCCESS)
                return load_failed(r, dl);
        LIST_PUSH(fake.modules, m);
        *module = m;
        return CUDA_SUCCESS;
}

FAKE_ENTRY(cuModuleLoadData, (CUmodule * module, const void *image), module_load(module, image, NULL))
FAKE_ENTRY(cuModuleLoadDataEx,
           (CUmodule * module, const void *image, unsigned int numOptions, CUjit_option *options, void **optionValues),
           module_load(module, image, NULL))
FAKE_ENTRY(cuModuleLoadFatBinary, (CUmodule * module, const void *fatCubin), module_load(module, fatCubin, NULL))

FAKE_EXPORT CUresult cuModuleLoad(CUmodule *module, const char *fname) {
        FAKE_GATE();
        FAKE_TRY(fake_require_context(NULL));
        ImageFile f = { 0 };
        FAKE_TRY(image_from_file(fname, &f));
        return module_load(module, f.img, f.dl);
}

/* A live module: loaded, or the module of a live library. */
static CUresult module_check(CUmodule m) {
        fake_lock();
        bool alive = fake_listed_locked(fake.modules, m);
        for (CUlibrary l = fake.libraries; l && !alive; l = l->next)
                alive = &l->module == m;
        fake_unlock();
        return alive ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

static CUresult library_check(CUlibrary l) {
        return fake_listed(&fake.libraries, l) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

FAKE_ENTRY(cuModuleUnload, (CUmodule hmod), unload(&fake.modules, hmod, module_free))

void fake_module_free_context_locked(CUcontext ctx) {
        for (CUmodule *p = &fake.modules; *p;) {
                CUmodule m = *p;
                if (m->ctx == ctx) {
                        *p = m->next;
                        module_free(m);
                } else {
                        p = &m->next;
                }
        }
}

static int entry_index(const FakeModuleImage *img, const char *name) {
        for (unsigned i = 0; name && i < img->count; i++)
                if (img->kernels[i].name && strcmp(img->kernels[i].name, name) == 0)
                        return (int)i;
        return -1;
}

FAKE_EXPORT CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!hfunc || !name);
        FAKE_TRY(module_check(hmod));
        int i = entry_index(hmod->image, name);
        if (i < 0)
                return CUDA_ERROR_NOT_FOUND;
        *hfunc = &hmod->functions[i];
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod, const char *name) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        FAKE_TRY(module_check(hmod));
        return CUDA_ERROR_NOT_FOUND; /* images carry no globals */
}

/* ------------------------------------------------------------ libraries */
static CUresult library_load(CUlibrary *library, const FakeModuleImage *img, void *dl) {
        CUresult r = library ? image_check(img) : CUDA_ERROR_INVALID_VALUE;
        CUlibrary l = r == CUDA_SUCCESS ? calloc(1, sizeof *l) : NULL;
        if (r == CUDA_SUCCESS && (!l || !module_init(&l->module, img, dl, NULL) ||
                                  !(l->kernels = calloc(img->count ? img->count : 1, sizeof *l->kernels)))) {
                if (l && l->module.functions)
                        free(l->module.functions);
                free(l);
                r = CUDA_ERROR_OUT_OF_MEMORY;
        }
        if (r != CUDA_SUCCESS)
                return load_failed(r, dl);
        for (unsigned i = 0; i < img->count; i++)
                l->kernels[i] = (struct CUkern_st){ FAKE_KERN_MAGIC, &img->kernels[i], l };
        LIST_PUSH(fake.libraries, l);
        *library = l;
        return CUDA_SUCCESS;
}

static CUresult library_load_data(CUlibrary *library, const void *code) {
        FAKE_REQUIRE_INIT();
        return library_load(library, code, NULL);
}

FAKE_ENTRY(cuLibraryLoadData,
           (CUlibrary * library, const void *code, CUjit_option *jitOptions, void **jitOptionsValues,
            unsigned int numJitOptions, CUlibraryOption *libraryOptions, void **libraryOptionValues,
            unsigned int numLibraryOptions),
           library_load_data(library, code))

FAKE_EXPORT CUresult cuLibraryLoadFromFile(CUlibrary *library, const char *fileName, CUjit_option *jitOptions,
                                           void **jitOptionsValues, unsigned int numJitOptions,
                                           CUlibraryOption *libraryOptions, void **libraryOptionValues,
                                           unsigned int numLibraryOptions) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        ImageFile f = { 0 };
        FAKE_TRY(image_from_file(fileName, &f));
        return library_load(library, f.img, f.dl);
}

FAKE_ENTRY(cuLibraryUnload, (CUlibrary library), unload(&fake.libraries, library, library_free))

FAKE_EXPORT CUresult cuLibraryGetKernel(CUkernel *pKernel, CUlibrary library, const char *name) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!pKernel || !name);
        FAKE_TRY(library_check(library));
        int i = entry_index(library->module.image, name);
        if (i < 0)
                return CUDA_ERROR_NOT_FOUND;
        *pKernel = &library->kernels[i];
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuLibraryGetModule(CUmodule *pMod, CUlibrary library) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!pMod);
        FAKE_TRY(library_check(library));
        *pMod = &library->module;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuKernelGetFunction(CUfunction *pFunc, CUkernel kernel) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (!pFunc || !kernel || kernel->magic != FAKE_KERN_MAGIC)
                return CUDA_ERROR_INVALID_HANDLE;
        CUlibrary l = kernel->library;
        *pFunc = &l->module.functions[kernel - l->kernels];
        return CUDA_SUCCESS;
}

/* ------------------------------------------------------------ launches */
static const FakeKernelEntry *entry_of(CUfunction f) {
        if (!f)
                return NULL;
        uint32_t magic;
        memcpy(&magic, (const void *)f, sizeof magic);
        if (magic == FAKE_FUNC_MAGIC)
                return f->entry;
        if (magic == FAKE_KERN_MAGIC)
                return ((const struct CUkern_st *)(const void *)f)->entry;
        return NULL;
}

/* Kernel metadata: the entry's name, and its parameters laid out at natural
 * alignment (up to 8) from the sizes it declares. */
FAKE_EXPORT CUresult cuFuncGetName(const char **name, CUfunction f) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        const FakeKernelEntry *e = entry_of(f);
        if (!name)
                return CUDA_ERROR_INVALID_VALUE;
        if (!e)
                return CUDA_ERROR_INVALID_HANDLE;
        *name = e->name;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuFuncGetParamInfo(CUfunction f, size_t index, size_t *offset, size_t *size) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        const FakeKernelEntry *e = entry_of(f);
        size_t at = 0;
        if (!e)
                return CUDA_ERROR_INVALID_HANDLE;
        if (!offset || !size)
                return CUDA_ERROR_INVALID_VALUE;
        /* A kernel that declares no sizes is one whose layout the driver cannot
     * tell: an error other than INVALID_VALUE, which means "past the last
     * parameter" (a kernel without parameters declares an empty list). */
        if (!e->param_sizes)
                return CUDA_ERROR_NOT_SUPPORTED;
        for (size_t i = 0; e->param_sizes[i]; i++) {
                size_t align = e->param_sizes[i] < 8 ? e->param_sizes[i] : 8;
                at = (at + align - 1) / align * align;
                if (i == index) {
                        *offset = at;
                        *size = e->param_sizes[i];
                        return CUDA_SUCCESS;
                }
                at += e->param_sizes[i];
        }
        return CUDA_ERROR_INVALID_VALUE;
}

FAKE_ENTRY(cuKernelGetName, (const char **name, CUkernel k), cuFuncGetName(name, (CUfunction)(void *)k))
FAKE_ENTRY(cuKernelGetParamInfo, (CUkernel k, size_t index, size_t *offset, size_t *size),
           cuFuncGetParamInfo((CUfunction)(void *)k, index, offset, size))

/* The packed buffer of a cuLaunchKernel `extra` list, or NULL. */
static void *extra_buffer(void **extra, size_t *size) {
        void *buf = NULL;
        *size = 0;
        for (size_t i = 0; extra && extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
                if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER)
                        buf = extra[i + 1];
                else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE && extra[i + 1])
                        *size = *(size_t *)extra[i + 1];
        }
        return buf;
}

/* A launch as an op owning copies of its argument values; with no argument
 * sizes it borrows the caller's kernelParams (*owned false). */
static CUresult kernel_op(FakeOp *out, const FakeKernelEntry *entry, const FakeKernelLaunch *launch, void **params,
                          void **extra, bool *owned) {
        FakeOp op = { .kind = FAKE_OP_KERNEL };
        op.u.kernel.entry = entry;
        op.u.kernel.launch = *launch;
        size_t n = 0, bytes = 0, buf_size;
        void *buf = params ? NULL : extra_buffer(extra, &buf_size);
        *owned = false;
        if (buf) {
                n = 1;
                bytes = buf_size;
        } else if (params && entry->param_sizes) {
                for (; entry->param_sizes[n]; n++)
                        bytes += (entry->param_sizes[n] + 15) & ~(size_t)15;
        } else {
                op.u.kernel.params = params; /* borrowed: the caller keeps them alive */
                *out = op;
                return CUDA_SUCCESS;
        }
        op.u.kernel.nparams = n;
        op.u.kernel.arg_bytes = bytes;
        op.u.kernel.params = calloc(n ? n : 1, sizeof(void *));
        op.u.kernel.arg_store = malloc(bytes ? bytes : 1);
        if (!op.u.kernel.params || !op.u.kernel.arg_store) {
                free(op.u.kernel.params);
                free(op.u.kernel.arg_store);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        if (buf) {
                memcpy(op.u.kernel.arg_store, buf, bytes);
                op.u.kernel.params[0] = op.u.kernel.arg_store;
        } else {
                size_t at = 0;
                for (size_t i = 0; i < n; i++) {
                        memcpy(op.u.kernel.arg_store + at, params[i], entry->param_sizes[i]);
                        op.u.kernel.params[i] = op.u.kernel.arg_store + at;
                        at += (entry->param_sizes[i] + 15) & ~(size_t)15;
                }
        }
        /* nparams 0 marks borrowed params for fake_op_release: keep n >= 1 when owned. */
        if (n == 0)
                op.u.kernel.nparams = 1;
        *owned = true;
        *out = op;
        return CUDA_SUCCESS;
}

static CUresult capture_launch(struct CUgraph_st *g, const FakeKernelEntry *entry, const FakeKernelLaunch *launch,
                               void **params, void **extra) {
        FakeOp op;
        bool owned;
        CUresult r = kernel_op(&op, entry, launch, params, extra, &owned);
        return r == CUDA_SUCCESS ? fake_graph_append(g, &op) : r;
}

CUresult fake_launch(CUfunction f, const FakeKernelLaunch *launch, void **params, void **extra) {
        CUcontext ctx;
        FAKE_TRY(fake_require_context(&ctx));
        const FakeKernelEntry *entry = entry_of(f);
        if (!entry || !entry->fn)
                return CUDA_ERROR_INVALID_HANDLE;
        for (int i = 0; i < 3; i++)
                if (launch->grid[i] == 0 || launch->block[i] == 0)
                        return CUDA_ERROR_INVALID_VALUE;
        if (launch->block[0] * launch->block[1] * launch->block[2] > 1024)
                return CUDA_ERROR_INVALID_VALUE;
        struct CUgraph_st *capture;
        FAKE_TRY(fake_stream_check(launch->stream, &capture));
        if (capture)
                return capture_launch(capture, entry, launch, params, extra);
        /* Queued with copies of its arguments; without sizes they cannot be copied: run now. */
        FakeOp op;
        bool owned;
        if (kernel_op(&op, entry, launch, params, extra, &owned) == CUDA_SUCCESS && owned) {
                if (fake_queue_submit(&op, ctx))
                        return CUDA_SUCCESS;
                fake_op_release(&op);
        }
        fake_queue_drain();
        size_t size;
        void *buf = params ? NULL : extra_buffer(extra, &size);
        void *packed[1] = { buf };
        return fake_kernel_run(ctx, entry, launch, buf ? packed : params);
}

static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       unsigned shared, CUstream s, void **params, void **extra) {
        FakeKernelLaunch l = { { gx, gy, gz }, { bx, by, bz }, shared, s };
        return fake_launch(f, &l, params, extra);
}

#define LAUNCH_GRID unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared

FAKE_ENTRY_PTSZ(cuLaunchKernel, (CUfunction f, LAUNCH_GRID, CUstream s, void **params, void **extra),
                launch(f, gx, gy, gz, bx, by, bz, shared, s, params, extra))
FAKE_ENTRY_PTSZ(cuLaunchCooperativeKernel, (CUfunction f, LAUNCH_GRID, CUstream s, void **params),
                launch(f, gx, gy, gz, bx, by, bz, shared, s, params, NULL))

FAKE_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **params, void **extra) {
        FAKE_GATE();
        if (!config)
                return CUDA_ERROR_INVALID_VALUE;
        return launch(f, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX, config->blockDimY,
                      config->blockDimZ, config->sharedMemBytes, config->hStream, params, extra);
}

FAKE_ENTRY(cuLaunchKernelEx_ptsz, (const CUlaunchConfig *config, CUfunction f, void **params, void **extra),
           cuLaunchKernelEx(config, f, params, extra))
