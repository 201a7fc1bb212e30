/*
 * The table of hooked symbols, expanded from hooks.def once: each entry's
 * name, category, trace argument layout and declared facts. Constant; the
 * hook bodies (hooks.c) expand the same declarations a second time into the
 * statements that compute each call's values.
 */
#include "symbols.h"

const char *const sage_category_name[SAGE_CAT_COUNT] = {
        "init", "ctx", "mem", "vmm", "ipc", "copy", "module", "launch", "graph", "sync", "proc",
};

#define SAGE_NONE \
        { SAGE_ARG_NONE, NULL }
#define SAGE_U(label, v) \
        { SAGE_ARG_UINT, label }
#define SAGE_X(label, v) \
        { SAGE_ARG_HEX, label }
#define SAGE_B(v) \
        { SAGE_ARG_BYTES, "bytes" }
#define SAGE_S(label, v) \
        { SAGE_ARG_STRING, label }
#define SAGE_W_NONE .writes = SAGE_WRITES_NONE
#define SAGE_W_RANGE(dst, bytes) .writes = SAGE_WRITES_RANGE
#define SAGE_W_UNKNOWN .writes = SAGE_WRITES_UNKNOWN
#define SAGE_W_PITCHED(range) .writes = SAGE_WRITES_PITCHED
#define SAGE_KIND_IMPL true
#define SAGE_KIND_PASS false
#define SAGE_NO_STREAM .stream = SAGE_STREAM_NONE
#define SAGE_STREAM(s) .stream = SAGE_STREAM_ARG
#define SAGE_STREAM_PT(s) .stream = SAGE_STREAM_PER_THREAD
#define SAGE_NO_RESOURCE .resource_op = SAGE_RESOURCE_KEEPS
#define SAGE_CREATES(kind, h) .resource_op = SAGE_RESOURCE_CREATES, .resource = SAGE_RESOURCE_##kind
#define SAGE_DESTROYS(kind, h) .resource_op = SAGE_RESOURCE_DESTROYS, .resource = SAGE_RESOURCE_##kind
const SageSymInfo sage_sym_info[SAGE_SYM_COUNT] = {
#define SAGE_HOOK(sym, cat, kind, params, fwd, a0, a1, a2, w, st, res)                                                 \
        [SAGE_SYM_##sym] = {                                                                                           \
                .name = #sym, .category = SAGE_CAT_##cat, .args = { a0, a1, a2 }, w, .impl = SAGE_KIND_##kind, st, res \
        },
#include "hooks.def"
#undef SAGE_HOOK
};
