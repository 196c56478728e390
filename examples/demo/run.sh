#!/usr/bin/env bash
# Redis and two Switchboard nodes serving the demo page, on loopback. Prints a
# link for Alice (node A) and one for Bob (node B); Ctrl-C stops everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$repo/examples/common.sh"

start_cluster 6396 "$here/switchboard.toml" 3301 3302

secret="demo-example-secret-of-at-least-32-bytes"
echo
echo "  Demo: chat, auction and notifications, Alice on node A and Bob on node B:"
echo "    alice: $(page_link 3301 alice "$secret")"
echo "    bob:   $(page_link 3302 bob "$secret")"
echo "  Ctrl-C stops the demo."
echo
wait
