#!/usr/bin/env bash
# Redis, two Switchboard nodes and nginx, all on loopback; Ctrl-C stops them all.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

"$repo/scripts/setup.sh"
command -v nginx >/dev/null || { echo "installing nginx"; apt-get install -y nginx >/dev/null; }
cargo build --release -p switchboard --manifest-path "$repo/Cargo.toml"

work="$(mktemp -d)"
mkdir -p "$work/tmp"
cp "$here/nginx.conf" "$work/nginx.conf"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

redis-server --bind 127.0.0.1 --port 6399 --save '' --appendonly no >"$work/redis.log" &
pids+=($!)
for port in 3001 3002; do
    "$repo/target/release/switchboard" serve --manifest "$here/switchboard.toml" --listen "127.0.0.1:$port" &
    pids+=($!)
done
nginx -p "$work" -c "$work/nginx.conf" &
pids+=($!)

echo "open http://127.0.0.1:8080/a/ and http://127.0.0.1:8080/b/ (one node each) or http://127.0.0.1:8080/"
wait
