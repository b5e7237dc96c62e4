# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build test lint unit component deploy e2e demo release clean

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

# Real LocalStack Step Functions + the Livy-compatible server running real spark-submit.
e2e: deps
	$(CARGO) build -p livy-server
	tests/rig/with-localstack.sh $(CARGO) test --features failpoints --test e2e -- --test-threads 4 --show-output

test: deps lint unit component deploy e2e

demo: deps
	$(CARGO) build --bins --workspace
	tests/rig/with-localstack.sh tests/rig/demo.sh

# What the bootstrap action downloads: upload target/dist/* to s3://BUCKET/spark-activity-worker/VERSION/.
release:
	$(CARGO) build --release --bin spark-activity-worker
	rm -rf target/dist && mkdir -p target/dist
	cp target/release/spark-activity-worker systemd/spark-activity-worker.service \
	   systemd/spark-activity-worker-systemd219.service bootstrap/install.sh target/dist/
	cd target/dist && sha256sum spark-activity-worker > spark-activity-worker.sha256
	@target/dist/spark-activity-worker --version
	@cat target/dist/spark-activity-worker.sha256

clean:
	$(CARGO) clean
	rm -rf .cache
