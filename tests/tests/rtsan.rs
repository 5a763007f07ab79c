//! RealtimeSanitizer around the host's process() call (see `PluginUnderTest::render`).
//!
//! Off by default: it needs the sanitizer runtime, which is not downloaded here. Run with
//!
//! ```text
//! RTSAN_ENABLE=1 RTSAN_LIB_PATH=/path/to/libclang_rt.rtsan-x86_64.a \
//!     cargo test -p ezaudio-tests --features rtsan --test rtsan
//! ```
//!
//! The runtime can be LLVM's (`libclang-rt-20-dev` or newer) or the copy rustup ships
//! (`~/.rustup/toolchains/<toolchain>/lib/rustlib/<target>/lib/librustc-*_rt.rtsan.a`,
//! copied to a file named `libclang_rt.rtsan-x86_64.a`). A violation prints a report and the
//! process exits with status 43. To see it catch the plugin: bundle with only
//! `--features test_alloc_probe` (assert_process_allocs would abort first) and run
//! `process_is_realtime_safe_under_rtsan` with `EZAUDIO_TEST_ALLOC_IN_PROCESS=1`: it exits 43
//! with "unsafe-library-call ... malloc" inside the plugin's process().
#![cfg(feature = "rtsan")]

use std::process::Command;

use ezaudio_tests::blob::busy_scene;
use ezaudio_tests::{clap_bundle, PluginUnderTest};

const CHILD: &str = "EZAUDIO_RTSAN_CHILD";

#[test]
fn process_is_realtime_safe_under_rtsan() {
    let scene = busy_scene(5);
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin.load_state(&scene.state).expect("state");
    let notes = scene.notes;
    // Two rates: the second activation republishes the clips (off the audio thread).
    for rate in [48_000.0, 44_100.0] {
        let out = plugin.render(rate, 256, 20_000, &notes).expect("render");
        assert!(out[0][0].iter().any(|&s| s != 0.0));
    }
}

#[test]
fn the_sanitizer_is_armed() {
    if std::env::var_os(CHILD).is_some() {
        rtsan_standalone::realtime_enter();
        let v = std::hint::black_box(vec![1u8; 64]);
        rtsan_standalone::realtime_exit();
        drop(v);
        return;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "the_sanitizer_is_armed", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("child runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(43),
        "build with RTSAN_ENABLE=1 and RTSAN_LIB_PATH; stderr: {stderr}"
    );
    assert!(stderr.contains("RealtimeSanitizer"), "{stderr}");
}
