#!/usr/bin/env bash
# Every check and test: formatting and lints for both workspaces, the host's
# unit and integration tests, and the end-to-end suite against the real binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*" >&2; }

./scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check
(cd plugins && cargo fmt --all --check)

step "cargo clippy"
cargo clippy --all-targets -- -D warnings
(cd plugins && cargo clippy --all-targets -- -D warnings)

step "cargo build"
cargo build

step "cargo test"
cargo test

step "end-to-end tests"
# A hung test fails after two minutes instead of holding up the run.
node --test --test-concurrency=2 --test-timeout=120000 tests/e2e/
