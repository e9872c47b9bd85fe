/* Tests of agent_link against a real websocket peer on loopback: a python3-websockets server
 * (the script below, run with /usr/bin/python3 -c) that reports every handshake and message on
 * its stdout as JSON lines and takes commands (send, close, freeze, exit) on its stdin. Time for
 * leases is the real clock plus a per-test skew, so lease ends need no waiting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "agent_link.h"
#include "buf.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char PEER_SCRIPT[] =
    "import asyncio, http, json, ssl, sys\n"
    "import websockets\n"
    "\n"
    "def out(obj):\n"
    "    sys.stdout.write(json.dumps(obj) + \"\\n\")\n"
    "    sys.stdout.flush()\n"
    "\n"
    "state = {\"ws\": None}\n"
    "\n"
    "async def handler(ws, path):\n"
    "    state[\"ws\"] = ws\n"
    "    out({\"ev\": \"connect\", \"path\": path, \"subprotocol\": ws.subprotocol,\n"
    "         \"headers\": {k.lower(): v for k, v in ws.request_headers.raw_items()}})\n"
    "    try:\n"
    "        async for m in ws:\n"
    "            if isinstance(m, bytes):\n"
    "                out({\"ev\": \"binary\", \"len\": len(m)})\n"
    "                continue\n"
    "            try:\n"
    "                out({\"ev\": \"msg\", \"msg\": json.loads(m)})\n"
    "            except ValueError:\n"
    "                out({\"ev\": \"text\", \"text\": m})\n"
    "    except websockets.ConnectionClosed:\n"
    "        pass\n"
    "    out({\"ev\": \"close\", \"code\": ws.close_code})\n"
    "    if state[\"ws\"] is ws:\n"
    "        state[\"ws\"] = None\n"
    "\n"
    "def make_process_request(token):\n"
    "    async def process_request(path, headers):\n"
    "        if token and headers.get(\"Authorization\") != \"Bearer \" + token:\n"
    "            return (http.HTTPStatus.UNAUTHORIZED, [], b\"bad token\\n\")\n"
    "        return None\n"
    "    return process_request\n"
    "\n"
    "async def run_command(c):\n"
    "    ws = state[\"ws\"]\n"
    "    if c[\"cmd\"] == \"exit\":\n"
    "        return False\n"
    "    if ws is None:\n"
    "        out({\"ev\": \"error\", \"error\": \"no connection\"})\n"
    "    elif c[\"cmd\"] == \"send\":\n"
    "        await ws.send(c[\"text\"])\n"
    "    elif c[\"cmd\"] == \"send_binary\":\n"
    "        await ws.send(c[\"text\"].encode())\n"
    "    elif c[\"cmd\"] == \"send_big\":\n"
    "        await ws.send('{\"type\":\"start\",\"v\":1,\"id\":\"big\",\"pad\":\"' + \"x\" * "
    "c[\"size\"] + '\"}')\n"
    "    elif c[\"cmd\"] == \"close\":\n"
    "        await ws.close(c.get(\"code\", 1000), c.get(\"reason\", \"\"))\n"
    "    elif c[\"cmd\"] == \"freeze\":\n"
    "        ws.transport.pause_reading()\n"
    "    out({\"ev\": \"done\", \"cmd\": c[\"cmd\"]})\n"
    "    return True\n"
    "\n"
    "async def commands():\n"
    "    loop = asyncio.get_running_loop()\n"
    "    reader = asyncio.StreamReader()\n"
    "    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)\n"
    "    while True:\n"
    "        line = await reader.readline()\n"
    "        if not line or not await run_command(json.loads(line)):\n"
    "            return\n"
    "\n"
    "async def main():\n"
    "    port, cert, key, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]\n"
    "    ctx = None\n"
    "    if cert:\n"
    "        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "        ctx.load_cert_chain(cert, key)\n"
    "    async with websockets.serve(handler, \"127.0.0.1\", port, "
    "subprotocols=[\"conprof-agent-v1\"],\n"
    "                                ssl=ctx, process_request=make_process_request(token),\n"
    "                                ping_interval=None, max_size=1 << 20) as server:\n"
    "        out({\"ev\": \"listening\", \"port\": server.sockets[0].getsockname()[1]})\n"
    "        await commands()\n"
    "\n"
    "asyncio.run(main())\n";

#define TOKEN "tok-123"

struct peer {
    pid_t pid;
    int to_child, from_child;
    struct buf in;
    int port;
};

struct fixture {
    char dir[64];
    char state_file[128];
    int64_t skew; /* added to the real clock for leases */
    struct buf log;
    struct peer peer;
    struct agent_link *link;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_of(const struct fixture *f)
{
    return (int64_t)time(NULL) + f->skew;
}

