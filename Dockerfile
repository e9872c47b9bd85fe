# conprof-agent image: build on Debian bookworm, run with only the shared libraries it needs.
#   docker build -t conprof-agent .
# The agent needs hostPID and the capabilities SYS_PTRACE, SYS_ADMIN + SYS_CHROOT (setns) and
# DAC_READ_SEARCH;
# see deploy/kubernetes/daemonset.yaml.
FROM debian:bookworm AS build
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
        gcc make libc6-dev pkg-config libelf-dev zlib1g-dev libjansson-dev \
        libcurl4-openssl-dev libcap-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY sampler/ sampler/
COPY agent/ agent/
RUN make build/conprof-agent CFLAGS="-O2 -g0"

FROM debian:bookworm-slim
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
        libelf1 zlib1g libjansson4 libcurl4 libcap2 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --uid 10001 conprof
COPY --from=build /src/build/conprof-agent /usr/bin/conprof-agent
# Root inside the container, but with only the three capabilities the DaemonSet grants; the
# agent drops everything else at start and its workers keep CAP_SYS_PTRACE alone.
ENTRYPOINT ["/usr/bin/conprof-agent"]
CMD ["run", "--config", "/etc/conprof/agent.json"]
