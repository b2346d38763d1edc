//! What a model does: [`ModelKind`], shared by the specs, the pool, the sources and the
//! errors (so none of them imports another for it).

use serde::{Deserialize, Serialize};

/// What a model does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Generates text (a GGUF language model): chat, completion.
    #[default]
    Chat,
    /// Turns texts into vectors (a BERT sentence-transformers model).
    Embedding,
}

impl ModelKind {
    /// `chat` or `embedding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embedding => "embedding",
        }
    }

    /// `a chat` or `an embedding` (for messages: "is a chat model").
    pub fn article_name(self) -> &'static str {
        match self {
            Self::Chat => "a chat",
            Self::Embedding => "an embedding",
        }
    }

    /// What a model of the kind does: `generate text` or `embed text`.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Chat => "generate text",
            Self::Embedding => "embed text",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "chat" => Ok(Self::Chat),
            "embedding" => Ok(Self::Embedding),
            other => Err(format!(
                "unknown model kind `{other}` (expected `chat` or `embedding`)"
            )),
        }
    }
}
