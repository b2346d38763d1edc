//! The runtime binary for containers: `slmfn [FLAGS]` (see `--help`). `fn serve` runs the same.

use std::process::ExitCode;

use clap::Parser;
use slmfn_runtime::RuntimeConfig;

/// slmfn runtime: serves agent functions over HTTP.
#[derive(Parser)]
#[command(name = "slmfn", version)]
struct Cli {
    #[command(flatten)]
    config: RuntimeConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    slmfn_runtime::logging::init(cli.config.log_format);
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
    match rt.block_on(slmfn_runtime::serve(cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
