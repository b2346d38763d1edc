//! Log lines for the runtime's logs.
//!
//! The runtime captures a guest's stdout and stderr into its own tracing logs, tagged with
//! the function and invocation. Each call here writes exactly one line, `LEVEL message`, to
//! stderr: newlines inside the message are escaped as `\n` so one call stays one log record.
//!
//! # Examples
//!
//! ```
//! use slmfn_sdk::log;
//!
//! let user = "ada";
//! log::info(format_args!("greeting {user}"));
//! log::warn("model overloaded, retrying");
//! ```

use std::fmt::Display;
use std::io::Write;

/// Writes a `DEBUG` line.
pub fn debug(message: impl Display) {
    write_line("DEBUG", message);
}

/// Writes an `INFO` line.
pub fn info(message: impl Display) {
    write_line("INFO", message);
}

/// Writes a `WARN` line.
pub fn warn(message: impl Display) {
    write_line("WARN", message);
}

/// Writes an `ERROR` line.
pub fn error(message: impl Display) {
    write_line("ERROR", message);
}

fn write_line(level: &str, message: impl Display) {
    let mut line = format!("{level} {message}");
    if line.contains(['\n', '\r']) {
        line = line.replace('\r', "\\r").replace('\n', "\\n");
    }
    line.push('\n');
    // One write per line so lines of concurrent writers never interleave; a failed write to
    // stderr has nowhere better to be reported, so it is dropped.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
