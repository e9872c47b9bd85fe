/* Tests of the kubelet pod-list parser, the pod lookup and the libcurl client. The client is
 * tested against a real HTTP server on 127.0.0.1: a forked child that accepts connections,
 * appends each request to a log file and answers with whatever raw HTTP response the test last
 * put in a file (or holds the connection open without answering, to test the timeout). */
#include "kubelet.h"

#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#define FIXTURE "tests/unit/kubelet_pods.json"
#define HEX64(c) c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c
#define APP_ID                                                                                     \
    "4f2a9c"                                                                                       \
    "0000000000000000000000000000000000000000000000000000000000"
#define SIDECAR_ID HEX64("5b")
#define WORKER_ID HEX64("9c")
#define LEGACY_ID HEX64("d0")
#define WEB_UID "0f3c1e2a-4b5d-4e6f-8a9b-0c1d2e3f4a5b"

/* ---- helpers ------------------------------------------------------------------------------ */

static void read_fixture(struct buf *out)
{
    char path[4096];
    const char *self = __FILE__, *tail = strstr(self, "tests/unit/test_kubelet.c");
    snprintf(path, sizeof path, "%.*s" FIXTURE, tail ? (int)(tail - self) : 0, self);
    FILE *f = fopen(path, "r");
    if (!f) f = fopen(FIXTURE, "r");
    if (!f) fail_msg("cannot open %s (run from the repository root)", FIXTURE);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(buf_append(out, chunk, n), 0);
    fclose(f);
}

static int parse_text(const char *text, struct kubelet_pods *out, struct cp_err *err)
{
    return kubelet_pods_parse(text, strlen(text), out, err);
}

static const struct kubelet_pod *pod_named(const struct kubelet_pods *pods, const char *name)
{
    for (size_t i = 0; i < pods->count; i++)
        if (strcmp(pods->items[i].name, name) == 0) return &pods->items[i];
    fail_msg("no pod %s", name);
    return NULL;
}

static const char *label(const json_t *labels, const char *key)
{
    return json_string_value(json_object_get(labels, key));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- parser -------------------------------------------------------------------------------- */

static void test_parse_realistic_podlist(void **state)
{
    (void)state;
    struct buf text = {0};
    read_fixture(&text);
    struct kubelet_pods pods;
    struct cp_err err;
    assert_int_equal(kubelet_pods_parse(text.data, text.len, &pods, &err), 0);
    assert_int_equal(pods.count, 4);
    assert_int_equal(pods.skipped_pods, 1); /* the item without a uid */

    const struct kubelet_pod *web = pod_named(&pods, "web-7d9f8b6c5-x2x4q");
    assert_string_equal(web->uid, WEB_UID);
    assert_string_equal(web->k8s_namespace, "shop");
    assert_int_equal(json_object_size(web->labels), 3);
    assert_string_equal(label(web->labels, "app.kubernetes.io/name"), "web");
    assert_string_equal(label(web->labels, "tier"), "frontend");
    /* containers, init containers and ephemeral containers, ids bare and lower-case */
    assert_int_equal(web->container_count, 4);
    const char *names[] = {"app", "sidecar", "migrate", "debugger"};
    const char *ids[] = {APP_ID, SIDECAR_ID, HEX64("1") HEX64("1"), HEX64("e") HEX64("e")};
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(web->containers[i].name, names[i]);
        assert_string_equal(web->containers[i].id, ids[i]);
    }

    const struct kubelet_pod *worker = pod_named(&pods, "worker-0");
    assert_string_equal(worker->containers[0].id, WORKER_ID);                     /* cri-o:// */
    assert_string_equal(pod_named(&pods, "legacy")->containers[0].id, LEGACY_ID); /* docker:// */
    assert_int_equal(json_object_size(pod_named(&pods, "legacy")->labels), 0);
    /* a pod whose container has not started yet: known, without containers */
    assert_int_equal(pod_named(&pods, "pending-1")->container_count, 0);
    kubelet_pods_free(&pods);
    kubelet_pods_free(&pods); /* freeing twice is harmless */
    buf_free(&text);
}

