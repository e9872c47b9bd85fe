/* Fuzzes the environment-block and command-line parsers: any bytes parse; every value kept is
 * shorter than PROCENV_VALUE_MAX and really is the first NAME=value entry of the block; the
 * script name and the application name are NUL-terminated within their buffers and non-empty
 * when found; an accepted interpreter name starts with "python". */
#include "procenv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The value of the first `name=` entry of the block, or NULL (the bound respected). */
static const char *first_value(const char *block, size_t len, const char *name, size_t *vlen)
{
    bool cut = len > PROCENV_TEXT_MAX;
    if (cut) len = PROCENV_TEXT_MAX;
    size_t nlen = strlen(name);
    for (size_t pos = 0; pos < len;) {
        const char *nul = memchr(block + pos, '\0', len - pos);
        if (!nul && cut) return NULL;
        size_t n = nul ? (size_t)(nul - block) - pos : len - pos;
        if (n > nlen && memcmp(block + pos, name, nlen) == 0 && block[pos + nlen] == '=') {
            *vlen = n - nlen - 1;
            return block + pos + nlen + 1;
        }
        pos += n + 1;
    }
    return NULL;
}

static void check_var(const char *block, size_t len, const char *name, const char *kept)
{
    size_t vlen = 0;
    const char *v = first_value(block, len, name, &vlen);
    bool expect = v && vlen > 0 && vlen < PROCENV_VALUE_MAX;
    if (expect != (kept[0] != '\0')) abort();
    if (expect && (strlen(kept) != vlen || memcmp(kept, v, vlen) != 0)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct procenv env;
    procenv_parse(text, size, &env);
    check_var(text, size, "PLATFORM_PROJECT", env.project);
    check_var(text, size, "PLATFORM_ENVIRONMENT", env.environment);
    check_var(text, size, "PLATFORM_APPLICATION_NAME", env.platform_app);
    check_var(text, size, "CONPROF_APP_NAME", env.conprof_app);
    check_var(text, size, "BLACKFIRE_CONPROF_APP_NAME", env.blackfire_app);
    check_var(text, size, "OTEL_SERVICE_NAME", env.otel_service);

    char out[32];
    memset(out, 'z', sizeof out);
    bool found = procenv_script_name(text, size, out, sizeof out);
    if (!memchr(out, '\0', sizeof out) || found != (out[0] != '\0')) abort();
    char app[PROCENV_VALUE_MAX];
    procenv_app_name(&env, text, size, "comm", app, sizeof app);
    if (!memchr(app, '\0', sizeof app) || app[0] == '\0') abort();
    if (procenv_is_python_name(text, size) && (size < 6 || memcmp(text, "python", 6) != 0)) abort();
    return 0;
}
