#!/usr/bin/env bash
# Sets up (Debian packages), builds mlxcel and runs it.
# NOTE: the bundled chat model (issue 5) does not exist yet; until it lands this runs
# `mlxcel generate` on a tiny reference checkpoint from tests/fixtures and prints the
# generated token ids.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
BUILD=${MLXCEL_BUILD_DIR:-build}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/mlxcel-ccache}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLXCEL_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target mlxcel
set -x
"$BUILD/apps/mlxcel" generate -m tests/fixtures/qwen3 \
  --prompt-ids 42,143,117,460,52,264,503,64,227,90,97,193,286,331,73,54,338,172,306 -n 16 --verbose
