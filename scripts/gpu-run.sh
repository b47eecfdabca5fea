#!/usr/bin/env bash
# Runs a deno task on a CUDA machine that has no Deno and no network, from the pack that
# `deno task pack:gpu` writes into .gpu/ (compressed Deno binary + vendored npm dependencies):
#   bash scripts/gpu-run.sh test:gpu [args...]      (a deno task)
#   bash scripts/gpu-run.sh -- run -A file.ts ...     (any deno command; $DS_WRAP, e.g.
#                                                      "compute-sanitizer --tool memcheck", wraps it)
# The GPU machine needs the NVIDIA driver (libcuda.so.1) and NVRTC (libnvrtc.so.13/12, found on
# the loader path or in /usr/local/cuda/lib64; or set DS_NVRTC_PATH / DS_CUDA_DRIVER_PATH).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pack="$root/.gpu"
[ -f "$pack/deno.xz" ] || { echo "gpu-run: $pack/deno.xz missing; run 'deno task pack:gpu' first" >&2; exit 1; }
bin="${TMPDIR:-/tmp}/ds-deno"
mkdir -p "$bin"
if [ ! -x "$bin/deno" ]; then
  xz -d -c "$pack/deno.xz" > "$bin/deno.tmp" && chmod +x "$bin/deno.tmp" && mv "$bin/deno.tmp" "$bin/deno"
fi
if [ ! -d "$root/node_modules/handlebars" ]; then
  tar -xJf "$pack/node_modules.tar.xz" -C "$root"
fi
export PATH="$bin:$PATH"
export DS_CACHE_DIR="${DS_CACHE_DIR:-${TMPDIR:-/tmp}/ds-cache}"
export DENO_DIR="${DENO_DIR:-${TMPDIR:-/tmp}/ds-deno-dir}"
if [ "$1" = "--" ]; then
  shift
  exec ${DS_WRAP:-} "$bin/deno" "$@"
fi
task="$1"
shift
exec "$bin/deno" task "$task" "$@"
