//! The function manifest (`fn.toml`): what a function is allowed to do and its limits.
//!
//! Parsed strictly (unknown keys are errors) so that a typo never silently drops a setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::events::trigger::Trigger;

/// Default per-invocation deadline. Knative answers 504 itself after 300 s; ours must be shorter.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Largest accepted deadline: under Knative's 300 s request timeout with room for the response.
pub const MAX_TIMEOUT_MS: u64 = 290_000;
/// Default linear-memory limit per instance.
pub const DEFAULT_MEMORY_MB: u32 = 64;
/// Largest linear memory per instance (4 GiB is the wasm32 ceiling).
pub const MAX_MEMORY_MB: u32 = 4096;
/// Default instances of one function at once.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 32;
/// Largest instances of one function at once (bounded by the pooling allocator's slots).
pub const MAX_CONCURRENCY: u32 = 256;
/// Default kv quota: keys.
pub const DEFAULT_KV_MAX_KEYS: u64 = 10_000;
/// Largest kv quota: keys.
pub const MAX_KV_MAX_KEYS: u64 = 10_000_000;
/// Default kv quota: bytes of keys and values (64 MiB).
pub const DEFAULT_KV_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Largest kv quota: bytes (16 GiB).
pub const MAX_KV_MAX_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// A parsed `fn.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The function's name: a DNS-1123 label (it becomes a Knative Service name).
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the component is: an agent (HTTP and events) or a tool component.
    #[serde(default, skip_serializing_if = "Kind::is_agent")]
    pub kind: Kind,
    /// Build settings for the CLI; the runtime ignores them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSection>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Environment variables visible to the guest (nothing else is).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Models the function may use.
    #[serde(default)]
    pub models: ModelsSection,
    /// Tools the function may call.
    #[serde(default)]
    pub tools: ToolsSection,
    /// What an agent takes as input, for the MCP clients that call it as a tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSection>,
    /// Which CloudEvents the agent gets (`[[triggers]]`, Knative's filter dialects); none: the
    /// agent gets no events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
}

/// `[input]`: the JSON Schema of an agent's request body (`schema = { type = "object", ... }`).
/// `/mcp` lists the agent as a tool with this input schema and validates arguments against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    /// The JSON Schema (a TOML table).
    pub schema: serde_json::Value,
}

/// `kind`: which world the component implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `slmfn:agent/agent`: invoked at `/fn/{name}` and by events.
    #[default]
    Agent,
    /// `slmfn:agent/tool-provider`: offers tools (`{name}.{tool}`) to agents and `/mcp`.
    Tool,
}

impl Kind {
    fn is_agent(&self) -> bool {
        *self == Kind::Agent
    }
}

/// `[build]`: where `fn build` leaves the component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// Path of the built component, relative to the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Per-invocation deadline in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory per instance, in MiB.
    pub memory_mb: u32,
    /// Instances of this function at once.
    pub max_concurrency: u32,
    /// Keys the function's kv namespace may hold.
    pub kv_max_keys: u64,
    /// Bytes (keys plus values) the function's kv namespace may hold.
    pub kv_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_mb: DEFAULT_MEMORY_MB,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            kv_max_keys: DEFAULT_KV_MAX_KEYS,
            kv_max_bytes: DEFAULT_KV_MAX_BYTES,
        }
    }
}

/// `[models]`: the inference allow-list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsSection {
    /// Models this function may use, chat and embedding models alike. A model not listed is
    /// `model-not-found` for this function.
    pub allowed: Vec<String>,
    /// Chat model used when a `chat`/`generate` call names none (else the only allowed model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Embedding model used when an `embed` call names none (else the only allowed embedding
    /// model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_embedding: Option<String>,
    /// Cap on generated tokens per call (a call asking for more gets this many).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Cap on the time one call may spend generating, in milliseconds (the invocation
    /// deadline applies too); past it the call fails with `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_inference_ms: Option<u64>,
}

/// `[tools]`: the tool allow-list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsSection {
    /// Tools this function may see and call: full names (`clock.now`) or globs (`github.*`,
    /// `*`). Anything else is `not-found`, as for a tool that does not exist.
    pub allowed: Vec<String>,
}

