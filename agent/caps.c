/* caps: keep a short list of capabilities, drop the rest from every set.
 *
 * The bounding set is trimmed first (that needs CAP_SETPCAP, which we still hold at that point),
 * then the permitted/effective/inheritable sets are replaced by the kept ones we actually had.
 */
#include "caps.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>

static const cap_value_t AGENT_CAPS[] = {CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_SYS_CHROOT,
                                         CAP_DAC_READ_SEARCH};
static const cap_value_t WORKER_CAPS[] = {CAP_SYS_PTRACE};

static bool kept(cap_value_t c, const cap_value_t *keep, size_t nkeep)
{
    for (size_t i = 0; i < nkeep; i++)
        if (keep[i] == c) return true;
    return false;
}

static int keep_only(const cap_value_t *keep, size_t nkeep, char *missing, size_t size,
                     struct cp_err *err)
{
    cap_t now = cap_get_proc();
    if (!now) {
        cp_err_set(err, CP_ERR_IO, "cannot read our capabilities: %s", strerror(errno));
        return -1;
    }
    cap_value_t have[16];
    int nhave = 0;
    if (missing && size) missing[0] = '\0';
    for (size_t i = 0; i < nkeep; i++) {
        cap_flag_value_t v = CAP_CLEAR;
        cap_get_flag(now, keep[i], CAP_PERMITTED, &v);
        if (v == CAP_SET) {
            have[nhave++] = keep[i];
        } else if (missing && size) {
            char *name = cap_to_name(keep[i]);
            size_t len = strlen(missing);
            snprintf(missing + len, size - len, "%s%s", len ? ", " : "", name ? name : "?");
            cap_free(name);
        }
    }
    cap_flag_value_t setpcap = CAP_CLEAR;
    cap_get_flag(now, CAP_SETPCAP, CAP_EFFECTIVE, &setpcap);
    cap_free(now);
    if (setpcap == CAP_SET) /* trim the bounding set while we still may */
        for (cap_value_t c = 0; c <= CAP_LAST_CAP; c++)
            if (!kept(c, keep, nkeep) && CAP_IS_SUPPORTED(c) && cap_drop_bound(c) < 0 &&
                errno != EINVAL) {
                cp_err_set(err, CP_ERR_IO, "cannot drop a capability from the bounding set: %s",
                           strerror(errno));
                return -1;
            }
    cap_t next = cap_init();
    if (!next ||
        (nhave && (cap_set_flag(next, CAP_PERMITTED, nhave, have, CAP_SET) < 0 ||
                   cap_set_flag(next, CAP_EFFECTIVE, nhave, have, CAP_SET) < 0)) ||
        cap_set_proc(next) < 0) {
        cp_err_set(err, CP_ERR_IO, "cannot set our capabilities: %s", strerror(errno));
        if (next) cap_free(next);
        return -1;
    }
    cap_free(next);
    return 0;
}

int caps_restrict_agent(char *missing, size_t size, struct cp_err *err)
{
    return keep_only(AGENT_CAPS, sizeof AGENT_CAPS / sizeof AGENT_CAPS[0], missing, size, err);
}

int caps_restrict_worker(struct cp_err *err)
{
    if (keep_only(WORKER_CAPS, 1, NULL, 0, err) < 0) return -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        cp_err_set(err, CP_ERR_IO, "cannot set no_new_privs: %s", strerror(errno));
        return -1;
    }
    return 0;
}
