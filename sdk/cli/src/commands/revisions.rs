//! `fn revisions NAME`: a function's revisions, oldest first.

use clap::Parser;
use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, Function, RemoteArgs, Revision, decode};
use crate::commands::parse_name;
use crate::output;

/// List a function's revisions, oldest first; `*` marks the current one.
#[derive(Debug, Parser)]
pub(crate) struct RevisionsCommand {
    /// The function's name.
    #[arg(value_parser = parse_name)]
    name: String,

    /// Print the runtime's answer (`{"revisions": [...]}`) as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

impl RevisionsCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let client = Client::new(&self.remote)?;
        let path = format!("/functions/{}", self.name);
        let revisions_request = client.admin(Method::GET, &format!("{path}/revisions"));
        if self.json {
            let answer: Value = client.admin_json(revisions_request).await?;
            return output::print_json(&answer);
        }
        let (answer, function): (Value, Value) = tokio::try_join!(
            client.admin_json(revisions_request),
            client.admin_json(client.admin(Method::GET, &path)),
        )?;
        let revisions: Vec<Revision> = decode(&answer["revisions"])?;
        let function: Function = decode(&function)?;
        let rows: Vec<Vec<String>> = revisions
            .into_iter()
            .map(|r| {
                let current = if r.revision == function.current_revision {
                    "*"
                } else {
                    ""
                };
                vec![
                    r.revision,
                    r.created_at,
                    output::size(r.component_size),
                    r.component_sha256.chars().take(12).collect(),
                    current.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(&["REVISION", "CREATED", "SIZE", "SHA256", "CURRENT"], &rows)
        );
        Ok(())
    }
}
