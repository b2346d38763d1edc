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

    /// Render the function's Knative Service and Triggers instead of uploading it (nothing is
    /// built or sent): printed with `-o`, applied with `--apply`. See knative/README.md.
    #[arg(long)]
    knative: bool,

    /// With --knative: print the manifests in this format (the default without --apply).
    #[arg(long, short = 'o', value_name = "FORMAT", requires = "knative")]
    output: Option<ManifestFormat>,

    /// With --knative: run `kubectl apply -f -` on the manifests.
    #[arg(long, requires = "knative")]
    apply: bool,

    /// With --knative: the runtime image with this function baked in
    /// (`scripts/build-image.sh` builds it).
    #[arg(long, env = "SLMFN_IMAGE", default_value = concat!("localhost/slmfn:", env!("CARGO_PKG_VERSION")), requires = "knative")]
    image: String,

    /// With --knative: the Broker the Triggers subscribe to.
    #[arg(long, default_value = "default", requires = "knative")]
    broker: String,

    /// With --knative: generation sessions per pod (the concurrency target follows it).
    #[arg(long, default_value_t = 1, requires = "knative")]
    parallel: u32,

    /// With --knative: Knative's KPA on request concurrency (scales to zero), the HPA on the
    /// runtime's model queue depth (needs a Prometheus adapter), or the same through Knative's
    /// KEDA extension (queries Prometheus itself).
    #[arg(long, value_enum, default_value = "kpa", requires = "knative")]
    autoscaler: crate::knative::Autoscaler,

    /// With --autoscaler keda: the Prometheus that KEDA queries.
    #[arg(
        long,
        default_value = "http://prometheus-operated.monitoring.svc:9090",
        requires = "knative"
    )]
    prometheus_address: String,

    #[command(flatten)]
    remote: RemoteArgs,
}

/// How `fn deploy --knative -o` prints manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ManifestFormat {
    /// YAML documents.
    Yaml,
    /// One JSON array.
    Json,
}

impl DeployCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        if self.knative {
            return self.knative().await;
        }
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

impl DeployCommand {
    async fn knative(self) -> anyhow::Result<()> {
        let project = Project::open(&self.path).await?;
        let options = crate::knative::Options {
            image: self.image.clone(),
            broker: self.broker.clone(),
            parallel: self.parallel.max(1),
            autoscaler: self.autoscaler,
            prometheus: self.prometheus_address.clone(),
        };
        let docs = crate::knative::render(&project.manifest, &options);
        let yaml = crate::knative::to_yaml(&docs);
        match (self.output, self.apply) {
            (Some(ManifestFormat::Json), _) => {
                println!("{}", serde_json::to_string_pretty(&docs)?)
            }
            (Some(ManifestFormat::Yaml), _) | (None, false) => print!("{yaml}"),
            (None, true) => {}
        }
        if self.apply {
            apply(&yaml).await?;
        }
        Ok(())
    }
}

/// `kubectl apply -f -` with `yaml` on stdin.
async fn apply(yaml: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = match tokio::process::Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "kubectl is not on PATH: install it (and point it at your cluster), or print the manifests with `fn deploy --knative -o yaml`"
        ),
        Err(e) => anyhow::bail!("cannot run kubectl: {e}"),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(yaml.as_bytes()).await?;
    drop(stdin);
    let status = child.wait().await?;
    anyhow::ensure!(status.success(), "kubectl apply failed ({status})");
    Ok(())
}
