//! Cluster mode's functions: a read-only directory baked into the image (or mounted), one
//! folder per function, instead of the admin API.
//!
//! ```text
//! DIR/<name>/fn.toml
//! DIR/<name>/<name>.wasm          the component
//! DIR/<name>/<name>.cwasm         optional: its precompiled artifact (`slmfn precompile DIR`)
//! DIR/<name>/<name>.cwasm.key     "<engine key> <component sha256>": what the artifact is for
//! ```
//!
//! An artifact is used only when its key file names this engine and the component's digest;
//! otherwise the component is compiled at start (and logged), so a stale or foreign artifact
//! costs time, never correctness. A function whose current revision already has the same
//! component and manifest is not deployed again (a persistent data dir keeps its history).

use std::path::{Path, PathBuf};

use super::{Host, HostError, Result, component};
use crate::manifest::Manifest;
use crate::registry::sha256_hex;

/// One function folder.
struct Folder {
    name: String,
    /// The fn.toml text (deployed as is) and its parse.
    manifest: String,
    parsed: Manifest,
    component: PathBuf,
    artifact: PathBuf,
    key: PathBuf,
}

/// What [`Host::install_dir`] did.
#[derive(Debug, Default)]
pub struct DirReport {
    /// Functions serving from the directory.
    pub functions: usize,
    /// Of those, how many had to be compiled at start (0 when the image was precompiled).
    pub compiled: usize,
}

fn folders(dir: &Path) -> Result<Vec<Folder>> {
    let io = |e: std::io::Error| {
        HostError::Internal(format!(
            "cannot read the functions dir {}: {e}",
            dir.display()
        ))
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let manifest_path = path.join("fn.toml");
        if !manifest_path.is_file() {
            continue;
        }
        let manifest = std::fs::read_to_string(&manifest_path).map_err(io)?;
        let parsed = Manifest::parse(&manifest)
            .map_err(|e| HostError::Internal(format!("{}: {e}", manifest_path.display())))?;
        let name = parsed.name.clone();
        out.push(Folder {
            parsed,
            component: path.join(format!("{name}.wasm")),
            artifact: path.join(format!("{name}.cwasm")),
            key: path.join(format!("{name}.cwasm.key")),
            name,
            manifest,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| HostError::Internal(format!("cannot read {}: {e}", path.display())))
}

impl Host {
    /// Serves every function of `dir` (see the module docs). Any unusable folder fails the
    /// start: an image that cannot serve what it was built with must not turn ready.
    pub async fn install_dir(&self, dir: &Path) -> Result<DirReport> {
        let mut report = DirReport::default();
        for folder in folders(dir)? {
            let bytes = read(&folder.component)?;
            let sha = sha256_hex(&bytes);
            let current = self
                .registry
                .function(&folder.name)
                .ok()
                .and_then(|f| self.registry.revision(&folder.name, f.current).ok());
            let unchanged =
                current.is_some_and(|r| r.component_sha256 == sha && r.manifest == folder.parsed);
            let before = self.compilations();
            if self.artifact_fits(&folder, &sha) {
                self.registry
                    .put_artifact(&sha, &self.engine_key, &read(&folder.artifact)?)?;
            }
            if unchanged {
                // Already current (a persistent data dir): make sure it is the one serving.
                if !self.is_loaded(&folder.name) {
                    let f = self.registry.function(&folder.name)?;
                    let loaded = self.load_revision(&folder.name, f.current).await?;
                    self.install(loaded);
                }
            } else {
                self.deploy(&folder.name, &folder.manifest, &bytes).await?;
            }
            if self.compilations() > before {
                tracing::warn!(function = %folder.name, "compiled at start: no usable precompiled artifact (run `slmfn precompile` when building the image)");
                report.compiled += 1;
            }
            report.functions += 1;
        }
        Ok(report)
    }

    fn artifact_fits(&self, folder: &Folder, sha: &str) -> bool {
        let Ok(key) = std::fs::read_to_string(&folder.key) else {
            return false;
        };
        let mut parts = key.split_whitespace();
        let fits = parts.next() == Some(self.engine_key.as_str()) && parts.next() == Some(sha);
        if !fits {
            tracing::warn!(function = %folder.name, "the precompiled artifact is for another engine or component; compiling instead");
        }
        fits && folder.artifact.is_file()
    }
}

/// `slmfn precompile DIR`: writes each function's artifact and key file next to its component,
/// for this binary's engine. Returns the functions precompiled.
pub fn precompile_dir(dir: &Path) -> Result<Vec<String>> {
    let engine = super::engine::new_engine().map_err(|e| HostError::Internal(format!("{e:#}")))?;
    let key = super::engine::compatibility_key(&engine);
    let mut done = Vec::new();
    for folder in folders(dir)? {
        let bytes = read(&folder.component)?;
        component::check_binary(&bytes)?;
        let artifact = component::precompile(&engine, &bytes)?;
        let write = |path: &Path, data: &[u8]| {
            std::fs::write(path, data)
                .map_err(|e| HostError::Internal(format!("cannot write {}: {e}", path.display())))
        };
        write(&folder.artifact, &artifact)?;
        write(
            &folder.key,
            format!("{key} {}\n", sha256_hex(&bytes)).as_bytes(),
        )?;
        done.push(folder.name);
    }
    Ok(done)
}
