//! Test support: builds the guest components once, runs real runtime processes, deploys.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The built guest components.
pub struct Guests {
    pub testbed: Vec<u8>,
    pub toolkit: Vec<u8>,
    pub wrong_world: Vec<u8>,
}

/// Builds `tests/guests` for wasm32-wasip2 once per test binary.
pub fn guests() -> &'static Guests {
    static GUESTS: OnceLock<Guests> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests");
        let status = cargo()
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(repo().join("tests/guests/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .expect("running cargo to build the guest fixtures");
        assert!(status.success(), "building tests/guests failed");
        let out = target_dir.join("wasm32-wasip2/release");
        Guests {
            testbed: std::fs::read(out.join("testbed.wasm")).expect("testbed.wasm"),
            toolkit: std::fs::read(out.join("toolkit.wasm")).expect("toolkit.wasm"),
            wrong_world: std::fs::read(out.join("wrong-world.wasm")).expect("wrong-world.wasm"),
        }
    })
}

/// A cargo command with the outer test build's target dir removed, so nested builds never
/// wait on (or pollute) the outer build's lock.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.env_remove("CARGO_TARGET_DIR");
    cmd
}

/// The `fn` CLI with the outer build's target dir removed.
pub fn fn_cli() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fn"));
    cmd.env_remove("CARGO_TARGET_DIR")
        .env_remove("SLMFN_TOKEN")
        .env_remove("SLMFN_URL");
    cmd
}

/// A running runtime process (`fn serve`), killed on drop.
pub struct Runtime {
    pub child: Child,
    pub url: String,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub token: Option<String>,
}

/// How to start a runtime.
#[derive(Clone, Default)]
pub struct Options {
    pub token: Option<String>,
    pub extra_args: Vec<String>,
    /// Extra environment (e.g. `RUST_LOG`, which defaults to `info`).
    pub env: Vec<(String, String)>,
}

impl Options {
    /// Serving `models` (name, file), the first one preloaded before the runtime is ready.
    pub fn preloaded(models: &[(&str, &Path)]) -> Self {
        let mut extra_args = Vec::new();
        for (name, path) in models {
            extra_args.push("--model".into());
            extra_args.push(format!("{name}={}", path.display()));
        }
        if let Some((first, _)) = models.first() {
            extra_args.push("--preload".into());
            extra_args.push(first.to_string());
        }
        Options {
            extra_args,
            ..Options::default()
        }
    }
}

impl Runtime {
    /// Starts a runtime on a fresh data dir and waits until it is ready.
    pub fn start(data_dir: &Path, options: Options) -> Result<Runtime> {
        let mut rt = Self::spawn(data_dir, &options)?;
        rt.wait_ready()?;
        Ok(rt)
    }

