//! Lines for the user that never panic.
//!
//! Why: `println!` and `eprintln!` panic when the stream is closed or full (`models list | head
//! -c0`, `2>/dev/full`), which ends a command-line tool with exit status 101 and a backtrace
//! hint. Here a closed stdout ends the command quietly, as `cat` or `grep` do (status 141, the
//! shell's code for SIGPIPE), another stdout failure is an error, and a failing stderr is
//! ignored: there is nowhere left to report it, and the work itself may still succeed.

use std::fmt;
use std::io::{self, Write};

use super::{CliError, CliResult};

/// Exit status of a command whose standard output was closed by its reader (128 + SIGPIPE).
pub const BROKEN_PIPE_STATUS: u8 = 141;

/// Writes one line to stdout (see the module docs for failures).
pub fn out(args: fmt::Arguments<'_>) -> CliResult {
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}

/// What a failed write to stdout means for the command.
pub fn stdout_error(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::quiet_exit(BROKEN_PIPE_STATUS)
    } else {
        CliError::new(format!("cannot write to standard output: {e}"))
    }
}

/// Writes one line to stderr, ignoring failure.
pub fn err(args: fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    let _ = stderr
        .write_fmt(args)
        .and_then(|()| stderr.write_all(b"\n"));
}

/// `println!` that returns a [`CliResult`] instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::say::out(format_args!($($t)*))
    };
}

/// `eprintln!` that ignores a closed or full stderr instead of panicking.
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => {
        $crate::say::err(format_args!($($t)*))
    };
}
