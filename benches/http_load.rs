//! HTTP load harness: slmfn vs `wasmtime serve`, same client, same machine, same run.
//!
//! Starts the `slmfn` binary (built by cargo for this bench, release settings) on loopback with a
//! temp data dir and deploys `echo` (benches/guests/echo-agent) over the admin API; starts
//! `wasmtime serve` with `echo-http` (the same answer as a `wasi:http/proxy` component); checks
//! both answer 200 "hello"; then, for each concurrency level and round (the two servers take
//! turns), drives keep-alive HTTP/1.1 GETs over that many connections until `--requests` are
//! done or `--secs` have passed, after a warm-up. Records req/s, p50/p99 latency, the CPU time
//! per request of server and client (they share the machine) and the CPU share other processes
//! took meanwhile (a loaded machine shows there); prints each run and writes them as JSON (`--out`).
//!
//! Run: `cargo bench --bench http_load [-- --requests 20000 --secs 20 --concurrency 16,64]`
//! (or `benches/run.sh`, which also installs wasmtime-cli and builds the guests).
//!
//! With `--events` it measures CloudEvents instead, slmfn against itself: the same `echo`
//! function's no-op `on_event` (202) in binary and in structured mode, each event with a new id
//! (so every one goes through the dedupe store), against `POST /fn/echo` with the same body
//! (`benches/events.sh`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

const GUESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/guests");

