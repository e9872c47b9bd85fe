/* metrics: addresses, the exposition text, the request-head parser, and the server over real TCP
 * on 127.0.0.1 (port 0): GET /metrics with fresh values per scrape, HEAD, 404, 405, 400, an
 * oversized head (431), a client that stalls (408 after the timeout, others served meanwhile),
 * more clients than slots, and the loopback rule. Client and server run in one thread: the kernel
 * completes connect() from the listen backlog, and the test drives the server's single fd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

struct scrape_ctx {
    int calls;
    uint64_t samples;
};

static void fill(void *ctx, struct metrics_values *v)
{
    struct scrape_ctx *c = ctx;
    c->calls++;
    v->version = "0.1.0-\"test\"\\";
    v->start_time_s = 1700000000.25;
    v->samples_total = c->samples;
    v->sample_errors_total = 3;
    v->targets = 2;
    v->processes = 5;
    v->workers = 2;
    v->worker_crashes_total = 1;
    v->uploads_sent_total = 10;
    v->uploads_failed_total = 1;
    v->uploads_retried_total = 4;
    v->spooled_total = 2;
    v->spool_evictions_total = 1;
    v->spool_bytes = 123456;
    v->discovery_last_duration_s = 0.0125;
}

static struct metrics_server *open_server(struct scrape_ctx *ctx)
{
    struct cp_err err;
    struct metrics_server *s = metrics_server_open("127.0.0.1:0", false, fill, ctx, &err);
    if (!s) fail_msg("%s", err.msg);
    assert_true(metrics_server_port(s) > 0);
    return s;
}

static int connect_to(struct metrics_server *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)metrics_server_port(s))};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

/* Serves until the client's connection ends (EOF or reset) or `limit` seconds pass; returns the
 * bytes received (malloc'd, NUL-terminated). */
static char *drive(struct metrics_server *s, int client, double limit)
{
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    double end = mono() + limit;
    while (mono() < end) {
        struct pollfd p[2] = {{.fd = metrics_server_fd(s), .events = POLLIN},
                              {.fd = client, .events = POLLIN}};
        poll(p, 2, 50);
        struct cp_err err;
        if (p[0].revents) metrics_server_handle(s, &err);
        if (!p[1].revents) continue;
        ssize_t n = recv(client, out + len, cap - len - 1, MSG_DONTWAIT);
        if (n > 0) len += (size_t)n;
        if (n == 0 || (n < 0 && errno != EAGAIN)) break;
    }
    out[len] = '\0';
    return out;
}

static char *request(struct metrics_server *s, const char *req)
{
    int fd = connect_to(s);
    send_all(fd, req, strlen(req));
    char *resp = drive(s, fd, 5);
    close(fd);
    return resp;
}

static int status_code(const char *resp)
{
    int code = 0;
    if (sscanf(resp, "HTTP/1.1 %d ", &code) != 1) return -1;
    return code;
}

static const char *body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

static void test_parse_address(void **state)
{
    (void)state;
    struct metrics_address a;
    struct cp_err err;
    assert_int_equal(metrics_parse_address("127.0.0.1:9464", &a, &err), 0);
    assert_true(a.loopback);
    assert_int_equal(a.port, 9464);
    assert_int_equal(a.addr.ss_family, AF_INET);
    assert_int_equal(metrics_parse_address("localhost:1", &a, &err), 0);
    assert_true(a.loopback);
    assert_int_equal(metrics_parse_address("127.200.0.9:65535", &a, &err), 0);
    assert_true(a.loopback);
    assert_int_equal(metrics_parse_address("[::1]:9464", &a, &err), 0);
    assert_true(a.loopback);
    assert_int_equal(a.addr.ss_family, AF_INET6);
    assert_int_equal(metrics_parse_address("[::ffff:127.0.0.1]:80", &a, &err), 0);
    assert_true(a.loopback);
    assert_int_equal(metrics_parse_address("0.0.0.0:9464", &a, &err), 0);
    assert_false(a.loopback);
    assert_int_equal(metrics_parse_address("[::]:9464", &a, &err), 0);
    assert_false(a.loopback);
    assert_int_equal(metrics_parse_address("10.0.0.1:0", &a, &err), 0);
    assert_false(a.loopback);
    const char *bad[] = {"",
                         "127.0.0.1",
                         ":9464",
                         "127.0.0.1:",
                         "127.0.0.1:65536",
                         "127.0.0.1:-1",
                         "127.0.0.1:9x",
                         "::1:9464",
                         "[::1]9464",
                         "[::1]",
                         "host.example:80",
                         "256.0.0.1:80",
                         "127.0.0.1:000009464",
                         "127.0.0.1:1234567890123456789012345678901234567890123456789012345678"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (metrics_parse_address(bad[i], &a, &err) == 0) fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(err.code, CP_ERR_INVALID);
    }
    assert_string_equal(err.msg,
                        "metrics address "
                        "'127.0.0.1:1234567890123456789012345678901234567890123456789012345678': "
                        "expected IPv4:PORT, [IPv6]:PORT or localhost:PORT");
}