static void capture_log(void *ctx, const char *line)
{
    struct buf *b = ctx;
    buf_append_str(b, line);
    buf_append_byte(b, '\n');
}

static void pump_once(struct fixture *f)
{
    if (f->link) {
        agent_link_service(f->link, now_of(f));
        agent_link_tick(f->link, now_of(f));
    }
}

/* ---- the peer ---- */

/* Next JSON line from the peer, servicing the link meanwhile; NULL on timeout or peer exit. */
static json_t *peer_next(struct fixture *f, struct peer *p, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        char *nl = p->in.len ? memchr(p->in.data, '\n', p->in.len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - p->in.data) + 1;
            json_t *ev = json_loadb(p->in.data, n - 1, 0, NULL);
            memmove(p->in.data, p->in.data + n, p->in.len - n);
            p->in.len -= n;
            if (ev) return ev;
            continue;
        }
        if (mono_ms() >= deadline) return NULL;
        pump_once(f);
        struct pollfd pfd = {.fd = p->from_child, .events = POLLIN};
        poll(&pfd, 1, 20);
        char chunk[65536];
        ssize_t r = read(p->from_child, chunk, sizeof chunk);
        if (r > 0) buf_append(&p->in, chunk, (size_t)r);
        if (r == 0) return NULL;
    }
}

static bool event_is(const json_t *ev, const char *name, const char *msg_type)
{
    if (strcmp(json_string_value(json_object_get(ev, "ev")) ?: "", name) != 0) return false;
    if (!msg_type) return true;
    const char *type = json_string_value(json_object_get(json_object_get(ev, "msg"), "type"));
    return type && strcmp(type, msg_type) == 0;
}

/* The next event named `name` (and, for "msg", of message type msg_type); others are skipped. */
static json_t *peer_wait(struct fixture *f, const char *name, const char *msg_type, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - mono_ms();
        json_t *ev = left > 0 ? peer_next(f, &f->peer, (int)left) : NULL;
        if (!ev || event_is(ev, name, msg_type)) return ev;
        json_decref(ev);
    }
}

static void peer_command(struct peer *p, json_t *cmd)
{
    char *line = json_dumps(cmd, JSON_COMPACT);
    json_decref(cmd);
    assert_non_null(line);
    size_t len = strlen(line);
    line[len] = '\n';
    assert_int_equal(write(p->to_child, line, len + 1), (ssize_t)(len + 1));
    free(line);
}

static void peer_send(struct fixture *f, const char *text)
{
    peer_command(&f->peer, json_pack("{s:s, s:s}", "cmd", "send", "text", text));
    json_decref(peer_wait(f, "done", NULL, 5000));
}

static void peer_start(struct fixture *f, int port, const char *cert, const char *key,
                       const char *token)
{
    struct peer *p = &f->peer;
    int to_child[2], from_child[2];
    assert_int_equal(pipe2(to_child, O_CLOEXEC), 0);
    assert_int_equal(pipe2(from_child, O_CLOEXEC), 0);
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        execl("/usr/bin/python3", "python3", "-c", PEER_SCRIPT, port_text, cert ? cert : "",
              key ? key : "", token ? token : "", (char *)NULL);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    p->to_child = to_child[1];
    p->from_child = from_child[0];
    fcntl(p->from_child, F_SETFL, O_NONBLOCK);
    json_t *ev = peer_wait(f, "listening", NULL, 15000);
    assert_non_null(ev);
    p->port = (int)json_integer_value(json_object_get(ev, "port"));
    json_decref(ev);
}

static void peer_kill(struct peer *p)
{
    if (p->pid <= 0) return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    close(p->to_child);
    close(p->from_child);
    buf_free(&p->in);
    memset(p, 0, sizeof *p);
}

