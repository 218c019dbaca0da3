#!/usr/bin/env bash
# The real-GPU numbers, in one command, for the day a machine with a GPU is at hand (native wgpu
# on Vulkan, Metal or DX12; not part of CI, which has none). It writes one JSON line per run:
#   unet.jsonl      the real-size UNet (random weights): ms/step, measured kernel launches, issued
#                   and analytic FLOPs, non-GEMM bytes, peak memory — 16×256×448 and 16×704×1280,
#                   f32 and f16 (f16 needs `shader-f16`; a run the GPU refuses is recorded as such)
#   counted.jsonl   the same counters computed without running (`--count-only`), to compare
#   pipeline.jsonl  the whole base pipeline's memory per stage next to the memory plan
#                   (a 4.98 GB random full-size model is written to $OUT/real-f16 first)
#   kbench.jsonl    each of our kernels against its burn-op twin, normalised to the measured FMA
#                   peak and copy bandwidth (`i2vgen kbench`)
# Usage: bash tests/gpu_bench.sh [OUT]   (default target/gpu-bench; about 30–60 min on a desktop GPU)
# On a lent machine with no Rust toolchain and minutes to spare:
#   GPU_BENCH_BIN=DIR    take i2vgen (and weights-tools) from DIR instead of building them
#   GPU_BENCH_LIMIT=S    stop any one run after S seconds (recorded as an error)
#   GPU_BENCH_QUICK=1    only the UNet at 256×448 (f32 with both kernel sets, f16), kbench and
#                        one f16 step at 704×1280: no counting, no 4.98 GB model
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/gpu-bench}
mkdir -p "$out"
if [ -n "${GPU_BENCH_BIN:-}" ]; then
  bin=$GPU_BENCH_BIN/i2vgen tools=$GPU_BENCH_BIN/weights-tools
else
  cargo build --release -p i2vgen -p weights-tools || exit 1
  bin=target/release/i2vgen tools=target/release/weights-tools
fi
limit=${GPU_BENCH_LIMIT:-0}
"$bin" info | tee "$out/info.txt"

record() { # FILE LABEL COMMAND…: the command's last stdout line, or its error as JSON
  local file=$1 label=$2; shift 2
  echo "==> $label" >&2
  local line
  local start=$SECONDS
  if line=$(timeout "$limit" "$@" 2>"$out/stderr.txt" | tee -a "$out/log.txt" | tail -1) && [ -n "$line" ]; then
    echo "$line" >>"$out/$file"
  else
    python3 -c 'import json,sys; print(json.dumps({"run": sys.argv[1], "error": open(sys.argv[2]).read()[-2000:]}))' \
      "$label" "$out/stderr.txt" >>"$out/$file"
  fi
  echo "    $((SECONDS - start)) s" >&2
}

if [ -n "${GPU_BENCH_QUICK:-}" ]; then
  record unet.jsonl "unet 256x448 f32, burn's kernels and ours" \
    "$bin" bench --unet-config real --frames 16 --height 256 --width 448 --steps 2 --backend wgpu --dtype f32 --kernels both --json
  record unet.jsonl "unet 256x448 f16" \
    "$bin" bench --unet-config real --frames 16 --height 256 --width 448 --steps 2 --backend wgpu --dtype f16 --json
  record kbench.jsonl "kbench" "$bin" kbench --backend wgpu --json
  record unet.jsonl "unet 704x1280 f16" \
    "$bin" bench --unet-config real --frames 16 --height 704 --width 1280 --steps 1 --backend wgpu --dtype f16 --json
  echo "results in $out: unet.jsonl kbench.jsonl log.txt" >&2
  exit 0
fi

for size in "256 448" "704 1280"; do
  read -r h w <<<"$size"
  for dtype in f32 f16; do
    record unet.jsonl "unet ${h}x${w} $dtype" \
      "$bin" bench --unet-config real --frames 16 --height "$h" --width "$w" --steps 2 --backend wgpu --dtype "$dtype" --json
    record counted.jsonl "counted ${h}x${w} $dtype" \
      "$bin" bench --unet-config real --frames 16 --height "$h" --width "$w" --dtype "$dtype" --count-only --json
  done
done

[ -d "$out/real-f16" ] || "$tools" random --config real --dtype f16 --to "$out/real-f16" || exit 1
for dtype in f32 f16; do
  record pipeline.jsonl "pipeline 256x448 $dtype" \
    "$bin" bench --pipeline --model "$out/real-f16" --frames 16 --height 256 --width 448 --backend wgpu --dtype "$dtype" --json
done
record kbench.jsonl "kbench" "$bin" kbench --backend wgpu --json
echo "results in $out: unet.jsonl counted.jsonl pipeline.jsonl kbench.jsonl" >&2
