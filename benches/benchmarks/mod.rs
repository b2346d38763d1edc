//! Benchmark areas, and the guest components they run (built by `benches/run.sh`).

pub(crate) mod instantiate;

use std::path::{Path, PathBuf};

/// A guest component to deploy: function name, manifest (`fn.toml`) and component path.
pub(crate) struct Guest {
    pub(crate) name: &'static str,
    pub(crate) manifest: PathBuf,
    pub(crate) component: PathBuf,
}

impl Guest {
    /// `echo` (benches/guests/echo-agent): 200 "hello", the smallest useful agent.
    pub(crate) fn echo() -> Self {
        Self {
            name: "echo",
            manifest: root().join("benches/guests/echo-agent/fn.toml"),
            component: root().join("benches/guests/target/wasm32-wasip2/release/echo_agent.wasm"),
        }
    }

    /// `hello` (functions/hello): a kv counter and a JSON answer.
    pub(crate) fn hello() -> Self {
        Self {
            name: "hello",
            manifest: root().join("functions/hello/fn.toml"),
            component: root().join("functions/target/wasm32-wasip2/release/hello.wasm"),
        }
    }

    /// Manifest text and component bytes; `None` (with a note on stderr) when the component is
    /// not built, so that `cargo test --all-targets` passes without the guests.
    pub(crate) fn load(&self) -> Option<(String, Vec<u8>)> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        match (read(&self.manifest), read(&self.component)) {
            (Ok(manifest), Ok(component)) => Some((
                String::from_utf8(manifest).expect("fn.toml is UTF-8"),
                component,
            )),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!(
                    "skipping `{}` ({e}): build the guests with benches/run.sh",
                    self.name
                );
                None
            }
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
