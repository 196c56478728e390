# Sourced by the examples' run.sh: builds what they need and starts Redis and
# Switchboard nodes on loopback, all stopped when the script exits.
# Expects `repo` (the repository root) to be set.

"$repo/scripts/setup.sh"
cargo build --release -p switchboard --manifest-path "$repo/Cargo.toml"

work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# start_redis PORT
start_redis() {
    redis-server --bind 127.0.0.1 --port "$1" --save '' --appendonly no >"$work/redis-$1.log" &
    pids+=($!)
}

# start_node MANIFEST PORT: logs go to stderr.
start_node() {
    "$repo/target/release/switchboard" serve --manifest "$1" --listen "127.0.0.1:$2" &
    pids+=($!)
}

# wait_ready PORT...: until each node's /readyz answers 200.
wait_ready() {
    for port in "$@"; do
        until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done
    done
}