static void test_parse_refuses_what_is_not_a_podlist(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "   ",
        "not json",
        "{\"items\": [",
        "[]",
        "[{\"items\": []}]",
        "\"items\"",
        "42",
        "null",
        "{}",
        "{\"kind\": \"PodList\"}",
        "{\"items\": {}}",
        "{\"items\": \"pods\"}",
        "{\"items\": 7}",
        "{\"items\": []} trailing",
        "{\"items\": [\"\\u0000\"]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct kubelet_pods pods;
        struct cp_err err = {0};
        if (parse_text(bad[i], &pods, &err) == 0) fail_msg("accepted: %s", bad[i]);
        assert_int_equal(err.code, CP_ERR_INVALID);
        assert_non_null(strstr(err.msg, "kubelet pods"));
        assert_int_equal(pods.count, 0);
        assert_null(pods.items);
    }
}

static void test_parse_every_truncation_fails_cleanly(void **state)
{
    (void)state;
    struct buf text = {0};
    read_fixture(&text);
    size_t end = text.len;
    while (end > 0 && (text.data[end - 1] == '\n' || text.data[end - 1] == ' '))
        end--;
    for (size_t n = 0; n < end; n++) {
        struct kubelet_pods pods;
        struct cp_err err;
        if (kubelet_pods_parse(text.data, n, &pods, &err) == 0)
            fail_msg("a %zu-byte prefix parsed", n);
        assert_int_equal(err.code, CP_ERR_INVALID);
    }
    buf_free(&text);
}

static void test_parse_wrong_types_inside_are_skipped(void **state)
{
    (void)state;
    const char *text =
        "{\"items\": ["
        "  7, \"pod\", null, [],"
        "  {\"metadata\": []},"
        "  {\"metadata\": {\"uid\": 5, \"name\": \"a\", \"namespace\": \"n\"}},"
        "  {\"metadata\": {\"uid\": \"u-1\", \"name\": \"\", \"namespace\": \"n\"}},"
        "  {\"metadata\": {\"uid\": \"u-2\", \"name\": \"b\", \"namespace\": null}},"
        "  {\"metadata\": {\"uid\": \"u-3\", \"name\": \"ok\", \"namespace\": \"n\","
        "     \"labels\": {\"a\": \"1\", \"num\": 2, \"obj\": {}, \"nul\": null, \"\": \"x\"}},"
        "   \"status\": {\"containerStatuses\": [7, {\"name\": 1, \"containerID\": "
        "\"docker://ab\"},"
        "     {\"name\": \"c\", \"containerID\": 9}, {\"name\": \"d\", \"containerID\": \"\"},"
        "     {\"name\": \"e\", \"containerID\": \"containerd://\"},"
        "     {\"name\": \"g\", \"containerID\": \"c://containerd://ab\"},"
        "     {\"name\": \"h\", \"containerID\": \"containerd://a b\"},"
        "     {\"name\": \"f\", \"containerID\": \"ABCDEF0123456789\"}],"
        "    \"initContainerStatuses\": {\"name\": \"x\"}, \"ephemeralContainerStatuses\": \"x\"}},"
        "  {\"metadata\": {\"uid\": \"u-4\", \"name\": \"plain\", \"namespace\": \"n\","
        "   \"labels\": [\"a\"]}, \"status\": [1]}"
        "]}";
    struct kubelet_pods pods;
    struct cp_err err;
    assert_int_equal(parse_text(text, &pods, &err), 0);
    assert_int_equal(pods.count, 2);
    assert_int_equal(pods.skipped_pods, 8);
    const struct kubelet_pod *ok = pod_named(&pods, "ok");
    assert_int_equal(json_object_size(ok->labels), 1);
    assert_string_equal(label(ok->labels, "a"), "1");
    assert_int_equal(pods.dropped_labels, 4);
    assert_int_equal(ok->container_count, 1); /* a bare id is taken as is, lower-cased */
    assert_string_equal(ok->containers[0].name, "f");
    assert_string_equal(ok->containers[0].id, "abcdef0123456789");
    assert_int_equal(pods.dropped_containers, 4); /* name 1; no id; "://" or ' ' in the id */
    const struct kubelet_pod *plain = pod_named(&pods, "plain");
    assert_int_equal(json_object_size(plain->labels), 0);
    assert_int_equal(plain->container_count, 0);
    kubelet_pods_free(&pods);

    assert_int_equal(parse_text("{\"items\": null}", &pods, &err), 0);
    assert_int_equal(pods.count, 0);
    assert_int_equal(parse_text("{\"kind\": \"PodList\", \"items\": []}", &pods, &err), 0);
    assert_int_equal(pods.count, 0);
}

