#!/bin/sh
# Usage:
#   scripts/gpu-bench.sh prepare             (here: stage what the GPU machine needs)
#   scripts/gpu-bench.sh stage PART...       (there: add model parts, assemble the model)
#   scripts/gpu-bench.sh run [SAMD] [MODEL]  (there: samd bench on wgpu, every method side by side,
#                                             then the HF transformers peer on the same prompts)
#   scripts/gpu-bench.sh kernels [SAMD] [MODEL]  (there: every kernel's device time in a step,
#                                             at a short and a long context, and in a prefill)
#
# Measures samd on a remote NVIDIA GPU (H100/H200) through wgpu on native Vulkan: step
# and kernel times, every decoding method side by side, and the HF transformers peer. Only the working tree and carried files reach
# that machine, and it has no network, no Rust toolchain and maybe no Vulkan loader, so:
#
# - `prepare` (run here, once) builds nothing; it expects `cargo build --release -p samd-cli`
#   to have run, and puts under the git-ignored .gpu/ and .gl/:
#     .gpu/samd.gz        the release binary, stripped and gzipped (about 16 MiB; 60 MiB
#                         unpacked: wgpu, naga, cubecl);
#     .gpu/model/part-NN  the model split into 45 MiB parts (45, 45, 3.8): the 94 MiB model
#                         is over the device tool's 64 MiB carry limit, so it travels in
#                         several calls;
#     .gl/*.deb           the Vulkan loader (libvulkan1), as the device README describes;
#     .gpu/wheels/        gguf, accelerate and psutil wheels: HF transformers there loads
#                         a GGUF only with them, and that machine has no registry.
# - `stage` (there) unpacks .gpu/samd.gz (when carried) to /root/m/samd, copies the given parts to
#   /root/m/parts/ and, once the parts together have the expected sha256
#   ($SAMD_MODEL_SHA256, default: the SmolLM2-135M Q4_1 file), writes /root/m/model.gguf.
#   Files survive between calls only while the machine stays warm (about 30 s idle), so
#   issue the calls back to back, each under 64 MiB (the working tree counts too). Files
#   written under /root/m stay; carried paths do not (each call has only its own carry),
#   so what `run` reads (.gl, the wheels, the prompts) travels with the call that runs:
#     run(carry=[".gpu/samd.gz", ".gpu/model/part-00"], "scripts/gpu-bench.sh stage .gpu/model/part-00")
#     run(carry=[".gl", ".gpu/model/part-01", ".gpu/model/part-02"],
#         "scripts/gpu-bench.sh stage .gpu/model/part-01 .gpu/model/part-02 && scripts/gpu-bench.sh kernels")
#     run(carry=[".gl", ".gpu/wheels", ".gpu/specbench-dev.jsonl"],
#         "SAMD_KERNELS=0 scripts/gpu-bench.sh run")
#   The kernels' stages and the bench with its peer each take most of a call's 600 s
#   limit, so they go in calls of their own (`run` alone runs both, for longer limits).
# - `run` (there) unpacks .gl/*.deb, points the loader at NVIDIA's ICD when the system has
#   none registered, then runs `kernels` (below), `samd bench --device wgpu` over the dev
#   prompts (every method in one process, so speedups are ratios from one run), and then
#   scripts/peer.py: HF transformers' greedy AR and prompt lookup on the same prompt
#   ids, budget and GPU, with our figures beside them. Results go to $OUT (else /tmp):
#   gpu-kernels.md and gpu-report.md (every stage's tables), gpu.log (every stage's
#   stderr), gpu-bench.json, gpu-traces.jsonl and hf-peer.json.
# - `kernels` (there) runs `samd check-kernels` (the kernels against burn's ops, and tree
#   steps against plain decoding bit for bit, as compiled by this GPU's driver) and `samd
#   check-reference` (the model's logits against the numpy reference on this GPU), then
#   `samd profile --kernel-times`: a 1,000-token prefill and verify
#   steps of 1 to 64 nodes at contexts 256 and 1,000, each with its host time and every
#   kernel's device time; a step of every padded size (1 to 128 nodes), whose times
#   it prints as a `samd bench --replay --step-costs` curve; then the context-256 steps
#   again with `--no-graphs` (launch by launch, not replayed from a captured graph), for
#   what the replays save, with
#   `--f32-weights` (matrices widened to f32 at load, not read from the file's blocks;
#   its prefill takes burn's matmul, where the blocks' takes the skinny kernels, so the
#   two prefill lines compare them), and as sampling steps (temperature 0.8, top-p 0.9:
#   the draw and nucleus kernels).
#
# SAMD_PER_CATEGORY (2), SAMD_MAX_TOKENS (128) and SAMD_TREE (adaptive; full verifies
# every drafted node) set the bench's options; SAMD_PROFILE_TIMEOUT (90),
# SAMD_BENCH_TIMEOUT (240) and SAMD_PEER_TIMEOUT (150) each stage's limit in seconds;
# SAMD_KERNELS=0 skips the kernel timings (when `kernels` already ran).
#
# SAMD defaults to /root/m/samd (see stage) and MODEL to /root/m/model.gguf.
set -eu
cd "$(dirname "$0")/.."

