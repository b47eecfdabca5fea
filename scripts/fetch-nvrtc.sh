#!/usr/bin/env bash
# Fetches NVRTC for CPU-only machines (CI): Debian's non-free libnvrtc11.2 (CUDA 11.8, targets
# sm_90) and libnvrtc-builtins11.8, downloaded with apt-get through a private sources file and
# unpacked with dpkg -x into .cache/nvrtc. When no ptxas is installed ($PTXAS, PATH,
# /usr/local/cuda/bin), also takes ptxas (11.8) from nvidia-cuda-toolkit into .cache/cuda-tools.
# Also NVRTC 12.4 (Debian trixie's libnvrtc12 + libnvrtc-builtins12.4) into .cache/nvrtc12: the
# only NVRTC here that emits the Hopper (sm_90a, wgmma) prefill body, which the CPU tests compile
# through it (tests/nvrtc_compile_test.ts runs scripts/compile_check.ts with it). Nothing
# system-wide is changed. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/nvrtc"
lib="$dest/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2"
tools="$root/.cache/cuda-tools"
have_ptxas() {
  [ -n "${PTXAS:-}" ] && [ -x "$PTXAS" ] && return 0
  command -v ptxas >/dev/null && return 0
  [ -x /usr/local/cuda/bin/ptxas ] || [ -x "$tools/ptxas" ]
}
dest12="$root/.cache/nvrtc12"
lib12="$dest12/usr/lib/x86_64-linux-gnu/libnvrtc.so.12"
need_nvrtc=1
if [ -f "$lib" ] && [ -f "$dest/.complete" ]; then need_nvrtc=0; fi
need_nvrtc12=1
if [ -f "$lib12" ] && [ -f "$dest12/.complete" ]; then need_nvrtc12=0; fi
if [ "$need_nvrtc" = 0 ] && [ "$need_nvrtc12" = 0 ] && have_ptxas; then
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "fetch-nvrtc: apt-get and dpkg are needed to fetch Debian's libnvrtc11.2; or set DS_NVRTC_PATH" >&2
  exit 1
fi
# A private apt state in $1 for Debian suite $2's non-free section (nothing system-wide); its
# options go into apt_opts.
apt_for_suite() {
  local work="$1" suite="$2"
  rm -rf "$work"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
  echo "deb http://deb.debian.org/debian $suite non-free" > "$work/sources.list"
  apt_opts=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
  )
  apt-get "${apt_opts[@]}" -qq update
}
# Downloads packages $4... (apt_opts) into $1/debs and unpacks them into $2, which must then hold
# $3; marks $2 complete.
unpack_into() {
  local work="$1" dest="$2" want="$3"
  shift 3
  rm -rf "$dest" && mkdir -p "$dest"
  (cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "$@")
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$dest"; done
  [ -f "$want" ] || { echo "fetch-nvrtc: $want missing after unpacking" >&2; exit 1; }
  touch "$dest/.complete"
}
work="$root/.cache/nvrtc-apt"
if [ "$need_nvrtc" = 1 ] || ! have_ptxas; then
  apt_for_suite "$work" bookworm
  if [ "$need_nvrtc" = 1 ]; then
    unpack_into "$work" "$dest" "$lib" libnvrtc11.2 libnvrtc-builtins11.8
    echo "fetch-nvrtc: NVRTC 11.8 unpacked into .cache/nvrtc"
  fi
  if ! have_ptxas; then
    rm -f "$work"/debs/*.deb
    (cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download nvidia-cuda-toolkit)
    mkdir -p "$work/toolkit" "$tools"
    dpkg -x "$work"/debs/nvidia-cuda-toolkit_*.deb "$work/toolkit"
    cp "$work/toolkit/usr/bin/ptxas" "$tools/ptxas.tmp" && mv "$tools/ptxas.tmp" "$tools/ptxas"
    echo "fetch-nvrtc: ptxas (CUDA 11.8) copied into .cache/cuda-tools"
  fi
  rm -rf "$work"
fi
if [ "$need_nvrtc12" = 1 ]; then
  work12="$root/.cache/nvrtc12-apt"
  apt_for_suite "$work12" trixie
  unpack_into "$work12" "$dest12" "$lib12" libnvrtc12 libnvrtc-builtins12.4
  rm -rf "$work12"
  echo "fetch-nvrtc: NVRTC 12.4 unpacked into .cache/nvrtc12"
fi