/* Every sample line is "name{labels} value" or "name value"; HELP and TYPE once per name. */
static void check_exposition_syntax(const char *text)
{
    char *copy = strdup(text), *save = NULL;
    int types = 0;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# HELP ", 7)) continue;
        if (!strncmp(line, "# TYPE ", 7)) {
            char name[128], type[32];
            assert_int_equal(sscanf(line, "# TYPE %127s %31s", name, type), 2);
            char again[160];
            snprintf(again, sizeof again, "# TYPE %s ", name);
            const char *first = strstr(text, again);
            assert_non_null(first);
            assert_null(strstr(first + 1, again));
            assert_true(!strcmp(type, "counter") || !strcmp(type, "gauge"));
            types++;
            continue;
        }
        size_t name_len = strspn(line, "abcdefghijklmnopqrstuvwxyz_");
        assert_true(name_len > 8 && !strncmp(line, "conprof_", 8));
        const char *rest = line + name_len;
        if (*rest == '{') rest = strchr(rest, '}') + 1;
        assert_int_equal(*rest, ' ');
        char *end;
        strtod(rest + 1, &end);
        assert_int_equal(*end, '\0');
    }
    free(copy);
    assert_true(types >= 20);
}

static void test_render(void **state)
{
    (void)state;
    struct scrape_ctx ctx = {.samples = 987654321};
    struct metrics_values v;
    memset(&v, 0, sizeof v);
    fill(&ctx, &v);
    struct buf out = {0};
    assert_int_equal(metrics_render(&v, &out), 0);
    const char *expected[] = {
        "conprof_info{version=\"0.1.0-\\\"test\\\"\\\\\"} 1\n",
        "# TYPE conprof_samples_total counter\nconprof_samples_total 987654321\n",
        "conprof_sample_errors_total 3\n",
        "# TYPE conprof_targets gauge\nconprof_targets 2\n",
        "conprof_processes 5\n",
        "conprof_worker_restarts_total{reason=\"crash\"} 1\n"
        "conprof_worker_restarts_total{reason=\"hang\"} 0\n",
        "# TYPE conprof_uploads_total counter\nconprof_uploads_total{result=\"sent\"} 10\n"
        "conprof_uploads_total{result=\"failed\"} 1\nconprof_uploads_total{result=\"retried\"} 4\n",
        "conprof_spooled_total 2\n",
        "conprof_spool_evictions_total 1\n",
        "# TYPE conprof_spool_bytes gauge\nconprof_spool_bytes 123456\n",
        "conprof_start_time_seconds 1700000000.250000\n",
        "conprof_discovery_last_duration_seconds 0.012500\n",
        "conprof_config_reloads_total{result=\"failed\"} 0\n",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        if (!strstr(out.data, expected[i]))
            fail_msg("missing:\n%s\nin:\n%s", expected[i], out.data);
    check_exposition_syntax(out.data);
    buf_free(&out);
}

static void test_http_parse(void **state)
{
    (void)state;
    struct metrics_http_request r;
    const char *get = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\nBODY";
    assert_int_equal(metrics_http_parse(get, strlen(get), &r), METRICS_HTTP_COMPLETE);
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.path, "/metrics");
    assert_int_equal(r.header_count, 2);
    assert_int_equal(r.head_len, strlen(get) - 4);
    for (size_t n = 0; n < strlen(get) - 4; n++) /* every prefix is incomplete, never bad */
        assert_int_equal(metrics_http_parse(get, n, &r), METRICS_HTTP_INCOMPLETE);
    const char *lf = "HEAD /other HTTP/1.0\n\n";
    assert_int_equal(metrics_http_parse(lf, strlen(lf), &r), METRICS_HTTP_COMPLETE);
    assert_string_equal(r.method, "HEAD");
    assert_string_equal(r.path, "/other");
    const char *bad[] = {
        "GET /metrics\r\n\r\n",
        "get /metrics HTTP/1.1\r\n\r\n",
        "GET metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/2.0\r\n\r\n",
        "GET  /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET /metrics HTTP/1.1\r\n : x\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        "GET /met\rrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nA: b\rc\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nA: \x01\r\n\r\n",
        "\r\nGET /metrics HTTP/1.1\r\n\r\n",
        "VERYLONGMETHODNAME / HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (metrics_http_parse(bad[i], strlen(bad[i]), &r) != METRICS_HTTP_BAD)
            fail_msg("not rejected: %s", bad[i]);
    /* garbage is seen early, even before a line end */
    assert_int_equal(metrics_http_parse("FOO\r\n", 5, &r), METRICS_HTTP_BAD);
    assert_int_equal(metrics_http_parse("\x16\x03\x01", 3, &r), METRICS_HTTP_BAD);
    assert_int_equal(metrics_http_parse("get", 3, &r), METRICS_HTTP_BAD);

    static char big[METRICS_REQUEST_MAX + 400];
    int n = snprintf(big, sizeof big, "GET /metrics HTTP/1.1\r\n");
    char pad[300];
    memset(pad, 'a', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    while ((size_t)n < METRICS_REQUEST_MAX)
        n += snprintf(big + n, sizeof big - (size_t)n, "X-Pad: %s\r\n", pad);
    assert_int_equal(metrics_http_parse(big, (size_t)n, &r), METRICS_HTTP_TOO_LARGE);
    assert_int_equal(metrics_http_parse(big, METRICS_REQUEST_MAX - 1, &r), METRICS_HTTP_INCOMPLETE);

    /* too many header lines */
    n = snprintf(big, sizeof big, "GET /metrics HTTP/1.1\r\n");
    for (int i = 0; i <= METRICS_HEADERS_MAX; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "X-%d: 1\r\n", i);
    assert_int_equal(metrics_http_parse(big, (size_t)n, &r), METRICS_HTTP_TOO_LARGE);

    /* a head of exactly METRICS_REQUEST_MAX bytes is accepted */
    memset(big, 0, sizeof big);
    n = snprintf(big, sizeof big, "GET /metrics HTTP/1.1\r\nX: ");
    memset(big + n, 'a', METRICS_REQUEST_MAX - (size_t)n - 4);
    memcpy(big + METRICS_REQUEST_MAX - 4, "\r\n\r\n", 4);
    assert_int_equal(metrics_http_parse(big, METRICS_REQUEST_MAX + 50, &r), METRICS_HTTP_COMPLETE);
    assert_int_equal(r.head_len, METRICS_REQUEST_MAX);

    /* a path too long for the buffer is kept as "" (answered 404), not truncated */
    memset(big, 0, sizeof big);
    n = snprintf(big, sizeof big, "GET /metrics");
    memset(big + n, 'x', 400);
    strcat(big, " HTTP/1.1\r\n\r\n");
    assert_int_equal(metrics_http_parse(big, strlen(big), &r), METRICS_HTTP_COMPLETE);
    assert_string_equal(r.path, "");
}

static void test_get_metrics(void **state)
{
    (void)state;
    struct scrape_ctx ctx = {.samples = 42};
    struct metrics_server *s = open_server(&ctx);
    char *resp = request(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_int_equal(status_code(resp), 200);
    assert_non_null(strstr(resp, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert_non_null(strstr(resp, "\r\nConnection: close\r\n"));
    size_t length = 0;
    assert_int_equal(sscanf(strstr(resp, "Content-Length: "), "Content-Length: %zu", &length), 1);
    assert_int_equal(length, strlen(body_of(resp)));
    assert_non_null(strstr(body_of(resp), "\nconprof_samples_total 42\n"));
    check_exposition_syntax(body_of(resp));
    free(resp);
    /* values are taken at each scrape */
    ctx.samples = 43;
    resp = request(s, "GET /metrics HTTP/1.0\n\n");
    assert_int_equal(status_code(resp), 200);
    assert_non_null(strstr(body_of(resp), "\nconprof_samples_total 43\n"));
    free(resp);
    assert_int_equal(ctx.calls, 2);
    /* HEAD: the headers with the length of the body it would get, no body */
    resp = request(s, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_int_equal(status_code(resp), 200);
    assert_string_equal(body_of(resp), "");
    assert_null(strstr(resp, "Content-Length: 0\r\n"));
    free(resp);
    metrics_server_close(s);
}

static void test_error_responses(void **state)
{
    (void)state;
    struct scrape_ctx ctx = {0};
    struct metrics_server *s = open_server(&ctx);
    static const struct {
        const char *req;
        int code;
        const char *expect;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", 404, "not found: metrics are at /metrics\n"},
        {"GET /metricsx HTTP/1.1\r\n\r\n", 404, NULL},
        {"GET /debug/pprof HTTP/1.1\r\n\r\n", 404, NULL},
        {"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 405, "Allow: GET, HEAD\r\n"},
        {"DELETE /metrics HTTP/1.1\r\n\r\n", 405, NULL},
        {"\x16\x03\x01\x02\x05\x01\x06", 400, "bad request\n"}, /* a TLS hello: no line end */
        {"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", 400, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *resp = request(s, cases[i].req);
        if (status_code(resp) != cases[i].code) fail_msg("%s -> %s", cases[i].req, resp);
        if (cases[i].expect) assert_non_null(strstr(resp, cases[i].expect));
        free(resp);
    }
    assert_int_equal(ctx.calls, 0); /* nothing was rendered for them */
    metrics_server_close(s);
}

static void test_oversized_request(void **state)
{
    (void)state;
    struct scrape_ctx ctx = {0};
    struct metrics_server *s = open_server(&ctx);
    size_t len = METRICS_REQUEST_MAX + 4000;
    char *req = malloc(len + 1);
    int n = snprintf(req, len + 1, "GET /metrics HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'a', len - (size_t)n);
    req[len] = '\0';
    int fd = connect_to(s);
    send_all(fd, req, len);
    free(req);
    char *resp = drive(s, fd, 5);
    close(fd);
    assert_int_equal(status_code(resp), 431);
    assert_non_null(strstr(resp, "request head too large"));
    free(resp);
    assert_int_equal(ctx.calls, 0);
    /* still serving */
    resp = request(s, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_int_equal(status_code(resp), 200);
    free(resp);
    metrics_server_close(s);
}

static void test_stalled_client_times_out(void **state)
{
    (void)state;
    struct scrape_ctx ctx = {0};
    struct metrics_server *s = open_server(&ctx);
    int slow = connect_to(s);
    send_all(slow, "GET /metr", 9);
    /* meanwhile another scrape is answered at once */
    double t0 = mono();
    char *resp = request(s, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_int_equal(status_code(resp), 200);
    assert_true(mono() - t0 < 1.0);
    free(resp);
    resp = drive(s, slow, 5);
    double waited = mono() - t0;
    close(slow);
    assert_int_equal(status_code(resp), 408);
    assert_true(waited >= METRICS_TIMEOUT_MS / 1000.0 - 0.2);
    assert_true(waited < METRICS_TIMEOUT_MS / 1000.0 + 1.5);
    free(resp);
    metrics_server_close(s);
}

static void test_too_many_clients(void **state)
{
    (void)state;
    struct scrape_ctx ctx = {0};
    struct metrics_server *s = open_server(&ctx);
    int fds[METRICS_MAX_CLIENTS + 1];
    struct cp_err err;
    for (int i = 0; i <= METRICS_MAX_CLIENTS; i++) {
        fds[i] = connect_to(s);
        for (int k = 0; k < 5; k++) { /* let the server accept it before the next one */
            struct pollfd p = {.fd = metrics_server_fd(s), .events = POLLIN};
            if (poll(&p, 1, 20) > 0) metrics_server_handle(s, &err);
        }
    }
    /* the one over the limit was closed at once */
    char *resp = drive(s, fds[METRICS_MAX_CLIENTS], 1);
    assert_string_equal(resp, "");
    free(resp);
    close(fds[METRICS_MAX_CLIENTS]);
    /* the others are served normally */
    send_all(fds[0], "GET /metrics HTTP/1.1\r\n\r\n", 25);
    resp = drive(s, fds[0], 5);
    assert_int_equal(status_code(resp), 200);
    free(resp);
    for (int i = 0; i < METRICS_MAX_CLIENTS; i++)
        close(fds[i]);
    metrics_server_close(s); /* frees the rest (LeakSanitizer checks) */
}

static void test_open_rules(void **state)
{
    (void)state;
    struct cp_err err;
    assert_null(metrics_server_open("0.0.0.0:0", false, fill, NULL, &err));
    assert_string_equal(err.msg, "metrics: 0.0.0.0:0 is not a loopback address and remote "
                                 "access is not allowed");
    struct metrics_server *s = metrics_server_open("0.0.0.0:0", true, fill, NULL, &err);
    assert_non_null(s);
    metrics_server_close(s);
    assert_null(metrics_server_open("nonsense", false, fill, NULL, &err));
    /* a port already taken */
    struct scrape_ctx ctx = {0};
    struct metrics_server *a = open_server(&ctx);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", metrics_server_port(a));
    assert_null(metrics_server_open(addr, false, fill, NULL, &err));
    char expected[128];
    snprintf(expected, sizeof expected, "metrics: cannot listen on %s: Address already in use",
             addr);
    assert_string_equal(err.msg, expected);
    metrics_server_close(a);
    /* IPv6 loopback, when the host has it */
    s = metrics_server_open("[::1]:0", false, fill, NULL, &err);
    if (s) metrics_server_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_address),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_http_parse),
        cmocka_unit_test(test_get_metrics),
        cmocka_unit_test(test_error_responses),
        cmocka_unit_test(test_oversized_request),
        cmocka_unit_test(test_stalled_client_times_out),
        cmocka_unit_test(test_too_many_clients),
        cmocka_unit_test(test_open_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
