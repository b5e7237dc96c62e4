# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build test lint unit component deploy e2e demo release release-check systemd fuzz-smoke deny clean dashboard-picture bench

all: build

deps:
	tests/rig/install.sh

build:
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --lib --bins

# The supervisor against in-process fakes of Step Functions, Livy and YARN on a paused clock.
component:
	$(CARGO) test --test component

# The systemd unit (verify, exposure score), shellcheck, the bootstrap action in a sandbox, cfn-lint.
deploy: deps
	$(CARGO) build --bin spark-activity-worker
	tests/deploy/run.sh target/debug/spark-activity-worker

# Real LocalStack Step Functions + the Livy-compatible server running real spark-submit, and a
# real MIT KDC on loopback for the Kerberos tests. Without backtraces, so that a failure's message
# and place stay at the end of the output, after every test's printed figures.
e2e: deps
	$(CARGO) build -p livy-server
	RUST_BACKTRACE=0 tests/rig/with-localstack.sh tests/rig/with-kdc.sh $(CARGO) test --features failpoints --test e2e -- --test-threads 4 --show-output

test: deps lint deny unit component fuzz-smoke deploy e2e release-check systemd

demo: deps
	$(CARGO) build --bins --workspace
	tests/rig/with-localstack.sh tests/rig/demo.sh

# What the bootstrap action downloads: upload target/dist/ to s3://BUCKET/spark-activity-worker/VERSION/.
# One binary per architecture, linked against glibc 2.26's symbols (Amazon Linux 2 and 2023), both
# built by one cargo invocation (one job graph: each target's long final compile overlaps the other's).
# Beside them, the spark-job-resource Lambda function (provided.al2023) as one zip per Lambda
# architecture (arm64, x86_64), each holding the executable `bootstrap`, and its template.
RELEASE_TARGETS := x86_64 aarch64
release:
	tests/rig/install-release-tools.sh
	PATH="$(CURDIR)/.cache/zig/bin:$$PATH" $(CARGO) zigbuild --release --bin spark-activity-worker \
	  --bin spark-job-resource $(foreach arch,$(RELEASE_TARGETS),--target $(arch)-unknown-linux-gnu.2.26)
	rm -rf target/dist && mkdir -p target/dist
	for arch in $(RELEASE_TARGETS); do \
	  cp target/$$arch-unknown-linux-gnu/release/spark-activity-worker target/dist/spark-activity-worker-$$arch; \
	  case $$arch in aarch64) lambda_arch=arm64 ;; *) lambda_arch=$$arch ;; esac; \
	  python3 tests/rig/lambda-zip.py target/$$arch-unknown-linux-gnu/release/spark-job-resource \
	    target/dist/spark-job-resource-$$lambda_arch.zip || exit 1; \
	done
	cp systemd/spark-activity-worker.service systemd/spark-activity-worker-systemd219.service \
	   bootstrap/install.sh bootstrap/spark-job-resource.yaml target/dist/
	cd target/dist && for f in *; do sha256sum "$$f" > "$$f.sha256"; done
	@cat target/dist/*.sha256

# The release's binaries: architecture, shared libraries, glibc symbol versions, --version (aarch64
# under qemu-aarch64-static), the Lambda zips' single executable `bootstrap`, checksums.
release-check: deps release
	tests/release/check.sh target/dist

# The release under real systemd: systemd 252 booted as PID 1 in a container (systemd-nspawn;
# needs root), installed by bootstrap/install.sh, against LocalStack and the Livy server, and with
# Kerberos against a real MIT KDC on loopback.
systemd: deps release
	tests/systemd/root.sh
	$(CARGO) build -p livy-server
	tests/rig/with-localstack.sh tests/rig/with-kdc.sh $(CARGO) test --features failpoints --test systemd -- --nocapture

# The fuzz targets of fuzz/ (nightly, libFuzzer, address sanitizer, debug assertions), each for
# FUZZ_SECONDS over the committed corpus and seeds; a crash, a failed check or a slow input fails.
# New inputs go to fuzz/target/smoke-corpus, never into the committed corpus.
FUZZ_TARGETS := task_input livy_reply yarn_reply quote
FUZZ_SECONDS ?= 20
FUZZ := PATH="$(CURDIR)/.cache/cargo-tools/bin:$$PATH" cargo +nightly fuzz
fuzz-smoke:
	tests/rig/install-cargo-tools.sh cargo-fuzz
	cp Cargo.lock fuzz/Cargo.lock
	cd fuzz && $(FUZZ) build -a
	for t in $(FUZZ_TARGETS); do \
	  rm -rf fuzz/target/smoke-corpus/$$t && mkdir -p fuzz/target/smoke-corpus/$$t && \
	  (cd fuzz && $(FUZZ) run -a $$t target/smoke-corpus/$$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10) || exit 1; \
	done

# Licenses (permissive only), bans (one version of each TLS crate) and sources (crates.io only) of
# the whole workspace, by deny.toml.
deny:
	tests/rig/install-cargo-tools.sh cargo-deny
	.cache/cargo-tools/bin/cargo-deny --workspace check licenses bans sources

# The worker (release build) with 200, 2,000 and 10,000 tasks in flight against the Livy server
# and Step Functions: LocalStack up to 2,000 tasks, a stand-in in the benchmark's process above.
# The table goes to target/bench/scale.md. Not part of `make test`.
BENCH_ROWS ?= 200 2000 10000
BENCH_WINDOW ?= 60
BENCH_LOCALSTACK_UP_TO ?= 2000
bench: deps
	$(CARGO) build --release -p livy-server
	$(CARGO) bench --bench scale --no-run
	tests/rig/with-localstack.sh $(CARGO) bench --bench scale -- --window $(BENCH_WINDOW) \
	  --localstack-up-to $(BENCH_LOCALSTACK_UP_TO) $(BENCH_ROWS)

clean:
	$(CARGO) clean
	rm -rf .cache fuzz/target

# docs/dashboard.png: monitoring/grafana-dashboard.json drawn from a real Prometheus that scraped
# the worker through 3 minutes of executions (LocalStack, the Livy server). Not part of `make test`.
dashboard-picture: deps
	$(CARGO) build --bins --workspace
	tests/rig/with-localstack.sh tests/rig/dashboard-picture.sh
