#!/bin/sh
# Usage: scripts/test.sh
# The whole test suite, exactly what CI runs: format, lints, every test, and the wasm32 build.
set -eu
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup-system.sh
scripts/setup-rust.sh
scripts/fetch-model.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
cargo test --workspace --locked
step "wasm32 builds"
cargo build -p samd-draft --target wasm32-unknown-unknown --locked
cargo check -p samd-model --target wasm32-unknown-unknown --locked