DEFAULT_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_DIR=/root/m

usage() {
  sed -n "2,8p" "$0" >&2
  exit 2
}

prepare() {
  target="${CARGO_TARGET_DIR:-target}"
  bin="$target/release/samd"
  [ -x "$bin" ] || { echo "no $bin: run cargo build --release -p samd-cli" >&2; exit 1; }
  model=models/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$model" ] || { echo "no $model: run scripts/fetch-model.sh" >&2; exit 1; }
  mkdir -p .git/info
  for d in /.gpu/ /.gl/; do
    grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
  done
  rm -rf .gpu && mkdir -p .gpu/model
  cp "$bin" .gpu/samd
  if command -v strip >/dev/null 2>&1; then strip .gpu/samd; fi
  gzip -6 .gpu/samd
  split -b 45M -d "$model" .gpu/model/part-
  cp ../shared/data/specbench-dev.jsonl .gpu/
  # Pure-Python wheels but psutil, whose abi3 wheel fits any CPython 3.
  python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu/wheels \
    gguf==0.19.0 accelerate==1.15.0 psutil==7.2.2
  if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086 # $o is several options on purpose
    apt-get $o update >/dev/null
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  fi
  ls -l .gpu/samd.gz .gpu/model .gpu/wheels .gl
}

stage() {
  [ $# -gt 0 ] || usage
  mkdir -p "$MODEL_DIR/parts"
  if [ -f .gpu/samd.gz ]; then
    gzip -dc .gpu/samd.gz >"$MODEL_DIR/samd" && chmod +x "$MODEL_DIR/samd"
  fi
  for part in "$@"; do cp "$part" "$MODEL_DIR/parts/$(basename "$part")"; done
  want="${SAMD_MODEL_SHA256:-$DEFAULT_SHA256}"
  cat "$MODEL_DIR"/parts/part-* >"$MODEL_DIR/model.gguf.partial"
  got=$(sha256sum "$MODEL_DIR/model.gguf.partial" | cut -d' ' -f1)
  if [ "$got" = "$want" ]; then
    mv "$MODEL_DIR/model.gguf.partial" "$MODEL_DIR/model.gguf"
    rm -rf "$MODEL_DIR/parts"
    echo "model ready: $MODEL_DIR/model.gguf"
  else
    echo "have parts: $(ls "$MODEL_DIR/parts" | tr '\n' ' ')(sha256 not complete yet)"
  fi
}

setup_vulkan() {
  # The loader alone is not enough there: NVIDIA's ICD (libGLX_nvidia) needs GLVND too.
  ls .gl/*.deb >/dev/null 2>&1 || { echo "no .gl/*.deb carried (see prepare)" >&2; exit 1; }
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then
    export VK_DRIVER_FILES="$icd"
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
}

run() {
  samd="${1:-$MODEL_DIR/samd}"
  model="${2:-$MODEL_DIR/model.gguf}"
  [ -x "$samd" ] || { echo "no samd binary at $samd (carry it; see prepare)" >&2; exit 1; }
  [ -f "$model" ] || { echo "no model at $model (see stage)" >&2; exit 1; }
  if [ "${SAMD_KERNELS:-1}" = 1 ]; then
    kernels "$samd" "$model"
  else
    out="${OUT:-/tmp}"
    log="$out/gpu.log"
    setup_vulkan >>"$log" 2>&1
  fi
  report="$out/gpu-report.md"
  prompts="${SAMD_PROMPTS:-.gpu/specbench-dev.jsonl}"
  tokens="${SAMD_MAX_TOKENS:-128}"
  # One process for every method: the speedups are ratios from one run on one device.
  stage_run "${SAMD_BENCH_TIMEOUT:-240}" bench \
    "$samd" bench --device wgpu --model "$model" --prompts "$prompts" \
    --per-category "${SAMD_PER_CATEGORY:-2}" --max-tokens "$tokens" \
    --tree "${SAMD_TREE:-adaptive}" --json "$out/gpu-bench.json" --save-traces "$out/gpu-traces.jsonl"
  [ -f "$out/gpu-traces.jsonl" ] || { echo "no traces, so no peer run" | tee -a "$report"; return; }
  peer_deps
  export PYTHONPATH="$MODEL_DIR/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  stage_run "${SAMD_PEER_TIMEOUT:-150}" peer \
    python3 scripts/peer.py --peer hf --model "$model" --traces "$out/gpu-traces.jsonl" \
    --bench-json "$out/gpu-bench.json" --max-tokens "$tokens" --json "$out/hf-peer.json"
}

# Issue 3's figures, each kernel's device time beside them: a 1,000-token prefill, and
# verify steps by tree size at a short and a long context, into gpu-kernels.md.
kernels() {
  samd="${1:-$MODEL_DIR/samd}"
  model="${2:-$MODEL_DIR/model.gguf}"
  out="${OUT:-/tmp}"
  mkdir -p "$out"
  log="$out/gpu.log"
  report="$out/gpu-kernels.md"
  setup_vulkan 2>&1 | tee -a "$report"
  # First, whether this GPU's compiled kernels keep tree steps bit for bit plain
  # decoding's (and agree with burn's ops): speculative decoding's exact output rests on it.
  stage_run 60 check-kernels "$samd" check-kernels
  # And the model's logits and greedy reply on this GPU against the numpy reference.
  stage_run 60 check-reference "$samd" check-reference --device wgpu --model "$model"
  stage_run "${SAMD_PROFILE_TIMEOUT:-90}" kernels-256 "$samd" profile --device wgpu \
    --model "$model" --kernel-times --prefill 1000 --context 256 --sizes 1,2,16,64
  # Every padded step size's time: the curve `samd bench --replay --step-costs` takes
  # (its last line), so that drafters and the tree budget can be tuned to this GPU later.
  stage_run 60 step-costs "$samd" profile --device wgpu --model "$model" --context 256 \
    --sizes 1,2,4,8,16,32,64,128
  stage_run 60 kernels-1000 "$samd" profile --device wgpu --model "$model" --kernel-times \
    --context 1000 --sizes 1,64 --reps 5
  stage_run 60 steps-no-graphs "$samd" profile --device wgpu --model "$model" --no-graphs \
    --context 256 --sizes 1,2,16,64
  stage_run 60 kernels-f32-weights "$samd" profile --device wgpu --model "$model" \
    --kernel-times --f32-weights --prefill 1000 --context 256 --sizes 1,2,16,64
  stage_run 60 steps-sampling "$samd" profile --device wgpu --model "$model" \
    --temperature 0.8 --top-p 0.9 --context 256 --sizes 1,16,64
}

# stage_run SECONDS NAME COMMAND...: runs COMMAND under a time limit, its stdout to the
# report and its stderr to the log, and says how it ended.
stage_run() {
  limit="$1"
  name="$2"
  shift 2
  echo "== $name: $*" >>"$log"
  started=$(date +%s)
  rc=0
  timeout "$limit" "$@" >"$out/.stage.md" 2>>"$log" || rc=$?
  cat "$out/.stage.md" >>"$report"
  rm -f "$out/.stage.md"
  echo "== $name: exit $rc after $(($(date +%s) - started)) s (limit $limit s)" | tee -a "$log" "$report"
}

# What HF needs to load a GGUF and the GPU machine may lack, from the carried wheels.
peer_deps() {
  for module in gguf accelerate psutil; do
    python3 -c "import $module" 2>/dev/null ||
      python3 -m pip install -q --no-deps --no-index --find-links .gpu/wheels \
        --target "$MODEL_DIR/py" "$module"
  done
}

[ $# -gt 0 ] || usage
cmd="$1"
shift
case "$cmd" in
  prepare) prepare ;;
  stage) stage "$@" ;;
  run) run "$@" ;;
  kernels) kernels "$@" ;;
  *) usage ;;
esac