/* A loopback port nobody listens on (for now). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* ---- fixture ---- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_agent_link.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->state_file, sizeof f->state_file, "%s/state.json", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    agent_link_close(f->link);
    peer_kill(&f->peer);
    buf_free(&f->log);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static struct agent_link_options default_options(struct fixture *f, const char *url)
{
    static const char *const caps[] = {"cpu", "wall", NULL};
    return (struct agent_link_options){
        .url = url,
        .token = TOKEN,
        .agent_id = "agent-a",
        .node = "node-a",
        .agent_version = "0.1.0",
        .capabilities = caps,
        .state_file = f->state_file,
        .backoff_min_ms = 100,
        .backoff_max_ms = 400,
        .log = capture_log,
        .log_ctx = &f->log,
    };
}

static void open_with(struct fixture *f, const struct agent_link_options *o)
{
    struct cp_err err = {0};
    f->link = agent_link_open(o, &err);
    if (!f->link) fail_msg("agent_link_open: %s", err.msg);
}

static void open_link(struct fixture *f)
{
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/agent/v1", f->peer.port);
    struct agent_link_options o = default_options(f, url);
    open_with(f, &o);
}

/* Starts a peer, opens the link and returns the first hello. */
static json_t *connect_fixture(struct fixture *f)
{
    peer_start(f, 0, NULL, NULL, NULL);
    open_link(f);
    json_t *hello = peer_wait(f, "msg", "hello", 10000);
    assert_non_null(hello);
    return hello;
}

static struct agent_link_stats stats_of(struct fixture *f)
{
    struct agent_link_stats st;
    agent_link_stats(f->link, now_of(f), &st);
    return st;
}

static void pump_until_connected(struct fixture *f, bool want, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    while (stats_of(f).connected != want && mono_ms() < deadline) {
        pump_once(f);
        usleep(10000);
    }
    assert_int_equal(stats_of(f).connected, want);
}

static char *start_text(const char *id, const char *session_id, int64_t lease_until,
                        int64_t budget_left)
{
    char *text = NULL;
    if (asprintf(&text,
                 "{\"type\":\"start\",\"v\":1,\"id\":\"%s\",\"session_id\":\"%s\","
                 "\"project\":\"shop\",\"environment\":\"prod\",\"selector\":{\"project\":"
                 "\"shop\",\"environment\":\"prod\"},\"period\":45,\"upload_timeout\":10,"
                 "\"labels\":{\"team\":\"a\"},\"quota\":{\"plan\":\"free\",\"lease_until\":%lld,"
                 "\"budget_left\":%lld}}",
                 id, session_id, (long long)lease_until, (long long)budget_left) < 0)
        return NULL;
    return text;
}

static void send_start(struct fixture *f, const char *id, const char *session_id,
                       int64_t lease_until, int64_t budget_left)
{
    char *text = start_text(id, session_id, lease_until, budget_left);
    peer_send(f, text);
    free(text);
}

/* The next ack or nack; checks its id. */
static json_t *expect_answer(struct fixture *f, const char *type, const char *id)
{
    json_t *ev = peer_wait(f, "msg", type, 5000);
    assert_non_null(ev);
    json_t *msg = json_object_get(ev, "msg");
    assert_string_equal(json_string_value(json_object_get(msg, "id")), id);
    json_incref(msg);
    json_decref(ev);
    return msg;
}

static void expect_ack(struct fixture *f, const char *id)
{
    json_decref(expect_answer(f, "ack", id));
}

static size_t active_sessions(struct fixture *f, const struct control_session **out)
{
    const struct control_session *local[CONTROL_STATE_SESSIONS_MAX];
    return agent_link_sessions(f->link, now_of(f), out ? out : local, CONTROL_STATE_SESSIONS_MAX);
}

/* ---- tests ---- */

