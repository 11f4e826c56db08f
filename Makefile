# Thin wrapper over CMake. Every target installs missing Debian packages
# first (scripts/install-deps), then configures and builds RelWithDebInfo.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)

.PHONY: all deps configure build demo test test-ha package bench profile property soak test-sanitize test-asan test-tsan test-netns fuzz fuzz-build install clean

all: build

deps:
	@bash scripts/install-deps

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	@bash deploy/demo/run-demo.sh $(BUILD_DIR)/bin $(BUILD_DIR)/demo

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 300

# The PostgreSQL store: the storage contract over SQLite and PostgreSQL, the
# real broker on PostgreSQL killed with SIGKILL mid-stream, and the
# integration and adversarial suites again with every broker on PostgreSQL
# (LIAISON_TEST_STORE=postgresql; tests/CMakeLists.txt lists what is left
# out and why). The tests start (and stop) their own PostgreSQL cluster;
# `make test` runs them too.
test-ha: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -L postgres -j $(JOBS) --timeout 300

# Medians of 5 repetitions; the machine is shared, so compare runs side by side.
bench:
	@scripts/install-deps --bench
	@$(MAKE) --no-print-directory build
	@mkdir -p bench/results
	@$(BUILD_DIR)/bin/policy_bench --benchmark_repetitions=5 \
	  --benchmark_report_aggregates_only=true \
	  --benchmark_out=bench/results/policy.json --benchmark_out_format=json
	@$(BUILD_DIR)/bin/liaison_bench --out bench/results

# Where the broker's time goes: perf samples the broker during liaison's
# saturation runs of the side-by-side comparison; prints the top entries.
profile:
	@scripts/install-deps --bench
	@$(MAKE) --no-print-directory build
	@$(BUILD_DIR)/bin/liaison_bench --only compare --repetitions 1 --out $(BUILD_DIR)/profile \
	  --perf $(BUILD_DIR)/profile/broker.perf.data
	@perf report -i $(BUILD_DIR)/profile/broker.perf.data --children --sort sym --stdio -g none 2>/dev/null \
	  | grep -v '^#' | grep '%' | head -40

# The policy property test at scale: a million random messages under 1,000
# random policy sets, checked against the reference evaluator.
property: build
	@LIAISON_PROPERTY_SETS=1000 LIAISON_PROPERTY_MESSAGES=1000 \
	  $(BUILD_DIR)/bin/unit_tests --gtest_filter='PolicyPropertyTest.*'

# The crash test at scale: 100,000 messages, the broker killed 10 times.
soak: build
	@LIAISON_CRASH_MESSAGES=100000 LIAISON_CRASH_KILLS=10 \
	  $(BUILD_DIR)/bin/integration_tests --gtest_filter='CrashTest.*'

# The whole suite under AddressSanitizer and UndefinedBehaviorSanitizer, and
# under ThreadSanitizer (all but two load tests, below), each in its own
# build folder; every process a test starts (brokers, gateways) is built
# with the same sanitizer. Reports of every process go to
# build-{asan,tsan}/*-reports/, and any report fails the target.
test-sanitize: test-asan test-tsan

