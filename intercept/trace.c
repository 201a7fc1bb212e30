/*
 * The trace dump. Every thread records into its own buffer (a list of
 * fixed-size chunks) without a lock: the only shared writes are a relaxed
 * event counter for the SAGE_TRACE_MAX_EVENTS cap and a lock-free push of a
 * new thread's buffer onto the global list. Each chunk publishes its
 * event count with a release store, so the dump — at exit, or from a fatal
 * signal handler while other threads still run — reads only complete events.
 *
 * The dump is Chrome trace-event JSON ({"traceEvents": [...]}), one
 * complete ("X") event per intercepted call and one line per event, written
 * to PATH.tmp and renamed into place so a reader never sees half a file.
 * A process that made no driver call writes nothing at all.
 */
#include <cuda.h>

#include "trace.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "hooks.h"
#include "log.h"
#include "options.h"
#include "stats.h"
#include "tramp.h"
#include "util.h"
#include "warmup.h"

#define CHUNK_EVENTS 2048
#define STACK_FRAMES 24
#define STRING_MAX 128

typedef struct TraceEvent {
        uint64_t t0, t1;
        uint64_t arg[3];
        int32_t result;
        uint16_t sym;
        uint16_t frame_count;
        void **frames; /* malloc'd, when stacks are on */
        char *text;    /* the one string argument, copied */
} TraceEvent;

typedef struct TraceChunk {
        struct TraceChunk *next;
        atomic_uint count;
        TraceEvent events[CHUNK_EVENTS];
} TraceChunk;

typedef struct TraceBuffer {
        struct TraceBuffer *next;
        pid_t tid;
        TraceChunk *head;
        TraceChunk *_Atomic tail_published; /* for the reader: chunks are linked before use */
        TraceChunk *tail;
} TraceBuffer;

/* Set once, in sage_trace_start (the constructor), before the observer is on. */
static bool tracing;

static char trace_path[4096];
static uint64_t trace_max_events;
static bool trace_stacks;
static uint64_t trace_start_ns;
static TraceBuffer *_Atomic trace_buffers;
static atomic_ullong trace_event_count;
static atomic_bool trace_dumped;
static _Thread_local TraceBuffer *thread_buffer __attribute__((tls_model("initial-exec")));

static pid_t current_tid(void) {
        return (pid_t)syscall(SYS_gettid);
}

static TraceBuffer *buffer_for_thread(void) {
        TraceBuffer *b = thread_buffer;

        if (SAGE_LIKELY(b))
                return b;
        b = calloc(1, sizeof(*b));
        if (!b)
                return NULL;
        b->tid = current_tid();
        b->next = atomic_load(&trace_buffers);
        while (!atomic_compare_exchange_weak(&trace_buffers, &b->next, b))
                ;
        thread_buffer = b;
        return b;
}

static TraceEvent *event_slot(TraceBuffer *b, TraceChunk **chunk_out) {
        TraceChunk *c = b->tail;

        if (!c || atomic_load_explicit(&c->count, memory_order_relaxed) == CHUNK_EVENTS) {
                TraceChunk *fresh = malloc(sizeof(*fresh));

                if (!fresh)
                        return NULL;
                fresh->next = NULL;
                atomic_init(&fresh->count, 0);
                if (c)
                        c->next = fresh;
                else
                        b->head = fresh;
                b->tail = c = fresh;
                atomic_store_explicit(&b->tail_published, fresh, memory_order_release);
        }
        *chunk_out = c;
        return &c->events[atomic_load_explicit(&c->count, memory_order_relaxed)];
}

static bool category_has_stack(SageCategory cat) {
        return cat == SAGE_CAT_CTX || cat == SAGE_CAT_MEM || cat == SAGE_CAT_VMM || cat == SAGE_CAT_COPY ||
               cat == SAGE_CAT_INIT;
}

