/*
 * cuGetExportTable: cudart's private tables of driver functions (context
 * creation among them), looked up by UUID. While suspend is on, each table
 * cudart asks for is handed out as a copy whose driver functions are
 * trampolines (tramp_route.h), so a call through a table passes the
 * suspend gate like any other entry point.
 *
 * The tables are undocumented. What is relied on: the first word is the
 * table's size in bytes (a table whose first word is not a plausible size
 * is handed out unwrapped); a slot is wrapped only if it points into the
 * driver's executable text, so data words stay as they are. What a slot
 * function returns is not known, so a failed gate never returns a CUresult
 * from one: it waits for the resume, or calls through to the driver once
 * the gate broke for good (tramp_gate.c).
 * scripts/probes/export-tables/ lists, on a GPU, what real programs ask
 * for (SAGE_VERBOSE=2 logs every table, wrapped or not).
 *
 * A copy is made once per table (the driver answers the same pointer for a
 * UUID every time) and lives as long as the process: cudart keeps it.
 */
#include <cuda.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "log.h"
#include "options.h"
#include "stats.h"
#include "tramp_route.h"

#define MAX_TABLES 64
#define MAX_TABLE_BYTES 65536

static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;
/* Under tables_lock: each driver table seen and its copy (NULL: handed out plain). */
static struct {
        const void *table;
        const void *copy;
} tables[MAX_TABLES];
static unsigned ntables;

static void uuid_text(const CUuuid *id, char out[33]) {
        for (int i = 0; i < 16; i++)
                snprintf(out + 2 * i, 3, "%02x", (unsigned char)id->bytes[i]);
}

/* One line per table for SAGE_VERBOSE=2 and the probe: size, and which slots are driver code. */
static void log_table(const char *uuid, const uintptr_t *words, size_t n, bool plausible) {
        char slots[512];
        size_t used = 0;

        if (!sage_log_enabled(SAGE_LOG_INFO))
                return;
        slots[0] = 0;
        for (size_t i = 1; i < n && used + 8 < sizeof(slots); i++)
                used += (size_t)snprintf(slots + used, sizeof(slots) - used, "%c",
                                         sage_driver_text_holds((const void *)words[i]) ? 'T' : '.');
        sage_info("export table %s: first word %zu%s, slots (T = driver text): %s", uuid, (size_t)words[0],
                  plausible ? "" : " (not a size: never wrapped)", slots);
}

static bool plausible_size(size_t size) {
        return size >= 2 * sizeof(uintptr_t) && size <= MAX_TABLE_BYTES && size % sizeof(uintptr_t) == 0;
}

static const void *wrap(const void *table, const CUuuid *id) {
        const uintptr_t *words = table;
        size_t size = words[0], n = size / sizeof(uintptr_t);
        char uuid[33], label[64];
        uintptr_t *copy;

        if (!plausible_size(size) || !(copy = malloc(size)))
                return NULL;
        uuid_text(id, uuid);
        copy[0] = words[0];
        for (size_t i = 1; i < n; i++) {
                snprintf(label, sizeof(label), "exportTable:%.8s:%zu", uuid, i);
                copy[i] = (uintptr_t)sage_tramp_wrap((void *)words[i], label, true);
        }
        return copy;
}

static const void *wrapped(const void *table, const CUuuid *id) {
        const void *copy = NULL;
        unsigned i;

        pthread_mutex_lock(&tables_lock);
        for (i = 0; i < ntables && tables[i].table != table; i++)
                ;
        if (i < ntables) {
                copy = tables[i].copy;
        } else if (ntables < MAX_TABLES) {
                copy = wrap(table, id);
                tables[ntables].table = table;
                tables[ntables].copy = copy;
                ntables++;
                sage_stats_count(copy ? SAGE_STAT_EXPORT_TABLES_WRAPPED : SAGE_STAT_EXPORT_TABLES_PLAIN);
        }
        pthread_mutex_unlock(&tables_lock);
        return copy ? copy : table;
}

CUresult sage_impl_cuGetExportTable(sage_fn_cuGetExportTable_t real, const void **ppExportTable,
                                    const CUuuid *pExportTableId) {
        CUresult r = real(ppExportTable, pExportTableId);
        const SageOptions *o = sage_options();
        const uintptr_t *words;
        char uuid[33];

        if (r != CUDA_SUCCESS || !ppExportTable || !*ppExportTable || !pExportTableId)
                return r;
        words = *ppExportTable;
        if (sage_log_enabled(SAGE_LOG_INFO)) {
                uuid_text(pExportTableId, uuid);
                log_table(uuid, words, plausible_size(words[0]) ? words[0] / sizeof(uintptr_t) : 1,
                          plausible_size(words[0]));
        }
        if (!o->suspend)
                return r;
        if (!o->gate_export_tables) {
                sage_stats_count(SAGE_STAT_EXPORT_TABLES_PLAIN);
                return r;
        }
        *ppExportTable = wrapped(*ppExportTable, pExportTableId);
        return r;
}

bool sage_export_tables_ungated(void) {
        return sage_stats_get(SAGE_STAT_EXPORT_TABLES_PLAIN) != 0;
}
