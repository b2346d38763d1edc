//! `fn rollback NAME [REVISION]`: makes an earlier revision current again.

use clap::Parser;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, RemoteArgs, Revision, decode};
use crate::commands::parse_name;
use crate::output;

/// Make an earlier revision current: REVISION, or the one deployed before the current one.
#[derive(Debug, Parser)]
pub(crate) struct RollbackCommand {
    /// The function's name.
    #[arg(value_parser = parse_name)]
    name: String,

    /// The revision to make current (see `fn revisions NAME`). Default: the previous one.
    revision: Option<String>,

    /// Print the now-current revision as JSON (the runtime's answer).
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

impl RollbackCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let client = Client::new(&self.remote)?;
        let mut request = client.admin(Method::POST, &format!("/functions/{}/rollback", self.name));
        if let Some(revision) = &self.revision {
            request = request.json(&json!({ "revision": revision }));
        }
        let answer: Value = client.admin_json(request).await?;
        if self.json {
            return output::print_json(&answer);
        }
        let revision: Revision = decode(&answer)?;
        println!(
            "Rolled back {} to revision {}",
            revision.function, revision.revision
        );
        Ok(())
    }
}
