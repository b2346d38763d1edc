//! The tokenizer, built from GGUF metadata into a `tokenizers::Tokenizer`.
//!
//! Only byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`, used by SmolLM, Llama 3,
//! Qwen) are supported. The pre-tokenizer follows `tokenizer.ggml.pre` the way llama.cpp's
//! `llama-vocab.cpp` does: e.g. `smollm` splits digits one by one, then applies the GPT-2 regex,
//! exactly like SmolLM2's own `tokenizer.json` (`Digits(individual)` + `ByteLevel`, no prefix
//! space).
//!
//! candle-core 0.11 ships `TokenizerFromGguf` too, but we do not use it: for `smollm` (and plain
//! `gpt2`) it falls back to `ByteLevel::default()`, which adds a prefix space (`"Hi"` becomes
//! `"ĠHi"`) and keeps digits together, and it reads `unk_token_id`/`pad_token_id` where llama.cpp
//! writes `unknown_token_id`/`padding_token_id`.
//!
//! Token types (`tokenizer.ggml.token_type`, llama.cpp's `llama_token_type`) decide how a token
//! is matched and printed: control tokens (`<|im_start|>`) are special (matched in templated
//! prompts, never printed), user-defined tokens are matched in any text and printed verbatim,
//! normal tokens are byte-level BPE pieces.

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, value_to_u64};

/// The role of a token, from `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A byte-level BPE piece of text.
    Normal,
    /// The unknown token.
    Unknown,
    /// A control token (`<|im_start|>`, `<|endoftext|>`): structure, not text.
    Control,
    /// A token added by the model author, matched and printed as plain text.
    UserDefined,
    /// A reserved slot.
    Unused,
    /// A raw byte token.
    Byte,
}

