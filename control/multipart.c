/* multipart: RFC 7578 multipart/form-data, zero-copy.
 *
 * The body is cut at each "\n--BOUNDARY" found with memmem; a '\r' just before it belongs to the
 * delimiter, so CRLF and bare-LF bodies both work and part data never includes the line break
 * that precedes a delimiter. Between the delimiter and the part's data sit the header lines,
 * read one line at a time within a MULTIPART_MAX_HEADER_BYTES window; only Content-Disposition
 * (its name and filename parameters) and Content-Type are kept. Parameter values are tokens or
 * quoted strings; a value that does not fit its field is an error rather than a silent cut, so two
 * long names never collide. Every loop is bounded by the body length or the part limit.
 */
#include "multipart.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- Content-Type parameters ------------------------------------------------------------- */

static const char *skip_space(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static int is_token_char(char c)
{
    return c > ' ' && c < 127 && !strchr("()<>@,;:\\\"/[]?={}", c);
}

/* Reads a token or a quoted string at *s into out (outsize bytes with the NUL); advances *s.
 * 0, -1 malformed, -2 too long. */
static int read_param_value(const char **s, char *out, size_t outsize)
{
    const char *p = *s;
    size_t n = 0;
    if (*p == '"') {
        for (p++; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1]) p++;
            if (n + 1 >= outsize) return -2;
            out[n++] = *p;
        }
        if (*p != '"') return -1;
        p++;
    } else {
        for (; is_token_char(*p); p++) {
            if (n + 1 >= outsize) return -2;
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    *s = p;
    return 0;
}

/* Finds parameter `want` in "; k=v; k2="v2"" (case-insensitive names). 1 found, 0 not, <0 as
 * read_param_value. */
static int find_param(const char *params, const char *want, char *out, size_t outsize)
{
    const char *p = params;
    while (*p) {
        p = skip_space(p);
        if (*p != ';') return -1;
        p = skip_space(p + 1);
        if (!*p) return 0; /* a trailing ';' */
        const char *name = p;
        while (is_token_char(*p))
            p++;
        size_t name_len = (size_t)(p - name);
        p = skip_space(p);
        if (name_len == 0 || *p != '=') return -1;
        p = skip_space(p + 1);
        char scratch[MULTIPART_MAX_HEADER_BYTES + 1]; /* a header line always fits */
        int match = strlen(want) == name_len && strncasecmp(name, want, name_len) == 0;
        int rc = match ? read_param_value(&p, out, outsize)
                       : read_param_value(&p, scratch, sizeof scratch);
        if (rc < 0) return rc;
        if (match) return 1;
    }
    return 0;
}

int multipart_boundary(const char *content_type, char *out, size_t outsize, struct cp_err *err)
{
    static const char TYPE[] = "multipart/form-data";
    const char *p = skip_space(content_type ? content_type : "");
    if (strncasecmp(p, TYPE, sizeof TYPE - 1) != 0) {
        cp_err_set(err, CP_ERR_INVALID, "Content-Type: expected multipart/form-data, got \"%.80s\"",
                   p);
        return -1;
    }
    char value[MULTIPART_MAX_BOUNDARY + 1];
    int rc = find_param(p + sizeof TYPE - 1, "boundary", value, sizeof value);
    if (rc <= 0 || value[0] == '\0') {
        cp_err_set(err, CP_ERR_INVALID, "Content-Type: %s",
                   rc == -2 ? "boundary longer than 70 characters"
                   : rc < 0 ? "malformed parameters"
                            : "no boundary parameter");
        return -1;
    }
    if (strlen(value) + 1 > outsize) {
        cp_err_set(err, CP_ERR_INVALID, "Content-Type: boundary too long");
        return -1;
    }
    memcpy(out, value, strlen(value) + 1);
    return 0;
}

/* ---- the body ----------------------------------------------------------------------------- */

struct cursor {
    const uint8_t *p, *end;
};

/* Finds the next "\n--boundary" at or after c->p; returns the position of the '\n', or NULL. */
static const uint8_t *find_delimiter(const struct cursor *c, const char *delim, size_t delim_len)
{
    if ((size_t)(c->end - c->p) < delim_len) return NULL;
    return memmem(c->p, (size_t)(c->end - c->p), delim, delim_len);
}

/* Reads one header line (without its CRLF/LF) within the header budget. 0, or -1. */
static int next_line(struct cursor *c, size_t *budget, const uint8_t **line, size_t *line_len)
{
    size_t avail = (size_t)(c->end - c->p);
    if (avail > *budget) avail = *budget;
    const uint8_t *nl = memchr(c->p, '\n', avail);
    if (!nl) return -1;
    *line = c->p;
    *line_len = (size_t)(nl - c->p);
    if (*line_len && (*line)[*line_len - 1] == '\r') (*line_len)--;
    *budget -= (size_t)(nl + 1 - c->p);
    c->p = nl + 1;
    return 0;
}

static int header_is(const char *line, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

static int set_param(const char *params, const char *want, char *out, size_t outsize, size_t index,
                     struct cp_err *err)
{
    int rc = find_param(params, want, out, outsize);
    if (rc >= 0) return 0;
    cp_err_set(err, CP_ERR_INVALID, "multipart part %zu: %s", index,
               rc == -2 ? (strcmp(want, "name") == 0 ? "field name too long" : "filename too long")
                        : "malformed Content-Disposition");
    return -1;
}

static int parse_disposition(const char *value, struct multipart_part *part, size_t index,
                             struct cp_err *err)
{
    const char *p = skip_space(value);
    while (is_token_char(*p))
        p++; /* the disposition type: form-data */
    return set_param(p, "name", part->name, sizeof part->name, index, err) < 0 ||
                   set_param(p, "filename", part->filename, sizeof part->filename, index, err) < 0
               ? -1
               : 0;
}

static int parse_header(const char *line, struct multipart_part *part, int *has_disposition,
                        size_t index, struct cp_err *err)
{
    if (header_is(line, "Content-Disposition")) {
        *has_disposition = 1;
        return parse_disposition(line + strlen("Content-Disposition:"), part, index, err);
    }
    if (header_is(line, "Content-Type")) {
        const char *v = skip_space(line + strlen("Content-Type:"));
        size_t n = strlen(v);
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (n >= sizeof part->content_type) {
            cp_err_set(err, CP_ERR_INVALID, "multipart part %zu: Content-Type too long", index);
            return -1;
        }
        memcpy(part->content_type, v, n);
        part->content_type[n] = '\0';
    }
    return 0;
}

static int parse_headers(struct cursor *c, struct multipart_part *part, size_t index,
                         struct cp_err *err)
{
    size_t budget = MULTIPART_MAX_HEADER_BYTES;
    int has_disposition = 0;
    for (;;) {
        const uint8_t *line;
        size_t len;
        if (next_line(c, &budget, &line, &len) < 0) {
            cp_err_set(err, CP_ERR_INVALID,
                       "multipart part %zu: headers unterminated or longer than %u bytes", index,
                       MULTIPART_MAX_HEADER_BYTES);
            return -1;
        }
        if (len == 0) break;
        if (line[0] == ' ' || line[0] == '\t') continue; /* obsolete folding: not ours */
        char text[MULTIPART_MAX_HEADER_BYTES + 1];
        memcpy(text, line, len);
        text[len] = '\0';
        if (strlen(text) != len) {
            cp_err_set(err, CP_ERR_INVALID, "multipart part %zu: NUL byte in a header", index);
            return -1;
        }
        if (parse_header(text, part, &has_disposition, index, err) < 0) return -1;
    }
    if (!has_disposition) {
        cp_err_set(err, CP_ERR_INVALID, "multipart part %zu: no Content-Disposition header", index);
        return -1;
    }
    return 0;
}

/* After "--boundary": "--" closes the body; else optional whitespace then a line break. */
static int after_delimiter(struct cursor *c, int *closing)
{
    if (c->end - c->p >= 2 && c->p[0] == '-' && c->p[1] == '-') {
        *closing = 1;
        return 0;
    }
    *closing = 0;
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
    if (c->p < c->end && *c->p == '\r') c->p++;
    if (c->p >= c->end || *c->p != '\n') return -1;
    c->p++;
    return 0;
}

static int parse_parts(struct cursor *c, const char *delim, size_t delim_len,
                       struct multipart_part *parts, size_t max_parts, size_t *nparts,
                       struct cp_err *err)
{
    for (size_t index = 0;; index++) {
        int closing;
        if (after_delimiter(c, &closing) < 0) {
            cp_err_set(err, CP_ERR_INVALID, "multipart: malformed delimiter line before part %zu",
                       index);
            return -1;
        }
        if (closing) return 0;
        if (index >= max_parts) {
            cp_err_set(err, CP_ERR_INVALID, "multipart: more than %zu parts", max_parts);
            return -1;
        }
        struct multipart_part *part = &parts[index];
        memset(part, 0, sizeof *part);
        if (parse_headers(c, part, index, err) < 0) return -1;
        const uint8_t *nl = find_delimiter(c, delim, delim_len);
        if (!nl) {
            cp_err_set(err, CP_ERR_INVALID, "multipart part %zu: no closing boundary", index);
            return -1;
        }
        part->data = c->p;
        part->len = (size_t)(nl - c->p);
        if (part->len && part->data[part->len - 1] == '\r') part->len--;
        *nparts = index + 1;
        c->p = nl + delim_len;
    }
}

int multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                    struct multipart_part *parts, size_t max_parts, size_t *nparts,
                    struct cp_err *err)
{
    *nparts = 0;
    size_t blen = boundary ? strlen(boundary) : 0;
    if (blen == 0 || blen > MULTIPART_MAX_BOUNDARY) {
        cp_err_set(err, CP_ERR_INVALID, "multipart: boundary must be 1 to %u characters",
                   MULTIPART_MAX_BOUNDARY);
        return -1;
    }
    if (max_parts > MULTIPART_MAX_PARTS) max_parts = MULTIPART_MAX_PARTS;
    char delim[MULTIPART_MAX_BOUNDARY + 4];
    int delim_len = snprintf(delim, sizeof delim, "\n--%s", boundary);
    struct cursor c = {body, body + len};
    /* The first delimiter may open the body (no line break before it). */
    if (len >= (size_t)delim_len - 1 && memcmp(body, delim + 1, (size_t)delim_len - 1) == 0) {
        c.p += delim_len - 1;
    } else {
        const uint8_t *nl = find_delimiter(&c, delim, (size_t)delim_len);
        if (!nl) {
            cp_err_set(err, CP_ERR_INVALID, "multipart: boundary \"%s\" not found in the body",
                       boundary);
            return -1;
        }
        c.p = nl + delim_len;
    }
    if (parse_parts(&c, delim, (size_t)delim_len, parts, max_parts, nparts, err) < 0) {
        *nparts = 0;
        return -1;
    }
    return 0;
}