void sage_trace_record(SageSym sym, uint64_t t0_ns, uint64_t t1_ns, int result, uint64_t a0, uint64_t a1, uint64_t a2) {
        const SageSymInfo *info = &sage_sym_info[sym];
        TraceBuffer *b;
        TraceChunk *chunk;
        TraceEvent *e;

        if (atomic_fetch_add_explicit(&trace_event_count, 1, memory_order_relaxed) >= trace_max_events) {
                sage_stats_count(SAGE_STAT_TRACE_DROPPED);
                return;
        }
        b = buffer_for_thread();
        if (!b || !(e = event_slot(b, &chunk))) {
                sage_stats_count(SAGE_STAT_TRACE_DROPPED);
                return;
        }
        e->t0 = t0_ns;
        e->t1 = t1_ns;
        e->arg[0] = a0;
        e->arg[1] = a1;
        e->arg[2] = a2;
        e->result = result;
        e->sym = (uint16_t)sym;
        e->frame_count = 0;
        e->frames = NULL;
        e->text = NULL;
        for (int i = 0; i < 3; i++) {
                if (info->args[i].format == SAGE_ARG_STRING) {
                        const char *s = (const char *)(uintptr_t)e->arg[i];
                        e->text = s ? strndup(s, STRING_MAX) : NULL;
                        e->arg[i] = 0;
                }
        }
        if (trace_stacks && category_has_stack(info->category)) {
                void *frames[STACK_FRAMES];
                int n = sage_stack_capture(frames, STACK_FRAMES);

                if (n > 0 && (e->frames = malloc(sizeof(void *) * (size_t)n))) {
                        memcpy(e->frames, frames, sizeof(void *) * (size_t)n);
                        e->frame_count = (uint16_t)n;
                }
        }
        atomic_store_explicit(&chunk->count, atomic_load_explicit(&chunk->count, memory_order_relaxed) + 1,
                              memory_order_release);
        sage_stats_count(SAGE_STAT_TRACE_EVENTS);
}

/* ---------------------------------------------------------------- writer */

typedef struct Writer {
        int fd;
        bool failed;
        unsigned unhooked; /* entries written into "unhooked_calls" */
        size_t used;
        char buf[1 << 16];
} Writer;