impl TokenKind {
    fn from_gguf(v: u64) -> Self {
        match v {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }

    /// Special tokens are structure: matched only in templated prompts and never printed.
    pub fn is_special(self) -> bool {
        matches!(self, Self::Unknown | Self::Control | Self::Unused)
    }
}

/// Texts of control tokens that end a turn in some model family (llama.cpp's list of
/// end-of-generation tokens, `llama_vocab::impl::load`). Generation stops on any of them, as
/// well as on `eos_token_id`, `eot_token_id` and `eom_token_id`.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Llama 3 (`llama-bpe`) and its descendants: digits in groups of up to three.
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2: like Llama 3 with single digits.
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A model's tokenizer: text to token ids and token ids to bytes.
///
/// Cheap to share (`Arc` it or hold it in the model); encoding and decoding take `&self`.
#[derive(Clone)]
pub struct Tokenizer {
    /// Matches special tokens in the input: for prompts rendered from a chat template.
    templated: tokenizers::Tokenizer,
    /// Encodes special-token text as plain text: for untrusted user text.
    plain: tokenizers::Tokenizer,
    /// Finds the texts of the special tokens (what a templated encoding turns into them);
    /// `None` when the vocabulary has none.
    special_texts: Option<aho_corasick::AhoCorasick>,
    /// What each id prints as; empty for special tokens.
    token_bytes: Vec<Box<[u8]>>,
    kinds: Vec<TokenKind>,
    texts: Vec<String>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    end_of_generation: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.kinds.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("end_of_generation", &self.end_of_generation)
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let err = |m: String| Error::Tokenizer(m);
        let model = file
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| err("missing `tokenizer.ggml.model`".into()))?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)"
            )));
        }
        let texts = string_array(file, "tokenizer.ggml.tokens")?;
        if texts.is_empty() {
            return Err(err("`tokenizer.ggml.tokens` is empty".into()));
        }
        let merges = string_array(file, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| match m.split_once(' ') {
                Some((a, b)) => Ok((a.to_string(), b.to_string())),
                None => Err(err(format!("invalid merge `{m}`"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let kinds: Vec<TokenKind> = match file.get("tokenizer.ggml.token_type") {
            Some(Value::Array(types)) if types.len() == texts.len() => types
                .iter()
                .map(|v| TokenKind::from_gguf(value_to_u64(v).unwrap_or(1)))
                .collect(),
            Some(_) => {
                return Err(err(
                    "`tokenizer.ggml.token_type` does not match the token list".into(),
                ));
            }
            None => vec![TokenKind::Normal; texts.len()],
        };
        let id = |key: &str| -> Result<Option<u32>> {
            match file.get_u64(key) {
                None => Ok(None),
                Some(v) if (v as usize) < texts.len() => Ok(Some(v as u32)),
                Some(v) => Err(err(format!("`{key}` = {v} is outside the vocabulary"))),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let mut end_of_generation: Vec<u32> = [
            eos,
            id("tokenizer.ggml.eot_token_id")?,
            id("tokenizer.ggml.eom_token_id")?,
        ]
        .into_iter()
        .flatten()
        .collect();
        for (i, text) in texts.iter().enumerate() {
            if kinds[i] == TokenKind::Control && END_OF_GENERATION_TEXTS.contains(&text.as_str()) {
                end_of_generation.push(i as u32);
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        let vocab: Vocab = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut bpe = BPE::builder().vocab_and_merges(vocab, merges);
        if let Some(unk) = id("tokenizer.ggml.unknown_token_id")? {
            bpe = bpe.unk_token(texts[unk as usize].clone());
        }
        let bpe = bpe.build().map_err(|e| err(format!("BPE: {e}")))?;
        let mut templated = tokenizers::Tokenizer::new(bpe);
        let pre = file.get_str("tokenizer.ggml.pre").unwrap_or("gpt2");
        if matches!(pre, "qwen2" | "deepseek-r1-qwen" | "stablelm2") {
            templated
                .with_normalizer(Some(NFC))
                .map_err(|e| err(e.to_string()))?;
        }
        templated.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        templated.with_decoder(Some(ByteLevelDecoder::default()));

        let mut special = Vec::new();
        let mut special_texts = Vec::new();
        let mut user_defined = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match kinds[i] {
                TokenKind::Control | TokenKind::Unknown => {
                    special.push(AddedToken::from(text.clone(), true));
                    if !text.is_empty() {
                        special_texts.push(text.clone());
                    }
                }
                TokenKind::UserDefined => user_defined.push(AddedToken::from(text.clone(), false)),
                _ => {}
            }
        }
        templated
            .add_special_tokens(special)
            .map_err(|e| err(e.to_string()))?;
        templated
            .add_tokens(user_defined)
            .map_err(|e| err(e.to_string()))?;
        let special_texts = match special_texts.is_empty() {
            true => None,
            false => Some(
                aho_corasick::AhoCorasick::new(&special_texts)
                    .map_err(|e| err(format!("special tokens: {e}")))?,
            ),
        };
        let mut plain = templated.clone();
        plain.set_encode_special_tokens(true);

        let table = ByteTable::new();
        let token_bytes = texts
            .iter()
            .zip(&kinds)
            .map(|(text, kind)| match kind {
                k if k.is_special() => Box::default(),
                TokenKind::UserDefined => text.as_bytes().into(),
                _ => table.decode(text),
            })
            .collect();
        Ok(Self {
            templated,
            plain,
            special_texts,
            token_bytes,
            kinds,
            texts,
            bos,
            eos,
            add_bos: file
                .get_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(false),
            end_of_generation,
        })
    }

    /// Encodes `text`. With `parse_special`, the text of special tokens (`<|im_start|>`) becomes
    /// those tokens: use it for prompts rendered from the model's chat template, never for raw
    /// user text (which could then forge turns). Adds no BOS; see [`Self::add_bos`].
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let tokenizer = if parse_special {
            &self.templated
        } else {
            &self.plain
        };
        let encoding = tokenizer
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Whether `text` holds the text of a special token (`<|im_start|>`), which
    /// [`Self::encode`] with `parse_special` would turn into that token.
    pub fn has_special_text(&self, text: &str) -> bool {
        self.special_texts
            .as_ref()
            .is_some_and(|texts| texts.is_match(text))
    }

    /// Decodes ids to text, skipping special tokens; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes `id` prints as (empty for special tokens and unknown ids).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], |b| b)
    }

    /// The vocabulary entry of `id` as stored in the GGUF (byte-level form for normal tokens).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary entry (byte-level form for normal tokens).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.templated.token_to_id(text)
    }

    /// The kind of `id`, if it is in the vocabulary.
    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Number of entries in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.kinds.len()
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether prompts must start with BOS (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether generation ends when the model produces `id` (EOS, EOT and end-of-turn tokens).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// All end-of-generation tokens, sorted.
    pub fn end_of_generation(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// The underlying `tokenizers` tokenizer (special tokens parsed).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.templated
    }
}

fn string_array(file: &GgufFile, key: &str) -> Result<Vec<String>> {
    match file.get(key) {
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(Error::Tokenizer(format!(
                    "`{key}` holds a non-string {:?}",
                    other.value_type()
                ))),
            })
            .collect(),
        Some(_) => Err(Error::Tokenizer(format!("`{key}` is not an array"))),
        None => Err(Error::Tokenizer(format!("missing `{key}`"))),
    }
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value, mirroring llama.cpp's regex table.
/// Unknown values get the GPT-2 behaviour, as in llama.cpp.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    // add_prefix_space = false everywhere: these vocabularies encode "Hi" as "Hi", not "ĠHi".
    let byte_level = |use_regex| ByteLevel::new(false, true, use_regex);
    let split = |regex: &str| {
        Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))
    };
    Ok(match pre {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into()
        }
        "llama3" | "llama-bpe" | "smaug-bpe" | "falcon3" | "pixtral" | "lfm2" => {
            Sequence::new(vec![split(REGEX_LLAMA3)?.into(), byte_level(false).into()]).into()
        }
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => {
            Sequence::new(vec![split(REGEX_QWEN2)?.into(), byte_level(false).into()]).into()
        }
        // GPT-2: `ByteLevel` with `use_regex` applies the GPT-2 regex itself.
        _ => byte_level(true).into(),
    })
}

