#!/bin/sh
# Usage: scripts/test.sh
# The whole test suite, exactly what CI runs: format, lints, every Rust test, the wasm32
# build of the browser engine, and the browser tests in headless chromium.
set -eu
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup-system.sh
scripts/setup-rust.sh
scripts/setup-web.sh
scripts/fetch-model.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
cargo test --workspace --locked
step "browser build (wasm32, the CI profile)"
scripts/build-web.sh --dev
step "browser tests (headless chromium: CPU backend, and WebGPU on SwiftShader)"
if [ ! -f models/smollm2-135m-2layers.gguf ]; then
  # `cargo test` above built this binary (the CLI end-to-end tests run it); a separate
  # `cargo build` would compile every dependency again in the dev profile.
  "$CARGO_TARGET_DIR/debug/samd" shrink-model --layers 2 --out models/smollm2-135m-2layers.gguf
fi
node tests/browser/run.mjs
