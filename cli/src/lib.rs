//! The `ezaudio` command line: generate, edit, batch cues, manage models, benchmark.
//!
//! Generation goes through the same engine thread the plugin uses ([`ezaudio_engine::Engine`]):
//! the CLI submits jobs and polls their status for progress. Every failure a user can cause ends
//! as one `error: ...` message and a non-zero exit status, never a panic; a closed stdout ends
//! quietly with status 141 (see [`say`]).

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod batch;
pub mod bench;
mod bench_cmd;
pub mod control_opts;
mod edit;
mod gen;
pub mod loudness;
mod models_cmd;
pub mod output;
pub mod progress;
pub mod say;
mod session;

/// A message for the user; printed as `error: <message>` (exit status 1), or an exit without a
/// message (a closed stdout, see [`say`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    msg: String,
    /// `Some(status)`: exit with it and print nothing.
    quiet_status: Option<u8>,
}

impl CliError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            quiet_status: None,
        }
    }
    /// Ends the command with `status` and no message.
    pub fn quiet_exit(status: u8) -> Self {
        Self {
            msg: String::new(),
            quiet_status: Some(status),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for CliError {}

impl From<ezaudio_engine::Error> for CliError {
    fn from(e: ezaudio_engine::Error) -> Self {
        Self::new(e.to_string())
    }
}

impl From<candle_core::Error> for CliError {
    fn from(e: candle_core::Error) -> Self {
        Self::new(e.to_string())
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// Environment variables that forbid downloads (model fetches fail at once with instructions).
pub use ezaudio_engine::install::{offline, OFFLINE_ENV};

#[derive(Debug, Parser)]
#[command(
    name = "ezaudio",
    version,
    about = "Text-to-audio with EzAudio, on your machine",
    long_about = "Text-to-audio with EzAudio, on your machine.\n\n\
        First run: `ezaudio generate \"a dog barking in the distance\" -o dog.wav` downloads \
        EzAudio-L (about 6 GB) if it is not installed, then writes dog.wav (24 kHz mono, 32-bit \
        float) and dog.wav.json (everything needed to make the same file again).\n\n\
        Offline: set EZAUDIO_OFFLINE=1 (or HF_HUB_OFFLINE=1) to never download."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate sound from a text prompt, or from a cue file with --batch
    Generate(gen::GenerateArgs),
    /// Regenerate a time span of an existing WAV from a prompt (inpainting / out-painting)
    Edit(gen::EditArgs),
    /// Install, list, check and convert models
    Models {
        #[command(subcommand)]
        command: models_cmd::ModelsCommand,
    },
    /// Time one part of a model (DiT, T5, VAE) or a whole job at the real size, with random weights
    Bench(bench_cmd::BenchArgs),
}

/// Entry point of the `ezaudio` binary.
pub fn main() -> ExitCode {
    run_from(std::env::args_os())
}

/// Parses `args` (program name first) and runs the command.
pub fn run_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version come through here too, with exit code 0.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError {
            quiet_status: Some(status),
            ..
        }) => ExitCode::from(status),
        Err(e) => {
            crate::errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> CliResult {
    match cli.command {
        Command::Generate(args) => gen::generate(args),
        Command::Edit(args) => gen::edit(args),
        Command::Models { command } => models_cmd::run(command),
        Command::Bench(args) => bench_cmd::run(args),
    }
}
