//! One file per subcommand. Each is a `#[derive(Parser)] struct XCommand` whose doc comment is
//! its `--help` text, with `async fn run(self) -> anyhow::Result<()>`.

pub(crate) mod build;
pub(crate) mod delete;
pub(crate) mod deploy;
pub(crate) mod invoke;
pub(crate) mod list;
pub(crate) mod models;
pub(crate) mod new;
pub(crate) mod revisions;
pub(crate) mod rollback;
pub(crate) mod send;
pub(crate) mod serve;

/// Clap value parser for function names: a DNS-1123 label, checked before any request so that
/// a name never changes the shape of a URL.
pub(crate) fn parse_name(name: &str) -> Result<String, slmfn_runtime::manifest::ManifestError> {
    slmfn_runtime::manifest::validate_name(name).map(|()| name.to_string())
}
