//! `fn deploy`: builds the function and uploads `fn.toml` plus the component as a new revision.

use std::path::PathBuf;

use clap::Parser;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::client::{Client, RemoteArgs, Revision, decode};
use crate::commands::build::{self, Artifact};
use crate::output;
use crate::project::{Profile, Project, read_component};

/// Deploy a function: build it, upload fn.toml and the component, and make the new revision
/// current.
#[derive(Debug, Parser)]
pub(crate) struct DeployCommand {
    /// The function's directory (holding fn.toml).
    #[arg(long, default_value = ".")]
    path: PathBuf,

    /// Upload this component instead of building one (implies --no-build).
    #[arg(long, value_name = "FILE")]
    component: Option<PathBuf>,

    /// Don't build: upload the component `fn build` left.
    #[arg(long)]
    no_build: bool,

    /// Print the new revision as JSON (the runtime's answer) instead of a summary.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

impl DeployCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let project = Project::open(&self.path).await?;
        let client = Client::new(&self.remote)?;
        let name = project.manifest.name.clone();

        let artifact = if let Some(path) = self.component {
            let bytes = read_component(&path).await?;
            Artifact { path, bytes }
        } else if self.no_build {
            let path = project.component_path(Profile::Release).await?;
            let bytes = read_component(&path).await?;
            Artifact { path, bytes }
        } else {
            let artifact = build::build(&project, Profile::Release).await?;
            eprintln!("{}", artifact.summary(&project));
            artifact
        };
        let size = artifact.bytes.len() as u64;

        let form = Form::new()
            .part(
                "manifest",
                Part::text(project.manifest_text.clone()).mime_str("application/toml")?,
            )
            .part(
                "component",
                Part::bytes(artifact.bytes)
                    .file_name("component.wasm")
                    .mime_str("application/wasm")?,
            );
        let spinner = output::spinner(format!(
            "Uploading {name} ({}) to {}",
            output::size(size),
            client.url("")
        ));
        let request = client
            .admin(Method::POST, &format!("/functions/{name}"))
            .multipart(form);
        let answer: Result<Value, _> = client.admin_json(request).await;
        spinner.finish_and_clear();
        let answer = answer?;

        if self.json {
            return output::print_json(&answer);
        }
        let revision: Revision = decode(&answer)?;
        println!(
            "Deployed {} revision {} ({})",
            revision.function,
            revision.revision,
            output::size(if revision.component_size > 0 {
                revision.component_size
            } else {
                size
            })
        );
        let kind = answer["manifest"]["kind"].as_str().unwrap_or("agent");
        if kind == "tool" {
            println!(
                "Tools: {name}.* (an agent sees them when its fn.toml grants them: [tools] allowed = [\"{name}.*\"])",
                name = revision.function
            );
        } else {
            println!("Invoke: {}", client.invoke_url(&revision.function));
        }
        Ok(())
    }
}
