# conprof build. `make` builds the agent and the console; `make demo` records the bundled demo; `make test` runs
# every test (unit, fuzz smoke runs, end-to-end); `make bench` prints the speed figures.
CC      ?= gcc
CLANG   ?= clang
BUILD   := build
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fno-strict-aliasing -Isampler -Iagent -Icontrol
LDLIBS  := -lelf -lz -ljansson -lcurl -lcap -lwebsockets -lsqlite3 -lzstd -lssl -lcrypto
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SAMPLER_SRCS := $(sort $(wildcard sampler/*.c))
AGENT_SRCS   := $(sort $(wildcard agent/*.c))
CONTROL_SRCS := $(sort $(wildcard control/*.c))
UNIT_SRCS    := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRCS    := $(sort $(wildcard tests/fuzz/fuzz_*.c))
BENCH_SRCS   := $(sort $(wildcard tests/bench/bench_*.c))

SAMPLER_OBJS := $(SAMPLER_SRCS:%.c=$(BUILD)/%.o)
AGENT_OBJS   := $(AGENT_SRCS:%.c=$(BUILD)/%.o)
LIB          := $(BUILD)/libconprof_sampler.a
AGENT        := $(BUILD)/conprof-agent
CONSOLE      := $(BUILD)/conprof-console
# The agent's modules (all of agent/ but main.c) and the control channel's (all of control/ but
# console_main.c) are libraries too, so both binaries, the tests and the benchmarks can link them.
AGENT_CORE_SRCS   := $(filter-out agent/main.c,$(AGENT_SRCS))
CONTROL_CORE_SRCS := $(filter-out control/console_main.c,$(CONTROL_SRCS))
CORE_OBJS    := $(AGENT_CORE_SRCS:%.c=$(BUILD)/%.o) $(CONTROL_CORE_SRCS:%.c=$(BUILD)/%.o)
CORE_LIB     := $(BUILD)/libconprof_core.a
UNIT_BINS    := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit/%)
FUZZ_BINS    := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
BENCH_BINS   := $(BENCH_SRCS:tests/bench/%.c=$(BUILD)/bench/%)

.PHONY: all deps demo test unit fuzz-smoke fuzz e2e bench offsets format clean
all: $(AGENT) $(CONSOLE)

deps:
	@deploy/install-deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(SAMPLER_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(CORE_LIB): $(CORE_OBJS)
	rm -f $@ && ar rcs $@ $^

$(AGENT): $(BUILD)/agent/main.o $(CORE_LIB) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(BUILD)/agent/main.o $(CORE_LIB) $(LIB) $(LDLIBS)

$(CONSOLE): $(BUILD)/control/console_main.o $(CORE_LIB) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(BUILD)/control/console_main.o $(CORE_LIB) $(LIB) $(LDLIBS)

# Unit tests: cmocka, linked against the sampler built with ASan/UBSan.
SAN_LIB  := $(BUILD)/libconprof_sampler_san.a
FUZZ_LIB := $(BUILD)/libconprof_sampler_fuzz.a
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Isampler -Iagent -Icontrol -fno-sanitize-recover=undefined

$(BUILD)/san/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) -MMD -MP -c $< -o $@

CORE_SRCS := $(SAMPLER_SRCS) $(AGENT_CORE_SRCS) $(CONTROL_CORE_SRCS)

$(SAN_LIB): $(CORE_SRCS:%.c=$(BUILD)/san/%.o)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/unit/%: tests/unit/%.c $(SAN_LIB) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) -Itests/unit -o $@ $< $(SAN_LIB) $(LDLIBS) -lcmocka

# Fuzz targets: libFuzzer + ASan/UBSan (clang).
$(BUILD)/fuzzobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@

$(FUZZ_LIB): $(CORE_SRCS:%.c=$(BUILD)/fuzzobj/%.o)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_LIB) $(LDLIBS)

$(BUILD)/bench/%: tests/bench/%.c $(LIB) $(CORE_LIB) $(wildcard tests/bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/bench -o $@ $< $(CORE_LIB) $(LIB) $(LDLIBS)

demo: deps $(AGENT)
	@demo/run-demo.sh

unit: $(UNIT_BINS)
fuzz-smoke: $(FUZZ_BINS)
e2e: $(AGENT) $(CONSOLE)

# Everything, then one closing line "N passed, N failed".
test: deps $(AGENT) $(CONSOLE) $(UNIT_BINS) $(FUZZ_BINS)
	@tests/run-all.sh

# Long fuzzing runs (FUZZ_SECONDS each, default 600).
fuzz: deps $(FUZZ_BINS)
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-600} tests/fuzz/run.sh

bench: deps $(AGENT) $(CONSOLE) $(BENCH_BINS)
	@tests/bench/run.sh

# Regenerate sampler/pyoffsets_generated.c from the installed CPython headers.
offsets:
	tools/gen_offsets/gen_offsets.sh > sampler/pyoffsets_generated.c.new && \
	    mv sampler/pyoffsets_generated.c.new sampler/pyoffsets_generated.c

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD)

# Header dependencies recorded by -MMD.
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
