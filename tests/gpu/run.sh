#!/usr/bin/env bash
# Runs on the GPU machine (the device `run` tool), from the repository root:
#   bash tests/gpu/pack_headers.sh                 # here first: .devcarry/headers.tgz
#   run(carry=[".devcarry/headers.tgz"], command="bash tests/gpu/run.sh")
# 1. Configures and builds the whole project with -DMLXCEL_CUDA=ON for sm_90a (-j16, about
#    75 s): the GPU machine lacks the ICU, PCRE2 and libcurl headers, so the carried ones are
#    unpacked into .devcarry/include and pkg-config points at its runtime libraries (ICU's
#    symbol suffix rewritten to its version).
# 2. Runs the GPU suites: test_cuda_kernels (every kernel against the CPU), test_cuda_ops
#    (the op API on CUDA tensors), test_cuda_models (every family fixture on CUDA, the
#    engine, GGUF), then `mlxcel inspect --device cuda` and a short `mlxcel bench`.
#    BENCH=0 skips the bench; TESTS=0 skips the three suites (build only, for profiling
#    calls); CTEST=1 also runs the whole CPU ctest suite of that build; AB=... runs an
#    A/B of one knob (below); LAB=1 builds and runs bench/qgemv_lab.cu. CMAKE_EXTRA adds
#    configure arguments (e.g. "-DCMAKE_CUDA_FLAGS=-lineinfo" for ncu's source view).
# Without headers.tgz (or if that configure fails) it falls back to tests/gpu/standalone
# (base, tensor, both backends, test_cuda_kernels; needs only fmt, GoogleTest and CUDA).
# The logs come back as one file, $OUT/gpu_logs.tgz (the device tool returns only a few
# files per call); $OUT defaults to /tmp/mlxcel-gpu-out.
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FINAL=${OUT:-/tmp/mlxcel-gpu-out}
OUT=$(mktemp -d)
JOBS=${JOBS:-16}
mkdir -p "$FINAL"
trap 'tar -czf "$FINAL/gpu_logs.tgz" -C "$OUT" .' EXIT
cd "$ROOT" || exit 1
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
L=/usr/lib/x86_64-linux-gnu
D=$ROOT/.devcarry
{
  echo "== env"; date -u; git log -1 --format='commit %H %s' 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  "$NVCC" --version | tail -1; cmake --version | head -1; g++ --version | head -1
} > "$OUT/env.txt" 2>&1

rc=0
full_ok=0
if [ -f "$D/headers.tgz" ]; then
  mkdir -p "$D/include" "$D/lib" "$D/pkgconfig" && tar -xzf "$D/headers.tgz" -C "$D/include"
  ICU=$(ls $L/libicuuc.so.[0-9]* 2>/dev/null | sort | tail -1)
  V=$(basename "$ICU" | sed 's/libicuuc.so.\([0-9]*\).*/\1/')
  sed -i "s/#define U_ICU_VERSION_SUFFIX _[0-9]*/#define U_ICU_VERSION_SUFFIX _$V/" "$D/include/unicode/uvernum.h"
  ln -sf "$ICU" "$D/lib/libicuuc.so"
  ln -sf "$(ls $L/libpcre2-8.so.0* | head -1)" "$D/lib/libpcre2-8.so"
  for p in "icu-uc icuuc" "libpcre2-8 pcre2-8"; do
    set -- $p
    printf 'Name: %s\nDescription: carried\nVersion: 99\nLibs: -L%s/lib -l%s\nCflags: -I%s/include\n' "$1" "$D" "$2" "$D" > "$D/pkgconfig/$1.pc"
  done
  export PKG_CONFIG_PATH=$D/pkgconfig
  EX=()
  if [ ! -e /usr/include/curl/curl.h ] && [ ! -e /usr/include/x86_64-linux-gnu/curl/curl.h ]; then
    ln -sf "$(ls $L/libcurl.so.4* | head -1)" "$D/lib/libcurl.so"
    EX=(-DCURL_INCLUDE_DIR="$D/include" -DCURL_LIBRARY="$D/lib/libcurl.so")
  fi
  B=$ROOT/build-gpu
  echo "== configure + build (ICU $V)"
  if cmake -S . -B "$B" -G Ninja -DMLXCEL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_CUDA_COMPILER="$NVCC" \
       -DMLXCEL_BUILD_BENCH=ON "${EX[@]}" ${CMAKE_EXTRA:-} > "$OUT/configure.log" 2>&1; then
    T="mlxcel test_cuda_kernels test_cuda_ops test_cuda_models cuda_bench"
    [ "${CTEST:-0}" = 1 ] && T=all
    timeout 420 ninja -C "$B" -j"$JOBS" -k 0 $T > "$OUT/build.log" 2>&1 && full_ok=1
    [ $full_ok = 1 ] || { echo "build FAILED"; grep -E "error|FAILED" "$OUT/build.log" | head -20; rc=1; }
  else
    echo "configure FAILED (see configure.log)"; tail -15 "$OUT/configure.log"
  fi
