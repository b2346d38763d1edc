//! `fn list`: the functions deployed on a runtime.

use clap::Parser;
use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, Function, RemoteArgs, decode};
use crate::output;

/// List the deployed functions: name, current revision, revision count, last update.
#[derive(Debug, Parser)]
pub(crate) struct ListCommand {
    /// Print the runtime's answer (`{"functions": [...]}`) as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

impl ListCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let client = Client::new(&self.remote)?;
        let answer: Value = client
            .admin_json(client.admin(Method::GET, "/functions"))
            .await?;
        if self.json {
            return output::print_json(&answer);
        }
        let functions: Vec<Function> = decode(&answer["functions"])?;
        if functions.is_empty() {
            println!("No functions deployed.");
            return Ok(());
        }
        let rows: Vec<Vec<String>> = functions
            .into_iter()
            .map(|f| {
                vec![
                    f.name,
                    f.current_revision,
                    f.revisions.to_string(),
                    f.updated_at,
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(&["NAME", "REVISION", "REVISIONS", "UPDATED"], &rows)
        );
        Ok(())
    }
}
