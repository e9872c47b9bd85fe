# conprof images: build on Debian bookworm, run with only the shared libraries each binary needs.
#   docker build -t conprof-agent .                      (the default, last stage)
#   docker build --target console -t conprof-console .
# The agent needs hostPID and the capabilities SYS_PTRACE, SYS_ADMIN + SYS_CHROOT (setns) and
# DAC_READ_SEARCH;
# see deploy/kubernetes/daemonset.yaml.
FROM debian:bookworm AS build
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
        gcc make libc6-dev pkg-config libelf-dev zlib1g-dev libjansson-dev \
        libcurl4-openssl-dev libcap-dev libwebsockets-dev libsqlite3-dev libzstd-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY sampler/ sampler/
COPY agent/ agent/
COPY control/ control/
RUN make build/conprof-agent build/conprof-console CFLAGS="-O2 -g0"

# conprof-console: the REST API, ingest and the agents' websocket on one port; state in /data.
FROM debian:bookworm-slim AS console
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
        libwebsockets17 libsqlite3-0 libzstd1 libjansson4 zlib1g libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --uid 10002 conprof-console \
    && mkdir /data && chown conprof-console /data
COPY --from=build /src/build/conprof-console /usr/bin/conprof-console
USER conprof-console
VOLUME /data
ENTRYPOINT ["/usr/bin/conprof-console"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data", "/data"]

FROM debian:bookworm-slim AS agent
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
        libelf1 zlib1g libjansson4 libcurl4 libcap2 libwebsockets17 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --uid 10001 conprof
COPY --from=build /src/build/conprof-agent /usr/bin/conprof-agent
# Root inside the container, but with only the three capabilities the DaemonSet grants; the
# agent drops everything else at start and its workers keep CAP_SYS_PTRACE alone.
ENTRYPOINT ["/usr/bin/conprof-agent"]
CMD ["run", "--config", "/etc/conprof/agent.json"]
