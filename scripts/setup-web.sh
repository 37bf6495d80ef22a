#!/bin/sh
# Usage: scripts/setup-web.sh
# Installs what the browser build and tests need, each only when missing:
# - Debian's chromium (the tests drive it through playwright-core; never a browser download);
# - the node packages in tests/package.json (playwright-core, binaryen's wasm-opt);
# - wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock, under
#   ~/.cache/samd/tools (the CLI and the crate must agree on the version).
set -eu
cd "$(dirname "$0")/.."
. scripts/env.sh

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=""
for p in chromium nodejs npm; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# A machine may bring its own node and npm; only chromium must come from Debian.
command -v node >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ nodejs//; s/ npm//')
if [ -n "$missing" ]; then
  echo "setup-web: installing Debian packages:$missing"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

if [ ! -d tests/node_modules/playwright-core ] || [ ! -d tests/node_modules/binaryen ] \
   || [ tests/package-lock.json -nt tests/node_modules ]; then
  echo "setup-web: npm ci (tests/)"
  (cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi

version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || { echo "setup-web: no wasm-bindgen in Cargo.lock" >&2; exit 1; }
bindgen="$SAMD_TOOLS/bin/wasm-bindgen"
if [ ! -x "$bindgen" ] || [ "$("$bindgen" --version)" != "wasm-bindgen $version" ]; then
  echo "setup-web: cargo install wasm-bindgen-cli $version (several minutes, once)"
  # Not --locked: one locked dependency version is missing from the registry mirror.
  cargo install wasm-bindgen-cli --version "$version" --root "$SAMD_TOOLS" --force
fi
