/*
 * What libsage hands out for a driver entry point it does not hook
 * (tramp_route.h). With SAGE_SUSPEND=1 or the trace on, a function of the
 * driver's executable text that the app fetches (cuGetProcAddress, dlsym,
 * an export table) comes back as a trampoline (tramp.h): gated, or, while
 * the trace counts calls, counted. With both off, or for anything that is
 * not the driver's code (a data pointer, another library's cu* symbol),
 * the caller gets exactly what the driver answered.
 *
 * The driver's text is found once, after the driver is open: the
 * executable PT_LOAD segments of the object that holds its cuInit
 * (dl_iterate_phdr). Only pointers into it are wrapped: a trampoline to
 * anything else would gate calls that never reach the GPU, or wrap data.
 */
#include <cuda.h>

#include "tramp_route.h"

#include <link.h>
#include <pthread.h>
#include <stdint.h>

#include "driver.h"
#include "log.h"
#include "options.h"
#include "stats.h"
#include "trace.h"
#include "tramp.h"

#define TEXT_RANGES 8

static pthread_once_t text_once = PTHREAD_ONCE_INIT;
static struct {
        uintptr_t lo, hi;
        uint64_t offset; /* in the file: 0 means the segment also holds the ELF headers (and maybe read-only data) */
} text[TEXT_RANGES];
static unsigned ntext;

typedef struct TextSearch {
        uintptr_t anchor;
        bool found;
} TextSearch;

static int find_text(struct dl_phdr_info *info, size_t size, void *data) {
        TextSearch *s = data;
        bool holds = false;

        for (int i = 0; i < info->dlpi_phnum; i++) {
                const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
                uintptr_t lo = info->dlpi_addr + ph->p_vaddr;

                if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && s->anchor >= lo && s->anchor < lo + ph->p_memsz)
                        holds = true;
        }
        if (!holds)
                return 0;
        for (int i = 0; i < info->dlpi_phnum && ntext < TEXT_RANGES; i++) {
                const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

                if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
                        text[ntext].lo = info->dlpi_addr + ph->p_vaddr;
                        text[ntext].hi = text[ntext].lo + ph->p_memsz;
                        text[ntext].offset = ph->p_offset;
                        ntext++;
                }
        }
        s->found = true;
        return 1;
}

static void *resolve_named(const char *name, void *ctx) {
        return sage_real_dlsym(ctx, name);
}

static void text_init(void) {
        TextSearch s = { 0 };
        void *anchor = sage_real(SAGE_SYM_cuInit);

        if (!anchor || !sage_driver_handle())
                return;
        s.anchor = (uintptr_t)anchor;
        dl_iterate_phdr(find_text, &s);
        if (!s.found)
                return;
        sage_tramp_bind_named(resolve_named, sage_driver_handle());
        /*
         * Export-table slots are wrapped when they point into these segments.
         * A segment that starts at file offset 0 may also hold read-only data
         * (no -z separate-code): a data slot pointing there would be taken for
         * code. The log says so; the GPU probe checks the tables run wrapped.
         */
        for (unsigned i = 0; i < ntext; i++)
                sage_info("trampolines: driver text segment %u: %#lx bytes at file offset %#llx%s", i,
                          (unsigned long)(text[i].hi - text[i].lo), (unsigned long long)text[i].offset,
                          text[i].offset == 0 ? " (shared with the headers: may hold read-only data)" : "");
        sage_info("trampolines: %u of the driver's unhooked entry points named in cuda.h found", sage_tramp_used());
}

static bool counting(void) {
        return sage_trace_on() && sage_options()->trace_unhooked;
}

bool sage_tramp_route_on(void) {
        return sage_options()->suspend || counting();
}

bool sage_driver_text_holds(const void *p) {
        uintptr_t a = (uintptr_t)p;

        pthread_once(&text_once, text_init);
        for (unsigned i = 0; i < ntext; i++)
                if (a >= text[i].lo && a < text[i].hi)
                        return true;
        return false;
}

void *sage_tramp_wrap(void *fn, const char *label, bool untyped) {
        void *t;

        if (!fn || !sage_driver_text_holds(fn))
                return fn;
        t = sage_tramp_get(fn, label, (counting() ? SAGE_TRAMP_COUNTED : 0) | (untyped ? SAGE_TRAMP_UNTYPED : 0));
        if (!t) {
                sage_stats_count(SAGE_STAT_TRAMP_POOL_FULL);
                return fn;
        }
        sage_stats_count(SAGE_STAT_TRAMP_HANDED_OUT);
        return t;
}

void *sage_tramp_route(void *fn, const char *label) {
        if (!sage_tramp_route_on())
                return fn;
        return sage_tramp_wrap(fn, label, false);
}

bool sage_tramp_ungated_seen(void) {
        return sage_stats_get(SAGE_STAT_TRAMP_POOL_FULL) != 0 || sage_export_tables_ungated();
}
