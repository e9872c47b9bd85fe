/* config: the settings of `conprof-agent run`, from a JSON file, environment variables and
 * command-line flags (docs/agent-config.md lists every key, flag and variable).
 *
 * Contract:
 *   - Precedence, per setting: flags > environment > file > defaults. The file is the one named by
 *     --config, else by CONPROF_CONFIG; without either only defaults, env and flags apply. Labels
 *     merge per key (a flag's label replaces the file's label of the same name); selectors do
 *     not merge: any --selector replaces the file's whole list.
 *   - Everything is validated strictly: unknown keys, wrong types, out-of-range values and
 *     malformed strings are rejected (CP_ERR_INVALID, or CP_ERR_IO for unreadable files) with the
 *     origin, the key's path and what was expected, e.g.
 *       config /etc/conprof/agent.json: spool.max_bytes: expected an integer >= 1048576, got "big"
 *       --rate: expected an integer from 1 to 1000, got "fast"
 *       CONPROF_LOG_LEVEL: expected one of "error", "warn", "info", "debug", got "loud"
 *     At start, any error from config_args_parse() or config_load() means exit status 2.
 *   - Reload (SIGHUP): config_load() again with the same args and env into a NEW struct; on error
 *     the running struct is untouched and the error says why. Fields of the old struct that the
 *     daemon borrowed stay valid until the caller frees it.
 *   - Bounds: the file is at most CONFIG_FILE_MAX bytes; strings, label and selector counts are
 *     bounded; the JSON-to-config path (config_parse_text) does no I/O and is fuzzed.
 *   - The selectors are kept as a JSON array whose objects have been checked against the rules of
 *     selector.h (keys, types, lengths, container-id syntax); the daemon turns them into a
 *     struct selector_list with selector_list_parse(cfg->selectors, "selectors", ...).
 *   - A struct agent_config owns every pointer in it; config_free() releases them. Not
 *     thread-safe; no global state (the environment is read once, by config_env_from_process).
 */
#ifndef CONPROF_AGENT_CONFIG_H
#define CONPROF_AGENT_CONFIG_H

#include "error.h"
#include "sink.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_FILE_MAX (1u << 20)
#define CONFIG_PATH_MAX 4095
#define CONFIG_URL_MAX 2048
#define CONFIG_LABELS_MAX 64
#define CONFIG_LABEL_NAME_MAX 128
#define CONFIG_LABEL_VALUE_MAX 512
#define CONFIG_NODE_NAME_MAX 253
#define CONFIG_TOKEN_MAX 16384 /* bytes of a bearer-token file */

#define CONFIG_DEFAULT_RATE_HZ 100
#define CONFIG_DEFAULT_PERIOD_S 45
#define CONFIG_DEFAULT_UPLOAD_TIMEOUT_S 10
#define CONFIG_DEFAULT_DISCOVERY_INTERVAL_S 5
#define CONFIG_DEFAULT_SINK_DIR "/var/lib/conprof/profiles"
#define CONFIG_DEFAULT_SPOOL_DIR "/var/lib/conprof/spool"
#define CONFIG_DEFAULT_SPOOL_MAX_BYTES (64ull << 20)
#define CONFIG_MIN_SPOOL_MAX_BYTES (1ull << 20)
#define CONFIG_DEFAULT_STATUS_SOCKET "/run/conprof/agent.sock"
#define CONFIG_DEFAULT_KUBELET_URL "https://127.0.0.1:10250"
#define CONFIG_DEFAULT_KUBELET_TOKEN_FILE "/var/run/secrets/kubernetes.io/serviceaccount/token"
#define CONFIG_DEFAULT_CONTROL_STATE "/var/lib/conprof/control-state.json"
#define CONFIG_DEFAULT_KUBELET_CA_FILE "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

enum config_log_level {
    CONFIG_LOG_ERROR = 0,
    CONFIG_LOG_WARN = 1,
    CONFIG_LOG_INFO = 2, /* the default */
    CONFIG_LOG_DEBUG = 3,
};

