#!/usr/bin/env bash
# Runs openai_sdk_test.mjs (the official OpenAI JS SDK, openai@7.57.0 from npm) against
# mlxcel-server serving MODEL_DIR (default: models/mlxcel-demo).
#   tests/server/run_openai_sdk_test.sh BUILD_DIR [MODEL_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:?usage: run_openai_sdk_test.sh BUILD_DIR [MODEL_DIR]}
MODEL=${2:-$ROOT/models/mlxcel-demo}
if [ ! -d "$MODEL" ]; then
  # No demo model yet: the qwen3 fixture (random weights) + a small tokenizer + ChatML,
  # the same model test_server builds.
  MODEL=$BUILD/server-fixture
  mkdir -p "$MODEL"
  cp "$ROOT/tests/fixtures/qwen3/config.json" "$ROOT/tests/fixtures/qwen3/model.safetensors" "$MODEL/"
  python3 - "$ROOT" "$MODEL" <<'PY'
import json, sys
root, out = sys.argv[1], sys.argv[2]
tok = json.load(open(f"{root}/tests/fixtures/tokenizer/trained_unigram.json"))
nxt = max(t["id"] for t in tok["added_tokens"]) + 1
for s in ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"]:
    tok["added_tokens"].append({"id": nxt, "content": s, "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": "|" in s})
    nxt += 1
json.dump(tok, open(f"{out}/tokenizer.json", "w"))
tpl = ("{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') "
       "+ '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")
json.dump({"chat_template": tpl, "eos_token": "<|im_end|>"}, open(f"{out}/tokenizer_config.json", "w"))
PY
fi
NPM_DIR=$BUILD/npm
if [ ! -d "$NPM_DIR/node_modules/openai" ]; then
  mkdir -p "$NPM_DIR"
  (cd "$NPM_DIR" && npm install --no-audit --no-fund --silent openai@7.57.0)
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BUILD/apps/mlxcel-server" -m "$MODEL" --port "$PORT" --api-key sdk-key -np 2 -c 128 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.2
done
cp "$(dirname "$0")/openai_sdk_test.mjs" "$NPM_DIR/"
node "$NPM_DIR/openai_sdk_test.mjs" "http://127.0.0.1:$PORT/v1" sdk-key