static void test_backoff_doubles_with_full_jitter_and_caps(void **state)
{
    (void)state;
    assert_int_equal(agent_link_backoff_ms(0, 1000, 60000, 12345), 1000);
    for (unsigned failures = 0; failures < 12; failures++) {
        uint32_t cap = 1000u << (failures < 6 ? failures : 6);
        if (cap > 60000) cap = 60000;
        uint32_t lo = UINT32_MAX, hi = 0;
        for (uint64_t r = 0; r < 4000; r++) {
            uint32_t d = agent_link_backoff_ms(failures, 1000, 60000, r * 7919);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        assert_int_equal(lo, 1000);
        assert_true(hi <= cap && hi > cap - cap / 4);
    }
    assert_int_equal(agent_link_backoff_ms(5, 1000, 60000, 59000), 1000 + 59000 % 31001);
}

static void test_hello_with_bearer_subprotocol_and_targets(void **state)
{
    struct fixture *f = *state;
    peer_start(f, 0, NULL, NULL, NULL);
    open_link(f);
    struct cp_err err = {0};
    json_t *targets = json_array();
    struct proto_target t = {.pid = 4242, .application = "web", .container_id = "abc"};
    json_array_append_new(targets, proto_target_json(&t, &err));
    agent_link_set_targets(f->link, targets);

    json_t *conn = peer_wait(f, "connect", NULL, 10000);
    assert_non_null(conn);
    json_t *headers = json_object_get(conn, "headers");
    assert_string_equal(json_string_value(json_object_get(headers, "authorization")),
                        "Bearer " TOKEN);
    assert_string_equal(json_string_value(json_object_get(conn, "subprotocol")),
                        "conprof-agent-v1");
    assert_string_equal(json_string_value(json_object_get(conn, "path")), "/agent/v1");
    json_decref(conn);

    json_t *ev = peer_wait(f, "msg", "hello", 5000);
    assert_non_null(ev);
    json_t *hello = json_object_get(ev, "msg");
    assert_int_equal(json_integer_value(json_object_get(hello, "v")), 1);
    assert_string_equal(json_string_value(json_object_get(hello, "agent_id")), "agent-a");
    assert_string_equal(json_string_value(json_object_get(hello, "node")), "node-a");
    assert_string_equal(json_string_value(json_object_get(hello, "agent_version")), "0.1.0");
    assert_int_equal(json_array_size(json_object_get(hello, "capabilities")), 2);
    json_t *target = json_array_get(json_object_get(hello, "targets"), 0);
    assert_int_equal(json_integer_value(json_object_get(target, "pid")), 4242);
    assert_string_equal(json_string_value(json_object_get(target, "container_id")), "abc");
    assert_int_equal(json_array_size(json_object_get(hello, "sessions")), 0);
    json_decref(ev);

    struct agent_link_stats st = stats_of(f);
    assert_true(st.connected);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.connect_attempts, 1);
    assert_int_equal(strncmp(st.url, "ws://127.0.0.1:", 15), 0);
}

static void test_start_acked_session_active_and_saved(void **state)
{
    struct fixture *f = *state;
    json_decref(connect_fixture(f));
    uint64_t generation = agent_link_generation(f->link);
    send_start(f, "c1", "s1", now_of(f) + 300, 3600);
    expect_ack(f, "c1");
    assert_true(agent_link_generation(f->link) > generation);

    const struct control_session *active[CONTROL_STATE_SESSIONS_MAX];
    assert_int_equal(active_sessions(f, active), 1);
    assert_string_equal(active[0]->session_id, "s1");
    assert_string_equal(active[0]->project, "shop");
    assert_string_equal(active[0]->environment, "prod");
    assert_int_equal(active[0]->period, 45);
    assert_int_equal(active[0]->upload_timeout, 10);
    assert_string_equal(json_string_value(json_object_get(active[0]->labels, "team")), "a");
    assert_string_equal(json_string_value(json_object_get(active[0]->selector, "project")), "shop");

    struct control_state saved = {0};
    struct cp_err err = {0};
    assert_int_equal(control_state_load(&saved, f->state_file, &err), 0);
    assert_int_equal(saved.count, 1);
    assert_string_equal(saved.sessions[0].session_id, "s1");
    control_state_free(&saved);

    /* the same start again: ack, nothing changes */
    generation = agent_link_generation(f->link);
    send_start(f, "c2", "s1", active[0]->lease_until, 3600);
    expect_ack(f, "c2");
    assert_int_equal(agent_link_generation(f->link), generation);
    assert_int_equal(stats_of(f).commands_acked, 2);
}

