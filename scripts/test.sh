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
(cd tests/load/socketioxide-baseline && cargo fmt --check)
(cd tests/clients/rust && cargo fmt --check)

step "cargo clippy"
cargo clippy --all-targets -- -D warnings
(cd plugins && cargo clippy --all-targets -- -D warnings)
# The SDK's `testing` module runs natively, in plugin authors' `cargo test`.
(cd plugins && cargo clippy -p switchboard-sdk --target "$(rustc -vV | sed -n 's/^host: //p')" --all-targets -- -D warnings)

step "cargo build"
cargo build

step "cargo test"
cargo test

step "deployment files"
# The systemd unit, as systemd would load it, with this build as its binary.
if command -v systemd-analyze >/dev/null 2>&1; then
    unit_dir="$(mktemp -d)"
    sed "s|/usr/local/bin/switchboard|$PWD/target/debug/switchboard|" \
        examples/deploy/switchboard.service >"$unit_dir/switchboard.service"
    # It only warns of an unknown or misspelt setting: any output fails.
    complaints="$(systemd-analyze verify "$unit_dir/switchboard.service" 2>&1)" || true
    rm -rf "$unit_dir"
    if [ -n "$complaints" ]; then
        echo "$complaints" >&2
        exit 1
    fi
else
    echo "systemd-analyze is not installed: the systemd unit is not checked" >&2
fi
# The Dockerfile, by hadolint (from PyPI, installed by setup.sh; this machine
# runs no Docker daemon to build the image).
target/tools/venv/bin/hadolint examples/deploy/Dockerfile

step "Socket.IO clients beyond JavaScript"
# rust_socketio's round trip, built before the suite runs it (a cold build takes minutes).
cargo build --manifest-path tests/clients/rust/Cargo.toml --target-dir target/clients-rust

step "compile the JavaScript and Python plugins into the code cache"
# They carry SpiderMonkey and CPython: this debug build takes 30 to 45 s of
# both cores to compile them. Done now, in the code cache the suite's hosts
# share, it does not starve the test files running beside languages.test.mjs.
target/debug/switchboard check tests/e2e/languages.toml

step "end-to-end tests"
# A hung test fails after ten minutes instead of holding up the run. The
# limit bounds each test file as a whole too, whatever its tests' own: it is
# scaffold.test.mjs's, whose cold builds took more than two minutes on a
# busy two-core machine (and a file killed at two minutes reports nothing).
node --test --test-concurrency=2 --test-timeout=600000 tests/e2e/

step "release build, as cargo install does it"
cargo install --locked --path host --root target/install
size="$(stat -c %s target/install/bin/switchboard)"
if [ "$size" -gt 40000000 ]; then
    echo "the release binary is $size bytes; it must stay within 40 MB" >&2
    exit 1
fi

step "regression guard"
# Ratios against plain socketioxide in the same run; they fail only on a gross regression.
cargo bench -p switchboard --bench dispatch -- --quick
SWITCHBOARD_BIN=target/install/bin/switchboard \
    node tests/load/acks.mjs --seconds 3 --servers switchboard,socketioxide --min-ratio 0.2
