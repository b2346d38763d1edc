//! Constrained decoding with `llguidance`: a [`Grammar`] (JSON schema, Lark grammar or regex)
//! becomes a token mask applied to the logits before every sampled token, so the output obeys
//! it by construction, and tokens the grammar forces (the rest of a property name, a closing
//! brace) are appended without sampling them (llguidance's fast-forward tokens; the session
//! runs them through one forward pass).
//!
//! # Layout
//!
//! - [`Grammar`]: what the caller asks for; serializable, part of `SamplingParams`.
//! - [`Grammars`]: per model, the token trie of its vocabulary and llguidance's parser factory,
//!   built once on first use; [`Grammars::compile`] checks a grammar and gives a
//!   [`Constraint`], or an `InvalidInput` error naming the problem before anything runs.
//! - [`Constraint`]: one generation's parser state: [`Constraint::mask`], [`Constraint::commit`],
//!   [`Constraint::forced`].
//!
//! JSON schemas compile with fixed whitespace (`", "` between items, `": "` after keys, no
//! free whitespace: a small model left free to add whitespace can spend its whole budget on
//! newlines) unless the schema sets llguidance's own `x-guidance` options. `$ref`s resolve
//! only inside the schema: nothing is fetched.

use std::sync::Arc;

use llguidance::api::{GrammarInit, ParserLimits, TopLevelGrammar, ValidationResult};
use llguidance::toktrie::{InferenceCapabilities, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// A constraint on the generated text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Grammar {
    /// JSON valid against this JSON schema (`{}` or `true`: any JSON value).
    JsonSchema(Value),
    /// Text in the language of this Lark grammar (llguidance's dialect: `start` is the entry
    /// rule, `%json { ... }` embeds a JSON schema).
    Lark(String),
    /// Text matching this regular expression, whole.
    Regex(String),
}

impl Grammar {
    /// What kind of grammar this is, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Self::JsonSchema(_) => "JSON schema",
            Self::Lark(_) => "Lark grammar",
            Self::Regex(_) => "regex",
        }
    }

    /// Checks the grammar without a model: the syntax and schema errors
    /// [`Grammars::compile`] would give (an `InvalidInput` naming the problem), so an adapter
    /// can refuse a request before it queues.
    pub fn check(&self) -> Result<()> {
        let init = GrammarInit::Serialized(self.to_llguidance()?);
        match init.validate(None, ParserLimits::default()) {
            ValidationResult::Error(e) => {
                Err(Error::InvalidInput(format!("invalid {}: {e}", self.kind())))
            }
            ValidationResult::Valid | ValidationResult::Warnings(_) => Ok(()),
        }
    }

    fn to_llguidance(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            Self::JsonSchema(schema) => TopLevelGrammar::from_json_schema(json_options(schema)?),
            Self::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
            Self::Regex(rx) => TopLevelGrammar::from_regex(rx),
        })
    }
}

/// The schema with our whitespace options, unless it brings its own.
fn json_options(schema: &Value) -> Result<Value> {
    match schema {
        Value::Bool(true) => Ok(json_options(&Value::Object(Default::default()))?),
        Value::Object(map) => {
            let mut map = map.clone();
            map.entry("x-guidance").or_insert_with(|| {
                serde_json::json!({
                    "whitespace_flexible": false,
                    "item_separator": ", ",
                    "key_separator": ": ",
                })
            });
            Ok(Value::Object(map))
        }
        other => Err(Error::InvalidInput(format!(
            "a JSON schema must be an object or `true`, got {}",
            json_kind(other)
        ))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A model's vocabulary as llguidance sees it, and the factory of its parsers.
pub struct Grammars {
    factory: ParserFactory,
    end_of_generation: Vec<u32>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").finish_non_exhaustive()
    }
}

impl Grammars {
    /// Builds the token trie of `tokenizer`'s vocabulary, padded to the model's `vocab_size`
    /// logits (ids past the vocabulary are never allowed).
    pub fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Self> {
        let env = Vocabulary::new(tokenizer, vocab_size)?;
        let end_of_generation = tokenizer.end_of_generation().to_vec();
        let caps = InferenceCapabilities {
            ff_tokens: true,
            ..InferenceCapabilities::default()
        };
        let env: TokEnv = Arc::new(env);
        let mut factory = ParserFactory::new(
            &env,
            caps,
            &llguidance::earley::SlicedBiasComputer::general_slices(),
        )
        .map_err(|e| Error::InvalidInput(format!("the vocabulary cannot be constrained: {e}")))?;
        factory.quiet();
        Ok(Self {
            factory,
            end_of_generation,
        })
    }

    /// Checks `grammar` and starts a parser for one generation. An invalid or unsupported
    /// grammar is an `InvalidInput` error naming the problem.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint> {
        let parser = self
            .factory
            .create_parser(grammar.to_llguidance()?)
            .map_err(|e| Error::InvalidInput(format!("invalid {}: {e}", grammar.kind())))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::InvalidInput(format!(
                "invalid {}: {e}",
                grammar.kind()
            )));
        }
        Ok(Constraint {
            matcher,
            end_of_generation: self.end_of_generation.clone(),
            eos: self.factory.tok_env().tok_trie().eos_token(),
        })
    }
}

