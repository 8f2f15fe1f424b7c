#!/usr/bin/env bash
# Sets up (Debian packages), builds mlxcel and runs it.
# The bundled demo model (models/mlxcel-demo, trained by tools/demo_model/) answers
# arithmetic, capitals, and a few other checkable tasks.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
BUILD=${MLXCEL_BUILD_DIR:-build}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/mlxcel-ccache}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLXCEL_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target mlxcel
set -x
"$BUILD/apps/mlxcel" run models/mlxcel-demo -p "What is 123 + 456?" --no-thinking
"$BUILD/apps/mlxcel" run models/mlxcel-demo -p "What is the capital of France?" --no-thinking
