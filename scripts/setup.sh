#!/usr/bin/env bash
# Installs what building and testing Switchboard needs, on a Debian machine
# with rustup, Node.js and Python. Idempotent: every step is skipped when
# already done.
#
#   - the wasm32-wasip2 Rust target (and rustfmt/clippy)
#   - our patches to dependencies (patches/ -> target/patched/, see patch-deps.sh)
#   - redis-server (the host's cluster tests run against a real one) and valkey-server
#   - Debian's chromium (the browser test drives the demo page in it, headless)
#   - the end-to-end suite's npm packages (tests/node_modules), from the lockfile,
#     and componentize-js (plugins/js/echo/node_modules)
#   - its Python packages (tests/clients/requirements.txt) and componentize-py
#     (plugins/python/requirements.txt) in target/tools/venv
#   - the plugins (plugins/ -> target/wasm32-wasip2/release/*.wasm), with the
#     JavaScript and Python ones as echo_js.wasm and echo_py.wasm
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
# npm ci in DIR unless its node_modules came from the same lockfile and still
# hold every PACKAGE: npm_ci DIR PACKAGE...
npm_ci() {
    local dir="$1"
    shift
    local stamp="$dir/node_modules/.switchboard-lock-hash" lock_hash package installed=true
    lock_hash="$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
        installed=false
    fi
    for package in "$@"; do
        [ -f "$dir/node_modules/$package/package.json" ] || installed=false
    done
    if [ "$installed" = false ]; then
        step "npm ci ($dir/)"
        (cd "$dir" && npm ci --no-audit --no-fund)
        echo "$lock_hash" >"$stamp"
    fi
}
npm_ci tests socket.io-client ws playwright-core
npm_ci plugins/js/echo @bytecodealliance/componentize-js

# --- Python packages of the test suite and of the Python plugin --------------
# python-socketio (a client beyond JavaScript), hadolint and componentize-py, in
# a venv of their own.
venv=target/tools/venv
requirements=(tests/clients/requirements.txt plugins/python/requirements.txt)
requirements_hash="$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$venv/.requirements-hash" ] || [ "$(cat "$venv/.requirements-hash")" != "$requirements_hash" ]; then
    step "pip install -r ${requirements[*]} (into $venv)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]/#/--requirement=}"
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

# Runs a build unless its inputs (files, or every file under folders) are
# those it last succeeded with: build_when_changed OUTPUT "INPUT..." COMMAND...
# The JavaScript and Python builds take a minute, and nothing like cargo's
# change tracking spares it.
build_when_changed() {
    local output="$1" inputs="$2" inputs_hash
    shift 2
    # shellcheck disable=SC2086 # the inputs are a list of paths without spaces
    inputs_hash="$(find $inputs -type f -not -path '*/node_modules/*' -not -path '*/__pycache__/*' -print0 |
        sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
    if [ -f "$output" ] && [ "$(cat "$output.inputs-hash" 2>/dev/null)" = "$inputs_hash" ]; then
        return
    fi
    step "$* (-> $output)"
    "$@"
    echo "$inputs_hash" >"$output.inputs-hash"
}
release=target/wasm32-wasip2/release
(
    cd plugins/js/echo
    build_when_changed "../../../$release/echo_js.wasm" ". ../../../wit/plugin.wit" npm run --silent build
)
build_when_changed "$release/echo_py.wasm" "plugins/python wit/plugin.wit" \
    "$venv/bin/componentize-py" --wit-path wit/plugin.wit --world plugin-core \
    componentize --python-path plugins/python/echo echo --output "$release/echo_py.wasm"

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
