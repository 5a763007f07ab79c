//! Helpers shared by the engine's integration tests: the fixture folders (from
//! `EZAUDIO_FIXTURES`, default `../shared/fixtures/ezaudio-ref`; missing means failing) and
//! checks on runs of the `ezaudio` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

pub fn fixtures_dir() -> PathBuf {
    let dir = match std::env::var_os("EZAUDIO_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/ezaudio-ref"
        )),
    };
    assert!(
        dir.is_dir(),
        "fixture folder {} does not exist (set EZAUDIO_FIXTURES)",
        dir.display()
    );
    dir
}

/// The complete tiny model folder of the fixtures.
pub fn model_tiny() -> PathBuf {
    let dir = fixtures_dir().join("model-tiny");
    assert!(
        dir.join("config.yml").is_file(),
        "fixture model folder {} is missing",
        dir.display()
    );
    dir
}

/// The tiny energy ControlNet paired with `model-tiny`.
pub fn controlnet_tiny() -> PathBuf {
    let dir = fixtures_dir().join("controlnet");
    assert!(
        dir.join("generate.json").is_file(),
        "fixture ControlNet folder {} is missing",
        dir.display()
    );
    dir
}

pub fn json(p: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "ezaudio failed:\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A clean failure: non-zero exit, an `error` line mentioning `needle`, no panic.
#[track_caller]
pub fn assert_fails(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "ezaudio panicked:\n{err}");
    assert!(err.contains("error"), "no error line:\n{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "stderr lacks '{needle}':\n{err}"
    );
}
