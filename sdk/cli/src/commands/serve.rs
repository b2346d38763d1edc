//! `fn serve`: runs the slmfn runtime in the foreground, as the `slmfn` binary does.

use clap::Parser;
use slmfn_runtime::RuntimeConfig;

/// Run a local slmfn runtime (every flag also reads its `SLMFN_*` environment variable).
#[derive(Debug, Parser)]
pub(crate) struct ServeCommand {
    #[command(flatten)]
    config: RuntimeConfig,
}

impl ServeCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        slmfn_runtime::logging::init(self.config.log_format);
        slmfn_runtime::serve(self.config).await?;
        Ok(())
    }
}
