#!/usr/bin/env bash
# Redis and two Switchboard nodes serving the auction plugin, on loopback.
# Prints a link per user; Ctrl-C stops everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$repo/examples/common.sh"

start_cluster 6398 "$here/switchboard.toml" 3101 3102

secret="auction-example-secret-of-at-least-32-bytes"
echo
echo "  Auction demo. Sam sells, Alice and Bob bid, each on the node of their link:"
port=3101
for user in sam alice bob; do
    echo "    $user: $(page_link "$port" "$user" "$secret")"
    port=$((port == 3101 ? 3102 : 3101))
done
echo "  Sam creates an auction; the others join it by its id. Ctrl-C stops the demo."
echo
wait
