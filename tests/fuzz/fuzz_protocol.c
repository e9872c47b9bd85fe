/* Fuzzes both parsers of control/protocol.c with arbitrary frames. Whatever parses must build
 * back (the builders re-check with the parser) into text that parses to the same message: the
 * two ends of the channel can never disagree on a message one of them accepted. The only
 * allowed build failure is a rebuilt frame over the size limit (defaults and compact numbers can
 * make the rebuilt text slightly longer than a frame near 64 KiB). */
#include "protocol.h"

#include <stdlib.h>
#include <string.h>

static bool tolerated(const struct cp_err *err)
{
    return strstr(err->msg, "is larger than") != NULL;
}

static void check_command(const char *text, size_t len)
{
    struct proto_command cmd;
    struct proto_nack nack;
    if (proto_parse_command(text, len, &cmd, &nack) < 0) {
        if (cmd.selector || cmd.labels || memchr(nack.error, '\0', sizeof nack.error) == NULL)
            abort();
        return;
    }
    struct cp_err err;
    char *built = proto_build_command(&cmd, &err);
    proto_command_free(&cmd);
    if (!built) {
        if (!tolerated(&err)) abort();
        return;
    }
    struct proto_command again;
    if (proto_parse_command(built, strlen(built), &again, &nack) < 0) abort();
    char *rebuilt = proto_build_command(&again, &err);
    proto_command_free(&again);
    if (!rebuilt || strcmp(built, rebuilt) != 0) abort();
    free(built);
    free(rebuilt);
}

static char *build_agent(const struct proto_agent_msg *m, struct cp_err *err)
{
    switch (m->type) {
    case PROTO_HELLO:
        return proto_build_hello(&m->hello, err);
    case PROTO_STATUS:
        return proto_build_status(&m->status, err);
    case PROTO_EVENT:
        return proto_build_event(m->event.kind, m->event.session_id, m->event.message,
                                 m->event.target, err);
    case PROTO_ACK:
        return proto_build_ack(m->ack_id, err);
    case PROTO_NACK:
        return proto_build_nack(m->nack.id, m->nack.field, m->nack.error, err);
    default:
        abort();
    }
}

static void check_agent_message(const char *text, size_t len)
{
    struct proto_agent_msg msg;
    struct cp_err err;
    if (proto_parse_agent_message(text, len, &msg, &err) < 0) {
        if (msg.hello.targets || msg.status.sessions || msg.event.target) abort();
        return;
    }
    char *built = build_agent(&msg, &err);
    proto_agent_msg_free(&msg);
    if (!built) {
        if (!tolerated(&err)) abort();
        return;
    }
    struct proto_agent_msg again;
    if (proto_parse_agent_message(built, strlen(built), &again, &err) < 0) abort();
    char *rebuilt = build_agent(&again, &err);
    proto_agent_msg_free(&again);
    if (!rebuilt || strcmp(built, rebuilt) != 0) abort();
    free(built);
    free(rebuilt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_command((const char *)data, size);
    check_agent_message((const char *)data, size);
    return 0;
}
