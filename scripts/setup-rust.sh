#!/bin/sh
# Usage: scripts/setup-rust.sh
# Installs the Rust pieces the build needs: the wasm32 target, rustfmt and clippy.
set -eu
if ! command -v rustup >/dev/null 2>&1; then
  echo "error: rustup not found; install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "setup: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
