//! # slmfn-cli
//!
//! The `fn` developer CLI: scaffold, build, serve, deploy and invoke slmfn agent functions.
//! The root package's `src/bin/fn.rs` only calls [`main`].
//!
//! ```text
//! fn new hello && cd hello
//! fn build
//! fn serve &            # the runtime, on http://127.0.0.1:8080
//! fn deploy
//! fn invoke hello --data '{"x": 1}'
//! fn models pull        # the default model (smollm2) into ~/.cache/slmfn/models
//! fn models list
//! ```
//!
//! # Layout
//!
//! - `commands`: one file per subcommand, each a `XCommand` with `async fn run(self)`.
//! - `project`: a function directory on disk (`fn.toml`, `Cargo.toml`) and where its built
//!   component lives; the component magic check.
//! - `client`: the runtime's HTTP API as the commands use it (admin auth, error bodies,
//!   "is the runtime running?" diagnostics).
//! - `output`: tables and sizes for human output.
//!
//! # Output and errors
//!
//! Results go to stdout; progress spinners and notes go to stderr, so `--json` output (on the
//! commands that talk to a runtime) is the only thing on stdout. Errors use `anyhow` (this is a
//! binary boundary) and are printed once, in [`main`], as `error: {:#}` with exit code 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod client;
mod commands;
mod knative;
mod output;
mod project;

/// The `fn` command line.
#[derive(Debug, Parser)]
#[command(
    name = "fn",
    version,
    about = "Build, serve, deploy and invoke slmfn agent functions",
    propagate_version = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    New(commands::new::NewCommand),
    Build(commands::build::BuildCommand),
    Serve(Box<commands::serve::ServeCommand>),
    Deploy(commands::deploy::DeployCommand),
    Invoke(commands::invoke::InvokeCommand),
    Send(commands::send::SendCommand),
    List(commands::list::ListCommand),
    Delete(commands::delete::DeleteCommand),
    Rollback(commands::rollback::RollbackCommand),
    Revisions(commands::revisions::RevisionsCommand),
    Models(commands::models::ModelsCommand),
}

impl Command {
    async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::New(c) => c.run().await,
            Command::Build(c) => c.run().await,
            Command::Serve(c) => c.run().await,
            Command::Deploy(c) => c.run().await,
            Command::Invoke(c) => c.run().await,
            Command::Send(c) => c.run().await,
            Command::List(c) => c.run().await,
            Command::Delete(c) => c.run().await,
            Command::Rollback(c) => c.run().await,
            Command::Revisions(c) => c.run().await,
            Command::Models(c) => c.run().await,
        }
    }
}

/// Entry point of the `fn` binary: parses the command line, runs the command on a tokio
/// runtime and turns an error into `error: ...` on stderr and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn remote_flags_parse_on_every_remote_command() {
        for args in [
            &[
                "fn",
                "list",
                "--url",
                "http://h:1",
                "--token",
                "t",
                "--json",
            ][..],
            &["fn", "delete", "hello", "--url", "http://h:1"],
            &[
                "fn",
                "rollback",
                "hello",
                "0190a0c0-0000-7000-8000-000000000000",
            ],
            &["fn", "revisions", "hello", "--json"],
            &["fn", "deploy", "--no-build", "--path", "x", "--json"],
            &[
                "fn", "invoke", "hello", "--data", "{}", "-H", "x-a: b", "--path", "/a",
            ],
            &["fn", "serve", "--port", "0", "--data-dir", "/tmp/x"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["fn", "invoke", "Bad_Name"]).is_err());
        assert!(Cli::try_parse_from(["fn", "invoke", "a", "--data", "{}", "--file", "f"]).is_err());
    }
}
