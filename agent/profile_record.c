/* profile_record: labels kept sorted in a small array (a profile has a few dozen at most). */
#include "profile_record.h"

#include <stdlib.h>
#include <string.h>

int profile_record_set_label(struct profile_record *r, const char *key, const char *value)
{
    size_t i = 0;
    while (i < r->nlabels && strcmp(r->labels[i].key, key) < 0)
        i++;
    char *v = strdup(value);
    if (!v) return -1;
    if (i < r->nlabels && strcmp(r->labels[i].key, key) == 0) {
        free(r->labels[i].value);
        r->labels[i].value = v;
        return 0;
    }
    char *k = strdup(key);
    struct profile_label *l = realloc(r->labels, (r->nlabels + 1) * sizeof *l);
    if (!k || !l) {
        free(k);
        free(v);
        if (l) r->labels = l;
        return -1;
    }
    r->labels = l;
    memmove(&l[i + 1], &l[i], (r->nlabels - i) * sizeof *l);
    l[i] = (struct profile_label){k, v};
    r->nlabels++;
    return 0;
}

const char *profile_record_label(const struct profile_record *r, const char *key)
{
    for (size_t i = 0; i < r->nlabels; i++)
        if (strcmp(r->labels[i].key, key) == 0) return r->labels[i].value;
    return NULL;
}

void profile_record_free(struct profile_record *r)
{
    for (size_t i = 0; i < r->nlabels; i++) {
        free(r->labels[i].key);
        free(r->labels[i].value);
    }
    free(r->labels);
    free(r->app_name);
    buf_free(&r->pprof_gz);
    memset(r, 0, sizeof *r);
}