static void append_pods(struct buf *b, size_t n)
{
    assert_int_equal(buf_append_str(b, "{\"kind\":\"PodList\",\"items\":["), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(
            buf_printf(b,
                       "%s{\"metadata\":{\"uid\":\"%08zx-0000-4000-8000-000000000000\","
                       "\"name\":\"p%zu\",\"namespace\":\"ns\"}}",
                       i ? "," : "", i, i),
            0);
    assert_int_equal(buf_append_str(b, "]}"), 0);
}

static void test_parse_pod_count_bound(void **state)
{
    (void)state;
    struct buf b = {0};
    struct kubelet_pods pods;
    struct cp_err err;
    append_pods(&b, KUBELET_PODS_MAX);
    assert_int_equal(kubelet_pods_parse(b.data, b.len, &pods, &err), 0);
    assert_int_equal(pods.count, KUBELET_PODS_MAX);
    struct kubelet_match m;
    assert_true(kubelet_pods_find(&pods, "00000fff-0000-4000-8000-000000000000", NULL, &m));
    assert_string_equal(m.pod_name, "p4095");
    kubelet_pods_free(&pods);

    buf_reset(&b);
    append_pods(&b, KUBELET_PODS_MAX + 1);
    assert_int_equal(kubelet_pods_parse(b.data, b.len, &pods, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "4097 pods"));
    assert_null(pods.items);
    buf_free(&b);
}

static void test_parse_size_bounds(void **state)
{
    (void)state;
    /* the body bound: refused before it is read */
    char *big = malloc(KUBELET_BODY_MAX + 1);
    assert_non_null(big);
    memset(big, ' ', KUBELET_BODY_MAX + 1);
    memcpy(big, "{\"items\":[]}", 12);
    struct kubelet_pods pods;
    struct cp_err err;
    assert_int_equal(kubelet_pods_parse(big, KUBELET_BODY_MAX + 1, &pods, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOMEM);
    assert_int_equal(kubelet_pods_parse(big, KUBELET_BODY_MAX, &pods, &err), 0);
    free(big);

    /* labels: 64 kept, the rest dropped; an over-long value dropped */
    struct buf b = {0};
    assert_int_equal(buf_append_str(&b, "{\"items\":[{\"metadata\":{\"uid\":\"u\",\"name\":\"n\","
                                        "\"namespace\":\"s\",\"labels\":{"),
                     0);
    for (int i = 0; i < 70; i++)
        assert_int_equal(buf_printf(&b, "%s\"k%d\":\"v%d\"", i ? "," : "", i, i), 0);
    assert_int_equal(
        buf_printf(&b,
                   "}}},{\"metadata\":{\"uid\":\"u2\",\"name\":\"n2\","
                   "\"namespace\":\"s\",\"labels\":{\"long\":\"%0*d\",\"a\":\"b\"}}},"
                   "{\"metadata\":{\"uid\":\"u3\",\"name\":\"%0*d\",\"namespace\":\"s\"}}"
                   "]}",
                   KUBELET_STRING_MAX + 1, 0, KUBELET_STRING_MAX + 1, 0),
        0);
    assert_int_equal(kubelet_pods_parse(b.data, b.len, &pods, &err), 0);
    assert_int_equal(pods.count, 2);
    assert_int_equal(pods.skipped_pods, 1); /* the over-long name */
    assert_int_equal(json_object_size(pods.items[0].labels), KUBELET_LABELS_MAX);
    assert_string_equal(label(pods.items[0].labels, "k63"), "v63");
    assert_null(label(pods.items[0].labels, "k64"));
    assert_int_equal(json_object_size(pods.items[1].labels), 1);
    assert_int_equal(pods.dropped_labels, 70 - KUBELET_LABELS_MAX + 1);
    kubelet_pods_free(&pods);

    /* containers: at most KUBELET_CONTAINERS_MAX per pod */
    buf_reset(&b);
    assert_int_equal(buf_append_str(&b, "{\"items\":[{\"metadata\":{\"uid\":\"u\",\"name\":\"n\","
                                        "\"namespace\":\"s\"},\"status\":{\"containerStatuses\":["),
                     0);
    for (int i = 0; i < KUBELET_CONTAINERS_MAX + 10; i++)
        assert_int_equal(buf_printf(&b,
                                    "%s{\"name\":\"c%d\",\"containerID\":\"containerd://%064x\"}",
                                    i ? "," : "", i, i),
                         0);
    assert_int_equal(buf_append_str(&b, "]}}]}"), 0);
    assert_int_equal(kubelet_pods_parse(b.data, b.len, &pods, &err), 0);
    assert_int_equal(pods.items[0].container_count, KUBELET_CONTAINERS_MAX);
    assert_int_equal(pods.dropped_containers, 10);
    kubelet_pods_free(&pods);
    buf_free(&b);
}

/* ---- lookup ------------------------------------------------------------------------------ */

static void test_find_by_uid_dashes_underscores_and_case(void **state)
{
    (void)state;
    struct buf text = {0};
    read_fixture(&text);
    struct kubelet_pods pods;
    struct cp_err err;
    assert_int_equal(kubelet_pods_parse(text.data, text.len, &pods, &err), 0);
    const char *forms[] = {WEB_UID, "0f3c1e2a_4b5d_4e6f_8a9b_0c1d2e3f4a5b",
                           "0F3C1E2A-4B5D-4E6F-8A9B-0C1D2E3F4A5B"};
    for (size_t i = 0; i < 3; i++) {
        struct kubelet_match m;
        assert_true(kubelet_pods_find(&pods, forms[i], APP_ID, &m));
        assert_string_equal(m.pod_name, "web-7d9f8b6c5-x2x4q");
        assert_string_equal(m.k8s_namespace, "shop");
        assert_string_equal(m.container_name, "app");
        assert_string_equal(label(m.labels, "tier"), "frontend");
        assert_ptr_equal(m.pod, pod_named(&pods, "web-7d9f8b6c5-x2x4q"));
        /* by the uid alone (no container id, or one the pod does not list) */
        assert_true(kubelet_pods_find(&pods, forms[i], NULL, &m));
        assert_string_equal(m.pod_name, "web-7d9f8b6c5-x2x4q");
        assert_string_equal(m.container_name, "");
        assert_true(kubelet_pods_find(&pods, forms[i], HEX64("7"), &m));
        assert_string_equal(m.k8s_namespace, "shop");
        assert_string_equal(m.container_name, "");
    }
    struct kubelet_match m;
    /* a known pod, an unknown container: the pod's metadata, no container name */
    assert_true(kubelet_pods_find(&pods, WEB_UID, HEX64("7"), &m));
    assert_string_equal(m.pod_name, "web-7d9f8b6c5-x2x4q");
    assert_string_equal(m.container_name, "");
    assert_true(kubelet_pods_find(&pods, WEB_UID, NULL, &m));
    assert_string_equal(m.container_name, "");
    /* almost the uid is not the uid */
    assert_false(kubelet_pods_find(&pods, "0f3c1e2a-4b5d-4e6f-8a9b-0c1d2e3f4a5", NULL, &m));
    assert_false(kubelet_pods_find(&pods, "0f3c1e2a-4b5d-4e6f-8a9b-0c1d2e3f4a5bb", NULL, &m));
    assert_false(kubelet_pods_find(&pods, "", "", &m));
    assert_false(kubelet_pods_find(&pods, NULL, NULL, &m));
    assert_null(m.pod_name);
    kubelet_pods_free(&pods);
    buf_free(&text);
}

static void test_find_by_container_id_forms(void **state)
{
    (void)state;
    struct buf text = {0};
    read_fixture(&text);
    struct kubelet_pods pods;
    struct cp_err err;
    assert_int_equal(kubelet_pods_parse(text.data, text.len, &pods, &err), 0);
    struct {
        const char *uid, *id, *pod, *container;
    } cases[] = {
        {NULL, SIDECAR_ID, "web-7d9f8b6c5-x2x4q", "sidecar"},
        {"", "containerd://" SIDECAR_ID, "web-7d9f8b6c5-x2x4q", "sidecar"},
        {NULL,
         "4F2A9C"
         "0000000000000000000000000000000000000000000000000000000000",
         "web-7d9f8b6c5-x2x4q", "app"},
        {NULL, "cri-o://" WORKER_ID, "worker-0", "worker"},
        {NULL, "docker://" LEGACY_ID, "legacy", "legacy"},
        {NULL, "d0d0d0d0d0d0", "legacy", "legacy"}, /* a short docker id: 12 characters */
        {"ffffffff-0000-0000-0000-000000000000", WORKER_ID, "worker-0", "worker"},
        {"a1b2c3d4_0000_4000_8000_00000000abcd", WORKER_ID, "worker-0", "worker"},
        {NULL, HEX64("e"), "web-7d9f8b6c5-x2x4q", "debugger"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct kubelet_match m;
        if (!kubelet_pods_find(&pods, cases[i].uid, cases[i].id, &m))
            fail_msg("case %zu not found", i);
        assert_string_equal(m.pod_name, cases[i].pod);
        assert_string_equal(m.container_name, cases[i].container);
    }
    struct kubelet_match m;
    assert_false(kubelet_pods_find(&pods, NULL, "d0d0d0d0d0d", &m)); /* 11: too short */
    assert_false(kubelet_pods_find(&pods, NULL, LEGACY_ID "00", &m));
    assert_false(kubelet_pods_find(&pods, NULL, HEX64("7"), &m));
    assert_false(kubelet_pods_find(&pods, NULL, "containerd://", &m));
    kubelet_pods_free(&pods);
    struct kubelet_pods empty = {0};
    assert_false(kubelet_pods_find(&empty, WEB_UID, APP_ID, &m));
    buf_free(&text);
}

/* ---- the client against a real HTTP server --------------------------------------------- */

struct server {
    char dir[64];
    pid_t pid;
    int port;
    char token_file[128];
    struct buf pods_json;
    struct kubelet_client *client;
};

static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char tmp[256], path[256];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
}

static size_t slurp(const char *path, char *out, size_t size)
{
    int fd = open(path, O_RDONLY);
    size_t len = 0;
    ssize_t n;
    while (fd >= 0 && len + 1 < size && (n = read(fd, out + len, size - 1 - len)) > 0)
        len += (size_t)n;
    if (fd >= 0) close(fd);
    out[len] = '\0';
    return len;
}

/* Reads the request head, logs it, answers with the response file (or holds on "HANG"). */
static void serve_one(int fd, const char *dir)
{
    static char req[65536], resp[1 << 16];
    size_t len = 0;
    ssize_t n;
    req[0] = '\0';
    while (len + 1 < sizeof req && !strstr(req, "\r\n\r\n") &&
           (n = recv(fd, req + len, sizeof req - 1 - len, 0)) > 0) {
        len += (size_t)n;
        req[len] = '\0';
    }
    char path[256];
    snprintf(path, sizeof path, "%s/requests.log", dir);
    int log = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (log >= 0) {
        (void)!write(log, req, len);
        (void)!write(log, "----\n", 5);
        close(log);
    }
    snprintf(path, sizeof path, "%s/response", dir);
    size_t rlen = slurp(path, resp, sizeof resp);
    if (strcmp(resp, "ENDLESS") == 0) { /* 17 MiB without Content-Length */
        static const char head[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        (void)!send(fd, head, sizeof head - 1, MSG_NOSIGNAL);
        memset(resp, ' ', sizeof resp);
        for (size_t sent = 0; sent < (17u << 20) && send(fd, resp, sizeof resp, MSG_NOSIGNAL) > 0;)
            sent += sizeof resp;
        return;
    }
    if (strcmp(resp, "HANG") == 0) {
        while (recv(fd, req, sizeof req, 0) > 0) {
        }
        return;
    }
    for (size_t off = 0; off < rlen && (n = send(fd, resp + off, rlen - off, MSG_NOSIGNAL)) > 0;)
        off += (size_t)n;
    shutdown(fd, SHUT_WR);
    while (recv(fd, req, sizeof req, 0) > 0) {
    }
}

static void serve_forever(int lfd, const char *dir)
{
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) continue;
            _exit(1);
        }
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        serve_one(fd, dir);
        close(fd);
    }
}