static void test_malformed_commands_nacked_or_ignored_nothing_changed(void **state)
{
    struct fixture *f = *state;
    json_decref(connect_fixture(f));
    uint64_t generation = agent_link_generation(f->link);

    peer_send(f, "{\"type\":\"start\",\"v\":1,\"id\":\"bad1\",\"session_id\":\"s1\",\"project\":"
                 "\"shop\",\"environment\":\"prod\",\"selector\":{\"project\":\"shop\","
                 "\"environment\":\"prod\"},\"period\":0,\"upload_timeout\":10,\"quota\":"
                 "{\"plan\":\"free\",\"lease_until\":99999999999,\"budget_left\":60}}");
    json_t *nack = expect_answer(f, "nack", "bad1");
    assert_string_equal(json_string_value(json_object_get(nack, "field")), "period");
    assert_non_null(strstr(json_string_value(json_object_get(nack, "error")), "1 to 3600"));
    json_decref(nack);

    peer_send(f, "{\"type\":\"config\",\"v\":1,\"id\":\"bad2\",\"session_id\":\"nope\","
                 "\"period\":30}");
    nack = expect_answer(f, "nack", "bad2");
    assert_string_equal(json_string_value(json_object_get(nack, "field")), "session_id");
    json_decref(nack);

    peer_send(f, "{\"type\":\"reboot\",\"v\":1,\"id\":\"bad3\"}");
    json_decref(expect_answer(f, "nack", "bad3"));

    /* no readable id: ignored and counted, no answer */
    peer_send(f, "{\"type\":\"start\",");
    peer_command(&f->peer, json_pack("{s:s, s:s}", "cmd", "send_binary", "text", "{}"));
    json_decref(peer_wait(f, "done", NULL, 5000));
    peer_command(&f->peer, json_pack("{s:s, s:i}", "cmd", "send_big", "size", 70000));
    json_decref(peer_wait(f, "done", NULL, 5000));

    /* the connection is still up and serves the next command */
    send_start(f, "good", "s2", now_of(f) + 300, 3600);
    expect_ack(f, "good");

    struct agent_link_stats st = stats_of(f);
    assert_int_equal(st.commands_nacked, 3);
    assert_int_equal(st.commands_acked, 1);
    assert_int_equal(st.frames_ignored, 3);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.disconnects, 0);
    assert_int_equal(agent_link_generation(f->link), generation + 1);
    const struct control_session *active[CONTROL_STATE_SESSIONS_MAX];
    assert_int_equal(active_sessions(f, active), 1);
    assert_string_equal(active[0]->session_id, "s2");
    assert_non_null(strstr(f->log.data, "larger than 65536"));
    assert_non_null(strstr(f->log.data, "binary"));
}

static void test_stop_ends_session(void **state)
{
    struct fixture *f = *state;
    json_decref(connect_fixture(f));
    send_start(f, "c1", "s1", now_of(f) + 300, 3600);
    expect_ack(f, "c1");
    uint64_t generation = agent_link_generation(f->link);
    peer_send(f, "{\"type\":\"stop\",\"v\":1,\"id\":\"c2\",\"session_id\":\"s1\","
                 "\"reason\":\"toggle off\"}");
    expect_ack(f, "c2");
    assert_int_equal(active_sessions(f, NULL), 0);
    assert_true(agent_link_generation(f->link) > generation);
    /* unknown session: ack, nothing changes */
    generation = agent_link_generation(f->link);
    peer_send(f, "{\"type\":\"stop\",\"v\":1,\"id\":\"c3\",\"session_id\":\"zz\"}");
    expect_ack(f, "c3");
    assert_int_equal(agent_link_generation(f->link), generation);
}

static void test_lease_renewal_extends_and_expiry_reports(void **state)
{
    struct fixture *f = *state;
    json_decref(connect_fixture(f));
    int64_t t0 = now_of(f);
    send_start(f, "c1", "s1", t0 + 100, 3600);
    expect_ack(f, "c1");
    char text[256];
    snprintf(text, sizeof text,
             "{\"type\":\"lease\",\"v\":1,\"id\":\"c2\",\"session_id\":\"s1\",\"lease_until\":%lld,"
             "\"budget_left\":3600}",
             (long long)(t0 + 200));
    peer_send(f, text);
    expect_ack(f, "c2");

    f->skew = 150; /* past the first lease, inside the renewed one */
    pump_once(f);
    assert_int_equal(active_sessions(f, NULL), 1);

    uint64_t generation = agent_link_generation(f->link);
    f->skew = 250;
    json_t *ev = peer_wait(f, "msg", "event", 5000);
    assert_non_null(ev);
    json_t *msg = json_object_get(ev, "msg");
    assert_string_equal(json_string_value(json_object_get(msg, "kind")), "lease_expired");
    assert_string_equal(json_string_value(json_object_get(msg, "session_id")), "s1");
    json_decref(ev);
    assert_int_equal(active_sessions(f, NULL), 0);
    assert_true(agent_link_generation(f->link) > generation);

    /* the expiry is in the state file */
    struct control_state saved = {0};
    struct cp_err err = {0};
    assert_int_equal(control_state_load(&saved, f->state_file, &err), 0);
    assert_int_equal(saved.sessions[0].state, PROTO_SESSION_EXPIRED);
    control_state_free(&saved);
}

