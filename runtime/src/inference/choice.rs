//! Which model a call uses: [`Inference::choose`], the one place those rules live, for the
//! WIT adapter and the OpenAI-compatible API alike.

use slmfn_models::ModelKind;

use super::{Inference, ModelError};

/// Who asks [`Inference::choose`] for a model.
#[derive(Clone, Copy, Debug)]
pub enum Asker<'a> {
    /// The OpenAI-compatible API: any served model; the runtime's defaults; the name
    /// `"default"` is the default.
    Api,
    /// A deployed function: its manifest's `[models]` allow-list and defaults.
    Function {
        /// `allowed`.
        allowed: &'a [String],
        /// `default` (a chat model).
        default: Option<&'a str>,
        /// `default_embedding`.
        default_embedding: Option<&'a str>,
    },
}

/// Why [`Inference::choose`] found no model. The messages speak to a function's author (the
/// API phrases its own).
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    /// A function whose allow-list has no model of the kind.
    #[error("{}", match .0 {
        ModelKind::Chat => "this function may use no model: add `[models] allowed = [\"smollm2\"]` to fn.toml",
        ModelKind::Embedding => "this function may use no embedding model: add one to `[models] allowed` in fn.toml (e.g. \"minilm\")",
    })]
    NoneAllowed(ModelKind),
    /// No model named, and no default of the kind.
    #[error("{}", match .0 {
        ModelKind::Chat => "no model named and fn.toml sets no `[models] default`",
        ModelKind::Embedding => "no model named and fn.toml sets no `[models] default_embedding`",
    })]
    NoDefault(ModelKind),
    /// Not on the function's allow-list.
    #[error(
        "model {0:?} is not allowed for this function (add it to `[models] allowed` in fn.toml)"
    )]
    NotAllowed(String),
    /// No model of that name is served.
    #[error("model {0:?} is not configured in this runtime")]
    NotServed(String),
    /// A model of the other kind.
    #[error("model {model:?} is {} model, not {} model: it cannot {}", .kind.article_name(), .wanted.article_name(), .wanted.verb())]
    WrongKind {
        /// The model named.
        model: String,
        /// What it is.
        kind: ModelKind,
        /// What the call needs.
        wanted: ModelKind,
    },
}

impl ChoiceError {
    /// The pool's own error for a model of the other kind (what the OpenAI API answers with).
    pub fn wrong_kind(&self) -> Option<ModelError> {
        match self {
            ChoiceError::WrongKind {
                model,
                kind,
                wanted,
            } => Some(ModelError::WrongModelKind {
                model: model.clone(),
                kind: *kind,
                wanted: *wanted,
            }),
            _ => None,
        }
    }
}

impl Inference {
    /// The model of `kind` a call uses, the rules for every adapter:
    ///
    /// 1. the one it names (for the API, `"default"` names none);
    /// 2. else the default of the kind: the manifest's `[models] default` / `default_embedding`
    ///    for a function, the runtime's default models for the API;
    /// 3. else, for a function, the only allowed model of the kind (for chat: the only allowed
    ///    model at all, else the only allowed chat model).
    ///
    /// It must then be on the function's allow-list, served by the pool, and of `kind`.
    pub fn choose(
        &self,
        asker: Asker<'_>,
        requested: Option<&str>,
        kind: ModelKind,
    ) -> Result<String, ChoiceError> {
        let requested = match (asker, requested) {
            (Asker::Api, Some("default")) => None,
            (_, r) => r,
        };
        let model = match (asker, requested) {
            (_, Some(m)) => m.to_string(),
            (Asker::Api, None) => match kind {
                ModelKind::Chat => self.default_model.clone(),
                ModelKind::Embedding => self.default_embedding_model.clone(),
            }
            .ok_or(ChoiceError::NoDefault(kind))?,
            (
                Asker::Function {
                    allowed,
                    default,
                    default_embedding,
                },
                None,
            ) => {
                let default = match kind {
                    ModelKind::Chat => default,
                    ModelKind::Embedding => default_embedding,
                }
                .map(str::to_string);
                let mut of_kind = allowed.iter().filter(|m| self.kind(m) == Some(kind));
                let only_of_kind = match (of_kind.next(), of_kind.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                };
                let only = match kind {
                    ModelKind::Chat => (allowed.len() == 1).then(|| allowed[0].clone()),
                    ModelKind::Embedding => None,
                };
                match default.or(only).or(only_of_kind) {
                    Some(m) => m,
                    None if allowed.is_empty() => return Err(ChoiceError::NoneAllowed(kind)),
                    None if kind == ModelKind::Embedding
                        && !allowed.iter().any(|m| self.kind(m) == Some(kind)) =>
                    {
                        return Err(ChoiceError::NoneAllowed(kind));
                    }
                    None => return Err(ChoiceError::NoDefault(kind)),
                }
            }
        };
        if let Asker::Function { allowed, .. } = asker
            && !allowed.contains(&model)
        {
            return Err(ChoiceError::NotAllowed(model));
        }
        match self.kind(&model) {
            None => Err(ChoiceError::NotServed(model)),
            Some(k) if k == kind => Ok(model),
            Some(k) => Err(ChoiceError::WrongKind {
                model,
                kind: k,
                wanted: kind,
            }),
        }
    }
}
