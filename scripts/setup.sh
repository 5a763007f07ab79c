#!/usr/bin/env bash
# Installs what building and testing EzAudio needs on Debian/Ubuntu. Idempotent: it only
# calls apt-get when a package is missing. Rust itself (rustup/cargo) is assumed present.
set -euo pipefail

packages=(
  build-essential pkg-config   # C toolchain for crates with C parts
  ca-certificates              # hf-hub downloads over TLS
)
# Optional groups, enabled by the scripts that need them.
if [[ "${EZAUDIO_SETUP_GUI:-0}" == 1 ]]; then
  # Running the editor (baseview loads these at run time) and screenshot tests under Xvfb.
  packages+=(libx11-6 libx11-xcb1 libxcb1 libxkbcommon-x11-0 libgl1 libgl1-mesa-dri xvfb x11-apps imagemagick)
fi
if [[ "${EZAUDIO_SETUP_STANDALONE:-0}" == 1 ]]; then
  packages+=(libjack-jackd2-dev libasound2-dev)
fi
# Real hosts for the end-to-end tests (EZAUDIO_SETUP_HOSTS=1, as scripts/test.sh sets it):
# Python for pip's pedalboard below, and Ardour 7 with its headless Lua session tool
# (tests/tests/ardour.rs; it brings its own dummy audio backend, so no JACK server is needed).
if [[ "${EZAUDIO_SETUP_HOSTS:-0}" == 1 ]]; then
  packages+=(python3 python3-pip python3-venv ardour)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# pedalboard (a JUCE-based VST3 host) and numpy for tests/tests/pedalboard.rs, in a venv of
# their own so the system Python stays untouched; the tests find it through EZAUDIO_PYTHON
# (scripts/test.sh sets it).
if [[ "${EZAUDIO_SETUP_HOSTS:-0}" == 1 ]]; then
  venv="${EZAUDIO_HOSTS_VENV:-$(cd "$(dirname "$0")/.." && pwd)/target/hosts-venv}"
  if ! "$venv/bin/python" -c "import pedalboard, numpy" >/dev/null 2>&1; then
    echo "setup: installing pedalboard into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q pedalboard numpy
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install Rust first: https://rustup.rs" >&2
  exit 1
fi
