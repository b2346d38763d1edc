//! `fn delete NAME`: removes a function, its revisions and its kv namespace.

use clap::Parser;
use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, RemoteArgs};
use crate::commands::parse_name;
use crate::output;

/// Delete a function with all its revisions and its key/value data.
#[derive(Debug, Parser)]
pub(crate) struct DeleteCommand {
    /// The function's name.
    #[arg(value_parser = parse_name)]
    name: String,

    /// Print the runtime's answer (`{"deleted": NAME}`) as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

impl DeleteCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let client = Client::new(&self.remote)?;
        let request = client.admin(Method::DELETE, &format!("/functions/{}", self.name));
        let answer: Value = client.admin_json(request).await?;
        if self.json {
            return output::print_json(&answer);
        }
        println!(
            "Deleted {}",
            answer["deleted"].as_str().unwrap_or(&self.name)
        );
        Ok(())
    }
}