fi
if [ $full_ok = 1 ]; then
  SUITES="test_cuda_kernels test_cuda_ops test_cuda_models"
  [ "${TESTS:-1}" = 0 ] && SUITES=""
  for t in $SUITES; do
    f=$(find "$B" -name "$t" -type f | head -1)
    if [ -z "$f" ]; then echo "$t missing"; rc=1; continue; fi
    timeout 300 "$f" --gtest_color=no > "$OUT/$t.log" 2>&1 || rc=1
    echo "== $t"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]" "$OUT/$t.log" | head -20
  done
  X=$B/apps/mlxcel
  "$X" inspect -m models/mlxcel-demo --max-tokens 4096 --device cuda > "$OUT/inspect.txt" 2>&1 || rc=1
  tail -2 "$OUT/inspect.txt"
  if [ "${BENCH:-1}" = 1 ]; then
    for f in bf16 q4; do
      timeout 120 "$X" bench --device cuda --synthetic llama-3.1-8b --format $f -p 512,2048 -n 128 \
        --json "$OUT/bench.jsonl" --md "$OUT/bench.md" 2>&1 | tee -a "$OUT/bench.log" | grep -E "^(pp|tg|device)"
    done
  fi
  # AB="VAR|values|formats[|bench args]": bench/cuda_knob_ab.sh after the suites, e.g.
  # AB="MLXCEL_CUDA_PDL|0 1|bf16 q4 q8" (the output goes to ab.txt in the logs).
  if [ -n "${AB:-}" ]; then
    IFS='|' read -r ab_var ab_vals ab_fmts ab_args <<< "$AB"
    MLXCEL="$X" bash bench/cuda_knob_ab.sh "$ab_var" "$ab_vals" "$ab_fmts" ${ab_args:+"$ab_args"} > "$OUT/ab.txt" 2>&1
    echo "== A/B $ab_var"; grep -E "\] tg|seqs" "$OUT/ab.txt" | head -40
  fi
  # LAB=1: also build and run bench/qgemv_lab.cu (the GEMV forms lab; cuda_gemv.md run 10).
  if [ "${LAB:-0}" = 1 ]; then
    if timeout 180 ninja -C "$B" qgemv_lab > "$OUT/lab_build.log" 2>&1; then
      timeout 120 "$(find "$B" -name qgemv_lab -type f | head -1)" 5 > "$OUT/lab.txt" 2>&1 || rc=1
      echo "== lab"; tail -14 "$OUT/lab.txt"
    else
      echo "lab build FAILED"; tail -5 "$OUT/lab_build.log"; rc=1
    fi
  fi
  if [ "${CTEST:-0}" = 1 ]; then
    (cd "$B" && timeout 600 ctest -j8 --timeout 300 > "$OUT/ctest.log" 2>&1) || rc=1
    echo "== ctest"; tail -12 "$OUT/ctest.log"
  fi
  exit $rc
fi

# ---- fallback: the standalone CUDA build
B1=$ROOT/build-gpu-standalone
echo "== standalone build"
if cmake -S tests/gpu/standalone -B "$B1" -G Ninja -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_CUDA_COMPILER="$NVCC" \
     -DMLXCEL_BUILD_BENCH=ON > "$OUT/gpu_build.log" 2>&1 &&
   ninja -C "$B1" -j"$JOBS" -k 0 test_cuda_kernels cuda_bench >> "$OUT/gpu_build.log" 2>&1; then
  "$B1/gpu/test_cuda_kernels" --gtest_color=no > "$OUT/gpu_tests.log" 2>&1 || rc=1
  grep -E '^\[  (PASSED|FAILED) |FAILED  \]' "$OUT/gpu_tests.log" | head -20
  "$B1/gpu/cuda_bench" > "$OUT/cuda_bench.md" 2>&1
else
  echo "standalone build FAILED"; tail -30 "$OUT/gpu_build.log"; rc=1
fi
exit $rc
