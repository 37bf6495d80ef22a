#!/bin/sh
# Usage: scripts/serve.sh [--port N] [--host H]
# Serves the browser demo (web/ at /, models/ at /models/) and prints its URL.
# Build the wasm first with scripts/build-web.sh.
set -eu
cd "$(dirname "$0")/.."
exec node scripts/serve.mjs "$@"
