#!/usr/bin/env bash
# llama.cpp and mlxcel side by side on the same GGUF files, on this machine (issue 9):
#
#   bash bench/gguf_side_by_side.sh [passes]        # default 3 passes
#
# What it does:
# 1. llama.cpp: `llama-bench` built from the node-llama-cpp bundle's source
#    (.testdata/llama.cpp, from scripts/fetch_testdata.sh) with CMake into $LLAMA_BUILD
#    (default /tmp/mlxcel-llama-build; reused when its llama-bench exists; never
#    committed). llama.cpp's own default flags: native CPU code (GGML_NATIVE).
# 2. mlxcel: `mlxcel` and `gguf_bench` from a Release bench build in $BUILD (default
#    build-bench).
# 3. Weights: random checkpoints with the shapes of Qwen3-0.6B and Llama-3.2-1B
#    (`gguf_bench synth`), written as GGUF by `mlxcel convert --to gguf --quant ...`
#    into $WORK (default /tmp/mlxcel-side). $FILES picks them (default
#    "qwen3-0.6b:q4_0 qwen3-0.6b:q8_0 llama-3.2-1b:q4_0"; f16, q4_1, q5_0 and q5_1 work
#    too, and llama.cpp's own types, e.g. q4_k_m, are made from the F16 file by its
#    llama-quantize).
# 4. Each pass runs, per file and back to back: the read-bandwidth probe (2 threads),
#    `llama-bench -m F -p 512 -n 128 -t 2 -r $REPS`, then `gguf_bench model F 512 128 f16`
#    (pp512 on an empty cache, tg128 from an empty cache, f16 KV like llama.cpp). With
#    MLX=1, also the same checkpoint as MLX q4|q8 g64 (`mlxcel convert -q`, bf16 scales;
#    q4 g64: 4.5 bits a weight, as Q4_0; q8 g64: 8.5, as Q8_0), by the same `gguf_bench
#    model`, against the same pass's llama.cpp Q4_0 / Q8_0 (MLXCEL_CPU_Q4_X picks the
#    decode form, backends/cpu/isa.h).
# 5. Prints the raw log ($WORK/side.log) and a markdown table: ratios, the weight bytes
#    read per second while generating (file size x tok/s) over the probe, and medians.
#    This VM's bandwidth moves from minute to minute: compare within a pass, and use
#    several passes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PASSES=${1:-3}
REPS=${REPS:-2}
BUILD=${BUILD:-$ROOT/build-bench}
LLAMA_BUILD=${LLAMA_BUILD:-/tmp/mlxcel-llama-build}
WORK=${WORK:-/tmp/mlxcel-side}
FILES=${FILES:-"qwen3-0.6b:q4_0 qwen3-0.6b:q8_0 llama-3.2-1b:q4_0"}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$WORK"

if [ ! -x "$LLAMA_BUILD/bin/llama-bench" ]; then
  [ -d "$ROOT/.testdata/llama.cpp" ] || bash "$ROOT/scripts/fetch_testdata.sh"
  echo "building llama.cpp's llama-bench into $LLAMA_BUILD (about 15 minutes on 2 cores)"
  cmake -S "$ROOT/.testdata/llama.cpp" -B "$LLAMA_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF > "$WORK/llama-cmake.log"
  ninja -C "$LLAMA_BUILD" -j"$JOBS" llama-bench > "$WORK/llama-build.log"
fi
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLXCEL_BUILD_BENCH=ON -DMLXCEL_BUILD_TESTS=OFF \
  -DMLXCEL_CUDA=OFF > "$WORK/mlxcel-cmake.log"
ninja -C "$BUILD" -j"$JOBS" mlxcel gguf_bench > "$WORK/mlxcel-build.log"
GB="$BUILD/bench/gguf_bench"
MX="$BUILD/apps/mlxcel"
LB="$LLAMA_BUILD/bin/llama-bench"

for spec in $FILES; do
  shape=${spec%%:*} quant=${spec##*:}
  [ -f "$WORK/$shape/config.json" ] || "$GB" synth "$WORK/$shape" "$shape" > /dev/null
  f="$WORK/$shape-$quant.gguf"
  case "$quant" in
    q4_0 | q4_1 | q5_0 | q5_1 | q8_0 | f16) [ -f "$f" ] || "$MX" convert -m "$WORK/$shape" -o "$f" --to gguf --quant "$quant" > /dev/null ;;
    *)  # a llama.cpp type (q4_k_m, q6_k, ...): llama-quantize from the F16 file
      f16="$WORK/$shape-f16.gguf"
      [ -f "$f16" ] || "$MX" convert -m "$WORK/$shape" -o "$f16" --to gguf --quant f16 > /dev/null
      [ -x "$LLAMA_BUILD/bin/llama-quantize" ] || ninja -C "$LLAMA_BUILD" -j"$JOBS" llama-quantize >> "$WORK/llama-build.log"
      [ -f "$f" ] || "$LLAMA_BUILD/bin/llama-quantize" "$f16" "$f" "${quant^^}" > "$WORK/quantize-$shape-$quant.log" 2>&1
      ;;
  esac
