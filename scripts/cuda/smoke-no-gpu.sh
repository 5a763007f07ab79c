#!/usr/bin/env bash
# The CUDA build on a machine without a GPU (what CI has): it must start, refuse `--device cuda`
# with a sentence naming what is missing (not a panic), and fall back to the CPU for `auto`.
#
#   scripts/cuda/smoke-no-gpu.sh <path to the cuda-built ezaudio>
set -euo pipefail
bin=${1:?usage: smoke-no-gpu.sh <ezaudio binary>}
root=$(cd "$(dirname "$0")/../.." && pwd)
fixtures=${EZAUDIO_FIXTURES:-$root/../shared/fixtures/ezaudio-ref}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin" --version
if nvidia-smi -L >/dev/null 2>&1; then
  echo "smoke-no-gpu: a GPU is present; this check is for machines without one (see scripts/gpu-check.sh)"
  exit 0
fi

set +e
"$bin" generate "a door slams" --model "$fixtures/model-tiny" --device cuda --steps 2 \
  -o "$work/cuda.wav" 2>"$work/cuda.err"
rc=$?
set -e
cat "$work/cuda.err"
if ((rc == 0)) || [[ -f "$work/cuda.wav" ]]; then
  echo "smoke-no-gpu: --device cuda succeeded without a GPU?" >&2
  exit 1
fi
if grep -q "panicked" "$work/cuda.err" || ! grep -q "NVIDIA driver" "$work/cuda.err"; then
  echo "smoke-no-gpu: --device cuda did not fail with a plain message" >&2
  exit 1
fi

"$bin" generate "a door slams" --model "$fixtures/model-tiny" --device auto --steps 2 \
  --seconds 1 -o "$work/auto.wav" 2>"$work/auto.err"
cat "$work/auto.err"
grep -q "device: CPU (--device auto: " "$work/auto.err" || {
  echo "smoke-no-gpu: --device auto did not say it fell back to the CPU" >&2
  exit 1
}
[[ -s "$work/auto.wav" ]] || { echo "smoke-no-gpu: no WAV from --device auto" >&2; exit 1; }
echo "smoke-no-gpu: ok (cuda refused in words, auto ran on the CPU)"
