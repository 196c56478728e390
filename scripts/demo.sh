#!/usr/bin/env bash
# Builds everything and runs the chat example on http://127.0.0.1:3000.
# Extra arguments go to `switchboard serve`, e.g. --listen 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/setup.sh
printf '==> %s\n' "cargo build --release -p switchboard" >&2
cargo build --release -p switchboard

address=127.0.0.1:3000
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --listen) address="${args[i + 1]:-$address}" ;;
        --listen=*) address="${args[i]#--listen=}" ;;
    esac
done

echo
echo "  Chat demo: open http://${address} in two browser windows (Ctrl-C stops the server)."
echo
exec target/release/switchboard serve --manifest examples/chat/switchboard.toml "$@"