#[derive(Parser)]
struct Args {
    /// Requests per measured run (per server, concurrency level and round).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Time limit per measured run, in seconds.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Warm-up requests before each measured run (not recorded).
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// Connections (= requests in flight), one run per value.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64])]
    concurrency: Vec<usize>,
    /// Rounds; the report takes the median of each number over them.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The peer: wasmtime-cli 48 (`benches/run.sh` installs it here).
    #[arg(long, default_value = "/var/tmp/slmfn-peers/bin/wasmtime")]
    wasmtime: PathBuf,
    /// An extra flag for `wasmtime serve` (repeatable), e.g. `-O pooling-memory-keep-resident=1048576`.
    #[arg(long, allow_hyphen_values = true)]
    wasmtime_arg: Vec<String>,
    /// Where to write every run as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure CloudEvents (binary, structured) against `/fn` on slmfn instead of slmfn
    /// against `wasmtime serve`.
    #[arg(long)]
    events: bool,
    /// Set by `cargo bench`. Without it (`cargo test --all-targets`) the harness does nothing.
    #[arg(long)]
    bench: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.bench {
        println!("http_load: a load harness; run it with `cargo bench --bench http_load`");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let slmfn = start_slmfn(dir.path()).await?;
    let servers: Vec<Target> = if args.events {
        vec![
            Target::new(&slmfn, "/fn (POST)", Kind::Post),
            Target::new(&slmfn, "event, binary", Kind::Binary),
            Target::new(&slmfn, "event, structured", Kind::Structured),
        ]
    } else {
        let wasmtime = start_wasmtime(&args.wasmtime, &args.wasmtime_arg, dir.path()).await?;
        vec![
            Target::new(&slmfn, "slmfn", Kind::Get(slmfn.path)),
            Target::owning(wasmtime, Kind::Get("/")),
        ]
    };

    let mut runs = Vec::new();
    for &connections in &args.concurrency {
        for round in 0..args.rounds {
            // Take turns so that no target always runs first (or on a warmer machine).
            let mut order: Vec<&Target> = servers.iter().collect();
            order.rotate_left(round % servers.len());
            for target in order {
                let server = target.server();
                load(
                    target,
                    connections,
                    args.warmup,
                    Duration::from_secs(args.secs),
                )
                .await?;
                let before = CpuTicks::sample(server)?;
                let run = load(
                    target,
                    connections,
                    args.requests,
                    Duration::from_secs(args.secs),
                )
                .await?;
                let cpu = CpuTicks::sample(server)?.since(&before);
                let n = run.latencies_us.len() as f64;
                let (server_us, client_us) = (cpu.server_us() / n, cpu.client_us() / n);
                let other_pct = cpu.other_pct(run.elapsed);
                println!(
                    "{:<18} c={connections:<3} round {round}: {:>7.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs  cpu/req: server {server_us:>5.1} µs, client {client_us:>5.1} µs  other load {other_pct:>4.1}%  errors {}",
                    target.label,
                    run.rps(),
                    run.percentile(50.0),
                    run.percentile(99.0),
                    run.errors.len(),
                );
                if let Some(first) = run.errors.first() {
                    println!("  first unexpected answer: {first}");
                    server.print_log_warnings();
                }
                runs.push(json!({
                    "server": target.label,
                    "connections": connections,
                    "round": round,
                    "requests": run.latencies_us.len(),
                    "errors": run.errors.len(),
                    "first_error": run.errors.first(),
                    "secs": run.elapsed.as_secs_f64(),
                    "rps": run.rps(),
                    "p50_us": run.percentile(50.0),
                    "p99_us": run.percentile(99.0),
                    "server_cpu_us_per_req": server_us,
                    "client_cpu_us_per_req": client_us,
                    "other_cpu_pct": other_pct,
                }));
            }
        }
    }
    if let Some(out) = &args.out {
        let settings = format!(
            "--requests {} --secs {} --warmup {} --concurrency {} --rounds {}",
            args.requests,
            args.secs,
            args.warmup,
            args.concurrency
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            args.rounds,
        );
        let servers: Vec<_> = servers
            .iter()
            .map(|t| json!({ "label": t.label, "command": t.server().command }))
            .collect();
        let report = json!({ "args": settings, "runs": runs, "servers": servers });
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// What one measured series sends.
#[derive(Clone, Copy)]
enum Kind {
    /// `GET path`, answered 200 "hello".
    Get(&'static str),
    /// `POST /fn/echo` with the event's data as body, answered 200 "hello".
    Post,
    /// `POST /events`, binary mode, a new id each time: 202.
    Binary,
    /// `POST /events`, structured mode, a new id each time: 202.
    Structured,
}

/// The event data (and the POST body): a small JSON object.
const EVENT_DATA: &str = r#"{"build":981,"status":"failed"}"#;

/// A series: a server and what to send it.
struct Target<'a> {
    label: &'static str,
    kind: Kind,
    server: TargetServer<'a>,
}

enum TargetServer<'a> {
    Borrowed(&'a Server),
    Owned(Server),
}

impl<'a> Target<'a> {
    fn new(server: &'a Server, label: &'static str, kind: Kind) -> Self {
        Self {
            label,
            kind,
            server: TargetServer::Borrowed(server),
        }
    }

    fn owning(server: Server, kind: Kind) -> Self {
        Self {
            label: server.label,
            kind,
            server: TargetServer::Owned(server),
        }
    }

    fn server(&self) -> &Server {
        match &self.server {
            TargetServer::Borrowed(s) => s,
            TargetServer::Owned(s) => s,
        }
    }
}

/// A server process under test; killed on drop.
struct Server {
    label: &'static str,
    command: String,
    child: Child,
    addr: SocketAddr,
    /// Request path answering "hello".
    path: &'static str,
    /// The server's stdout and stderr.
    log: PathBuf,
}

impl Server {
    fn spawn(label: &'static str, program: &Path, args: &[String], log: &Path) -> Result<Child> {
        let log = std::fs::File::create(log)?;
        Command::new(program)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {label} ({})", program.display()))
    }

    /// Prints the warnings and errors the server logged so far.
    fn print_log_warnings(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        for line in log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            println!("  {} log: {line}", self.label);
        }
    }

    /// Waits until `path` answers 200 "hello" (or the process exits).
    async fn wait_ready(&mut self, path: &'static str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, body)) = get_once(self.addr, path).await
                && body == "hello"
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before answering", self.label);
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not answer in 60 s",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_slmfn(dir: &Path) -> Result<Server> {
    let addr = free_addr()?;
    let data = dir.join("slmfn-data");
    let args = [
        "--bind".into(),
        "127.0.0.1".into(),
        "--port".into(),
        addr.port().to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    let program = Path::new(env!("CARGO_BIN_EXE_slmfn"));
    let log = dir.join("slmfn.log");
    let child = Server::spawn("slmfn", program, &args, &log)?;
    let mut server = Server {
        label: "slmfn",
        command: format!("slmfn {}", args.join(" ")),
        child,
        addr,
        path: "/fn/echo",
        log,
    };
    // Ready (registry open), then deploy echo over the admin API.
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if let Some(status) = server.child.try_wait()? {
            bail!("slmfn exited ({status}); see its log in {}", dir.display());
        }
        ensure!(Instant::now() < deadline, "slmfn not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let manifest = std::fs::read_to_string(format!("{GUESTS}/echo-agent/fn.toml"))?;
    let component = read_guest("echo_agent.wasm")?;
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest)
        .part("component", reqwest::multipart::Part::bytes(component));
    let response = client
        .post(format!("{base}/admin/functions/echo"))
        .multipart(form)
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "deploy echo: {} {}",
        response.status(),
        response.text().await?
    );
    server.wait_ready("/fn/echo").await?;
    Ok(server)
}

async fn start_wasmtime(program: &Path, extra: &[String], dir: &Path) -> Result<Server> {
    ensure!(
        program.exists(),
        "{} not found: install wasmtime-cli 48 (benches/run.sh does), or pass --wasmtime",
        program.display()
    );
    let addr = free_addr()?;
    let component = guest_path("echo_http.wasm");
    ensure!(
        Path::new(&component).exists(),
        "{component}: build the guests (benches/run.sh)"
    );
    // `-S cli`: Rust's std for wasm32-wasip2 imports `wasi:cli/environment`, which is outside
    // the `wasi:http/proxy` world that `wasmtime serve` links by default.
    let mut args: Vec<String> = ["serve", "-S", "cli", "--addr", &addr.to_string()]
        .map(String::from)
        .into();
    args.extend(extra.iter().cloned());
    args.push(component);
    let log = dir.join("wasmtime.log");
    let child = Server::spawn("wasmtime serve", program, &args, &log)?;
    let mut server = Server {
        label: "wasmtime serve",
        command: format!("wasmtime {}", args.join(" ")),
        child,
        addr,
        path: "/",
        log,
    };
    server.wait_ready("/").await?;
    Ok(server)
}

fn guest_path(file: &str) -> String {
    format!("{GUESTS}/target/wasm32-wasip2/release/{file}")
}

fn read_guest(file: &str) -> Result<Vec<u8>> {
    let path = guest_path(file);
    std::fs::read(&path).with_context(|| format!("{path}: build the guests (benches/run.sh)"))
}

/// A loopback address with a free port (the listener is closed before the server binds it).
fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// CPU time, in clock ticks (USER_HZ, 100 per second on Linux): the whole machine's busy time,
/// the server's and this harness' (the client). What remains is other load on the machine.
struct CpuTicks {
    machine: u64,
    server: u64,
    client: u64,
}

impl CpuTicks {
    const TICK_US: f64 = 10_000.0;

    fn sample(server: &Server) -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .context("/proc/stat")?
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
        let machine = cpu[..8].iter().sum::<u64>() - cpu[3] - cpu[4];
        Ok(Self {
            machine,
            server: process_ticks(&server.child.id().to_string())?,
            client: process_ticks("self")?,
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            machine: self.machine - before.machine,
            server: self.server - before.server,
            client: self.client - before.client,
        }
    }

    fn server_us(&self) -> f64 {
        self.server as f64 * Self::TICK_US
    }

    fn client_us(&self) -> f64 {
        self.client as f64 * Self::TICK_US
    }

    /// CPU used by everything but this server and client, as a share of all cores' time.
    fn other_pct(&self, elapsed: Duration) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let other = self.machine.saturating_sub(self.server + self.client) as f64 * Self::TICK_US;
        100.0 * other / (elapsed.as_secs_f64() * 1e6 * cores)
    }
}

/// User + system CPU ticks of a process (`self` or a pid), from `/proc/<pid>/stat`.
fn process_ticks(pid: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split(' ')
        .collect();
    Ok(fields[12].parse::<u64>()? + fields[13].parse::<u64>()?)
}

/// One measured run.
struct Run {
    latencies_us: Vec<f64>,
    /// Answers other than 200 "hello": status and body.
    errors: Vec<String>,
    elapsed: Duration,
}

impl Run {
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile of the sorted latencies, in µs.
    fn percentile(&self, p: f64) -> f64 {
        let n = self.latencies_us.len();
        let rank = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_us[rank - 1]
    }
}

/// `connections` keep-alive connections sending GETs back to back, until `requests` are
/// answered or `limit` has passed.
async fn load(
    target: &Target<'_>,
    connections: usize,
    requests: u64,
    limit: Duration,
) -> Result<Run> {
    let server = target.server();
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let issued = issued.clone();
            let (addr, kind) = (server.addr, target.kind);
            tokio::spawn(async move {
                let mut conn = Connection::open(addr).await?;
                let mut latencies = Vec::new();
                let mut errors = Vec::new();
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= requests || Instant::now() >= deadline {
                        break;
                    }
                    let sent = Instant::now();
                    let (status, body) = conn.send(kind, n).await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                    let expected = match kind {
                        Kind::Get(_) | Kind::Post => status == 200 && body == "hello",
                        Kind::Binary | Kind::Structured => status == 202 && body.is_empty(),
                    };
                    if !expected {
                        errors.push(format!("{status} {}", String::from_utf8_lossy(&body)));
                    }
                }
                anyhow::Ok((latencies, errors))
            })
        })
        .collect();
    let mut run = Run {
        latencies_us: Vec::new(),
        errors: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, errors) = task.await??;
        run.latencies_us.extend(latencies);
        run.errors.extend(errors);
    }
    run.elapsed = start.elapsed();
    ensure!(
        !run.latencies_us.is_empty(),
        "{}: no request answered",
        server.label
    );
    run.latencies_us.sort_by(f64::total_cmp);
    Ok(run)
}

