//! `fn new NAME`: scaffolds a function crate.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;

use crate::commands::parse_name;
use crate::project::{MANIFEST_FILE, WASM_TARGET, display_dir};

/// The SDK this `fn` was built with: `sdk/rust` next to `sdk/cli` in the slmfn checkout.
const BUILT_IN_SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rust");

/// Create a new function: a Rust crate that builds to an slmfn agent component.
#[derive(Debug, Parser)]
pub(crate) struct NewCommand {
    /// The function's name: 1-63 lowercase letters, digits and '-', starting with a letter.
    #[arg(value_parser = parse_name)]
    name: String,

    /// Directory to create the function's directory `NAME/` in.
    #[arg(long, default_value = ".")]
    dir: PathBuf,

    /// The slmfn Rust SDK (`sdk/rust` of an slmfn checkout) the crate depends on by path.
    /// Default: the SDK this `fn` was built from.
    #[arg(long, env = "SLMFN_SDK_PATH")]
    sdk_path: Option<PathBuf>,

    /// Scaffold a tool component (`kind = "tool"`: tools for agents and `/mcp`) instead of an
    /// agent.
    #[arg(long)]
    tool: bool,
}

impl NewCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let sdk = sdk_path(self.sdk_path.as_deref())?;
        let sdk = sdk.to_str().with_context(|| {
            format!(
                "the SDK path {} is not UTF-8, which Cargo.toml cannot hold",
                sdk.display()
            )
        })?;
        let target = self.dir.join(&self.name);
        write_scaffold(&target, &self.name, sdk, self.tool)?;
        let shown = display_dir(&target);
        let what = if self.tool {
            "tool component"
        } else {
            "function"
        };
        println!("Created {what} `{}` in {shown}", self.name);
        println!();
        println!("Next:");
        println!("  cd {shown}");
        println!("  fn build                  # needs `rustup target add {WASM_TARGET}`");
        println!("  fn serve                  # in another terminal: a local runtime");
        println!("  fn deploy");
        if self.tool {
            println!(
                "  # then grant it to an agent: [tools] allowed = [\"{}.*\"] in its fn.toml",
                self.name
            );
        } else {
            println!("  fn invoke {}", self.name);
        }
        Ok(())
    }
}

/// The SDK directory, absolute: `--sdk-path`/`SLMFN_SDK_PATH`, else the built-in one.
fn sdk_path(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (path, hint) = match configured.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => (path, "point --sdk-path (or SLMFN_SDK_PATH) at"),
        None => (
            Path::new(BUILT_IN_SDK_PATH),
            "this `fn` was built elsewhere: set SLMFN_SDK_PATH (or --sdk-path) to",
        ),
    };
    let not_found = || {
        format!(
            "the slmfn Rust SDK is not at {}: {hint} the sdk/rust directory of an slmfn checkout",
            path.display()
        )
    };
    let path = std::fs::canonicalize(path).with_context(not_found)?;
    if !path.join("Cargo.toml").is_file() {
        bail!(not_found());
    }
    Ok(path)
}

/// Creates `dir` (which must not exist) with the scaffold's files. On failure, removes what it
/// created.
fn write_scaffold(dir: &Path, name: &str, sdk_path: &str, tool: bool) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} already exists: choose another name or --dir, or remove it first",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let write_all = || -> anyhow::Result<()> {
        let files = if tool {
            tool_scaffold(name, sdk_path)
        } else {
            scaffold(name, sdk_path)
        };
        for (file, contents) in files {
            let path = dir.join(file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    };
    write_all().inspect_err(|_| {
        let _ = std::fs::remove_dir_all(dir);
    })
}