static void test_budget_capped_lease_reports_quota_exhausted(void **state)
{
    struct fixture *f = *state;
    json_decref(connect_fixture(f));
    send_start(f, "c1", "s1", now_of(f) + 30, 30);
    expect_ack(f, "c1");
    f->skew = 31;
    json_t *ev = peer_wait(f, "msg", "event", 5000);
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ev, "msg"), "kind")),
                        "quota_exhausted");
    json_decref(ev);
    assert_int_equal(active_sessions(f, NULL), 0);
}

static void test_status_heartbeat_lists_sessions_and_counters(void **state)
{
    struct fixture *f = *state;
    peer_start(f, 0, NULL, NULL, NULL);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/agent/v1", f->peer.port);
    struct agent_link_options o = default_options(f, url);
    o.status_s = 1;
    open_with(f, &o);
    json_decref(peer_wait(f, "msg", "hello", 10000));
    send_start(f, "c1", "s1", now_of(f) + 300, 3600);
    expect_ack(f, "c1");
    struct agent_link_counters c = {.samples = 1234, .uploads_sent = 7};
    agent_link_set_counters(f->link, &c);
    agent_link_set_session_targets(f->link, "s1", 3);

    json_t *ev = peer_wait(f, "msg", "status", 5000);
    assert_non_null(ev);
    json_t *msg = json_object_get(ev, "msg");
    assert_int_equal(json_integer_value(json_object_get(msg, "samples")), 1234);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(msg, "uploads"), "sent")),
                     7);
    json_t *s = json_array_get(json_object_get(msg, "sessions"), 0);
    assert_string_equal(json_string_value(json_object_get(s, "session_id")), "s1");
    assert_string_equal(json_string_value(json_object_get(s, "state")), "running");
    assert_int_equal(json_integer_value(json_object_get(s, "targets")), 3);
    json_decref(ev);

    json_t *status = agent_link_status_json(f->link, now_of(f));
    assert_true(json_is_true(json_object_get(status, "connected")));
    assert_int_equal(json_integer_value(json_object_get(status, "commands_acked")), 1);
    assert_int_equal(json_array_size(json_object_get(status, "sessions")), 1);
    json_decref(status);
}

static void test_state_survives_restart_until_lease_end(void **state)
{
    struct fixture *f = *state;
    json_decref(connect_fixture(f));
    send_start(f, "c1", "s1", now_of(f) + 100, 3600);
    expect_ack(f, "c1");
    agent_link_close(f->link);
    f->link = NULL;
    peer_kill(&f->peer);

    /* re-open from the file with no console reachable */
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/agent/v1", free_port());
    struct agent_link_options o = default_options(f, url);
    open_with(f, &o);
    const struct control_session *active[CONTROL_STATE_SESSIONS_MAX];
    assert_int_equal(active_sessions(f, active), 1);
    assert_string_equal(active[0]->session_id, "s1");
    assert_int_equal(active[0]->period, 45);
    pump_once(f);
    assert_int_equal(active_sessions(f, NULL), 1);

    /* fail closed: the lease ends while the console is unreachable */
    f->skew = 101;
    uint64_t generation = agent_link_generation(f->link);
    pump_once(f);
    assert_int_equal(active_sessions(f, NULL), 0);
    assert_true(agent_link_generation(f->link) > generation);
    assert_false(stats_of(f).connected);

    /* and after another restart it stays ended */
    agent_link_close(f->link);
    f->link = NULL;
    open_with(f, &o);
    assert_int_equal(active_sessions(f, NULL), 0);
    assert_int_equal(stats_of(f).sessions_held, 1);
}

static void test_corrupt_state_file_fails_closed(void **state)
{
    struct fixture *f = *state;
    FILE *file = fopen(f->state_file, "w");
    fputs("{\"version\":1,\"sessions\":[{\"session_id\":\"s1\"", file);
    fclose(file);
    struct agent_link_options o = default_options(f, "ws://127.0.0.1:9/agent/v1");
    open_with(f, &o);
    assert_int_equal(active_sessions(f, NULL), 0);
    assert_int_equal(stats_of(f).sessions_held, 0);
    assert_non_null(strstr(f->log.data, "ignoring the session state"));
    assert_non_null(strstr(f->log.data, f->state_file));
    assert_non_null(strstr(stats_of(f).last_error, f->state_file));
}

