#!/bin/sh
# Usage: scripts/build-web.sh [--dev]
# Builds crates/samd-web for wasm32 and writes the JS bindings to web/pkg/.
#   default: the demo build (profile wasm-release: thin LTO, then `wasm-opt -O` from npm
#            binaryen, since Debian's binaryen produces a broken module); about 9 min
#            cold on 2 cores (2026-12-07).
#   --dev:   CI's build (profile wasm-dev: no LTO, no wasm-opt); same code and behaviour.
# wasm-bindgen-cli must match the wasm-bindgen version in Cargo.lock exactly; setup-web.sh
# installs that one.
set -eu
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup-rust.sh
scripts/setup-web.sh

profile=wasm-release
[ "${1:-}" = "--dev" ] && profile=wasm-dev

echo "build-web: cargo build -p samd-web --target wasm32-unknown-unknown --profile $profile"
cargo build -p samd-web --target wasm32-unknown-unknown --profile "$profile" --locked
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/$profile/samd_web.wasm"

rm -rf web/pkg
"$SAMD_TOOLS/bin/wasm-bindgen" --target web --no-typescript --out-dir web/pkg "$wasm"
if [ "$profile" = wasm-release ]; then
  echo "build-web: wasm-opt -O (several minutes)"
  tests/node_modules/.bin/wasm-opt -O --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
    web/pkg/samd_web_bg.wasm -o web/pkg/samd_web_bg.opt.wasm
  mv web/pkg/samd_web_bg.opt.wasm web/pkg/samd_web_bg.wasm
fi
size=$(wc -c < web/pkg/samd_web_bg.wasm)
gz=$(gzip -9 -c web/pkg/samd_web_bg.wasm | wc -c)
echo "build-web: web/pkg/samd_web_bg.wasm: $((size / 1000)) kB, $((gz / 1000)) kB gzipped"
