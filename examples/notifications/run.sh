#!/usr/bin/env bash
# Redis and two Switchboard nodes serving the notifications plugin, on
# loopback, then swipe.mjs: Alice on one node, Bob on the other, a match.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$repo/examples/common.sh"

start_redis 6397
start_node "$here/switchboard.toml" 3201 2>"$work/node-3201.log"
start_node "$here/switchboard.toml" 3202 2>"$work/node-3202.log"
wait_ready 3201 3202

node "$here/swipe.mjs" http://127.0.0.1:3201 http://127.0.0.1:3202
