//! process() under `assert_process_allocs`: the debug bundle aborts on any allocation in
//! process(). Rendering notes with loaded clips must not abort; and to prove the check is
//! armed, a child process asks the plugin (feature `test_alloc_probe`, env
//! `EZAUDIO_TEST_ALLOC_IN_PROCESS`) to allocate in process() on purpose and must abort.

use std::process::Command;

use ezaudio_tests::blob::busy_scene;
use ezaudio_tests::{clap_bundle, PluginUnderTest};

const CHILD: &str = "EZAUDIO_ALLOC_CHILD";

fn render_notes() {
    let scene = busy_scene(31);
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin.load_state(&scene.state).expect("state");
    let out = plugin
        .render(48_000.0, 256, 20_000, &scene.notes)
        .expect("render");
    assert!(out[0][0].iter().any(|&s| s != 0.0));
}

#[test]
fn rendering_notes_does_not_allocate_in_process() {
    // Runs in this process: an allocation would abort the whole test binary.
    render_notes();
}

#[test]
fn the_allocation_check_is_armed() {
    if std::env::var_os(CHILD).is_some() {
        render_notes();
        return;
    }
    let run = |probe: bool| {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "--exact",
            "the_allocation_check_is_armed",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, "1");
        if probe {
            cmd.env("EZAUDIO_TEST_ALLOC_IN_PROCESS", "1");
        }
        cmd.output().expect("child runs")
    };
    let clean = run(false);
    assert!(
        clean.status.success(),
        "child without the probe failed: {}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let probed = run(true);
    let stderr = String::from_utf8_lossy(&probed.stderr);
    assert!(
        !probed.status.success() && stderr.contains("memory allocation"),
        "the bundle must be built with --features assert_process_allocs,test_alloc_probe; child status {:?}, stderr: {stderr}",
        probed.status
    );
}