/// The scaffold's files (relative path, contents) for function `name` using the SDK at
/// `sdk_path`.
fn scaffold(name: &str, sdk_path: &str) -> Vec<(&'static str, String)> {
    let lib_name = name.replace('-', "_");
    let cargo_toml = format!(
        r#"[package]
name = {name}
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
slmfn-sdk = {{ path = {sdk_path} }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# Small, fast-loading components: the runtime compiles each deployed revision once.
[profile.release]
opt-level = "s"
strip = true
lto = true

# A workspace of its own, so the function builds standalone wherever it lives.
[workspace]
"#,
        name = toml_string(name),
        sdk_path = toml_string(sdk_path),
    );
    let fn_toml = format!(
        r#"# The slmfn function manifest. Unknown keys are rejected, so a typo never drops a setting.
name = {name}
description = "An slmfn agent function"

[build]
# Where `fn build` and `fn deploy` find the component, relative to this file. By default it is
# cargo's output for this crate (following CARGO_TARGET_DIR), usually:
# component = "target/{WASM_TARGET}/release/{lib_name}.wasm"

# [limits]
# timeout_ms = 30000        # per-invocation deadline (at most 290000)
# memory_mb = 64            # linear memory per instance
# max_concurrency = 32      # instances of this function at once

# [env]                     # environment variables the function sees (it sees nothing else)
# GREETING = "hi"

# [models]                  # models the function may use for inference
# allowed = ["smollm2"]
# default = "smollm2"

# [tools]                   # tools the function may see and call: names or globs
# allowed = ["clock.now"]   # (docs/tools.md)

# [input]                   # the JSON Schema of the request body, for MCP clients (/mcp)
# schema = {{ type = "object", properties = {{ name = {{ type = "string" }} }} }}
"#,
        name = toml_string(name),
    );
    let lib_rs = format!(
        r#"//! `{name}`: an slmfn agent function.
//!
//! `fn build` compiles it to a WebAssembly component, `fn deploy` uploads it to a runtime and
//! `fn invoke {name}` calls it.

use slmfn_sdk::{{Error, Request, Response, export_agent, kv}};

/// Greets the caller (`?name=Ada`, default "world") and counts the invocations in the
/// function's own key/value store.
fn handle(req: Request) -> Result<Response, Error> {{
    let count = kv::increment("count", 1)?;
    let name = req.query_param("name").unwrap_or_else(|| "world".into());
    Response::json(&serde_json::json!({{"hello": name, "count": count}}))
}}

export_agent!(handle);
"#
    );
    vec![
        ("Cargo.toml", cargo_toml),
        (MANIFEST_FILE, fn_toml),
        ("src/lib.rs", lib_rs),
        (".gitignore", "/target\n".to_string()),
    ]
}

/// A tool component's scaffold: `kind = "tool"`, one tool with a typed input schema.
fn tool_scaffold(name: &str, sdk_path: &str) -> Vec<(&'static str, String)> {
    let mut files = scaffold(name, sdk_path);
    for (file, contents) in &mut files {
        match *file {
            "Cargo.toml" => {
                *contents = contents.replace(
                    "serde_json = \"1\"\n",
                    "serde_json = \"1\"\nschemars = { version = \"1.2\", default-features = false, features = [\"std\", \"derive\"] }\n",
                );
            }
            MANIFEST_FILE => {
                *contents = format!(
                    r#"# The slmfn function manifest. Unknown keys are rejected, so a typo never drops a setting.
name = {name}
description = "An slmfn tool component"
# A tool component: its tools are `{plain}.<tool>` for agents that grant them, and at /mcp.
kind = "tool"

# [limits]                  # per call: every call runs on a fresh instance
# timeout_ms = 30000
# memory_mb = 64
# max_concurrency = 32
"#,
                    name = toml_string(name),
                    plain = name,
                );
            }
            "src/lib.rs" => {
                *contents = format!(
                    r#"//! `{name}`: an slmfn tool component. Deployed with `fn deploy`, its tools are
//! `{name}.<tool>` for agents whose fn.toml grants them (`[tools] allowed = ["{name}.*"]`).

use serde::Deserialize;
use slmfn_sdk::export_tools;
use slmfn_sdk::provider::{{Tool, ToolError, ToolResult, arguments, tool}};

/// The arguments of `greet`; the runtime checks them against this schema before the call.
#[derive(Deserialize, schemars::JsonSchema)]
struct Greet {{
    /// Who to greet.
    name: String,
}}

fn tools() -> Vec<Tool> {{
    vec![tool::<Greet>("greet", "Greets someone by name")]
}}

fn call(name: &str, args: &str) -> Result<ToolResult, ToolError> {{
    match name {{
        "greet" => {{
            let Greet {{ name }} = arguments(args)?;
            Ok(ToolResult::text(format!("Hello, {{name}}!")))
        }}
        other => Err(ToolError::NotFound(format!("no tool {{other:?}}"))),
    }}
}}

export_tools!(list = tools, call = call);
"#
                );
            }
            _ => {}
        }
    }
    files
}

/// `s` as a quoted TOML string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use slmfn_runtime::Manifest;

    use super::*;

    #[test]
    fn scaffold_is_valid_toml_and_manifest() {
        let files = scaffold("hello-world", r#"/opt/slm "fn"/sdk/rust"#);
        let file = |name: &str| &files.iter().find(|(f, _)| *f == name).unwrap().1;

        let manifest = Manifest::parse(file("fn.toml")).unwrap();
        assert_eq!(manifest.name, "hello-world");
        assert_eq!(manifest.build.unwrap().component, None);

        let cargo: toml::Table = toml::from_str(file("Cargo.toml")).unwrap();
        assert_eq!(cargo["package"]["name"].as_str(), Some("hello-world"));
        assert_eq!(cargo["lib"]["crate-type"][0].as_str(), Some("cdylib"));
        assert_eq!(
            cargo["dependencies"]["slmfn-sdk"]["path"].as_str(),
            Some(r#"/opt/slm "fn"/sdk/rust"#)
        );
        assert!(cargo["workspace"].is_table());
        assert_eq!(cargo["profile"]["release"]["opt-level"].as_str(), Some("s"));

        assert!(file("src/lib.rs").contains("export_agent!(handle);"));
        assert!(file("fn.toml").contains("release/hello_world.wasm"));

        let tools = tool_scaffold("my-tools", "/sdk");
        let file = |name: &str| &tools.iter().find(|(f, _)| *f == name).unwrap().1;
        let manifest = Manifest::parse(file("fn.toml")).unwrap();
        assert_eq!(manifest.kind, slmfn_runtime::manifest::Kind::Tool);
        let cargo: toml::Table = toml::from_str(file("Cargo.toml")).unwrap();
        assert!(cargo["dependencies"]["schemars"].is_table());
        assert!(file("src/lib.rs").contains("export_tools!(list = tools, call = call);"));
    }

    #[test]
    fn refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("hello");
        write_scaffold(&dir, "hello", "/sdk", false).unwrap();
        assert!(dir.join("src/lib.rs").is_file());
        assert!(dir.join(".gitignore").is_file());
        let e = write_scaffold(&dir, "hello", "/sdk", true).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
    }

    #[test]
    fn sdk_path_must_exist() {
        let e = sdk_path(Some(Path::new("/nonexistent/sdk"))).unwrap_err();
        assert!(
            e.to_string().contains("SDK is not at /nonexistent/sdk"),
            "{e}"
        );
    }
}