/// GPT-2's reversible map between bytes and printable characters (`bytes_to_unicode`): byte-level
/// BPE vocabularies store each byte as one of these characters (space is `Ġ`, newline `Ċ`).
struct ByteTable {
    /// Indexed by character code (all below 0x144); `u16::MAX` for characters not in the table.
    to_byte: Vec<u16>,
}

impl ByteTable {
    fn new() -> Self {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut to_byte = vec![u16::MAX; 0x144];
        let mut next = 256usize;
        for b in 0..=255u8 {
            let c = if printable(b) {
                b as usize
            } else {
                next += 1;
                next - 1
            };
            to_byte[c] = b.into();
        }
        Self { to_byte }
    }

    /// The bytes a byte-level token stands for. Characters outside the table (never in a
    /// well-formed vocabulary) are kept as their UTF-8.
    fn decode(&self, text: &str) -> Box<[u8]> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            match self.to_byte.get(c as usize) {
                Some(&b) if b != u16::MAX => out.push(b as u8),
                _ => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out.into()
    }

    /// The byte-level form of `bytes` (for building vocabularies in tests).
    #[cfg(any(test, feature = "test-util"))]
    fn encode(&self, bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|&b| {
                let code = self.to_byte.iter().position(|&x| x == u16::from(b));
                char::from_u32(code.expect("every byte has a character") as u32)
                    .expect("table codes are valid chars")
            })
            .collect()
    }
}

/// The byte-level form of `text`, as stored in a GPT-2 style vocabulary (`" the"` → `"Ġthe"`).
#[cfg(any(test, feature = "test-util"))]
pub fn byte_level(text: &str) -> String {
    byte_level_bytes(text.as_bytes())
}

/// The byte-level form of raw bytes (a vocabulary holds one entry per byte, valid UTF-8 or not).
#[cfg(any(test, feature = "test-util"))]
pub fn byte_level_bytes(bytes: &[u8]) -> String {
    ByteTable::new().encode(bytes)
}

/// Turns a stream of token bytes into text chunks that are always complete UTF-8.
///
/// A character may be split across tokens (byte-level BPE splits rare characters into bytes), so
/// an incomplete tail is held back until the next token completes it. Invalid sequences become
/// U+FFFD, as a full decode would print them.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Appends `bytes` and returns the text that is now complete (possibly empty).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid])
                            .expect("valid_up_to is valid"),
                    );
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            start += valid;
                            break;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += valid + n;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Flushes an incomplete tail at the end of the stream (as U+FFFD).
    pub(crate) fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips_every_byte() {
        let table = ByteTable::new();
        let all: Vec<u8> = (0..=255).collect();
        let text = table.encode(&all);
        assert_eq!(text.chars().count(), 256);
        assert_eq!(&*table.decode(&text), &all[..]);
        assert_eq!(byte_level(" the\n"), "ĠtheĊ");
    }

    #[test]
    fn utf8_stream_holds_back_split_characters() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(s.push(b"a"), "a");
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&euro[2..]), "€");
        assert_eq!(s.push(b"\xffb"), "\u{FFFD}b");
        assert_eq!(s.push(&euro[..2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
        assert_eq!(s.finish(), "");
    }
}
