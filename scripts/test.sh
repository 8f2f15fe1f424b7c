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
# The CUDA backend is compiled (for sm_90a only, to stay fast) whenever a CUDA toolkit is
# installed, so that CI compiles every kernel; its tests skip without a GPU and run on the
# GPU machine through tests/gpu/run.sh. MLXCEL_TEST_CUDA=0 builds without it.
CUDA_ARGS=()
NVCC=$(command -v nvcc || true)
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ "${MLXCEL_TEST_CUDA:-1}" = 1 ] && [ -n "$NVCC" ]; then
  echo "test.sh: compiling the CUDA backend for sm_90a with $NVCC (its tests skip without a GPU)"
  CUDA_ARGS=(-DMLXCEL_CUDA=ON -DMLXCEL_CUDA_ARCHS=90a -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_CUDA_COMPILER="$NVCC")
else
  echo "test.sh: no CUDA toolkit (or MLXCEL_TEST_CUDA=0): building without the CUDA backend"
  CUDA_ARGS=(-DMLXCEL_CUDA=OFF)
fi
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLXCEL_BUILD_TESTS=ON "${CUDA_ARGS[@]}"
cmake --build "$BUILD" -j "$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" --timeout 900
echo "all tests passed"
