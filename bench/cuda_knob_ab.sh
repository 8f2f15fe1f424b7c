#!/usr/bin/env bash
# A/B of one CUDA knob (an environment variable) on the synthetic Llama-3.1-8B, on the GPU
# machine after tests/gpu/run.sh has built build-gpu:
#   bash bench/cuda_knob_ab.sh MLXCEL_CUDA_PDL "0 1" "bf16 q4 q8" [extra bench args]
# For each format, the values alternate (A B A B ...: ROUNDS rounds, default 2) so drift
# of the card hits both; every line of `mlxcel bench` goes to stdout with the value in
# front. Batch-1 decode only by default (-p 16 -n 128); pass e.g. "--concurrency 64,256
# -p 128 -n 128" as the 4th argument for the engine.
set -u
VAR=$1 VALUES=$2 FORMATS=$3
EXTRA=${4:--p 16 -n 128}
X=${MLXCEL:-build-gpu/apps/mlxcel}
for f in $FORMATS; do
  for r in $(seq "${ROUNDS:-2}"); do
    for v in $VALUES; do
      env "$VAR=$v" timeout 200 "$X" bench --device cuda --synthetic "${SYNTH:-llama-3.1-8b}" --format "$f" $EXTRA \
        --reps 1 2>&1 | grep -vE "^\s*$" | sed "s/^/[$VAR=$v $f r$r] /"
    done
  done
done
