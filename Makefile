# pika-remedy. `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
CARGO ?= cargo
# Debian packages the tests and the demo run for real (see README "Tests").
DEB_PACKAGES := redis-server redis-sentinel redis-tools etcd-server etcd-client prometheus prometheus-alertmanager protobuf-compiler openssl
DEB_BINARIES := redis-server redis-sentinel redis-cli etcd etcdctl prometheus promtool prometheus-alertmanager amtool protoc openssl

.PHONY: deps test lint unit rules-check demo bench build clean

# Install missing Debian packages (apt-get update once, only if something is missing).
deps:
	@missing=""; for b in $(DEB_BINARIES); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "missing:$$missing -> installing Debian packages"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEB_PACKAGES) >/dev/null; \
	fi; \
	for b in $(DEB_BINARIES); do command -v $$b >/dev/null 2>&1 || { echo "still missing: $$b"; exit 1; }; done

build: deps
	$(CARGO) build --release

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

rules-check: deps
	@if [ -d rules ] && ls rules/*.yml >/dev/null 2>&1; then promtool check rules $$(ls rules/*.yml | grep -v '_test.yml$$'); fi
	@if ls rules/*_test.yml >/dev/null 2>&1; then cd rules && promtool test rules *_test.yml; fi
	@if [ -f alerts/alertmanager.yml ]; then amtool check-config alerts/alertmanager.yml; fi

test: deps lint rules-check
	$(CARGO) test -- --test-threads=$${TEST_THREADS:-2}

demo: deps
	$(CARGO) build --release
	./target/release/pika-remedy demo

# Failover benchmark vs Redis Sentinel (release build; BENCH_RUNS=N, default 5). Writes
# docs/bench.md and target/bench/failover.json.
bench: deps
	$(CARGO) bench --bench failover

clean:
	$(CARGO) clean
