/* Unit test of common/options: value parsers and the table-driven parse. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "options.h"

static const char *fake_env_values[][2] = {
        { "SAGE_TRACE", "/tmp/x-%p.json" },
        { "SAGE_TRACE_STACKS", "yes" },
        { "SAGE_TRACE_MAX_EVENTS", "64k" },
        { "SAGE_VERBOSE", "lots" },
};

static const char *fake_env(const char *name) {
        for (size_t i = 0; i < sizeof(fake_env_values) / sizeof(fake_env_values[0]); i++)
                if (strcmp(fake_env_values[i][0], name) == 0)
                        return fake_env_values[i][1];
        return NULL;
}

static int warnings;
static char last_warning[256];
static void record_warning(const char *line) {
        warnings++;
        snprintf(last_warning, sizeof(last_warning), "%s", line);
}

static const char *no_env(const char *name) {
        (void)name;
        return NULL;
}

int main(void) {
        bool b;
        uint64_t v;
        SageOptions o;

        assert(sage_parse_bool("1", &b) == 0 && b);
        assert(sage_parse_bool("On", &b) == 0 && b);
        assert(sage_parse_bool("no", &b) == 0 && !b);
        assert(sage_parse_bool("maybe", &b) < 0);
        assert(sage_parse_size("4096", &v) == 0 && v == 4096);
        assert(sage_parse_size("2M", &v) == 0 && v == 2u << 20);
        assert(sage_parse_size("3GiB", &v) == 0 && v == 3ull << 30);
        assert(sage_parse_size("1kb", &v) == 0 && v == 1024);
        assert(sage_parse_size("", &v) < 0);
        assert(sage_parse_size("-1", &v) < 0);
        assert(sage_parse_size("12X", &v) < 0);
        assert(sage_parse_size("99999999999T", &v) < 0);
        assert(sage_parse_duration_ms("500ms", &v) == 0 && v == 500);
        assert(sage_parse_duration_ms("2s", &v) == 0 && v == 2000);
        assert(sage_parse_duration_ms("3", &v) == 0 && v == 3000);
        assert(sage_parse_duration_ms("1m", &v) == 0 && v == 60000 && sage_parse_duration_ms("1h", &v) == 0);
        assert(sage_parse_duration_ms("2x", &v) < 0 && sage_parse_duration_ms("", &v) < 0);
        assert(sage_parse_duration_ms("-1s", &v) < 0 && sage_parse_duration_ms("9999999h", &v) < 0);
        assert(sage_parse_uint("42", &v) == 0 && v == 42);
        assert(sage_parse_uint("4k", &v) < 0);

        /* Defaults, with nothing set. */
        assert(sage_options_parse(&o, no_env, record_warning) == 0);
        assert(strcmp(o.trace, "") == 0 && !o.trace_stacks && o.trace_max_events == 4u << 20 && o.verbose == 0);
        assert(strcmp(o.driver, "libcuda.so.1") == 0);

        /* Values, and one bad value that keeps its default and is reported. */
        assert(sage_options_parse(&o, fake_env, record_warning) == 1);
        assert(strcmp(o.trace, "/tmp/x-%p.json") == 0);
        assert(o.trace_stacks && o.trace_max_events == 65536 && o.verbose == 0);
        assert(warnings == 1 && strstr(last_warning, "SAGE_VERBOSE") && strstr(last_warning, "lots"));

        /* Every documented option has a name, help and a default that parses. */
        for (size_t i = 0; i < sage_option_count; i++)
                assert(sage_option_info[i].name[0] && sage_option_info[i].help[0] && sage_option_info[i].default_text);
        puts("options: ok");
        return 0;
}
