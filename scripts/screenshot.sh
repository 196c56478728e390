#!/usr/bin/env bash
# Makes docs/demo.png, the demo page README.md shows: the browser test drives
# examples/demo in headless Chromium on two nodes and saves Alice's page once
# everything it checks is there. Needs what ./scripts/test.sh builds (or
# SWITCHBOARD_BIN and SWITCHBOARD_WASM_DIR, as for the tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SWITCHBOARD_DEMO_SCREENSHOT="$PWD/docs/demo.png" node --test tests/e2e/browser.test.mjs
ls -l docs/demo.png
