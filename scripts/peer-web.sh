#!/bin/sh
# Usage: scripts/peer-web.sh [peer-web.mjs options: --prompt TEXT --max N --threads N --reps N]
#
# samd against transformers.js in the browser, side by side on this machine's CPU (both
# in wasm, in one headless Chromium): see tests/browser/peer-web.mjs. A benchmark, not a
# test, so CI never runs it. It installs what it needs, once:
# - a Python virtual environment under ~/.cache/samd/peer-venv with pinned gguf, numpy,
#   onnx, onnxruntime and tokenizers, which scripts/make-onnx-peer.py uses to write the
#   GGUF's weights as transformers.js models (float32, 8-bit and 4-bit) under
#   models/peer-onnx/ (git-ignored; about 1 GB, a minute);
# - transformers.js under tests/peer/node_modules (npm ci --ignore-scripts: only its
#   browser build runs, and its native add-ons' install scripts would go to GitHub);
# - Chromium and the test tooling (scripts/setup-web.sh), the native CLI (for the
#   prompt's ids) and the browser build, when missing.
# On Debian's own Python, the virtual environment needs the python3-venv package.
set -eu
cd "$(dirname "$0")/.."
. scripts/env.sh
venv="$HOME/.cache/samd/peer-venv"
onnx=models/peer-onnx/SmolLM2-135M-Instruct
scripts/fetch-model.sh
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q gguf==0.19.0 numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0 tokenizers==0.23.3
if [ ! -f "$onnx/onnx/model_quantized.onnx" ]; then
  echo "peer-web: writing the ONNX models (about a minute)"
  "$venv/bin/python" scripts/make-onnx-peer.py models/SmolLM2-135M-Instruct.Q4_1.gguf "$onnx"
fi
scripts/setup-web.sh
if [ ! -d tests/peer/node_modules/@huggingface/transformers ] \
   || [ tests/peer/package-lock.json -nt tests/peer/node_modules ]; then
  (cd tests/peer && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
samd="$CARGO_TARGET_DIR/release/samd"
[ -x "$samd" ] || cargo build --release -p samd-cli --locked
[ -f web/pkg/samd_web_bg.wasm ] || scripts/build-web.sh
exec node tests/browser/peer-web.mjs --samd "$samd" "$@"
