//! The runtime binary for containers: `slmfn [serve] [FLAGS]` serves (see `--help`; `fn serve`
//! runs the same), `slmfn precompile DIR` precompiles a functions dir at image build time.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slmfn_runtime::RuntimeConfig;

/// slmfn runtime: serves agent functions over HTTP and CloudEvents.
#[derive(Parser)]
#[command(name = "slmfn", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: RuntimeConfig,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default without a subcommand).
    Serve(Box<RuntimeConfig>),
    /// Precompile a functions dir (`DIR/<name>/fn.toml` + `<name>.wasm`) for this binary, so
    /// `slmfn serve --functions DIR` compiles nothing at start.
    Precompile {
        /// The functions dir.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Precompile { dir }) => {
            return match slmfn_runtime::host::precompile_dir(&dir) {
                Ok(names) => {
                    println!(
                        "precompiled {} function(s) in {}: {}",
                        names.len(),
                        dir.display(),
                        names.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Serve(config)) => *config,
        None => cli.config,
    };
    slmfn_runtime::logging::init(config.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(slmfn_runtime::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
