/* Fuzzes the state-file reader of control/control_state.c (control_state_parse_text, no I/O).
 * A text that loads must survive the agent's life cycle: resume, expire at a time taken from
 * the input, serialise, and load again to the same text. */
#include "control_state.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct control_state *st = malloc(sizeof *st);
    struct control_state *again = malloc(sizeof *again);
    if (!st || !again) abort();
    struct cp_err err;
    if (control_state_parse_text(st, (const char *)data, size, &err) < 0) {
        if (st->count != 0) abort();
        free(st);
        free(again);
        return 0;
    }
    int64_t now = size ? (int64_t)data[0] * 1000003 : 0;
    control_state_resume(st, now);
    control_state_expire(st, now, NULL, NULL);
    char *text = control_state_to_text(st, &err);
    if (!text) abort();
    if (control_state_parse_text(again, text, strlen(text), &err) < 0) abort();
    char *text2 = control_state_to_text(again, &err);
    if (!text2 || strcmp(text, text2) != 0) abort();
    free(text);
    free(text2);
    control_state_free(st);
    control_state_free(again);
    free(st);
    free(again);
    return 0;
}
