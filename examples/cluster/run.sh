#!/usr/bin/env bash
# Redis, two Switchboard nodes and nginx, all on loopback; Ctrl-C stops them all.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if ! command -v nginx >/dev/null; then
    echo "==> apt-get install nginx" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx
fi
source "$repo/examples/common.sh"

mkdir -p "$work/tmp"
cp "$here/nginx.conf" "$work/nginx.conf"
start_redis 6399
start_node "$here/switchboard.toml" 3001
start_node "$here/switchboard.toml" 3002
nginx -p "$work" -c "$work/nginx.conf" &
pids+=($!)

echo "open http://127.0.0.1:8080/a/ and http://127.0.0.1:8080/b/ (one node each) or http://127.0.0.1:8080/"
wait
