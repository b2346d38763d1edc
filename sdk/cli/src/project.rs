//! A function directory on disk: `fn.toml` next to a cargo crate, and where its built component
//! lives.
//!
//! The component's path is `[build] component` from `fn.toml` (relative to it) when set, else
//! derived from what `cargo metadata` says: cargo's target directory (which honours
//! `CARGO_TARGET_DIR`, `build.target-dir` and enclosing workspaces) and the crate's cdylib name.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use slmfn_runtime::Manifest;

/// The manifest's file name.
pub(crate) const MANIFEST_FILE: &str = "fn.toml";

/// The only target that produces components of the `slmfn:agent` world.
pub(crate) const WASM_TARGET: &str = "wasm32-wasip2";

/// Which cargo profile to build and look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    Release,
    Debug,
}

impl Profile {
    /// The directory cargo puts this profile's artifacts in.
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// A function directory with a valid `fn.toml`.
#[derive(Debug)]
pub(crate) struct Project {
    /// The directory holding `fn.toml` (and normally `Cargo.toml`).
    pub(crate) dir: PathBuf,
    /// `fn.toml` as written: deploy uploads the text, not a re-serialisation.
    pub(crate) manifest_text: String,
    pub(crate) manifest: Manifest,
}

impl Project {
    /// Reads and validates `dir/fn.toml`.
    pub(crate) async fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let manifest_text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no {MANIFEST_FILE} in {}: pass --path to a function's directory, or create one with `fn new NAME`",
                display_dir(dir)
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let manifest =
            Manifest::parse(&manifest_text).with_context(|| path.display().to_string())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest_text,
            manifest,
        })
    }

    /// The path set by `[build] component`, resolved against the manifest's directory.
    pub(crate) fn explicit_component_path(&self) -> Option<PathBuf> {
        let component = self.manifest.build.as_ref()?.component.as_deref()?;
        Some(self.dir.join(component))
    }

    /// Where the built component is: `[build] component`, else cargo's output for `profile`.
    pub(crate) async fn component_path(&self, profile: Profile) -> anyhow::Result<PathBuf> {
        match self.explicit_component_path() {
            Some(path) => Ok(path),
            None => self.cargo_component_path(profile).await,
        }
    }

    /// Where cargo leaves the component for `profile`.
    pub(crate) async fn cargo_component_path(&self, profile: Profile) -> anyhow::Result<PathBuf> {
        let krate = cargo_crate(&self.dir).await?;
        Ok(default_component_path(
            &krate.target_dir,
            &krate.lib_name,
            profile,
        ))
    }
}

/// `path` for messages: `.` rather than an empty string.
pub(crate) fn display_dir(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        ".".to_string()
    } else {
        path.display().to_string()
    }
}

/// Cargo's output for a cdylib named `lib_name`: `<target>/wasm32-wasip2/<profile>/<lib>.wasm`
/// (cargo turns `-` into `_` in artifact names).
pub(crate) fn default_component_path(
    target_dir: &Path,
    lib_name: &str,
    profile: Profile,
) -> PathBuf {
    target_dir
        .join(WASM_TARGET)
        .join(profile.dir())
        .join(format!("{}.wasm", lib_name.replace('-', "_")))
}

/// What `cargo metadata` says about the crate in a directory.
#[derive(Debug, PartialEq)]
pub(crate) struct CargoCrate {
    /// Cargo's target directory (absolute).
    pub(crate) target_dir: PathBuf,
    /// The name of the crate's cdylib target.
    pub(crate) lib_name: String,
}

/// Runs `cargo metadata --no-deps` (no dependency resolution, no network) for `dir/Cargo.toml`.
async fn cargo_crate(dir: &Path) -> anyhow::Result<CargoCrate> {
    let manifest_path = dir.join("Cargo.toml");
    if !tokio::fs::try_exists(&manifest_path).await.unwrap_or(false) {
        bail!(
            "no Cargo.toml in {}: set `[build] component` in {MANIFEST_FILE} to the component's path",
            display_dir(dir)
        );
    }
    let output = tokio::process::Command::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
            // Relative to the directory cargo runs in (`manifest_path` is relative to ours).
            "Cargo.toml",
        ])
        .current_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .output()
        .await
        .map_err(cargo_spawn_error)?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed for {}:\n{}",
            manifest_path.display(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    let manifest_path = std::fs::canonicalize(&manifest_path).unwrap_or(manifest_path);
    crate_from_metadata(&output.stdout, &manifest_path)
}

/// The error for a `cargo` that could not be started.
pub(crate) fn cargo_spawn_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!("`cargo` not found: install Rust from https://rustup.rs")
    } else {
        anyhow::anyhow!(e).context("cannot run `cargo`")
    }
}

