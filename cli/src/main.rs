//! The `ezaudio` command line; everything lives in the `ezaudio_cli` library.

fn main() -> std::process::ExitCode {
    // The CLI owns its process, so it may take the process-wide CPU tunings the benchmark
    // measured (engine/PERF.md): recycled large buffers and a short spin of candle's pool.
    // Set before any thread starts; a user's own setting wins.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "2000");
    }
    ezaudio_engine::runtime::tune_allocator();
    ezaudio_cli::main()
}