static void answer_with(struct server *s, int status, const char *body, size_t len)
{
    struct buf r = {0};
    assert_int_equal(buf_printf(&r,
                                "HTTP/1.1 %d Whatever\r\nContent-Type: application/json\r\n"
                                "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                                status, len),
                     0);
    assert_int_equal(buf_append(&r, body, len), 0);
    write_file(s->dir, "response", r.data, r.len);
    buf_free(&r);
}

static void answer_raw(struct server *s, const char *raw)
{
    write_file(s->dir, "response", raw, strlen(raw));
}

static void set_token(struct server *s, const char *token)
{
    write_file(s->dir, "token", token, strlen(token));
}

static size_t requests(struct server *s, char *out, size_t size)
{
    char path[256];
    snprintf(path, sizeof path, "%s/requests.log", s->dir);
    return slurp(path, out, size);
}

static void stop_server(struct server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

static int server_setup(void **state)
{
    struct server *s = calloc(1, sizeof *s);
    assert_non_null(s);
    snprintf(s->dir, sizeof s->dir, "/tmp/conprof-kubelet-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->token_file, sizeof s->token_file, "%s/token", s->dir);
    read_fixture(&s->pods_json);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 16), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) serve_forever(lfd, s->dir);
    close(lfd); /* only the child listens: once it is gone, connecting is refused */
    *state = s;
    return 0;
}

static int server_teardown(void **state)
{
    struct server *s = *state;
    kubelet_client_close(s->client);
    stop_server(s);
    const char *names[] = {"token", "response", "requests.log"};
    char path[256];
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", s->dir, names[i]);
        unlink(path);
    }
    rmdir(s->dir);
    buf_free(&s->pods_json);
    free(s);
    return 0;
}