static void test_reconnects_with_backoff_and_resends_hello(void **state)
{
    struct fixture *f = *state;
    json_decref(connect_fixture(f));
    int port = f->peer.port;
    send_start(f, "c1", "s1", now_of(f) + 300, 3600);
    expect_ack(f, "c1");

    peer_kill(&f->peer);
    pump_until_connected(f, false, 5000);
    uint64_t attempts_before = stats_of(f).connect_attempts;
    int64_t down_until = mono_ms() + 2000;
    while (mono_ms() < down_until) {
        pump_once(f);
        usleep(10000);
    }
    struct agent_link_stats st = stats_of(f);
    assert_false(st.connected);
    assert_int_equal(st.disconnects, 1);
    /* 100 ms doubling to 400 ms over 2 s: a handful of attempts, not a busy loop */
    assert_true(st.connect_attempts - attempts_before >= 3);
    assert_true(st.connect_attempts - attempts_before <= 20);
    assert_non_null(strstr(st.last_error, "cannot connect"));

    peer_start(f, port, NULL, NULL, NULL);
    json_t *ev = peer_wait(f, "msg", "hello", 5000);
    assert_non_null(ev);
    json_t *sessions = json_object_get(json_object_get(ev, "msg"), "sessions");
    assert_int_equal(json_array_size(sessions), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(sessions, 0), "session_id")), "s1");
    json_decref(ev);
    st = stats_of(f);
    assert_true(st.connected);
    assert_int_equal(st.connects, 2);
}

static void test_events_queued_offline_bounded_sent_after_hello(void **state)
{
    struct fixture *f = *state;
    int port = free_port();
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/agent/v1", port);
    struct agent_link_options o = default_options(f, url);
    open_with(f, &o);
    pump_once(f);
    for (int i = 0; i < AGENT_LINK_EVENTS_MAX + 6; i++) {
        char message[32];
        snprintf(message, sizeof message, "event %d", i);
        agent_link_event(f->link, PROTO_EVENT_ERROR, NULL, message, NULL);
    }
    assert_int_equal(stats_of(f).events_dropped, 6);

    peer_start(f, port, NULL, NULL, NULL);
    json_t *ev = peer_wait(f, "msg", NULL, 10000);
    assert_non_null(ev);
    assert_true(event_is(ev, "msg", "hello"));
    json_decref(ev);
    for (int i = 6; i < AGENT_LINK_EVENTS_MAX + 6; i++) {
        ev = peer_wait(f, "msg", "event", 5000);
        assert_non_null(ev);
        char message[32];
        snprintf(message, sizeof message, "event %d", i);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(ev, "msg"), "message")), message);
        json_decref(ev);
    }
}

static void test_unauthorized_is_reported_and_retried(void **state)
{
    struct fixture *f = *state;
    peer_start(f, 0, NULL, NULL, "another-token");
    open_link(f);
    int64_t deadline = mono_ms() + 5000;
    while (stats_of(f).connect_attempts < 3 && mono_ms() < deadline) {
        pump_once(f);
        usleep(10000);
    }
    struct agent_link_stats st = stats_of(f);
    assert_true(st.connect_attempts >= 3);
    assert_int_equal(st.connects, 0);
    assert_non_null(strstr(st.last_error, "HTTP 401"));
    assert_non_null(strstr(st.last_error, "token"));
}

static void test_validity_hangup_when_peer_stops_answering(void **state)
{
    struct fixture *f = *state;
    peer_start(f, 0, NULL, NULL, NULL);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/agent/v1", f->peer.port);
    struct agent_link_options o = default_options(f, url);
    o.ping_s = 1;
    o.hangup_s = 2;
    open_with(f, &o);
    json_decref(peer_wait(f, "msg", "hello", 10000));
    peer_command(&f->peer, json_pack("{s:s}", "cmd", "freeze"));
    json_decref(peer_wait(f, "done", NULL, 5000));
    int64_t frozen_at = mono_ms();
    pump_until_connected(f, false, 6000);
    assert_true(mono_ms() - frozen_at >= 900);
    /* a fresh connection works again */
    json_t *ev = peer_wait(f, "msg", "hello", 5000);
    assert_non_null(ev);
    json_decref(ev);
    assert_int_equal(stats_of(f).connects, 2);
}

static void test_service_does_not_block(void **state)
{
    struct fixture *f = *state;
    json_decref(connect_fixture(f));
    int64_t worst = 0;
    for (int i = 0; i < 200; i++) {
        int64_t t = mono_ms();
        agent_link_service(f->link, now_of(f));
        agent_link_tick(f->link, now_of(f));
        worst = mono_ms() - t > worst ? mono_ms() - t : worst;
    }
    assert_true(worst < 50);
    /* disconnected, with attempts against a closed port */
    peer_kill(&f->peer);
    for (int i = 0; i < 200; i++) {
        int64_t t = mono_ms();
        agent_link_service(f->link, now_of(f));
        worst = mono_ms() - t > worst ? mono_ms() - t : worst;
        usleep(5000);
    }
    assert_true(worst < 50);
}