    /// Starts a runtime and returns once it listens (not necessarily ready).
    pub fn spawn(data_dir: &Path, options: &Options) -> Result<Runtime> {
        let mut cmd = fn_cli();
        cmd.args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--drain-secs",
            "20",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(&options.extra_args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        if let Some(t) = &options.token {
            cmd.env("SLMFN_TOKEN", t);
        }
        let mut child = cmd.spawn().context("spawning fn serve")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (logs, tx) = (logs.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addr) = line
                        .split("addr=")
                        .nth(1)
                        .filter(|_| line.contains("listening"))
                    {
                        let _ = tx.send(
                            addr.split_whitespace()
                                .next()
                                .unwrap_or_default()
                                .to_string(),
                        );
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        drop(tx);
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "runtime did not start listening; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Ok(Runtime {
            child,
            url: format!("http://{addr}"),
            logs,
            token: options.token.clone(),
        })
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self) -> Result<()> {
        for _ in 0..600 {
            if reqwest::blocking::get(format!("{}/readyz", self.url))
                .is_ok_and(|r| r.status() == 200)
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("runtime exited with {status}; logs:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("runtime never became ready; logs:\n{}", self.log_text())
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// SIGTERM and wait for exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> Result<bool> {
        signal(&self.child, "TERM")?;
        let status = self.child.wait()?;
        Ok(status.success())
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An HTTP client.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Deploys over the admin API; returns status and JSON body.
    pub async fn deploy(
        &self,
        name: &str,
        manifest: &str,
        component: &[u8],
    ) -> Result<(u16, serde_json::Value)> {
        let form = reqwest::multipart::Form::new()
            .text("manifest", manifest.to_string())
            .part(
                "component",
                reqwest::multipart::Part::bytes(component.to_vec()).file_name("c.wasm"),
            );
        let resp = self
            .auth(
                self.client()
                    .post(format!("{}/admin/functions/{name}", self.url)),
            )
            .multipart(form)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(serde_json::Value::Null)))
    }

    /// GET an admin path; returns status and JSON.
    pub async fn admin_get(&self, path: &str) -> Result<(u16, serde_json::Value)> {
        let resp = self
            .auth(self.client().get(format!("{}/admin{path}", self.url)))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(serde_json::Value::Null)))
    }

    /// The `/metrics` text (empty when the scrape fails).
    pub async fn metrics_text(&self) -> String {
        let scrape = async {
            self.client()
                .get(format!("{}/metrics", self.url))
                .send()
                .await?
                .text()
                .await
        };
        scrape.await.unwrap_or_default()
    }

    /// The value of the `/metrics` series `name` whose labels include `label` (`key="value"`).
    pub async fn metric(&self, name: &str, label: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Polls `/metrics` until the series reads `value` (the runtime's own signal that, say,
    /// instances hold their slots); panics after 30 s.
    pub async fn wait_metric(&self, name: &str, label: &str, value: f64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let now = self.metric(name, label).await;
            if now == Some(value) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}{{{label}}} is {now:?}, not {value}, after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Invokes `/fn/{name}{path}` with a POST body; returns status and body text.
    pub async fn invoke(&self, name: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let resp = self
            .client()
            .post(format!("{}/fn/{name}{path}", self.url))
            .body(body.to_string())
            .send()
            .await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }
}

impl Runtime {
    /// `fn deploy --path DIR` against this runtime (it builds the function first).
    pub fn fn_deploy(&self, dir: &Path) {
        let out = fn_cli()
            .args(["deploy", "--path"])
            .arg(dir)
            .env("SLMFN_URL", &self.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fn deploy {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `fn invoke NAME --data DATA` against this runtime; its answer as JSON.
    pub fn fn_invoke_json(&self, name: &str, data: &str) -> serde_json::Value {
        let out = fn_cli()
            .args(["invoke", name, "--data", data])
            .env("SLMFN_URL", &self.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fn invoke {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name (`TERM`, `KILL`) to a child.
pub fn signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} failed");
    Ok(())
}

/// A testbed manifest.
pub fn testbed_manifest(name: &str, version: &str, limits: &str) -> String {
    format!("name = \"{name}\"\n[limits]\n{limits}\n[env]\nVERSION = \"{version}\"\n")
}

impl Runtime {
    /// SIGKILL and reap, keeping the handle (for loops that replace it).
    pub fn kill9_in_place(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real default model, fetched by `scripts/fetch-model.sh` (the test command runs it).
pub fn real_model() -> std::path::PathBuf {
    let path = std::env::var("SLMFN_MODEL_PATH").expect(
        "SLMFN_MODEL_PATH is not set: run the tests with ./scripts/test.sh (it fetches the model), \
         or set it to SmolLM2-135M-Instruct.Q4_1.gguf",
    );
    let path = std::path::PathBuf::from(path);
    assert!(
        path.is_file(),
        "SLMFN_MODEL_PATH {} is not a file",
        path.display()
    );
    path
}

/// The real embedding model (all-MiniLM-L6-v2, the cached `minilm.zip`), fetched by
/// `scripts/fetch-model.sh minilm` (the test command runs it and sets `SLMFN_EMBED_MODEL_PATH`).
pub fn real_embed_model() -> std::path::PathBuf {
    let path = std::env::var("SLMFN_EMBED_MODEL_PATH").expect(
        "SLMFN_EMBED_MODEL_PATH is not set: run the tests with ./scripts/test.sh (it fetches the \
         model), or set it to all-MiniLM-L6-v2's model.zip (`fn models pull minilm`)",
    );
    let path = std::path::PathBuf::from(path);
    assert!(
        path.exists(),
        "SLMFN_EMBED_MODEL_PATH {} does not exist",
        path.display()
    );
    path
}

/// A venv under the test target dir with `packages` (pinned `name==version`) installed, made
/// once per target dir and name; returns its python.
pub fn python_venv(name: &str, packages: &[&str]) -> &'static Path {
    static VENVS: OnceLock<Mutex<std::collections::HashMap<String, &'static Path>>> =
        OnceLock::new();
    let mut venvs = VENVS.get_or_init(Default::default).lock().unwrap();
    if let Some(python) = venvs.get(name) {
        return python;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python: &'static Path = Box::leak(venv.join("bin/python").into_boxed_path());
    let importable = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import importlib.metadata as m, sys; \
                 sys.exit(any(m.version(p.split('==')[0]) != p.split('==')[1] \
                 for p in sys.argv[1:]))",
            ])
            .args(packages)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !importable(python) {
        let out = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .output()
            .expect("running python3 -m venv");
        assert!(
            out.status.success(),
            "python3 -m venv failed (install python3-venv):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages)
            .output()
            .expect("running pip");
        assert!(
            out.status.success(),
            "pip install {packages:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            importable(python),
            "{packages:?} are not installed after pip install"
        );
    }
    venvs.insert(name.to_string(), python);
    python
}