static struct kubelet_client *open_client(struct server *s, const char *token_file, long timeout)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", s->port);
    struct cp_err err;
    s->client = kubelet_client_open(url, token_file, NULL, timeout, &err);
    if (!s->client) fail_msg("open: %s", err.msg);
    return s->client;
}

/* Starts a refresh and polls (every 5 ms, as a busy loop would) until it ends. Returns whether
 * a new list was installed; *slowest gets the longest single poll in seconds. */
static int refresh(struct kubelet_client *c, double *slowest)
{
    const struct kubelet_client_stats *st = kubelet_client_stats(c);
    uint64_t before = st->refreshes;
    kubelet_client_refresh_now(c);
    int installed = 0;
    double deadline = now_s() + 10, worst = 0;
    while (st->refreshes == before && now_s() < deadline) {
        double t0 = now_s();
        installed |= kubelet_client_poll(c);
        double took = now_s() - t0;
        if (took > worst) worst = took;
        if (st->refreshes == before) usleep(5000);
    }
    assert_int_equal(st->refreshes, before + 1);
    assert_false(kubelet_client_busy(c));
    if (slowest) *slowest = worst;
    return installed;
}

static void test_client_fetches_with_bearer_token(void **state)
{
    struct server *s = *state;
    set_token(s, "tok-first\n");
    answer_with(s, 200, s->pods_json.data, s->pods_json.len);
    struct kubelet_client *c = open_client(s, s->token_file, 5000);
    assert_int_equal(kubelet_client_pods(c)->count, 0);
    double slowest;
    assert_int_equal(refresh(c, &slowest), 1);
    assert_true(slowest < 0.2);
    const struct kubelet_client_stats *st = kubelet_client_stats(c);
    assert_int_equal(st->failures, 0);
    assert_int_equal(st->pods, 4);
    assert_true(st->last_success_s > 0);
    assert_string_equal(st->last_error, "");
    struct kubelet_match m;
    assert_true(kubelet_pods_find(kubelet_client_pods(c), "0f3c1e2a_4b5d_4e6f_8a9b_0c1d2e3f4a5b",
                                  APP_ID, &m));
    assert_string_equal(m.container_name, "app");
    char log[65536];
    requests(s, log, sizeof log);
    assert_non_null(strstr(log, "GET /pods HTTP/1.1\r\n"));
    assert_non_null(strstr(log, "\r\nAuthorization: Bearer tok-first\r\n"));
    assert_non_null(strstr(log, "\r\nAccept: application/json\r\n"));

    /* the token rotates: the next refresh reads the file again */
    set_token(s, "tok-second");
    const struct kubelet_pod *first_items = kubelet_client_pods(c)->items;
    assert_int_equal(refresh(c, NULL), 0); /* the same answer: kept, not parsed again */
    assert_ptr_equal(kubelet_client_pods(c)->items, first_items);
    assert_int_equal(st->failures, 0);
    requests(s, log, sizeof log);
    char *second = strstr(log, "----\n");
    assert_non_null(second);
    assert_non_null(strstr(second, "\r\nAuthorization: Bearer tok-second\r\n"));
    assert_null(strstr(second, "tok-first"));
    assert_int_equal(st->refreshes, 2);

    /* a changed answer replaces the list */
    const char *one = "{\"items\":[{\"metadata\":{\"uid\":\"u-1\",\"name\":\"solo\","
                      "\"namespace\":\"ns\"}}]}";
    answer_with(s, 200, one, strlen(one));
    assert_int_equal(refresh(c, NULL), 1);
    assert_int_equal(st->pods, 1);
    assert_string_equal(kubelet_client_pods(c)->items[0].name, "solo");
    assert_int_equal(st->refreshes, 3);
    assert_int_equal(st->failures, 0);
}

