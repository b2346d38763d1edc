//! `fn build`: compiles the function's crate to a WebAssembly component with cargo.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::output;
use crate::project::{Profile, Project, WASM_TARGET, cargo_spawn_error, display_dir};

/// Build the function in a directory into a WebAssembly component
/// (`cargo build --release --target wasm32-wasip2`).
#[derive(Debug, Parser)]
pub(crate) struct BuildCommand {
    /// The function's directory (holding fn.toml and Cargo.toml).
    #[arg(long, default_value = ".")]
    path: PathBuf,

    /// Build the debug profile: quicker to compile, larger and slower to run.
    #[arg(long)]
    debug: bool,
}

impl BuildCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let project = Project::open(&self.path).await?;
        let profile = if self.debug {
            Profile::Debug
        } else {
            Profile::Release
        };
        let artifact = build(&project, profile).await?;
        println!("{}", artifact.summary(&project));
        Ok(())
    }
}

/// A built, checked component.
#[derive(Debug)]
pub(crate) struct Artifact {
    pub(crate) path: PathBuf,
    pub(crate) bytes: Vec<u8>,
}

impl Artifact {
    /// `Built hello: <path> (<size>)`: the line `fn build` prints.
    pub(crate) fn summary(&self, project: &Project) -> String {
        format!(
            "Built {}: {} ({})",
            project.manifest.name,
            self.path.display(),
            output::size(self.bytes.len() as u64)
        )
    }
}

/// Checks the toolchain, runs cargo, and checks that the expected component exists and is a
/// component (not a core module).
pub(crate) async fn build(project: &Project, profile: Profile) -> anyhow::Result<Artifact> {
    let dir = if project.dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &project.dir
    };
    if !dir.join("Cargo.toml").is_file() {
        bail!(
            "no Cargo.toml in {}: `fn build` builds the Rust crate next to fn.toml (to deploy a component built otherwise, use `fn deploy --component FILE`)",
            display_dir(dir)
        );
    }
    check_target_installed(dir).await?;
    // Asking cargo where the component goes before building fails fast on a crate without a
    // cdylib target.
    let explicit = project.explicit_component_path();
    let path = match &explicit {
        Some(path) => path.clone(),
        None => project.cargo_component_path(profile).await?,
    };

    run_cargo_build(dir, &project.manifest.name, profile).await?;

    if explicit.is_some() && !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        let built = match project.cargo_component_path(profile).await {
            Ok(built) => format!("; cargo's output is {}", built.display()),
            Err(_) => String::new(),
        };
        bail!(
            "cargo succeeded but {} (`[build] component` in fn.toml) does not exist{built}",
            path.display()
        );
    }
    let bytes = crate::project::read_component(&path).await?;
    Ok(Artifact { path, bytes })
}

/// Fails with the fix when rustup manages the toolchain and lacks the wasm target. Without
/// rustup (a distribution's toolchain) cargo reports a missing target itself.
async fn check_target_installed(dir: &Path) -> anyhow::Result<()> {
    let output = match tokio::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("cannot run `rustup target list --installed`"),
    };
    if !output.status.success() {
        return Ok(());
    }
    if !String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        bail!("{WASM_TARGET} target missing: run `rustup target add {WASM_TARGET}`");
    }
    Ok(())
}

/// Runs `cargo build` in `dir`, showing cargo's status lines ("Compiling x") in a spinner.
/// On failure, prints cargo's whole stderr; on success, prints its warnings.
async fn run_cargo_build(dir: &Path, name: &str, profile: Profile) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new("cargo");
    command
        .args([
            "build",
            "--manifest-path",
            "Cargo.toml",
            "--target",
            WASM_TARGET,
        ])
        .args(["--color", "never"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if profile == Profile::Release {
        command.arg("--release");
    }
    let mut child = command.spawn().map_err(cargo_spawn_error)?;
    let stderr = child.stderr.take().context("cargo's stderr is not piped")?;

    let spinner = output::spinner(format!("Building {name} ({})", profile.dir()));
    let mut reader = BufReader::new(stderr);
    let mut log = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .await
            .context("cannot read cargo's output")?
            == 0
        {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if is_status_line(&text) {
            spinner.set_message(text.trim().to_string());
        }
        log.push_str(&text);
    }
    let status = child.wait().await.context("cannot wait for cargo")?;
    spinner.finish_and_clear();

    if !status.success() {
        eprint!("{log}");
        bail!(
            "`cargo build --target {WASM_TARGET}` failed in {} ({status})",
            display_dir(dir)
        );
    }
    if log.lines().any(|l| l.starts_with("warning")) {
        let diagnostics: String = log
            .lines()
            .filter(|l| !is_status_line(l))
            .flat_map(|l| [l, "\n"])
            .collect();
        eprint!("{diagnostics}");
    }
    Ok(())
}

/// Cargo's status lines are a right-aligned capitalised verb: `   Compiling serde v1.0.0`.
fn is_status_line(line: &str) -> bool {
    line.starts_with(' ')
        && line.trim_start().split_once(' ').is_some_and(|(verb, _)| {
            verb.len() > 1
                && verb.starts_with(|c: char| c.is_ascii_uppercase())
                && verb.chars().all(|c| c.is_ascii_alphabetic())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(is_status_line("   Compiling serde v1.0.219"));
        assert!(is_status_line(
            "    Finished `release` profile [optimized] target(s) in 3.1s"
        ));
        assert!(!is_status_line("warning: unused variable: `x`"));
        assert!(!is_status_line("  --> src/lib.rs:3:9"));
        assert!(!is_status_line("   |     ^ help: if this is intentional"));
        assert!(!is_status_line(
            "  = note: `#[warn(unused_variables)]` on by default"
        ));
    }
}