static void writer_flush(Writer *w) {
        size_t off = 0;

        while (off < w->used && !w->failed) {
                ssize_t n = write(w->fd, w->buf + off, w->used - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        w->failed = true;
                else
                        off += (size_t)n;
        }
        w->used = 0;
}

static void writer_put(Writer *w, const char *s, size_t n) {
        while (n) {
                size_t room = sizeof(w->buf) - w->used;
                size_t k = n < room ? n : room;

                memcpy(w->buf + w->used, s, k);
                w->used += k;
                s += k;
                n -= k;
                if (w->used == sizeof(w->buf))
                        writer_flush(w);
        }
}

static void writer_printf(Writer *w, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void writer_printf(Writer *w, const char *format, ...) {
        char line[1024];
        va_list ap;
        int n;

        va_start(ap, format);
        n = vsnprintf(line, sizeof(line), format, ap);
        va_end(ap);
        if (n > 0)
                writer_put(w, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* A JSON string: quotes, backslashes and control characters escaped. */
static void writer_string(Writer *w, const char *s) {
        writer_put(w, "\"", 1);
        for (; s && *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '"' || c == '\\') {
                        char esc[2] = { '\\', (char)c };
                        writer_put(w, esc, 2);
                } else if (c < 0x20) {
                        writer_printf(w, "\\u%04x", c);
                } else {
                        writer_put(w, (const char *)&c, 1);
                }
        }
        writer_put(w, "\"", 1);
}

static void writer_us(Writer *w, uint64_t ns) {
        writer_printf(w, "%llu.%03llu", (unsigned long long)(ns / 1000), (unsigned long long)(ns % 1000));
}

static void write_unhooked(const char *label, uint64_t count, void *ctx) {
        Writer *w = ctx;

        if (w->unhooked++)
                writer_put(w, ",", 1);
        writer_string(w, label);
        writer_printf(w, ":%llu", (unsigned long long)count);
}

static void write_event(Writer *w, pid_t pid, pid_t tid, const TraceEvent *e) {
        const SageSymInfo *info = &sage_sym_info[e->sym];
        uint64_t ts = e->t0 > trace_start_ns ? e->t0 - trace_start_ns : 0;

        writer_printf(w, ",\n{\"ph\":\"X\",\"name\":\"%s\",\"cat\":\"%s\",\"pid\":%d,\"tid\":%d,\"ts\":", info->name,
                      sage_category_name[info->category], (int)pid, (int)tid);
        writer_us(w, ts);
        writer_put(w, ",\"dur\":", 7);
        writer_us(w, e->t1 > e->t0 ? e->t1 - e->t0 : 0);
        writer_printf(w, ",\"args\":{\"result\":%d", e->result);
        for (int i = 0; i < 3; i++) {
                const SageArgInfo *a = &info->args[i];

                switch (a->format) {
                case SAGE_ARG_NONE: break;
                case SAGE_ARG_UINT:
                case SAGE_ARG_BYTES: writer_printf(w, ",\"%s\":%llu", a->label, (unsigned long long)e->arg[i]); break;
                case SAGE_ARG_HEX:
                        writer_printf(w, ",\"%s\":\"0x%llx\"", a->label, (unsigned long long)e->arg[i]);
                        break;
                case SAGE_ARG_STRING:
                        writer_printf(w, ",\"%s\":", a->label);
                        if (e->text)
                                writer_string(w, e->text);
                        else
                                writer_put(w, "null", 4);
                        break;
                }
        }
        if (e->frame_count) {
                int first = 0;
                bool any = false;

                /* Drop libsage's own frames at the top: the stack starts at the caller. */
                while (first < e->frame_count && sage_stack_is_ours(e->frames[first]))
                        first++;
                writer_put(w, ",\"stack\":[", 10);
                for (int i = first; i < e->frame_count; i++) {
                        char frame[512];

                        sage_stack_describe(e->frames[i], frame, sizeof(frame));
                        if (any)
                                writer_put(w, ",", 1);
                        writer_string(w, frame);
                        any = true;
                }
                writer_put(w, "]", 1);
        }
        writer_put(w, "}}", 2);
}

static void expand_path(const char *pattern, char *out, size_t size) {
        size_t n = 0;

        for (const char *p = pattern; *p && n + 1 < size; p++) {
                if (p[0] == '%' && p[1] == 'p') {
                        int k = snprintf(out + n, size - n, "%d", (int)getpid());
                        n += k > 0 ? (size_t)k : 0;
                        p++;
                } else {
                        out[n++] = *p;
                }
        }
        out[n < size ? n : size - 1] = 0;
}

static void program_name(char *out, size_t size) {
        int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, out, size - 1) : -1;

        if (fd >= 0)
                close(fd);
        if (n <= 0)
                n = snprintf(out, size, "pid %d", (int)getpid());
        out[n] = 0;
        out[strcspn(out, "\n")] = 0;
}

void sage_trace_dump(void) {
        static Writer writer; /* static: usable from a signal handler's small stack */
        Writer *w = &writer;
        char path[sizeof(trace_path)], tmp[sizeof(trace_path) + 16], name[64];
        pid_t pid = getpid();

        if (!tracing || atomic_exchange(&trace_dumped, true))
                return;
        /*
         * A process that made no driver call (a wrapper such as `timeout` or
         * `sh -c`, which inherit SAGE_TRACE) has nothing to say: its empty
         * dump must not replace the dump of the app it started, which may
         * have been written at the same path moments before. Dropped events
         * count as calls.
         */
        if (atomic_load(&trace_event_count) == 0)
                return;
        expand_path(trace_path, path, sizeof(path));
        snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)pid);
        w->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (w->fd < 0) {
                sage_warn("cannot write the trace %s: %s", tmp, strerror(errno));
                return;
        }
        w->failed = false;
        w->used = 0;
        program_name(name, sizeof(name));
        writer_put(w, "{\"traceEvents\":[\n", 17);
        writer_printf(w, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":", (int)pid,
                      (int)pid);
        writer_string(w, name);
        writer_put(w, "}}", 2);
        for (TraceBuffer *b = atomic_load(&trace_buffers); b; b = b->next) {
                TraceChunk *last = atomic_load_explicit(&b->tail_published, memory_order_acquire);

                writer_printf(
                        w,
                        ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"%s%d\"}}",
                        (int)pid, (int)b->tid, b->tid == pid ? "main " : "thread ", (int)b->tid);
                for (TraceChunk *c = b->head; c; c = c->next) {
                        unsigned n = atomic_load_explicit(&c->count, memory_order_acquire);

                        for (unsigned i = 0; i < n; i++)
                                write_event(w, pid, b->tid, &c->events[i]);
                        if (c == last)
                                break;
                }
        }
        writer_printf(w,
                      "\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"sage_version\":\"%s\",\"pid\":%d,"
                      "\"program\":",
                      SAGE_VERSION, (int)pid);
        writer_string(w, name);
        writer_printf(w, ",\"driver\":");
        writer_string(w, sage_options()->driver);
        writer_printf(w, ",\"stacks\":%s,\"start_monotonic_ns\":%llu,\"warmup\":", trace_stacks ? "true" : "false",
                      (unsigned long long)trace_start_ns);
        if (sage_warmup_trigger_name())
                writer_string(w, sage_warmup_trigger_name());
        else
                writer_put(w, "null", 4);
        writer_put(w, ",", 1);
        writer_flush(w);
        {
                /* The counters, through a FILE on the same descriptor. */
                FILE *f = fdopen(dup(w->fd), "w");
                if (f) {
                        sage_stats_print(f, true);
                        fclose(f);
                }
        }
        /* Calls through trampolines (entry points without a hook), by name: its own line for sage-trace. */
        writer_printf(w, ",\n\"unhooked_calls\":{");
        sage_tramp_each_count(write_unhooked, w);
        writer_put(w, "}", 1);
        writer_put(w, "}}\n", 3);
        writer_flush(w);
        if (close(w->fd) < 0 || w->failed) {
                sage_warn("writing the trace %s failed", tmp);
                unlink(tmp);
                return;
        }
        if (rename(tmp, path) < 0) {
                sage_warn("cannot rename the trace to %s: %s", path, strerror(errno));
                unlink(tmp);
                return;
        }
        sage_info("trace written to %s", path);
}