static void test_client_without_token_sends_no_authorization(void **state)
{
    struct server *s = *state;
    answer_with(s, 200, s->pods_json.data, s->pods_json.len);
    struct kubelet_client *c = open_client(s, "", 5000);
    assert_int_equal(refresh(c, NULL), 1);
    char log[65536];
    requests(s, log, sizeof log);
    assert_non_null(strstr(log, "GET /pods HTTP/1.1\r\n"));
    assert_null(strstr(log, "Authorization"));
}

/* Installs the fixture's list, then checks that `fail` keeps it and records `expect`. */
static void expect_failure_keeps_list(struct server *s, void (*break_it)(struct server *),
                                      const char *expect)
{
    struct kubelet_client *c = s->client;
    answer_with(s, 200, s->pods_json.data, s->pods_json.len);
    assert_int_equal(refresh(c, NULL), 1);
    const struct kubelet_pods *before = kubelet_client_pods(c);
    const struct kubelet_pod *items = before->items;
    break_it(s);
    double slowest;
    assert_int_equal(refresh(c, &slowest), 0);
    assert_true(slowest < 0.2);
    const struct kubelet_client_stats *st = kubelet_client_stats(c);
    assert_int_equal(st->failures, 1);
    assert_int_equal(st->refreshes, 2);
    if (!strstr(st->last_error, expect))
        fail_msg("last_error \"%s\" lacks \"%s\"", st->last_error, expect);
    assert_non_null(strstr(st->last_error, "kubelet GET http://127.0.0.1:"));
    assert_ptr_equal(kubelet_client_pods(c)->items, items); /* the very same list */
    assert_int_equal(kubelet_client_pods(c)->count, 4);
    assert_int_equal(st->pods, 4);
    struct kubelet_match m;
    assert_true(kubelet_pods_find(kubelet_client_pods(c), NULL, "cri-o://" WORKER_ID, &m));
}

