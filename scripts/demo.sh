#!/bin/sh
# Usage: scripts/demo.sh [--dev] [--port N]
# Everything for the browser demo on a fresh Debian machine: system packages, Rust
# target, web tooling (wasm-bindgen-cli, binaryen), the default model, the wasm build (the optimised
# demo build; --dev for the quicker CI build), then serves the page and prints its URL.
set -eu
cd "$(dirname "$0")/.."
. scripts/env.sh
build=""
port=8080
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) build="--dev" ;;
    --port) port="$2"; shift ;;
    *) echo "usage: scripts/demo.sh [--dev] [--port N]" >&2; exit 2 ;;
  esac
  shift
done
scripts/setup-system.sh
scripts/setup-rust.sh
scripts/setup-web.sh
scripts/fetch-model.sh
# shellcheck disable=SC2086
scripts/build-web.sh $build
exec scripts/serve.sh --port "$port"
