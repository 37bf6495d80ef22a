# Sourced by the other scripts: shared environment.
# The target directory lives outside the clone, so repeated CI runs build incrementally.
: "${CARGO_TARGET_DIR:=$HOME/.cache/samd/target}"
export CARGO_TARGET_DIR
# Mesa's lavapipe prints warnings without a runtime dir.
: "${XDG_RUNTIME_DIR:=/tmp}"
export XDG_RUNTIME_DIR
# Tools the project installs itself (wasm-bindgen-cli), outside the clone.
: "${SAMD_TOOLS:=$HOME/.cache/samd/tools}"
export SAMD_TOOLS