test-asan: deps
	@cmake -S . -B $(BUILD_DIR)-asan -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
	@cmake --build $(BUILD_DIR)-asan -j $(JOBS)
	@rm -rf $(BUILD_DIR)-asan/asan-reports && mkdir -p $(BUILD_DIR)-asan/asan-reports
	@cd $(BUILD_DIR)-asan && \
	  ASAN_OPTIONS="detect_leaks=1 log_path=$(CURDIR)/$(BUILD_DIR)-asan/asan-reports/asan" \
	  UBSAN_OPTIONS="print_stacktrace=1 log_path=$(CURDIR)/$(BUILD_DIR)-asan/asan-reports/ubsan" \
	  ctest --output-on-failure -j $(JOBS) --timeout 600; rc=$$?; \
	  if ls asan-reports/* >/dev/null 2>&1; then \
	    cat asan-reports/*; echo "AddressSanitizer/UBSan reported errors"; exit 1; fi; \
	  if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	  echo "AddressSanitizer and UBSan: no errors reported"

# A race makes the process exit (halt_on_error), so the test fails; the
# reports of processes a test started are in build-tsan/tsan-reports/.
# The whole suite but the load tests whose point is volume and timing (the
# kill loops with thousands of messages, on SQLite and on PostgreSQL; the
# ledger/store kill loop, 25 SIGKILLs in a 40 s budget; a flood measured
# against a latency bound): under TSan's 5-15x slowdown they
# would measure the sanitizer. Their threads are the broker's and the
# agent's, which every other test runs.
TSAN_EXCLUDE := CrashTest|KilledInsideCommitsTheLedgerAndStoreAgree|AFloodFromOneAgency|postgres_broker_crash|integration_on_postgres_flood
test-tsan: deps
	@cmake -S . -B $(BUILD_DIR)-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
	  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" >/dev/null
	@cmake --build $(BUILD_DIR)-tsan -j $(JOBS)
	@rm -rf $(BUILD_DIR)-tsan/tsan-reports && mkdir -p $(BUILD_DIR)-tsan/tsan-reports
	@cd $(BUILD_DIR)-tsan && \
	  TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$(CURDIR)/tests/tsan.supp log_path=$(CURDIR)/$(BUILD_DIR)-tsan/tsan-reports/race" \
	  ctest --output-on-failure -j $(JOBS) --timeout 600 -E '$(TSAN_EXCLUDE)'; rc=$$?; \
	  if ls tsan-reports/race* >/dev/null 2>&1; then \
	    cat tsan-reports/race*; echo "ThreadSanitizer reported races"; exit 1; fi; \
	  if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	  echo "ThreadSanitizer: no races reported"

# libFuzzer targets (clang, ASan + UBSan) in build-fuzz/, each run for
# FUZZ_SECONDS from its seed corpus in tests/fuzz/corpus/<target>/ (new
# inputs go to build-fuzz/corpus/, crashes to build-fuzz/findings/, each
# run's whole output to build-fuzz/findings/<target>.log). A crash, leak,
# timeout or out-of-memory fails the target: the fuzzer's own exit status
# decides, not the filter that shows its figures.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := fuzz_inbound fuzz_policy_load fuzz_json_envelope fuzz_gateway_request
fuzz-build:
	@bash scripts/install-deps --fuzz
	@cmake -S . -B $(BUILD_DIR)-fuzz -DLIAISON_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
	  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" >/dev/null
	@cmake --build $(BUILD_DIR)-fuzz -j $(JOBS)
fuzz: fuzz-build
	@mkdir -p $(BUILD_DIR)-fuzz/findings
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD_DIR)-fuzz/corpus/$$t; \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  $(BUILD_DIR)-fuzz/bin/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(BUILD_DIR)-fuzz/findings/$$t- \
	    $(BUILD_DIR)-fuzz/corpus/$$t tests/fuzz/corpus/$${t#fuzz_} \
	    >$(BUILD_DIR)-fuzz/findings/$$t.log 2>&1; rc=$$?; \
	  grep -E "stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|Test unit written" \
	    $(BUILD_DIR)-fuzz/findings/$$t.log; \
	  if [ $$rc -ne 0 ]; then \
	    echo "$$t failed (exit $$rc); its output: $(BUILD_DIR)-fuzz/findings/$$t.log"; exit 1; fi; \
	done

# Broker and agencies on separate network namespaces (needs root; skips
# with a message otherwise).
test-netns: build
	@bash deploy/netns/run.sh $(BUILD_DIR)/bin

# Installs into PREFIX (default /usr/local); DESTDIR for staging.
PREFIX ?= /usr/local
install: build
	@cmake --install $(BUILD_DIR) --prefix $(PREFIX)

# A Debian package of the build (CPack DEB) in $(BUILD_DIR)/.
package: build
	@cd $(BUILD_DIR) && cpack -G DEB

clean:
	rm -rf $(BUILD_DIR)
