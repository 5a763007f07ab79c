#!/usr/bin/env bash
# Builds the release plugin bundles and the `ezaudio` command line, then generates a sound.
#   scripts/quickstart.sh                          -> "a dog barking in the distance" into dog.wav
#   scripts/quickstart.sh "rain on a tin roof" rain.wav
set -euo pipefail
cd "$(dirname "$0")/.."

prompt="${1:-a dog barking in the distance}"
out="${2:-dog.wav}"

scripts/setup.sh
cargo xtask bundle ezaudio-plugin --release
cargo build --release -p ezaudio-cli --bin ezaudio

target="${CARGO_TARGET_DIR:-target}"
echo
echo "Plugin bundles: $target/bundled/EzAudio.clap and $target/bundled/EzAudio.vst3"
echo "Generating \"$prompt\" -> $out"
exec "$target/release/ezaudio" generate "$prompt" -o "$out"