/// An HTTP/1.1 keep-alive client connection (hyper, no pooling: one request at a time).
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    /// Unique per connection, so event ids never repeat across connections or runs.
    id: uuid::Uuid,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self {
            sender,
            host: addr.to_string(),
            id: uuid::Uuid::new_v4(),
        })
    }

    async fn get(&mut self, path: &'static str) -> Result<(u16, Bytes)> {
        self.send(Kind::Get(path), 0).await
    }

    /// Sends the `n`th request of `kind` on this connection.
    async fn send(&mut self, kind: Kind, n: u64) -> Result<(u16, Bytes)> {
        let builder = hyper::Request::builder().header(hyper::header::HOST, &self.host);
        let id = format!("{}-{n}", self.id);
        let request = match kind {
            Kind::Get(path) => builder.method("GET").uri(path).body(Full::default())?,
            Kind::Post => builder
                .method("POST")
                .uri("/fn/echo")
                .header("content-type", "application/json")
                .body(Full::from(EVENT_DATA))?,
            Kind::Binary => builder
                .method("POST")
                .uri("/events")
                .header("ce-specversion", "1.0")
                .header("ce-id", id)
                .header("ce-source", "/bench")
                .header("ce-type", "dev.ci.build.failed")
                .header("content-type", "application/json")
                .body(Full::from(EVENT_DATA))?,
            Kind::Structured => builder
                .method("POST")
                .uri("/events")
                .header("content-type", "application/cloudevents+json")
                .body(Full::from(format!(
                    r#"{{"specversion":"1.0","id":"{id}","source":"/bench","type":"dev.ci.build.failed","datacontenttype":"application/json","data":{EVENT_DATA}}}"#
                )))?,
        };
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }
}

/// A single GET on a fresh connection (readiness checks).
async fn get_once(addr: SocketAddr, path: &'static str) -> Result<(u16, Bytes)> {
    Connection::open(addr).await?.get(path).await
}