/* ---- TLS ---- */

static void make_cert(struct fixture *f, char *cert, char *key, size_t size)
{
    snprintf(cert, size, "%s/cert.pem", f->dir);
    snprintf(key, size, "%s/key.pem", f->dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout '%s' -out '%s' -days 2 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 2>/dev/null",
             key, cert);
    assert_int_equal(system(cmd), 0);
}

static void test_wss_with_ca_file_connects(void **state)
{
    struct fixture *f = *state;
    char cert[128], key[128], url[64];
    make_cert(f, cert, key, sizeof cert);
    peer_start(f, 0, cert, key, NULL);
    snprintf(url, sizeof url, "wss://127.0.0.1:%d/agent/v1", f->peer.port);
    struct agent_link_options o = default_options(f, url);
    o.ca_file = cert;
    open_with(f, &o);
    json_t *conn = peer_wait(f, "connect", NULL, 10000);
    assert_non_null(conn);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(conn, "headers"), "authorization")),
        "Bearer " TOKEN);
    json_decref(conn);
    json_t *ev = peer_wait(f, "msg", "hello", 5000);
    assert_non_null(ev);
    json_decref(ev);
    send_start(f, "c1", "s1", now_of(f) + 300, 3600);
    expect_ack(f, "c1");
}

static void test_wss_without_the_ca_fails_clearly(void **state)
{
    struct fixture *f = *state;
    char cert[128], key[128], url[64];
    make_cert(f, cert, key, sizeof cert);
    peer_start(f, 0, cert, key, NULL);
    snprintf(url, sizeof url, "wss://127.0.0.1:%d/agent/v1", f->peer.port);
    struct agent_link_options o = default_options(f, url);
    open_with(f, &o); /* system store: does not know the self-signed cert */
    int64_t deadline = mono_ms() + 5000;
    while (stats_of(f).connect_attempts < 2 && mono_ms() < deadline) {
        pump_once(f);
        usleep(10000);
    }
    struct agent_link_stats st = stats_of(f);
    assert_int_equal(st.connects, 0);
    assert_true(st.connect_attempts >= 2);
    assert_non_null(strstr(st.last_error, "cannot connect to wss://127.0.0.1"));
    assert_non_null(strstr(st.last_error, "certificate not trusted: self-signed certificate"));
}

static void test_open_rejects_bad_options(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    struct agent_link_options o = default_options(f, "http://127.0.0.1/agent/v1");
    assert_null(agent_link_open(&o, &err));
    assert_non_null(strstr(err.msg, "ws:// or wss://"));
    o.url = "ws://127.0.0.1:99999/agent/v1";
    assert_null(agent_link_open(&o, &err));
    assert_non_null(strstr(err.msg, "HOST[:PORT]"));
    o.url = "ws://127.0.0.1/agent/v1";
    o.token = "line\nbreak";
    assert_null(agent_link_open(&o, &err));
    assert_non_null(strstr(err.msg, "token"));
    o.token = TOKEN;
    o.ping_s = 30;
    o.hangup_s = 30;
    assert_null(agent_link_open(&o, &err));
    assert_non_null(strstr(err.msg, "hangup"));
    o.ping_s = o.hangup_s = 0;
    o.url = "wss://127.0.0.1/agent/v1";
    o.ca_file = "/nonexistent/ca.pem";
    assert_null(agent_link_open(&o, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/ca.pem"));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_doubles_with_full_jitter_and_caps),
        cmocka_unit_test_setup_teardown(test_hello_with_bearer_subprotocol_and_targets, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start_acked_session_active_and_saved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_commands_nacked_or_ignored_nothing_changed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_ends_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_renewal_extends_and_expiry_reports, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_budget_capped_lease_reports_quota_exhausted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_status_heartbeat_lists_sessions_and_counters, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_survives_restart_until_lease_end, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_state_file_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnects_with_backoff_and_resends_hello, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_events_queued_offline_bounded_sent_after_hello, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unauthorized_is_reported_and_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validity_hangup_when_peer_stops_answering, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_service_does_not_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wss_with_ca_file_connects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wss_without_the_ca_fails_clearly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_rejects_bad_options, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
