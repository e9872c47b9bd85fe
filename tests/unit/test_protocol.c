/* Tests of control/protocol.c: every command type, every rule of the value table naming its
 * field, frame limits, the agent messages, and builder <-> parser round trips.
 * Frames are made by editing a valid message with jansson (one key changed per case), so each
 * case differs from an accepted message in exactly the field under test. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const valid_start =
    "{\"type\":\"start\",\"v\":1,\"id\":\"cmd-1\",\"session_id\":\"s:1\",\"project\":\"shop\","
    "\"environment\":\"prod\",\"selector\":{\"project\":\"shop\",\"environment\":\"prod\","
    "\"application\":\"api\"},\"period\":45,\"upload_timeout\":10,\"labels\":{\"team\":\"web\"},"
    "\"quota\":{\"plan\":\"free\",\"lease_until\":1700000300,\"budget_left\":900}}";

/* valid_start with `key` (a dotted path of at most two levels) set to value (consumed), or
 * removed when value is NULL. Returns malloc'd text. */
static char *start_with(const char *key, json_t *value)
{
    json_t *root = json_loads(valid_start, 0, NULL);
    assert_non_null(root);
    json_t *obj = root;
    const char *dot = strchr(key, '.');
    char first[64];
    if (dot) {
        snprintf(first, sizeof first, "%.*s", (int)(dot - key), key);
        obj = json_object_get(root, first);
        key = dot + 1;
    }
    if (value)
        json_object_set_new(obj, key, value);
    else
        json_object_del(obj, key);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

static void expect_command_error(const char *text, const char *field, const char *error,
                                 const char *id)
{
    struct proto_command cmd;
    struct proto_nack nack;
    int rc = proto_parse_command(text, strlen(text), &cmd, &nack);
    if (rc == 0 || strcmp(nack.field, field) != 0 || !strstr(nack.error, error) ||
        strcmp(nack.id, id) != 0)
        fail_msg("frame %.200s\n got rc %d field \"%s\" error \"%s\" id \"%s\"\n want field \"%s\" "
                 "error ~\"%s\" id \"%s\"",
                 text, rc, nack.field, nack.error, nack.id, field, error, id);
    assert_null(cmd.selector);
    assert_null(cmd.labels);
}

static void expect_start_error(const char *key, json_t *value, const char *field, const char *error)
{
    char *text = start_with(key, value);
    expect_command_error(text, field, error, "cmd-1");
    free(text);
}

static void parse_ok(const char *text, struct proto_command *cmd)
{
    struct proto_nack nack;
    if (proto_parse_command(text, strlen(text), cmd, &nack) < 0)
        fail_msg("%s: %s: %s", text, nack.field, nack.error);
}

/* ---- commands ---- */

static void test_parse_start(void **state)
{
    (void)state;
    struct proto_command cmd;
    parse_ok(valid_start, &cmd);
    assert_int_equal(cmd.type, PROTO_START);
    assert_string_equal(cmd.id, "cmd-1");
    assert_string_equal(cmd.session_id, "s:1");
    assert_string_equal(cmd.project, "shop");
    assert_string_equal(cmd.environment, "prod");
    assert_string_equal(json_string_value(json_object_get(cmd.selector, "application")), "api");
    assert_int_equal(cmd.period, 45);
    assert_int_equal(cmd.upload_timeout, 10);
    assert_string_equal(json_string_value(json_object_get(cmd.labels, "team")), "web");
    assert_string_equal(cmd.quota.plan, "free");
    assert_int_equal(cmd.quota.lease_until, 1700000300);
    assert_int_equal(cmd.quota.budget_left, 900);
    assert_true(cmd.has_period && cmd.has_upload_timeout && cmd.has_labels);
    proto_command_free(&cmd);
    proto_command_free(&cmd); /* idempotent */
}

static void test_parse_start_without_labels_and_unknown_keys(void **state)
{
    (void)state;
    char *text = start_with("labels", NULL);
    json_t *root = json_loads(text, 0, NULL);
    free(text);
    json_object_set_new(root, "future_field", json_pack("{s:[i,i]}", "x", 1, 2));
    json_object_set_new(json_object_get(root, "quota"), "currency", json_string("EUR"));
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    struct proto_command cmd;
    parse_ok(text, &cmd);
    assert_true(json_is_object(cmd.labels));
    assert_int_equal(json_object_size(cmd.labels), 0);
    proto_command_free(&cmd);
    free(text);
}

static void test_parse_stop(void **state)
{
    (void)state;
    struct proto_command cmd;
    parse_ok("{\"type\":\"stop\",\"v\":1,\"id\":\"c2\",\"session_id\":\"s1\",\"reason\":\"toggle "
             "off\"}",
             &cmd);
    assert_int_equal(cmd.type, PROTO_STOP);
    assert_string_equal(cmd.id, "c2");
    assert_string_equal(cmd.session_id, "s1");
    assert_string_equal(cmd.reason, "toggle off");
    assert_null(cmd.selector);
    proto_command_free(&cmd);
    parse_ok("{\"type\":\"stop\",\"v\":1,\"id\":\"c3\",\"session_id\":\"s1\"}", &cmd);
    assert_string_equal(cmd.reason, "");
    proto_command_free(&cmd);
}

static void test_parse_config(void **state)
{
    (void)state;
    struct proto_command cmd;
    parse_ok("{\"type\":\"config\",\"v\":1,\"id\":\"c4\",\"session_id\":\"s1\",\"period\":60}",
             &cmd);
    assert_int_equal(cmd.type, PROTO_CONFIG);
    assert_true(cmd.has_period);
    assert_int_equal(cmd.period, 60);
    assert_false(cmd.has_upload_timeout);
    assert_false(cmd.has_labels);
    assert_null(cmd.labels);
    proto_command_free(&cmd);
    parse_ok("{\"type\":\"config\",\"v\":1,\"id\":\"c5\",\"session_id\":\"s1\","
             "\"upload_timeout\":300,\"labels\":{\"a.b_c\":\"\"}}",
             &cmd);
    assert_false(cmd.has_period);
    assert_true(cmd.has_upload_timeout);
    assert_int_equal(cmd.upload_timeout, 300);
    assert_true(cmd.has_labels);
    assert_string_equal(json_string_value(json_object_get(cmd.labels, "a.b_c")), "");
    proto_command_free(&cmd);
    expect_command_error("{\"type\":\"config\",\"v\":1,\"id\":\"c6\",\"session_id\":\"s1\"}", "",
                         "at least one of period, upload_timeout, labels", "c6");
}

static void test_parse_lease(void **state)
{
    (void)state;
    struct proto_command cmd;
    parse_ok("{\"type\":\"lease\",\"v\":1,\"id\":\"c7\",\"session_id\":\"s1\","
             "\"lease_until\":1700000600,\"budget_left\":0}",
             &cmd);
    assert_int_equal(cmd.type, PROTO_LEASE);
    assert_int_equal(cmd.quota.lease_until, 1700000600);
    assert_int_equal(cmd.quota.budget_left, 0);
    assert_string_equal(cmd.quota.plan, "");
    proto_command_free(&cmd);
    expect_command_error("{\"type\":\"lease\",\"v\":1,\"id\":\"c8\",\"session_id\":\"s1\","
                         "\"lease_until\":1700000600}",
                         "budget_left", "expected an integer from 0 to", "c8");
    expect_command_error("{\"type\":\"lease\",\"v\":1,\"id\":\"c9\",\"session_id\":\"s1\","
                         "\"lease_until\":-1,\"budget_left\":5}",
                         "lease_until", "expected an integer from 0 to", "c9");
}

static void test_start_field_errors(void **state)
{
    (void)state;
    const char *period = "expected an integer from 1 to 3600";
    expect_start_error("period", json_integer(0), "period", period);
    expect_start_error("period", json_integer(3601), "period", period);
    expect_start_error("period", json_string("45"), "period", period);
    expect_start_error("period", json_real(45.0), "period", period);
    expect_start_error("period", NULL, "period", period);
    expect_start_error("upload_timeout", json_integer(301), "upload_timeout",
                       "expected an integer from 1 to 300");
    expect_start_error("upload_timeout", json_integer(-1), "upload_timeout",
                       "expected an integer from 1 to 300");
    const char *id_rule = "expected a string of 1 to 64 bytes of [A-Za-z0-9._:-]";
    expect_start_error("session_id", json_string("a b"), "session_id", id_rule);
    expect_start_error("session_id", json_string(""), "session_id", id_rule);
    expect_start_error("session_id", json_integer(7), "session_id", id_rule);
    char long_id[66];
    memset(long_id, 'x', 65);
    long_id[65] = '\0';
    expect_start_error("session_id", json_string(long_id), "session_id", id_rule);
    long_id[64] = '\0'; /* 64 bytes is fine: fails later, on nothing */
    char *ok = start_with("session_id", json_string(long_id));
    struct proto_command cmd;
    parse_ok(ok, &cmd);
    proto_command_free(&cmd);
    free(ok);
    const char *name_rule = "expected a string of 1 to 128 bytes without control characters";
    expect_start_error("project", json_string("sh\top"), "project", name_rule);
    expect_start_error("project", json_string(""), "project", name_rule);
    expect_start_error("environment", json_string("pr\xc2\x85od"), "environment", name_rule);
    char long_name[130];
    memset(long_name, 'p', 129);
    long_name[129] = '\0';
    expect_start_error("environment", json_string(long_name), "environment", name_rule);
}

static void test_start_compound_errors(void **state)
{
    (void)state;
    expect_start_error("labels", json_string("x"), "labels", "expected an object");
    expect_start_error("labels", json_pack("{s:i}", "team", 3), "labels.team",
                       "expected a string of at most 512 bytes");
    expect_start_error("labels", json_pack("{s:s}", "bad key", "v"), "labels",
                       "expected keys of 1 to 128 bytes");
    json_t *many = json_object();
    for (int i = 0; i < 65; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        json_object_set_new(many, key, json_string("v"));
    }
    expect_start_error("labels", many, "labels", "at most 64 string values");
    char big[514];
    memset(big, 'v', 513);
    big[513] = '\0';
    expect_start_error("labels", json_pack("{s:s}", "team", big), "labels.team",
                       "at most 512 bytes");
    expect_start_error("selector", json_string("x"), "selector", "expected an object");
    expect_start_error("selector", NULL, "selector", "expected an object");
    expect_start_error("selector.nonsense", json_string("x"), "selector.nonsense", "unknown key");
    expect_start_error("selector.application", json_integer(1), "selector.application",
                       "expected a string");
    expect_start_error("selector.project", json_string("other"), "selector.project",
                       "expected the command's project");
    expect_start_error("selector.environment", NULL, "selector.environment",
                       "expected the command's environment");
    expect_start_error("quota", NULL, "quota", "expected an object");
    expect_start_error("quota.plan", json_string("pro"), "quota.plan",
                       "expected \"free\" or \"addon\"");
    expect_start_error("quota.lease_until", json_string("soon"), "quota.lease_until",
                       "expected an integer from 0 to 253402300799");
    expect_start_error("quota.budget_left", json_integer(-5), "quota.budget_left",
                       "expected an integer from 0 to");
}

static void test_envelope_errors(void **state)
{
    (void)state;
    expect_start_error("v", NULL, "v", "expected 1");
    expect_start_error("v", json_integer(2), "v", "expected 1");
    expect_start_error("type", json_string("reboot"), "type",
                       "expected one of start, stop, config, lease");
    expect_start_error("type", json_string("hello"), "type", "expected one of start");
    expect_start_error("type", NULL, "type", "expected one of start");
    /* a bad id is named, and the nack cannot carry it */
    char *text = start_with("id", json_string("bad id!"));
    expect_command_error(text, "id", "expected a string of 1 to 64 bytes", "");
    free(text);
    text = start_with("id", NULL);
    expect_command_error(text, "id", "expected a string", "");
    free(text);
    /* the type is reported even when the frame is refused */
    text = start_with("period", json_integer(0));
    struct proto_command cmd;
    struct proto_nack nack;
    assert_int_equal(proto_parse_command(text, strlen(text), &cmd, &nack), -1);
    assert_int_equal(cmd.type, PROTO_START);
    free(text);
}

static void test_frame_errors(void **state)
{
    (void)state;
    expect_command_error("[1,2]", "", "expected a JSON object", "");
    expect_command_error("\"start\"", "", "expected a JSON object", "");
    expect_command_error("", "", "invalid JSON", "");
    expect_command_error("{\"type\":\"stop\",", "", "invalid JSON", "");
    expect_command_error(
        "{\"type\":\"stop\",\"v\":1,\"id\":\"a\",\"id\":\"b\",\"session_id\":\"s\"}", "",
        "invalid JSON", "");
    expect_command_error("{\"type\":\"stop\",\"v\":1,\"id\":\"c\",\"session_id\":\"s\xff\"}", "",
                         "invalid JSON", "");
    expect_command_error("{\"type\":\"stop\",\"v\":1,\"id\":\"c\",\"session_id\":\"s\\u0000\"}", "",
                         "invalid JSON", "");
    struct proto_command cmd;
    struct proto_nack nack;
    assert_int_equal(proto_parse_command(NULL, 0, &cmd, &nack), -1);
    /* deep nesting is refused, not recursed into */
    char deep[5000];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{\"type\":\"stop\",\"x\":");
    while (n < 4000)
        deep[n++] = '[';
    deep[n] = '\0';
    expect_command_error(deep, "", "invalid JSON", "");
}

/* A stop padded with an unknown key to exactly `size` bytes. */
static char *padded_stop(size_t size)
{
    const char *head = "{\"type\":\"stop\",\"v\":1,\"id\":\"big\",\"session_id\":\"s1\",\"pad\":\"";
    char *text = malloc(size + 1);
    size_t head_len = strlen(head);
    memcpy(text, head, head_len);
    memset(text + head_len, 'x', size - head_len - 2);
    memcpy(text + size - 2, "\"}", 3);
    return text;
}

static void test_frame_size(void **state)
{
    (void)state;
    char *text = padded_stop(PROTO_FRAME_MAX);
    struct proto_command cmd;
    parse_ok(text, &cmd);
    assert_string_equal(cmd.id, "big");
    proto_command_free(&cmd);
    free(text);
    text = padded_stop(PROTO_FRAME_MAX + 1);
    expect_command_error(text, "", "frame of 65537 bytes is larger than 65536 bytes", "");
    free(text);
}

static void test_command_round_trips(void **state)
{
    (void)state;
    struct proto_command start;
    parse_ok(valid_start, &start);
    struct cp_err err = {0};
    char *text = proto_build_command(&start, &err);
    assert_non_null(text);
    struct proto_command back;
    parse_ok(text, &back);
    assert_string_equal(back.session_id, start.session_id);
    assert_string_equal(back.project, start.project);
    assert_string_equal(back.environment, start.environment);
    assert_true(json_equal(back.selector, start.selector));
    assert_true(json_equal(back.labels, start.labels));
    assert_int_equal(back.period, start.period);
    assert_int_equal(back.upload_timeout, start.upload_timeout);
    assert_memory_equal(&back.quota, &start.quota, sizeof back.quota);
    /* building what was parsed gives the same text again */
    char *again = proto_build_start(&back, &err);
    assert_string_equal(text, again);
    free(again);
    free(text);
    proto_command_free(&back);

    struct proto_command stop = {
        .type = PROTO_STOP, .id = "x.1", .session_id = "s-2", .reason = "quota exhausted"};
    struct proto_command config = {.type = PROTO_CONFIG,
                                   .id = "x.2",
                                   .session_id = "s-2",
                                   .upload_timeout = 7,
                                   .has_upload_timeout = true,
                                   .labels = start.labels,
                                   .has_labels = true};
    struct proto_command lease = {.type = PROTO_LEASE,
                                  .id = "x.3",
                                  .session_id = "s-2",
                                  .quota = {.lease_until = 42, .budget_left = 9}};
    const struct proto_command *cmds[] = {&stop, &config, &lease};
    for (size_t i = 0; i < 3; i++) {
        text = proto_build_command(cmds[i], &err);
        assert_non_null(text);
        parse_ok(text, &back);
        assert_int_equal(back.type, cmds[i]->type);
        assert_string_equal(back.id, cmds[i]->id);
        assert_string_equal(back.session_id, "s-2");
        assert_string_equal(back.reason, cmds[i]->reason);
        assert_int_equal(back.has_period, cmds[i]->has_period);
        assert_int_equal(back.has_upload_timeout, cmds[i]->has_upload_timeout);
        assert_int_equal(back.upload_timeout, cmds[i]->upload_timeout);
        assert_int_equal(back.has_labels, cmds[i]->has_labels);
        assert_int_equal(back.quota.lease_until, cmds[i]->quota.lease_until);
        assert_int_equal(back.quota.budget_left, cmds[i]->quota.budget_left);
        if (back.has_labels) assert_true(json_equal(back.labels, start.labels));
        proto_command_free(&back);
        free(text);
    }
    proto_command_free(&start);
}

static void test_builders_refuse_invalid(void **state)
{
    (void)state;
    struct proto_command start;
    parse_ok(valid_start, &start);
    start.period = 0;
    struct cp_err err = {0};
    assert_null(proto_build_start(&start, &err));
    assert_non_null(strstr(err.msg, "period: expected an integer from 1 to 3600"));
    start.period = 45;
    snprintf(start.project, sizeof start.project, "other");
    assert_null(proto_build_start(&start, &err));
    assert_non_null(strstr(err.msg, "selector.project"));
    proto_command_free(&start);
    struct proto_command config = {.type = PROTO_CONFIG, .id = "c", .session_id = "s"};
    assert_null(proto_build_config(&config, &err));
    struct proto_command bad = {.type = PROTO_HELLO};
    assert_null(proto_build_command(&bad, &err));
    assert_null(proto_build_ack("no spaces allowed", &err));
    assert_non_null(strstr(err.msg, "id:"));
}

/* ---- agent messages ---- */

static void parse_agent_ok(const char *text, struct proto_agent_msg *msg)
{
    struct cp_err err = {0};
    if (proto_parse_agent_message(text, strlen(text), msg, &err) < 0)
        fail_msg("%s: %s", text, err.msg);
}

static void expect_agent_error(const char *text, const char *error, enum cp_err_code code)
{
    struct proto_agent_msg msg;
    struct cp_err err = {0};
    int rc = proto_parse_agent_message(text, strlen(text), &msg, &err);
    if (rc == 0 || !strstr(err.msg, error) || err.code != code)
        fail_msg("%.200s: rc %d code %d \"%s\", want ~\"%s\"", text, rc, err.code, err.msg, error);
    assert_null(msg.hello.targets);
    assert_null(msg.hello.sessions);
    assert_null(msg.status.targets);
}

static void test_agent_hello_round_trip(void **state)
{
    (void)state;
    struct cp_err err = {0};
    struct proto_target t = {.pid = 4242,
                             .container_id = "abcdef012345",
                             .project = "shop",
                             .application = "api",
                             .python = "3.12.1"};
    json_t *target = proto_target_json(&t, &err);
    assert_non_null(target);
    assert_null(json_object_get(target, "pod_uid"));
    json_t *targets = json_pack("[o]", target);
    json_t *caps = json_pack("[s,s]", "cpu", "wall");
    struct proto_session_ref sessions[] = {{"s1", 1700000300}, {"s:2", 5}};
    struct proto_hello hello = {.agent_id = "node-1.a",
                                .node = "node 1",
                                .agent_version = "0.1.0",
                                .capabilities = caps,
                                .targets = targets,
                                .sessions = sessions,
                                .session_count = 2};
    char *text = proto_build_hello(&hello, &err);
    assert_non_null(text);
    struct proto_agent_msg msg;
    parse_agent_ok(text, &msg);
    assert_int_equal(msg.type, PROTO_HELLO);
    assert_string_equal(msg.hello.agent_id, "node-1.a");
    assert_string_equal(msg.hello.node, "node 1");
    assert_string_equal(msg.hello.agent_version, "0.1.0");
    assert_true(json_equal(msg.hello.capabilities, caps));
    assert_true(json_equal(msg.hello.targets, targets));
    assert_int_equal(msg.hello.session_count, 2);
    assert_string_equal(msg.hello.sessions[1].session_id, "s:2");
    assert_int_equal(msg.hello.sessions[0].lease_until, 1700000300);
    proto_agent_msg_free(&msg);
    proto_agent_msg_free(&msg);
    free(text);
    json_decref(targets);
    json_decref(caps);

    /* a minimal hello: arrays default to empty */
    parse_agent_ok("{\"type\":\"hello\",\"v\":1,\"agent_id\":\"a\",\"node\":\"n\","
                   "\"agent_version\":\"1\"}",
                   &msg);
    assert_int_equal(json_array_size(msg.hello.targets), 0);
    assert_int_equal(json_array_size(msg.hello.capabilities), 0);
    assert_int_equal(msg.hello.session_count, 0);
    proto_agent_msg_free(&msg);
}

static void test_agent_status_round_trip(void **state)
{
    (void)state;
    struct proto_session_status sessions[] = {
        {"s1", PROTO_SESSION_RUNNING, 1700000300, 120, 3},
        {"s2", PROTO_SESSION_EXPIRED, 1700000000, 300, 0},
        {"s3", PROTO_SESSION_STOPPED, 10, 0, 0},
    };
    json_t *targets = json_pack("[{s:i,s:s}]", "pid", 7, "application", "worker");
    struct proto_status st = {.targets = targets,
                              .samples = 123456,
                              .sample_errors = 2,
                              .uploads = {5, 1, 2, 0},
                              .sessions = sessions,
                              .session_count = 3};
    struct cp_err err = {0};
    char *text = proto_build_status(&st, &err);
    assert_non_null(text);
    struct proto_agent_msg msg;
    parse_agent_ok(text, &msg);
    assert_int_equal(msg.type, PROTO_STATUS);
    assert_true(json_equal(msg.status.targets, targets));
    assert_int_equal(msg.status.samples, 123456);
    assert_int_equal(msg.status.sample_errors, 2);
    assert_memory_equal(&msg.status.uploads, &st.uploads, sizeof st.uploads);
    assert_int_equal(msg.status.session_count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(msg.status.sessions[i].session_id, sessions[i].session_id);
        assert_int_equal(msg.status.sessions[i].state, sessions[i].state);
        assert_int_equal(msg.status.sessions[i].lease_until, sessions[i].lease_until);
        assert_int_equal(msg.status.sessions[i].profiling_s, sessions[i].profiling_s);
        assert_int_equal(msg.status.sessions[i].targets, sessions[i].targets);
    }
    proto_agent_msg_free(&msg);
    free(text);
    json_decref(targets);
}

static void test_agent_event_ack_nack(void **state)
{
    (void)state;
    struct cp_err err = {0};
    json_t *target = json_pack("{s:i,s:s}", "pid", 9, "application", "app");
    char *text = proto_build_event(PROTO_EVENT_TARGET_ATTACHED, NULL, "attached", target, &err);
    assert_non_null(text);
    struct proto_agent_msg msg;
    parse_agent_ok(text, &msg);
    assert_int_equal(msg.type, PROTO_EVENT);
    assert_int_equal(msg.event.kind, PROTO_EVENT_TARGET_ATTACHED);
    assert_string_equal(msg.event.session_id, "");
    assert_string_equal(msg.event.message, "attached");
    assert_true(json_equal(msg.event.target, target));
    proto_agent_msg_free(&msg);
    free(text);
    json_decref(target);

    text = proto_build_event(PROTO_EVENT_QUOTA_EXHAUSTED, "s1", NULL, NULL, &err);
    assert_string_equal(text, "{\"type\":\"event\",\"v\":1,\"kind\":\"quota_exhausted\","
                              "\"session_id\":\"s1\"}");
    free(text);

    text = proto_build_ack("cmd-1", &err);
    assert_string_equal(text, "{\"type\":\"ack\",\"v\":1,\"id\":\"cmd-1\"}");
    parse_agent_ok(text, &msg);
    assert_int_equal(msg.type, PROTO_ACK);
    assert_string_equal(msg.ack_id, "cmd-1");
    free(text);

    text = proto_build_nack("cmd-1", "period", "expected an integer from 1 to 3600", &err);
    parse_agent_ok(text, &msg);
    assert_int_equal(msg.type, PROTO_NACK);
    assert_string_equal(msg.nack.id, "cmd-1");
    assert_string_equal(msg.nack.field, "period");
    assert_string_equal(msg.nack.error, "expected an integer from 1 to 3600");
    free(text);
    text = proto_build_nack(NULL, "", "frame of 70000 bytes is larger than 65536 bytes", &err);
    parse_agent_ok(text, &msg);
    assert_string_equal(msg.nack.id, "");
    free(text);

    /* an over-long error is cut at a character boundary, never refused */
    char long_error[2000] = "";
    for (int i = 0; i < 600; i++)
        strcat(long_error, "\xc3\xa9"); /* é */
    text = proto_build_nack("c", "f", long_error, &err);
    assert_non_null(text);
    parse_agent_ok(text, &msg);
    assert_true(strlen(msg.nack.error) <= PROTO_MESSAGE_MAX);
    assert_int_equal(strlen(msg.nack.error) % 2, 0);
    free(text);
}

static void test_agent_message_errors(void **state)
{
    (void)state;
    const char *hello = "{\"type\":\"hello\",\"agent_id\":\"a\",\"node\":\"n\","
                        "\"agent_version\":\"1\",\"v\":";
    char text[512];
    snprintf(text, sizeof text, "%s2}", hello);
    expect_agent_error(text, "v: expected 1", CP_ERR_UNSUPPORTED);
    struct proto_agent_msg msg;
    struct cp_err err = {0};
    assert_int_equal(proto_parse_agent_message(text, strlen(text), &msg, &err), -1);
    assert_int_equal(msg.type, PROTO_HELLO); /* so the console closes with 4000 */

    expect_agent_error("{\"type\":\"hello\",\"v\":1,\"node\":\"n\",\"agent_version\":\"1\"}",
                       "agent_id: expected a string", CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"hello\",\"v\":1,\"agent_id\":\"a\",\"node\":\"n\","
                       "\"agent_version\":\"1\",\"targets\":[{\"pid\":1,\"application\":\"x\"},"
                       "{\"pid\":0,\"application\":\"x\"}]}",
                       "targets[1].pid: expected an integer from 1 to 2147483647", CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"hello\",\"v\":1,\"agent_id\":\"a\",\"node\":\"n\","
                       "\"agent_version\":\"1\",\"targets\":[{\"pid\":1}]}",
                       "targets[0].application: expected a string", CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"hello\",\"v\":1,\"agent_id\":\"a\",\"node\":\"n\","
                       "\"agent_version\":\"1\",\"capabilities\":[\"cpu\",3]}",
                       "capabilities[1]: expected a string", CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"hello\",\"v\":1,\"agent_id\":\"a\",\"node\":\"n\","
                       "\"agent_version\":\"1\",\"sessions\":[{\"session_id\":\"s\"}]}",
                       "sessions[0].lease_until: expected an integer", CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"status\",\"v\":1,\"sessions\":[{\"session_id\":\"s\","
                       "\"state\":\"paused\",\"lease_until\":1}]}",
                       "sessions[0].state: expected \"running\", \"expired\" or \"stopped\"",
                       CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"status\",\"v\":1,\"samples\":-1}",
                       "samples: expected an integer >= 0", CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"status\",\"v\":1,\"uploads\":{\"sent\":\"3\"}}",
                       "uploads.sent: expected an integer >= 0", CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"event\",\"v\":1,\"kind\":\"panic\"}", "kind: expected one of",
                       CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"ack\",\"v\":1}", "id: expected a string", CP_ERR_INVALID);
    expect_agent_error("{\"type\":\"nack\",\"v\":1,\"id\":\"\",\"field\":\"x\"}",
                       "error: expected a string", CP_ERR_INVALID);
    expect_agent_error(valid_start, "type: expected one of hello, status, event, ack, nack",
                       CP_ERR_INVALID);
    expect_agent_error("[]", "expected a JSON object", CP_ERR_INVALID);
}

static void test_agent_sessions_bound(void **state)
{
    (void)state;
    size_t count = PROTO_SESSIONS_MAX + 1;
    struct proto_session_ref *refs = calloc(count, sizeof *refs);
    for (size_t i = 0; i < count; i++) {
        snprintf(refs[i].session_id, sizeof refs[i].session_id, "s%zu", i);
        refs[i].lease_until = 1;
    }
    struct proto_hello hello = {.agent_id = "a",
                                .node = "n",
                                .agent_version = "1",
                                .sessions = refs,
                                .session_count = PROTO_SESSIONS_MAX};
    struct cp_err err = {0};
    char *text = proto_build_hello(&hello, &err);
    assert_non_null(text);
    assert_true(strlen(text) <= PROTO_FRAME_MAX);
    free(text);
    hello.session_count = count;
    assert_null(proto_build_hello(&hello, &err));
    assert_non_null(strstr(err.msg, "sessions: expected an array of at most 1024"));
    free(refs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_start),
        cmocka_unit_test(test_parse_start_without_labels_and_unknown_keys),
        cmocka_unit_test(test_parse_stop),
        cmocka_unit_test(test_parse_config),
        cmocka_unit_test(test_parse_lease),
        cmocka_unit_test(test_start_field_errors),
        cmocka_unit_test(test_start_compound_errors),
        cmocka_unit_test(test_envelope_errors),
        cmocka_unit_test(test_frame_errors),
        cmocka_unit_test(test_frame_size),
        cmocka_unit_test(test_command_round_trips),
        cmocka_unit_test(test_builders_refuse_invalid),
        cmocka_unit_test(test_agent_hello_round_trip),
        cmocka_unit_test(test_agent_status_round_trip),
        cmocka_unit_test(test_agent_event_ack_nack),
        cmocka_unit_test(test_agent_message_errors),
        cmocka_unit_test(test_agent_sessions_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