/// Picks the package whose manifest is `manifest_path` out of `cargo metadata` JSON.
pub(crate) fn crate_from_metadata(json: &[u8], manifest_path: &Path) -> anyhow::Result<CargoCrate> {
    #[derive(Deserialize)]
    struct Metadata {
        packages: Vec<Package>,
        target_directory: PathBuf,
    }
    #[derive(Deserialize)]
    struct Package {
        name: String,
        manifest_path: PathBuf,
        targets: Vec<Target>,
    }
    #[derive(Deserialize)]
    struct Target {
        name: String,
        crate_types: Vec<String>,
    }

    let metadata: Metadata =
        serde_json::from_slice(json).context("cannot parse `cargo metadata` output")?;
    let same =
        |p: &Path| p == manifest_path || std::fs::canonicalize(p).is_ok_and(|p| p == manifest_path);
    let Some(package) = metadata.packages.iter().find(|p| same(&p.manifest_path)) else {
        bail!(
            "{} is a workspace without a package: run `fn` in the function's own directory",
            manifest_path.display()
        );
    };
    let Some(lib) = package
        .targets
        .iter()
        .find(|t| t.crate_types.iter().any(|c| c == "cdylib"))
    else {
        bail!(
            "crate `{}` has no cdylib target: add `[lib] crate-type = [\"cdylib\"]` to {}",
            package.name,
            manifest_path.display()
        );
    };
    Ok(CargoCrate {
        target_dir: metadata.target_directory,
        lib_name: lib.name.clone(),
    })
}

/// Checks the wasm header: a component has version `0d 00` and layer `01 00`; a core module
/// has version `01 00 00 00`.
pub(crate) fn check_component(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const COMPONENT: &[u8] = &[0x0d, 0x00, 0x01, 0x00];
    const CORE_MODULE: &[u8] = &[0x01, 0x00, 0x00, 0x00];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        bail!("{} is not a WebAssembly file", path.display());
    }
    match &bytes[4..8] {
        COMPONENT => Ok(()),
        CORE_MODULE => bail!(
            "{} is a core WebAssembly module, not a component: build it with `--target {WASM_TARGET}` (wasm32-wasip1 and wasm32-unknown-unknown produce core modules)",
            path.display()
        ),
        other => bail!(
            "{} has an unknown WebAssembly version {other:02x?}: expected a component (0d 00 01 00)",
            path.display()
        ),
    }
}

/// Reads a built component and checks its header.
pub(crate) async fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "component {} does not exist: build it with `fn build`",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    check_component(path, &bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_path_follows_cargo_naming() {
        assert_eq!(
            default_component_path(Path::new("/t"), "hello-world", Profile::Release),
            Path::new("/t/wasm32-wasip2/release/hello_world.wasm")
        );
        assert_eq!(
            default_component_path(Path::new("/t"), "hello_world", Profile::Debug),
            Path::new("/t/wasm32-wasip2/debug/hello_world.wasm")
        );
    }

    #[test]
    fn metadata_picks_the_crate_and_its_cdylib() {
        let json = br#"{
            "packages": [
                {"name": "other", "manifest_path": "/ws/other/Cargo.toml",
                 "targets": [{"name": "other", "kind": ["lib"], "crate_types": ["lib"]}]},
                {"name": "hello-world", "manifest_path": "/ws/hello/Cargo.toml",
                 "targets": [{"name": "hello_world", "kind": ["cdylib"], "crate_types": ["cdylib"]}]}
            ],
            "target_directory": "/ws/target",
            "version": 1
        }"#;
        let krate = crate_from_metadata(json, Path::new("/ws/hello/Cargo.toml")).unwrap();
        assert_eq!(
            krate,
            CargoCrate {
                target_dir: "/ws/target".into(),
                lib_name: "hello_world".into()
            }
        );
        let e = crate_from_metadata(json, Path::new("/ws/other/Cargo.toml")).unwrap_err();
        assert!(e.to_string().contains("no cdylib target"), "{e}");
        let e = crate_from_metadata(json, Path::new("/ws/Cargo.toml")).unwrap_err();
        assert!(e.to_string().contains("workspace without a package"), "{e}");
    }

    #[test]
    fn component_magic() {
        let path = Path::new("x.wasm");
        check_component(path, b"\0asm\x0d\x00\x01\x00rest").unwrap();
        let e = check_component(path, b"\0asm\x01\x00\x00\x00").unwrap_err();
        assert!(e.to_string().contains("core WebAssembly module"), "{e}");
        let e = check_component(path, b"\x7fELF\x02\x01\x01\x00").unwrap_err();
        assert!(e.to_string().contains("not a WebAssembly file"), "{e}");
        assert!(check_component(path, b"\0asm").is_err());
        assert!(check_component(path, b"\0asm\x0e\x00\x01\x00").is_err());
    }
}
