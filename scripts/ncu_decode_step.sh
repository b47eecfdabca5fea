#!/usr/bin/env bash
# Every kernel of one eager decode step of the Llama-3-8B-shaped decoder under Nsight Compute
# (duration and DRAM bytes only, clocks left alone as the device notes ask; ncu flushes the caches
# before each launch, so weight-streaming kernels read DRAM as they do in the real step), then a
# per-kernel summary (scripts/ncu_kernel_summary.py) into DIR. The random fills before the step
# (ds_util_* kernels) are left out by name. Used for docs/perf-notes.md, "Where the end-to-end
# step goes".
#   bash scripts/ncu_decode_step.sh DIR [profile_decode_step.ts flags...]
set -euo pipefail
out="${1:?usage: ncu_decode_step.sh DIR [--batch 8] [--context 32768] [--dense]}"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ncu="$(command -v ncu || echo /usr/local/cuda/bin/ncu)"
mkdir -p "$out"
name="decode-step$(echo "$@" | tr -c 'A-Za-z0-9\n' '-' | sed 's/--*/-/g; s/-$//')"
"$ncu" --clock-control none -k 'regex:^(?!ds_util_)' \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
  --csv --page raw -f \
  bash "$root/scripts/gpu-run.sh" -- run -A "$root/scripts/profile_decode_step.ts" "$@" \
  > "$out/$name.csv"
python3 "$root/scripts/ncu_kernel_summary.py" "$out/$name.csv" | tee "$out/$name-summary.txt"