/// One generation's parser: which tokens may come next.
pub struct Constraint {
    matcher: Matcher,
    end_of_generation: Vec<u32>,
    /// The end-of-generation token llguidance allows when the grammar may end.
    eos: u32,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").finish_non_exhaustive()
    }
}

impl Constraint {
    /// Sets the logit of every token the grammar does not allow next to `-inf`. The
    /// end-of-generation tokens are allowed exactly when the grammar may end here.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let mask = self.matcher.compute_mask().map_err(|e| self.failure(e))?;
        let may_end = mask.is_allowed(self.eos);
        for (id, logit) in logits.iter_mut().enumerate() {
            let id = id as u32;
            let allowed = if self.end_of_generation.binary_search(&id).is_ok() {
                may_end
            } else {
                mask.is_allowed(id)
            };
            if !allowed {
                *logit = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past a sampled token (one [`Self::mask`] allowed).
    pub fn commit(&mut self, token: u32) -> Result<()> {
        if self.end_of_generation.binary_search(&token).is_ok() {
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| self.failure(e))
    }

    /// The tokens the grammar forces next, already committed: the caller appends them
    /// without sampling.
    pub fn forced(&mut self) -> Result<Vec<u32>> {
        let tokens = self.matcher.consume_ff_tokens();
        match self.matcher.get_error() {
            Some(e) => Err(Error::Inference(candle_core::Error::Msg(format!(
                "constrained decoding failed: {e}"
            )))),
            None => Ok(tokens),
        }
    }

    /// Whether the grammar is complete and allows nothing more.
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Whether the text so far is a complete sentence of the grammar.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    fn failure(&self, e: impl std::fmt::Display) -> Error {
        Error::Inference(candle_core::Error::Msg(format!(
            "constrained decoding failed: {e}"
        )))
    }
}

/// The token trie over the model's vocabulary: each token's bytes, special tokens marked the
/// way toktrie expects (`0xFF` then their text), so grammars never produce them as text.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: tokenizers::Tokenizer,
}

impl Vocabulary {
    fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Self> {
        let vocab_size = vocab_size.max(tokenizer.vocab_size());
        let words: Vec<Vec<u8>> = (0..vocab_size as u32)
            .map(|id| match tokenizer.kind(id) {
                Some(kind) if !kind.is_special() => tokenizer.token_bytes(id).to_vec(),
                _ => {
                    let name = tokenizer
                        .token_text(id)
                        .map_or_else(|| format!("<[{id}]>"), str::to_string);
                    let mut bytes = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    bytes.extend(name.into_bytes());
                    bytes
                }
            })
            .collect();
        let eog = tokenizer.end_of_generation();
        let eos = tokenizer.eos().or(eog.first().copied()).ok_or_else(|| {
            Error::InvalidInput("the vocabulary has no end-of-generation token".into())
        })?;
        let info = TokRxInfo {
            vocab_size: vocab_size as u32,
            tok_eos: eos,
            tok_bos: tokenizer.bos(),
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: None,
        };
        let mut trie = TokTrie::from(&info, &words);
        if eog.len() > 1 {
            trie = trie.with_eos_tokens(eog);
        }
        Ok(Self {
            trie,
            tokenizer: tokenizer.inner().clone(),
        })
    }
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.tokenize_with_greedy_fallback(s, |s| {
            self.tokenizer
                .encode(s, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }
}
