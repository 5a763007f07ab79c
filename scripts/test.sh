#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds the plugin bundles
# (debug, with allocation checks in process() and the test-only allocation probe) and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real hosts (Ardour, pedalboard) for the end-to-end tests too: tests/tests/ardour.rs, pedalboard.rs.
EZAUDIO_SETUP_HOSTS=1 scripts/setup.sh

# A debug bundle shares its compiled dependencies with `cargo test` below, so nothing is built
# twice; `assert_process_allocs` aborts on any allocation inside process(). Such a bundle must
# never be mistaken for the plugin: `bundle-test` leaves it in target/test-bundles/ as
# EzAudio-test.{clap,vst3} and leaves target/bundled/ (the user's release bundles) as it was.
cargo xtask bundle-test ezaudio-plugin --features assert_process_allocs,test_alloc_probe

# The pedalboard test's Python (scripts/setup.sh made the venv), unless one is given; the
# suite requires it (a missing pedalboard fails instead of skipping).
export EZAUDIO_PYTHON="${EZAUDIO_PYTHON:-$PWD/target/hosts-venv/bin/python}"
export EZAUDIO_REQUIRE_HOSTS="${EZAUDIO_REQUIRE_HOSTS:-1}"

cargo test --workspace --exclude xtask