/* ---------------------------------------------------------------- lifecycle */

static const int fatal_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };

static void fatal_signal_handler(int sig) {
        sage_trace_dump();
        signal(sig, SIG_DFL);
        raise(sig);
}

static void install_fatal_handlers(void) {
        for (size_t i = 0; i < SAGE_ARRAY_SIZE(fatal_signals); i++) {
                struct sigaction old, sa;

                /* Never take a signal the app (or a runtime) already handles. */
                if (sigaction(fatal_signals[i], NULL, &old) < 0 || old.sa_handler != SIG_DFL ||
                    (old.sa_flags & SA_SIGINFO))
                        continue;
                memset(&sa, 0, sizeof(sa));
                sa.sa_handler = fatal_signal_handler;
                sa.sa_flags = SA_RESETHAND | SA_NODEFER;
                sigemptyset(&sa.sa_mask);
                sigaction(fatal_signals[i], &sa, NULL);
        }
}

static void at_exit_dump(void) {
        sage_trace_dump();
}

/* After fork() in the child: the parent's events belong to the parent's dump; keep tracing. */
static void at_fork_child(void) {
        atomic_store(&trace_buffers, NULL);
        atomic_store(&trace_event_count, 0);
        atomic_store(&trace_dumped, false);
        thread_buffer = NULL;
        trace_start_ns = sage_now_ns();
}

bool sage_trace_on(void) {
        return tracing;
}

/* ---------------------------------------------------------------- the observer */

static void observe_before(SageCall *call) {
        call->t0 = sage_now_ns();
}

static void observe_after(SageCall *call) {
        /* A call under way when the trace came on was not timed: it starts now. */
        uint64_t t1 = sage_now_ns();

        sage_trace_record(call->sym, call->t0 ? call->t0 : t1, t1, call->result, call->args[0], call->args[1],
                          call->args[2]);
}

const SageObserver sage_trace_observer = { .before = observe_before, .after = observe_after };

bool sage_trace_start(const char *path, uint64_t max_events, bool stacks) {
        if (!path || !*path)
                return false;
        if (strlen(path) >= sizeof(trace_path)) {
                sage_warn("SAGE_TRACE path too long; tracing disabled");
                return false;
        }
        strcpy(trace_path, path);
        trace_max_events = max_events;
        trace_stacks = stacks;
        trace_start_ns = sage_now_ns();
        tracing = true;
        sage_hooks_activate(SAGE_OBSERVER_TRACE);
        pthread_atfork(NULL, NULL, at_fork_child);
        atexit(at_exit_dump);
        install_fatal_handlers();
        return true;
}