static void fail_with_500(struct server *s)
{
    answer_with(s, 500, "boom: internal error", 20);
}

static void fail_with_garbage(struct server *s)
{
    answer_with(s, 200, "{\"items\": [", 11);
}

static void fail_with_huge_length(struct server *s)
{
    answer_raw(
        s, "HTTP/1.1 200 OK\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n{\"items\"");
}

static void fail_with_endless_body(struct server *s)
{
    answer_raw(s, "ENDLESS");
}

static void fail_by_refusing(struct server *s)
{
    stop_server(s);
}

static void fail_by_losing_token(struct server *s)
{
    char path[256];
    snprintf(path, sizeof path, "%s/requests.log", s->dir);
    unlink(path);
    unlink(s->token_file);
}

static void test_client_500_keeps_list(void **state)
{
    struct server *s = *state;
    set_token(s, "t");
    open_client(s, s->token_file, 5000);
    expect_failure_keeps_list(s, fail_with_500, "HTTP 500 boom: internal error");
}

static void test_client_bad_body_keeps_list(void **state)
{
    struct server *s = *state;
    set_token(s, "t");
    open_client(s, s->token_file, 5000);
    expect_failure_keeps_list(s, fail_with_garbage, "not JSON");
}

static void test_client_too_big_keeps_list(void **state)
{
    struct server *s = *state;
    set_token(s, "t");
    open_client(s, s->token_file, 5000);
    expect_failure_keeps_list(s, fail_with_huge_length, "larger than 16777216 bytes");
}

static void test_client_endless_body_keeps_list(void **state)
{
    struct server *s = *state;
    set_token(s, "t");
    open_client(s, s->token_file, 5000);
    expect_failure_keeps_list(s, fail_with_endless_body, "larger than 16777216 bytes");
}

