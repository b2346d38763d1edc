//! The `fn` CLI (placeholder until the CLI lands).

/// Entry point of the `fn` binary.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
