/*
 * Options of libsage and the tools, in the spirit of mimalloc's: one table
 * (options.def), parsed lazily and safely during early start-up — no malloc,
 * no stdio on the parse path, so it may run inside the dynamic loader's
 * constructors or a driver hook. Bad values are warned about and leave the
 * default; they never abort the host process.
 */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

const SageOptionInfo sage_option_info[] = {
#define SAGE_OPTION(field, NAME, type, def, help) { #NAME, SAGE_OPTION_##type, def, help },
#include "options.def"
#undef SAGE_OPTION
};
const size_t sage_option_count = sizeof(sage_option_info) / sizeof(sage_option_info[0]);

static bool word_is(const char *text, const char *word) {
        return strcasecmp(text, word) == 0;
}

int sage_parse_bool(const char *text, bool *out) {
        if (word_is(text, "1") || word_is(text, "yes") || word_is(text, "true") || word_is(text, "on")) {
                *out = true;
                return 0;
        }
        if (word_is(text, "0") || word_is(text, "no") || word_is(text, "false") || word_is(text, "off") ||
            word_is(text, "")) {
                *out = false;
                return 0;
        }
        return -EINVAL;
}

int sage_parse_uint_prefix(const char *text, uint64_t *out, char **end) {
        unsigned long long v;

        if (!isdigit((unsigned char)text[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(text, end, 10);
        if (errno)
                return -EINVAL;
        *out = v;
        return 0;
}

int sage_parse_uint(const char *text, uint64_t *out) {
        char *end;
        uint64_t v;

        if (sage_parse_uint_prefix(text, &v, &end) < 0 || *end)
                return -EINVAL;
        *out = v;
        return 0;
}

int sage_parse_size(const char *text, uint64_t *out) {
        char *end;
        uint64_t v;
        unsigned shift = 0;

        if (sage_parse_uint_prefix(text, &v, &end) < 0)
                return -EINVAL;
        switch (toupper((unsigned char)*end)) {
        case 0: break;
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        case 'T': shift = 40; break;
        default: return -EINVAL;
        }
        if (*end) {
                end++;
                if (toupper((unsigned char)*end) == 'I')
                        end++;
                if (toupper((unsigned char)*end) == 'B')
                        end++;
                if (*end)
                        return -EINVAL;
        }
        if (shift && v > (UINT64_MAX >> shift))
                return -ERANGE;
        *out = (uint64_t)v << shift;
        return 0;
}

int sage_parse_duration_ms(const char *text, uint64_t *out) {
        static const struct {
                const char *suffix;
                uint64_t ms;
        } units[] = { { "ms", 1 }, { "s", 1000 }, { "", 1000 }, { "m", 60000 }, { "h", 3600000 } };
        char *end;
        uint64_t v;

        if (sage_parse_uint_prefix(text, &v, &end) < 0)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
                if (strcasecmp(end, units[i].suffix) == 0) {
                        if (v > UINT32_MAX / units[i].ms)
                                return -ERANGE; /* more than ~49 days: a mistake */
                        *out = v * units[i].ms;
                        return 0;
                }
        return -EINVAL;
}

static int parse_choice(const char *choices, const char *text, const char **out) {
        const char *p = choices;
        size_t len = strlen(text);

        while (*p) {
                const char *bar = strchr(p, '|');
                size_t n = bar ? (size_t)(bar - p) : strlen(p);

                if (n == len && strncasecmp(p, text, n) == 0) {
                        *out = text;
                        return 0;
                }
                p += n + (bar ? 1 : 0);
        }
        return -EINVAL;
}

static void warn_bad(void (*warn)(const char *), const char *name, const char *value, const char *expect) {
        char line[256];

        if (!warn)
                return;
        snprintf(line, sizeof(line), "ignoring SAGE_%s=\"%.64s\": expected %s", name, value, expect);
        warn(line);
}

static const size_t option_offset[] = {
#define SAGE_OPTION(field, NAME, type, def, help) offsetof(SageOptions, field),
#include "options.def"
#undef SAGE_OPTION
};

/* CHOICE defaults are the first word of the list; kept here so the parse
 * needs no allocation. */
static char choice_default[sizeof(option_offset) / sizeof(option_offset[0])][32];

static const char *expected(const SageOptionInfo *info) {
        switch (info->type) {
        case SAGE_OPTION_BOOL: return "1/0, yes/no, true/false or on/off";
        case SAGE_OPTION_SIZE: return "a byte count with an optional k/M/G/T suffix";
        case SAGE_OPTION_UINT: return "a non-negative integer";
        case SAGE_OPTION_DURATION: return "a duration: a number with ms, s, m or h (a bare number is seconds)";
        case SAGE_OPTION_CHOICE: return info->default_text;
        case SAGE_OPTION_STRING: break;
        }
        return "a string";
}

static int parse_one(const SageOptionInfo *info, size_t index, void *field, const char *text) {
        switch (info->type) {
        case SAGE_OPTION_BOOL: return sage_parse_bool(text, field);
        case SAGE_OPTION_SIZE: return sage_parse_size(text, field);
        case SAGE_OPTION_UINT: return sage_parse_uint(text, field);
        case SAGE_OPTION_DURATION: return sage_parse_duration_ms(text, field);
        case SAGE_OPTION_STRING: *(const char **)field = text; return 0;
        case SAGE_OPTION_CHOICE:
                if (text == info->default_text) {
                        size_t n = strcspn(text, "|");
                        if (n >= sizeof(choice_default[index]))
                                n = sizeof(choice_default[index]) - 1;
                        memcpy(choice_default[index], text, n);
                        choice_default[index][n] = 0;
                        *(const char **)field = choice_default[index];
                        return 0;
                }
                return parse_choice(info->default_text, text, field);
        }
        return -EINVAL;
}

int sage_options_parse(SageOptions *out, const char *(*environ_get)(const char *), void (*warn)(const char *)) {
        int bad = 0;

        memset(out, 0, sizeof(*out));
        for (size_t i = 0; i < sage_option_count; i++) {
                const SageOptionInfo *info = &sage_option_info[i];
                void *field = (char *)out + option_offset[i];
                char name[64];
                const char *value;

                parse_one(info, i, field, info->default_text);
                snprintf(name, sizeof(name), "SAGE_%s", info->name);
                value = environ_get ? environ_get(name) : getenv(name);
                if (value && parse_one(info, i, field, value) < 0) {
                        warn_bad(warn, info->name, value, expected(info));
                        parse_one(info, i, field, info->default_text);
                        bad++;
                }
        }
        return bad;
}

static SageOptions process_options;
static pthread_once_t process_options_once = PTHREAD_ONCE_INIT;

static void warn_to_log(const char *line) {
        sage_log(SAGE_LOG_WARNING, "%s", line);
}

static void process_options_init(void) {
        uint64_t level = 0;
        const char *v = getenv("SAGE_VERBOSE");

        /* The logger's level must be known before warnings can be printed. */
        if (v && sage_parse_uint(v, &level) == 0)
                sage_log_set_level((int)level);
        sage_options_parse(&process_options, NULL, warn_to_log);
        sage_log_set_level((int)process_options.verbose);
        if (process_options.verbose >= 1 && sage_log_enabled(SAGE_LOG_WARNING))
                sage_options_print(&process_options, stderr);
}

const SageOptions *sage_options(void) {
        pthread_once(&process_options_once, process_options_init);
        return &process_options;
}

void sage_options_print(const SageOptions *options, FILE *f) {
        for (size_t i = 0; i < sage_option_count; i++) {
                const SageOptionInfo *info = &sage_option_info[i];
                const void *field = (const char *)options + option_offset[i];

                switch (info->type) {
                case SAGE_OPTION_BOOL: fprintf(f, "sage: option SAGE_%s=%d\n", info->name, *(const bool *)field); break;
                case SAGE_OPTION_DURATION:
                        fprintf(f, "sage: option SAGE_%s=%llums\n", info->name,
                                (unsigned long long)*(const uint64_t *)field);
                        break;
                case SAGE_OPTION_SIZE:
                case SAGE_OPTION_UINT:
                        fprintf(f, "sage: option SAGE_%s=%llu\n", info->name,
                                (unsigned long long)*(const uint64_t *)field);
                        break;
                case SAGE_OPTION_STRING:
                case SAGE_OPTION_CHOICE:
                        fprintf(f, "sage: option SAGE_%s=%s\n", info->name, *(const char *const *)field);
                        break;
                }
        }
}