static void test_client_refused_keeps_list(void **state)
{
    struct server *s = *state;
    set_token(s, "t");
    open_client(s, s->token_file, 5000);
    expect_failure_keeps_list(s, fail_by_refusing, "onnect");
}

static void test_client_missing_token_keeps_list_and_sends_nothing(void **state)
{
    struct server *s = *state;
    set_token(s, "t");
    open_client(s, s->token_file, 5000);
    expect_failure_keeps_list(s, fail_by_losing_token, "bearer token");
    char log[256];
    assert_int_equal(requests(s, log, sizeof log), 0); /* no request without the token */
}

static void test_client_timeout_never_blocks(void **state)
{
    struct server *s = *state;
    answer_raw(s, "HANG");
    struct kubelet_client *c = open_client(s, NULL, 300);
    double t0 = now_s(), slowest;
    assert_int_equal(refresh(c, &slowest), 0);
    double took = now_s() - t0;
    assert_true(slowest < 0.1);
    assert_true(took >= 0.25 && took < 3);
    const struct kubelet_client_stats *st = kubelet_client_stats(c);
    assert_int_equal(st->failures, 1);
    assert_non_null(strstr(st->last_error, "imed out"));
    assert_int_equal(kubelet_client_pods(c)->count, 0);
}

static void test_client_refreshes_on_its_interval(void **state)
{
    struct server *s = *state;
    answer_with(s, 200, s->pods_json.data, s->pods_json.len);
    struct kubelet_client *c = open_client(s, NULL, 5000);
    kubelet_client_set_interval_ms(c, 100);
    int installed = 0;
    double end = now_s() + 0.55;
    while (now_s() < end) {
        installed += kubelet_client_poll(c);
        usleep(5000);
    }
    /* starts at 0, 100, ..., 500 ms: about 6, never two at a time; the answer never changes,
     * so only the first installs a list */
    assert_int_equal(installed, 1);
    assert_in_range(kubelet_client_stats(c)->refreshes, 3, 6);
    assert_int_equal(kubelet_client_stats(c)->failures, 0);
    char log[65536];
    requests(s, log, sizeof log);
    size_t gets = 0;
    for (const char *p = log; (p = strstr(p, "GET /pods ")); p++)
        gets++;
    assert_int_equal(gets, kubelet_client_stats(c)->refreshes);
}

static void test_client_open_rejects_bad_urls(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "ftp://host/",
                         "http://",
                         "https:///pods",
                         "127.0.0.1:10250",
                         "http://host name/",
                         "http://host/\r\nX-Evil: 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cp_err err = {0};
        struct kubelet_client *c = kubelet_client_open(bad[i], NULL, NULL, 1000, &err);
        if (c) fail_msg("accepted %s", bad[i]);
        assert_int_equal(err.code, CP_ERR_INVALID);
        assert_non_null(strstr(err.msg, "kubelet url"));
    }
    struct cp_err err;
    assert_null(kubelet_client_open(NULL, NULL, NULL, 1000, &err));
    struct kubelet_client *c =
        kubelet_client_open("HTTPS://user:secret@node-1:10250", "/nonexistent", "/ca.crt", 0, &err);
    assert_non_null(c);
    kubelet_client_close(c);
    kubelet_client_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_realistic_podlist),
        cmocka_unit_test(test_parse_refuses_what_is_not_a_podlist),
        cmocka_unit_test(test_parse_every_truncation_fails_cleanly),
        cmocka_unit_test(test_parse_wrong_types_inside_are_skipped),
        cmocka_unit_test(test_parse_pod_count_bound),
        cmocka_unit_test(test_parse_size_bounds),
        cmocka_unit_test(test_find_by_uid_dashes_underscores_and_case),
        cmocka_unit_test(test_find_by_container_id_forms),
        cmocka_unit_test_setup_teardown(test_client_fetches_with_bearer_token, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_client_without_token_sends_no_authorization,
                                        server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_client_500_keeps_list, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_client_bad_body_keeps_list, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_client_too_big_keeps_list, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_client_endless_body_keeps_list, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_client_refused_keeps_list, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_client_missing_token_keeps_list_and_sends_nothing,
                                        server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_client_timeout_never_blocks, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_client_refreshes_on_its_interval, server_setup,
                                        server_teardown),
        cmocka_unit_test(test_client_open_rejects_bad_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
