#!/usr/bin/env bash
# Runs on the GPU machine (the device `run` tool), from the repository root:
#   bash tests/gpu/run.sh
# 1. builds the standalone CUDA target set (tests/gpu/standalone: base, tensor, the CPU
#    and CUDA backends, test_cuda_kernels, cuda_bench) with -DCMAKE_CUDA_ARCHITECTURES=90a
#    and runs the GPU suite and the benchmark;
# 2. then configures the whole project with -DMLXCEL_CUDA=ON, builds it (-j16) and runs the
#    normal ctest suite (skipped, with the reason logged, if the machine lacks a dependency).
# Logs go to $OUT (default /tmp/mlxcel-gpu-out). A PCRE2 header may be carried in
# .devcarry/include (git-ignored), since the GPU machine has the PCRE2 runtime only.
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/mlxcel-gpu-out}
JOBS=${JOBS:-16}
FULL_TIMEOUT=${FULL_TIMEOUT:-300}
mkdir -p "$OUT"
cd "$ROOT" || exit 1
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)

{
  echo "== env"; date -u; git log -1 --format='commit %H %s' 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | head -3
  "$NVCC" --version | tail -1; cmake --version | head -1; g++ --version | head -1
  echo "pkg-config: $(command -v pkg-config || echo missing)"
  for h in pcre2.h unicode/uchar.h curl/curl.h fmt/format.h gtest/gtest.h nlohmann/json.hpp CLI/CLI.hpp; do
    [ -e /usr/include/$h ] && echo "have /usr/include/$h" || echo "MISSING /usr/include/$h"
  done
  ls /usr/lib/x86_64-linux-gnu/ | grep -E '^lib(pcre2-8|icuuc|curl)' | head
} > "$OUT/env.txt" 2>&1

# ---- 1. standalone CUDA build, GPU suite, benchmark
B1=$ROOT/build-gpu-standalone
rc_gpu=1
if cmake -S tests/gpu/standalone -B "$B1" -G Ninja -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_CUDA_COMPILER="$NVCC" \
     -DMLXCEL_BUILD_BENCH=ON > "$OUT/gpu_build.log" 2>&1 &&
   { T="test_cuda_kernels cuda_bench"; ninja -C "$B1" -t targets all | grep -q '^test_cuda_ops:' && T="$T test_cuda_ops";
     T="$T $(ninja -C "$B1" -t targets all | grep -oE '^test_ops_[a-z_]+' | sort -u | tr '\n' ' ')";
     ninja -C "$B1" -j"$JOBS" -k 0 $T >> "$OUT/gpu_build.log" 2>&1;
     [ -x "$B1/gpu/test_cuda_kernels" ]; }; then
  "$B1/gpu/test_cuda_kernels" --gtest_color=no > "$OUT/gpu_tests.log" 2>&1
  rc_gpu=$?
  for t in "$B1"/tests_ops/test_ops_*; do  # the CPU op tests, built with the CUDA dispatch
    [ -x "$t" ] && { "$t" --gtest_color=no --gtest_brief=1 >> "$OUT/ops_cpu_tests.log" 2>&1 || rc_gpu=1; }
  done
  grep -hE '^\[  (PASSED|FAILED) ' "$OUT/ops_cpu_tests.log" 2>/dev/null
  if [ -x "$B1/gpu/test_cuda_ops" ]; then
    "$B1/gpu/test_cuda_ops" --gtest_color=no >> "$OUT/gpu_tests.log" 2>&1 || rc_gpu=1
  else
    echo "test_cuda_ops did not build (see gpu_build.log)" >> "$OUT/gpu_tests.log"
  fi
  "$B1/gpu/cuda_bench" > "$OUT/cuda_bench.md" 2>&1
  echo "cuda_bench rc=$?" >> "$OUT/cuda_bench.md"
else
  echo "standalone build FAILED"; tail -40 "$OUT/gpu_build.log"
fi
echo "== GPU suite (rc=$rc_gpu)"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |tests? ran|FAILED TEST|Failure|error' "$OUT/gpu_tests.log" 2>/dev/null | head -40
echo "== bench"; cat "$OUT/cuda_bench.md" 2>/dev/null

# ---- 2. the whole project with CUDA, normal ctest suite (SKIP_FULL=1 skips it)
[ "${SKIP_FULL:-0}" = 1 ] && exit $rc_gpu
B2=$ROOT/build-gpu
EXTRA=()
if [ -f .devcarry/include/pcre2.h ] && [ ! -e /usr/include/pcre2.h ]; then
  # pkg-config data for the carried header and the machine's runtime library.
  mkdir -p .devcarry/lib .devcarry/pkgconfig
  lib=$(ls /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0* 2>/dev/null | head -1)
  [ -n "$lib" ] && ln -sf "$lib" .devcarry/lib/libpcre2-8.so
  printf 'prefix=%s\nincludedir=${prefix}/include\nlibdir=${prefix}/lib\nName: libpcre2-8\nDescription: carried\nVersion: 10.42\nLibs: -L${libdir} -lpcre2-8\nCflags: -I${includedir}\n' \
    "$ROOT/.devcarry" > .devcarry/pkgconfig/libpcre2-8.pc
  export PKG_CONFIG_PATH=$ROOT/.devcarry/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  EXTRA+=("-DCMAKE_CXX_FLAGS=-I$ROOT/.devcarry/include")
fi
if timeout "$FULL_TIMEOUT" cmake -S . -B "$B2" -G Ninja -DMLXCEL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
     -DCMAKE_CUDA_COMPILER="$NVCC" "${EXTRA[@]}" > "$OUT/full_build.log" 2>&1 &&
   timeout "$FULL_TIMEOUT" ninja -C "$B2" -j"$JOBS" -k 0 >> "$OUT/full_build.log" 2>&1; then
  (cd "$B2" && timeout 240 ctest --output-on-failure -j8 --timeout 120 > "$OUT/ctest.log" 2>&1)
  echo "== full ctest (rc=$?)"; tail -25 "$OUT/ctest.log"
else
  echo "== full build FAILED or timed out (see full_build.log):"
  grep -E 'Error|error:|FAILED|Could not|not found' "$OUT/full_build.log" | head -15
  # Whatever did build: run the tests that exist.
  if [ -f "$B2/CTestTestfile.cmake" ]; then
    (cd "$B2" && timeout 120 ctest -j8 --timeout 60 > "$OUT/ctest.log" 2>&1); echo "== partial ctest"; tail -15 "$OUT/ctest.log"
  fi
fi
exit $rc_gpu
