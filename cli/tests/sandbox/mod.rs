//! A sandboxed run of the `ezaudio` binary for the CLI's integration tests (private HOME and
//! caches, offline, no model or ControlNet from the environment), with stdin and stdout/stderr
//! chosen by the test.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let home = self.path("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_ezaudio"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("HF_HOME", home.join("hf"))
            .env_remove("HF_HUB_CACHE")
            .env_remove("EZAUDIO_MODELS")
            .env_remove("EZAUDIO_CONTROLNET")
            .env("EZAUDIO_OFFLINE", "1");
        c
    }
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ezaudio")
    }
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ezaudio")
    }
    /// Files whose names end in `.tmp` anywhere under the sandbox (leftover staging files).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() && !p.ends_with("home") {
                    walk(&p, out);
                }
                if p.to_string_lossy().ends_with(".tmp") {
                    out.push(p);
                }
            }
        }
        let mut v = Vec::new();
        walk(self.dir.path(), &mut v);
        v
    }
}

/// `generate` on the tiny model: one step, a quarter second.
pub fn gen(model: &Path, out: &str, seed: u64) -> Vec<String> {
    [
        "generate",
        "a dog barking",
        "-o",
        out,
        "--model",
        &model.to_string_lossy(),
        "--steps",
        "1",
        "--seconds",
        "0.25",
        "--seed",
        &seed.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A copy of `from` (recursively) at `to`, files writable.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::write(&dst, std::fs::read(&p).unwrap()).unwrap();
        }
    }
}

/// A mono WAV header + samples at `rate`, written with hound.
pub fn write_wav(p: &Path, rate: u32, n: usize) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(p, spec).unwrap();
    for i in 0..n {
        w.write_sample(((i % 100) as i16 - 50) * 100).unwrap();
    }
    w.finalize().unwrap();
}

/// Exit code, and whether it was a panic (101) or a signal.
pub fn status(out: &Output) -> Option<i32> {
    out.status.code()
}