/// Why a manifest or a name was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not TOML, or keys of the wrong type or unknown.
    #[error("invalid fn.toml: {0}")]
    Parse(String),
    /// The name is not a DNS-1123 label.
    #[error(
        "invalid function name {name:?}: {reason} (use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-')"
    )]
    InvalidName {
        /// The refused name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A limit is out of range.
    #[error("invalid fn.toml: limits.{key} = {value} is out of range ({range})")]
    Limit {
        /// The key under `[limits]`.
        key: &'static str,
        /// The refused value.
        value: u64,
        /// The accepted range.
        range: String,
    },
    /// `[input] schema` is not a usable JSON Schema.
    #[error("invalid fn.toml: [input] schema: {0}")]
    InputSchema(String),
    /// A `[[triggers]]` entry is not usable (or the component is a tool component).
    #[error("invalid fn.toml: triggers[{index}]: {message}")]
    Trigger {
        /// Which entry (from 0).
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// An environment variable name is not usable.
    #[error("invalid fn.toml: env key {0:?} must be non-empty and contain no '=' or NUL")]
    EnvKey(String),
}

impl Manifest {
    /// Parses and validates `fn.toml` text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Parse(e.message().to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// A manifest with defaults for `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: None,
            kind: Kind::Agent,
            build: None,
            limits: Limits::default(),
            env: BTreeMap::new(),
            models: ModelsSection::default(),
            tools: ToolsSection::default(),
            input: None,
            triggers: Vec::new(),
        }
    }

    /// Checks the name and the ranges of the limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_name(&self.name)?;
        let l = &self.limits;
        check_range("timeout_ms", l.timeout_ms, 1, MAX_TIMEOUT_MS)?;
        check_range("memory_mb", l.memory_mb.into(), 1, MAX_MEMORY_MB.into())?;
        check_range(
            "max_concurrency",
            l.max_concurrency.into(),
            1,
            MAX_CONCURRENCY.into(),
        )?;
        check_range("kv_max_keys", l.kv_max_keys, 1, MAX_KV_MAX_KEYS)?;
        check_range("kv_max_bytes", l.kv_max_bytes, 1, MAX_KV_MAX_BYTES)?;
        if let Some(input) = &self.input {
            if !input.schema.is_object() {
                return Err(ManifestError::InputSchema(
                    "must be a table (a JSON Schema object)".into(),
                ));
            }
            crate::tools::check_schema(&input.schema).map_err(ManifestError::InputSchema)?;
        }
        for (index, trigger) in self.triggers.iter().enumerate() {
            let message = match self.kind {
                Kind::Tool => Err("a tool component gets no events; remove [[triggers]]".into()),
                Kind::Agent => trigger.validate(),
            };
            message.map_err(|message| ManifestError::Trigger { index, message })?;
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(ManifestError::EnvKey(key.clone()));
            }
        }
        Ok(())
    }
}

fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ManifestError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ManifestError::Limit {
            key,
            value,
            range: format!("{min}..={max}"),
        })
    }
}

/// Checks that `name` is a DNS-1123 label usable as a Knative Service name: 1–63 characters of
/// `[a-z0-9-]`, starting with a letter, not ending with `-`.
pub fn validate_name(name: &str) -> Result<(), ManifestError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 63 {
        Some("it is longer than 63 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("it contains characters other than lowercase letters, digits and '-'")
    } else if !name.as_bytes()[0].is_ascii_lowercase() {
        Some("it does not start with a lowercase letter")
    } else if name.ends_with('-') {
        Some("it ends with '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ManifestError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["hello", "a", "support-desk", "a1-b2", &"a".repeat(63)] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "Hello",
            "1abc",
            "abc-",
            "a_b",
            "a.b",
            "héllo",
            &"a".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_full_manifest() {
        let m = Manifest::parse(
            r#"
name = "hello"
description = "x"
[build]
component = "a.wasm"
[limits]
timeout_ms = 1000
memory_mb = 16
[env]
GREETING = "hi"
[models]
allowed = ["smollm2", "minilm"]
default = "smollm2"
default_embedding = "minilm"
"#,
        )
        .unwrap();
        assert_eq!(m.limits.timeout_ms, 1000);
        assert_eq!(m.limits.memory_mb, 16);
        assert_eq!(m.limits.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(m.env["GREETING"], "hi");
        assert_eq!(m.models.default.as_deref(), Some("smollm2"));
        assert_eq!(m.models.default_embedding.as_deref(), Some("minilm"));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_limits() {
        let e = Manifest::parse("name = \"a\"\ntimeout = 3").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = Manifest::parse("name = \"a\"\n[limits]\ntimeout_ms = 0").unwrap_err();
        assert!(e.to_string().contains("limits.timeout_ms"), "{e}");
        let e = Manifest::parse("name = \"A\"").unwrap_err();
        assert!(e.to_string().contains("invalid function name"), "{e}");
        assert!(Manifest::parse("not toml [").is_err());
    }
}
