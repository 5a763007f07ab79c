//! The `ezaudio` command line; everything lives in [`ezaudio_engine::cli`].

fn main() -> std::process::ExitCode {
    ezaudio_engine::cli::main()
}
