#!/usr/bin/env bash
# Profiles the prefill kernel with Nsight Compute on the GPU machine (one launch, --set full, the
# clocks left alone as the device notes ask) and writes into DIR: the details page (speed of light,
# occupancy, warp state), the per-instruction SASS table and its stall summary
# (scripts/ncu_stalls.py). Used for docs/perf-notes.md, Prefill entry 12.
#   bash scripts/ncu_prefill.sh DIR [VARIANT] [PROMPT]     (defaults: tma3-r-s, 16384)
set -euo pipefail
out="${1:?usage: ncu_prefill.sh DIR [VARIANT] [PROMPT]}"
variant="${2:-tma3-r-s}"
prompt="${3:-16384}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ncu="$(command -v ncu || echo /usr/local/cuda/bin/ncu)"
mkdir -p "$out"
"$ncu" --clock-control none -k regex:prefill -c 1 --set full --import-source no -f \
  -o "$out/prefill-$variant" \
  bash "$root/scripts/gpu-run.sh" -- run -A "$root/bench/prefill_kernel.ts" --prompts "$prompt" \
  --chunk "$prompt" --repeats 1 --bodies wgmma --wgmma-variants "$variant"
"$ncu" -i "$out/prefill-$variant.ncu-rep" --page details > "$out/prefill-$variant-details.txt"
"$ncu" -i "$out/prefill-$variant.ncu-rep" --page source --csv --print-source sass \
  > "$out/prefill-$variant-sass.csv"
python3 "$root/scripts/ncu_stalls.py" "$out/prefill-$variant-sass.csv" \
  | tee "$out/prefill-$variant-stalls.txt"
