//! Outputs and streams, through the real binary: no lost or half-written file, destinations
//! checked before any model loads, special files refused, closed or full streams handled the
//! way command-line tools handle them (never a panic, never exit 101).

mod sandbox;
#[path = "../../engine/tests/support/mod.rs"]
mod support;

use sandbox::{gen, Sandbox};
use support::{assert_fails, assert_ok, model_tiny, text};

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

/// What `-o` names and why it cannot be written: each fails at once, before the model loads
/// (the session prints `device:` when it opens), and never with "cannot read".
#[test]
fn bad_destinations_fail_before_loading_with_what_they_are() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("out")).unwrap();
    let fifo = sb.path("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::write(sb.path("file"), b"x").unwrap();
    let cases = [
        ("/proc/nope/out.wav", "cannot write /proc/nope"),
        ("/dev/null", "not a regular file"),
        ("/dev/full", "not a regular file"),
        ("out", "out is a folder"),
        ("out/", "is a folder"),
        (fifo.to_str().unwrap(), "not a regular file"),
        ("x.mp3", "WAV files only"),
        ("file/sub.wav", "is not a folder"),
    ];
    for (dest, needle) in cases {
        let out = sb.run(&gen(&model_tiny(), dest, 1));
        assert_fails(&out, needle);
        let err = text(&out.stderr);
        assert!(
            !err.contains("device:"),
            "{dest}: the model loaded first:\n{err}"
        );
        assert!(
            !err.contains("cannot read"),
            "{dest}: a write called a read:\n{err}"
        );
    }
    assert!(!sb.path("out.wav").exists() && !sb.path("x.mp3").exists());
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
}

/// Without --force an existing pair is refused and kept; with it both are replaced together
/// and no staging file is left.
#[test]
fn overwrite_replaces_the_pair_together() {
    let sb = Sandbox::new();
    assert_ok(&sb.run(&gen(&model_tiny(), "a.wav", 1)));
    let (wav, json) = (sb.path("a.wav"), sb.path("a.wav.json"));
    let old = (std::fs::read(&wav).unwrap(), std::fs::read(&json).unwrap());
    assert_fails(&sb.run(&gen(&model_tiny(), "a.wav", 2)), "--force");
    assert_eq!(std::fs::read(&wav).unwrap(), old.0);
    let mut args = gen(&model_tiny(), "a.wav", 2);
    args.push("--force".into());
    assert_ok(&sb.run(&args));
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(meta["seed"], 2);
    assert_ne!(std::fs::read(&wav).unwrap(), old.0);
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
}

/// A `--force` overwrite killed at some point of its run leaves either the old pair or the new
/// pair, each whole: never a truncated WAV or a sidecar describing other audio.
#[test]
fn killed_overwrite_never_loses_the_old_file() {
    let sb = Sandbox::new();
    assert_ok(&sb.run(&gen(&model_tiny(), "k.wav", 1)));
    let old = std::fs::read(sb.path("k.wav")).unwrap();
    // Killed after the n-th line of its progress output.
    for n in 0..4usize {
        let mut args = gen(&model_tiny(), "k.wav", 10 + n as u64);
        args.push("--force".into());
        let mut child = sb.spawn(&args);
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        for _ in 0..n {
            if lines.next().is_none() {
                break;
            }
        }
        let _ = child.kill();
        child.wait().unwrap();
        let wav = std::fs::read(sb.path("k.wav")).unwrap();
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sb.path("k.wav.json")).unwrap()).unwrap();
        let seed = meta["seed"].as_u64().unwrap();
        if wav == old {
            assert_eq!(seed, 1, "the old WAV beside a new sidecar");
        } else {
            assert_eq!(seed, 10 + n as u64, "a new WAV beside an old sidecar");
            let r = hound::WavReader::new(&wav[..]).unwrap();
            assert_eq!(r.len() as usize, 6000, "a partial WAV");
        }
    }
}

/// Two processes making the same new file: exactly one wins, the file is whole and its sidecar
/// describes it; the other fails with a clear message.
#[test]
fn racing_processes_never_interleave() {
    for round in 0..3u64 {
        let sb = Sandbox::new();
        let children: Vec<_> = (0..2u64)
            .map(|i| sb.spawn(&gen(&model_tiny(), "race.wav", 100 * round + i)))
            .collect();
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let won: Vec<u64> = (0..2u64)
            .filter(|&i| outs[i as usize].status.success())
            .map(|i| 100 * round + i)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {} winners", won.len());
        let loser = outs.iter().find(|o| !o.status.success()).unwrap();
        let err = text(&loser.stderr);
        assert!(
            err.contains("already exists") || err.contains("another process"),
            "{err}"
        );
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sb.path("race.wav.json")).unwrap()).unwrap();
        assert_eq!(meta["seed"].as_u64(), Some(won[0]));
        let r = hound::WavReader::open(sb.path("race.wav")).unwrap();
        assert_eq!(r.len(), 6000);
        assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
    }
}

/// A closed stdout ends quietly with 141 (SIGPIPE's shell status); a full stdout is an error
/// (1); a full stderr does not stop the work. Never a panic (101).
#[test]
fn closed_and_full_streams_end_like_command_line_tools() {
    let sb = Sandbox::new();
    let model = model_tiny().to_string_lossy().into_owned();
    for args in [
        vec!["models", "list"],
        vec!["models", "verify", "--model", &model],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = sb
            .command(&args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(141),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = sb
            .command(&args)
            .stdin(Stdio::null())
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains("cannot write to standard output"));
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = sb
        .command(&gen(&model_tiny(), "quiet.wav", 3))
        .stdin(Stdio::null())
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(sb.path("quiet.wav").is_file() && sb.path("quiet.wav.json").is_file());
    // An error with a full stderr still exits 1, not 101.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = sb
        .command(&gen(&model_tiny(), "/dev/null", 3))
        .stdin(Stdio::null())
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// `--batch` from a device that never ends is refused after 4 MB; stdin still works, and a
/// semicolon CSV is named rather than read as prompts.
#[test]
fn batch_reads_are_bounded_and_stdin_works() {
    let sb = Sandbox::new();
    let model = model_tiny().to_string_lossy().into_owned();
    let batch = |src: &str| {
        vec![
            "generate".to_string(),
            "--batch".into(),
            src.into(),
            "--model".into(),
            model.clone(),
            "--steps".into(),
            "1".into(),
            "--seconds".into(),
            "0.25".into(),
            "--seed".into(),
            "5".into(),
            "--out-dir".into(),
            "cues".into(),
        ]
    };
    assert_fails(&sb.run(&batch("/dev/zero")), "larger than 4 MB");
    assert_fails(&sb.run(&batch("/dev/urandom")), "larger than 4 MB");
    std::fs::create_dir(sb.path("folder")).unwrap();
    assert_fails(&sb.run(&batch("folder")), "is a folder");
    std::fs::write(sb.path("semi.csv"), "prompt;seconds;seed\ndog;1;2\n").unwrap();
    assert_fails(&sb.run(&batch("semi.csv")), "separated by ';'");

    let mut child = sb
        .command(&batch("/dev/stdin"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"rain on a roof\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    assert!(sb.path("cues/001-rain-on-a-roof.wav").is_file());
    // A never-ending pipe is bounded too.
    let mut child = sb
        .command(&batch("/dev/stdin"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let chunk = vec![b'a'; 1 << 16];
    // Write until the reader stops reading (it closes the pipe after 4 MB).
    while stdin.write_all(&chunk).is_ok() {}
    drop(stdin);
    assert_fails(&child.wait_with_output().unwrap(), "larger than 4 MB");
}
