# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build test lint unit e2e demo release clean

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

# Real LocalStack Step Functions + the Livy-compatible server running real spark-submit.
e2e: deps
	$(CARGO) build -p livy-server
	tests/rig/with-localstack.sh $(CARGO) test --features failpoints --test e2e -- --test-threads 4 --show-output

test: deps lint unit e2e

demo: deps
	$(CARGO) build --bins --workspace
	tests/rig/with-localstack.sh tests/rig/demo.sh

release:
	$(CARGO) build --release --bin spark-activity-worker
	cd target/release && sha256sum spark-activity-worker > spark-activity-worker.sha256
	@cat target/release/spark-activity-worker.sha256

clean:
	$(CARGO) clean
	rm -rf .cache
