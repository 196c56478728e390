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

# start_cluster REDIS_PORT MANIFEST NODE_PORT...: Redis, and a node on each
# port running MANIFEST; returns once every node is ready.
start_cluster() {
    local redis_port="$1" manifest="$2"
    shift 2
    start_redis "$redis_port"
    for port in "$@"; do
        start_node "$manifest" "$port"
    done
    wait_ready "$@"
}

# page_link PORT USER SECRET: a node's page signed in as USER (a token signed
# with SECRET, in the fragment, which the browser never sends to the server).
page_link() {
    echo "http://127.0.0.1:$1/#user=$2&token=$(node "$repo/scripts/mint-token.mjs" "$2" "$3")"
}