done

LOG="$WORK/side.log"
: > "$LOG"
for p in $(seq "$PASSES"); do
  for spec in $FILES; do
    shape=${spec%%:*} quant=${spec##*:}
    f="$WORK/$shape-$quant.gguf"
    bw=$("$GB" bandwidth 2 | sed -n 's/.*: \([0-9.]*\) GB\/s.*/\1/p')
    lines=$("$LB" -m "$f" -p 512 -n 128 -t 2 -r "$REPS" 2>/dev/null | grep -E "pp512|tg128" || true)
    lpp=$(echo "$lines" | grep pp512 | awk -F'|' '{print $(NF-1)}' | awk '{print $1}')
    ltg=$(echo "$lines" | grep tg128 | awk -F'|' '{print $(NF-1)}' | awk '{print $1}')
    m=$("$GB" model "$f" 512 128 f16 | grep '^pp512')
    mpp=$(echo "$m" | sed -n 's/^pp512 \([0-9.]*\) tok\/s.*/\1/p')
    mtg=$(echo "$m" | sed -n 's/.*  tg128 \([0-9.]*\) tok\/s.*/\1/p')
    echo "pass=$p file=$shape-$quant bytes=$(stat -c %s "$f") bw=$bw llama_pp=$lpp llama_tg=$ltg mlxcel_pp=$mpp mlxcel_tg=$mtg" |
      tee -a "$LOG"
    if [ "${MLX:-0}" = 1 ] && { [ "$quant" = q4_0 ] || [ "$quant" = q8_0 ]; }; then
      mf=q${quant:1:1}  # q4 | q8: MLX g64 at the GGUF file's bits per weight
      d="$WORK/$shape-mlx-${mf}g64"
      [ -f "$d/config.json" ] ||
        "$MX" convert -m "$WORK/$shape" -o "$d" -q --q-bits "${quant:1:1}" --q-group-size 64 --scale-dtype bf16 > /dev/null
      m=$("$GB" model "$d" 512 128 f16 | grep '^pp512')
      xpp=$(echo "$m" | sed -n 's/^pp512 \([0-9.]*\) tok\/s.*/\1/p')
      xtg=$(echo "$m" | sed -n 's/.*  tg128 \([0-9.]*\) tok\/s.*/\1/p')
      echo "pass=$p file=$shape-mlx-${mf}g64 bytes=$(du -cb "$d"/*.safetensors | tail -1 | cut -f1) bw=$bw llama_pp=$lpp llama_tg=$ltg mlxcel_pp=$xpp mlxcel_tg=$xtg" |
        tee -a "$LOG"
    fi
  done
done

/usr/bin/python3 - "$LOG" <<'EOF'
import statistics, sys
rows = []
for line in open(sys.argv[1]):
    d = dict(kv.split("=", 1) for kv in line.split())
    try:
        r = {k: float(d[k]) for k in ("bytes", "bw", "llama_pp", "llama_tg", "mlxcel_pp", "mlxcel_tg")}
    except (KeyError, ValueError):
        continue
    r["pass"], r["file"] = d["pass"], d["file"]
    rows.append(r)
print("| file | pass | read BW (GB/s) | llama.cpp pp512 | mlxcel pp512 | ratio | llama.cpp tg128 | mlxcel tg128 | ratio | mlxcel GB/s generating (share of BW) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
by = {}
for r in rows:
    pp, tg = r["mlxcel_pp"] / r["llama_pp"], r["mlxcel_tg"] / r["llama_tg"]
    gbs = r["bytes"] / 1e9 * r["mlxcel_tg"]
    share = gbs / r["bw"]
    by.setdefault(r["file"], []).append((pp, tg, share))
    print(f"| {r['file']} | {r['pass']} | {r['bw']:.1f} | {r['llama_pp']:.1f} | {r['mlxcel_pp']:.1f} | {pp:.2f}x "
          f"| {r['llama_tg']:.2f} | {r['mlxcel_tg']:.1f} | {tg:.2f}x | {gbs:.1f} ({share:.2f}) |")
print()
print("| file | passes | median pp512 ratio | median tg128 ratio (min-max) | median share of BW |")
print("| --- | ---: | ---: | ---: | ---: |")
for f, v in by.items():
    med = [statistics.median(x[i] for x in v) for i in range(3)]
    print(f"| {f} | {len(v)} | {med[0]:.2f}x | {med[1]:.2f}x ({min(x[1] for x in v):.2f}-{max(x[1] for x in v):.2f}) "
          f"| {med[2]:.2f} |")
EOF
