#!/usr/bin/env bash
# Sets up (Debian packages, npm test data), builds everything the tests need and
# runs every test. Fails loudly on the first failure. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
BUILD=${MLXCEL_BUILD_DIR:-build}
JOBS=${MLXCEL_JOBS:-$(nproc)}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/mlxcel-ccache}
[ -x scripts/fetch_testdata.sh ] && ./scripts/fetch_testdata.sh
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLXCEL_BUILD_TESTS=ON
cmake --build "$BUILD" -j "$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" --timeout 900
echo "all tests passed"
