#!/usr/bin/env bash
# Drives `mlxcel run` (the chat REPL) through tmux: multi-turn answers, /clear, Ctrl-C
# stopping an answer without ending the program, and /exit.
set -euo pipefail
BIN=$1
SRC=$2
command -v tmux >/dev/null || { echo "tmux is not installed"; exit 1; }
S=mlxcel_repl_$$
trap 'tmux kill-session -t $S 2>/dev/null || true' EXIT
tmux new-session -d -s $S -x 200 -y 50 "$BIN run $SRC/models/mlxcel-demo --no-thinking -n 400; echo REPL-EXITED $?; sleep 30"
wait_for() {  # wait_for PATTERN [seconds]
  for _ in $(seq 1 $((${2:-30} * 10))); do
    tmux capture-pane -p -t $S 2>/dev/null | grep -q -- "$1" && return 0
    sleep 0.1
  done
  echo "timed out waiting for: $1"; tmux capture-pane -p -t $S 2>/dev/null | grep -v "^$"; exit 1
}
wait_for '>>>'
tmux send-keys -t $S 'What is 123 + 456?' Enter
wait_for '^579$'
tmux send-keys -t $S 'What is the capital of Japan?' Enter
wait_for '^Tokyo$'
tmux send-keys -t $S '/clear' Enter
wait_for 'conversation cleared'
# Ctrl-C at the prompt, and right after a question (it stops the answer if one is still
# being generated): the REPL survives and answers the next question.
tmux send-keys -t $S C-c
tmux send-keys -t $S 'Repeat "hello world" 30 times.' Enter C-c
sleep 1
tmux send-keys -t $S 'What is 25 + 30?' Enter
wait_for '^55$'
tmux send-keys -t $S '/exit' Enter
wait_for 'REPL-EXITED'
echo "repl ok"