struct agent_config {
    char *file; /* the config file that was read; NULL when none */
    int rate_hz;
    int period_s;
    int upload_timeout_s;
    int discovery_interval_s;
    struct {
        enum sink_kind type;     /* SINK_DIR or SINK_HTTP */
        char *dir;               /* SINK_DIR */
        char *url;               /* SINK_HTTP: http:// or https://; NULL when not set */
        char *bearer_token_file; /* NULL: no Authorization header */
        char *ca_file;           /* NULL: the system CA store */
        char *bearer_token; /* the file's contents, read by config_load(); NULL without a file */
        bool named;         /* set by the file, env or flags (not the default): with a console,
                               an unnamed sink means the console's own ingest */
    } sink;
    struct {
        char *dir;
        uint64_t max_bytes;
    } spool;
    json_t *selectors;    /* array of checked selector objects; [] when none */
    json_t *labels;       /* object of string values (user labels); {} when none */
    char *status_socket;  /* "" disables the status socket */
    char *metrics_listen; /* NULL: no metrics listener; else a checked "HOST:PORT" */
    bool metrics_allow_remote;
    struct {
        bool enabled;
        char *url;
        char *token_file;
        char *ca_file;
    } kubelet;
    struct {
        char *url;        /* ws:// or wss://; NULL: no console, the config alone decides */
        char *token_file; /* the agent token; required with url */
        char *ca_file;    /* NULL: the system CA store */
        char *state_file; /* sessions and leases (control_state.h) */
        char *token;      /* the token file's contents, read by config_load() */
        char *ingest_url; /* derived by config_load(): http(s)://HOST[:PORT] of url */
    } console;
    enum config_log_level log_level;
    char *node_name; /* NULL: the host name */
};

/* The environment variables the agent reads; NULL or "" means unset. */
struct config_env {
    const char *config;             /* CONPROF_CONFIG */
    const char *sink_url;           /* CONPROF_SINK_URL */
    const char *bearer_token_file;  /* CONPROF_BEARER_TOKEN_FILE */
    const char *node_name;          /* CONPROF_NODE_NAME */
    const char *log_level;          /* CONPROF_LOG_LEVEL */
    const char *console_url;        /* CONPROF_CONSOLE_URL */
    const char *console_token_file; /* CONPROF_CONSOLE_TOKEN_FILE */
};

/* The flags of `conprof-agent run`, each checked by config_args_parse() but merged only by
 * config_load() (so a reload applies them again over the re-read file). NULL / false: not given.
 * The strings point into argv. */
struct config_args {
    bool help;
    const char *config_file; /* --config */
    const char *rate;        /* --rate */
    const char *period;
    const char *upload_timeout;
    const char *discovery_interval;
    const char *sink_dir;
    const char *sink_url;
    const char *bearer_token_file;
    const char *spool_dir;
    const char *spool_max_bytes;
    const char *status_socket;
    const char *metrics_listen;
    bool metrics_allow_remote;
    const char *node_name;
    const char *log_level;
    const char *console_url;
    const char *console_token_file;
    const char *console_ca_file;
    const char *control_state;
    json_t *labels;    /* --label: object, NULL when none */
    json_t *selectors; /* --selector: array of objects, NULL when none */
};

void config_env_from_process(struct config_env *env);

/* Parses argv (argv[0] is the subcommand's name). --help sets args->help and stops. */
int config_args_parse(int argc, char **argv, struct config_args *args, struct cp_err *err);
void config_args_free(struct config_args *args);
/* The flags section of `conprof-agent run --help`. */
void config_usage(FILE *out);

/* Defaults < file < env < flags, then the cross-checks, then reads the bearer-token file.
 * *out is filled on success and left empty (nothing to free) on error. */
int config_load(const struct config_args *args, const struct config_env *env,
                struct agent_config *out, struct cp_err *err);

/* Defaults < the JSON text, then the cross-checks; no file or environment access. `source`
 * names the text in errors ("config <source>: ..."). *out is left empty on error. */
int config_parse_text(const char *text, size_t len, const char *source, struct agent_config *out,
                      struct cp_err *err);

/* Defaults < the file only: no environment, flags, cross-checks or secrets. For tools that need
 * one setting of the agent's file, such as `conprof-agent status` finding the socket. */
int config_load_file(const char *path, struct agent_config *out, struct cp_err *err);

void config_free(struct agent_config *c);

const char *config_log_level_name(enum config_log_level level);
/* Reads a secret (bearer token) file: at most CONFIG_TOKEN_MAX bytes, trailing blanks removed,
 * visible ASCII only (a token cannot smuggle a header line). Returns a malloc'd string or NULL. */
char *config_read_token_file(const char *path, struct cp_err *err);

#endif
