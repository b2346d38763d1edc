//! Malformed GGUF files: each is refused with one of the crate's load errors, never a panic,
//! and nothing a file declares (a count, a length, a shape) is allocated before the file's
//! bytes back it.
//!
//! The files are the tiny llama ([`TinyModel`], plus a `general.alignment` entry) truncated at
//! any byte, with one header field (a count, a length, a type, a shape, an offset) set to a
//! hostile value, with random bytes after the magic or after a valid prefix, or with bytes
//! flipped. Each goes the way the pool loads a chat model (`pool::loader`): the header alone
//! and the memory it would cost, and only within the budget, the weights; then, where it
//! loaded, a generated token.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use slmfn_models::gguf::GgufFile;
use slmfn_models::testing::TinyModel;
use slmfn_models::{CancelToken, Error, Message, Model, SamplingParams};

use super::alloc::largest_allocation;
use super::layout::{Kind, Layout};

/// The memory budget: the pool loads no model whose estimate exceeds it.
const BUDGET: u64 = 64 << 20;
/// Reading a header may allocate 64 bytes per byte of the file at once (candle's `Value` is
/// 32 bytes, and a growing `Vec` doubles), plus this.
const HEADER_SLACK: usize = 1 << 20;

/// The valid tiny llama every case starts from.
pub(super) struct Valid {
    pub(super) bytes: Vec<u8>,
    pub(super) layout: Layout,
    /// Where the last tensor's bytes end (what follows is padding).
    data_end: usize,
}

pub(super) fn valid() -> &'static Valid {
    static VALID: OnceLock<Valid> = OnceLock::new();
    VALID.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        TinyModel::default().write(&path).unwrap();
        let bytes = with_alignment(&std::fs::read(&path).unwrap());
        std::fs::write(&path, &bytes).unwrap();
        let file = GgufFile::open(&path).unwrap();
        let content = file.content();
        let data_end = content
            .tensor_infos
            .values()
            .map(|t| {
                let (block, size) = (t.ggml_dtype.block_size(), t.ggml_dtype.type_size());
                let start = (content.tensor_data_offset + t.offset) as usize;
                start + t.shape.elem_count() / block * size
            })
            .max()
            .unwrap();
        Valid {
            layout: Layout::of(&bytes),
            bytes,
            data_end,
        }
    })
}

/// `bytes` (a GGUF file candle wrote: data aligned to 32) with a first metadata entry
/// `general.alignment` = 32, which the tiny model leaves out: a field to set to 0.
fn with_alignment(bytes: &[u8]) -> Vec<u8> {
    let layout = Layout::of(bytes);
    let data = layout.header_end.next_multiple_of(32);
    let kvs = layout.of_kind(Kind::KvCount)[0];
    let mut out = bytes[..layout.header_end].to_vec();
    let count = kvs.get(&out);
    kvs.set(&mut out, count + 1);
    let key = b"general.alignment";
    let entry = [
        &(key.len() as u64).to_le_bytes()[..],
        key,
        &4u32.to_le_bytes(), // u32
        &32u32.to_le_bytes(),
    ]
    .concat();
    out.splice(24..24, entry);
    out.resize(out.len().next_multiple_of(32), 0);
    out.extend_from_slice(&bytes[data..]);
    out
}

/// How far a file got on the pool's way to a generated token.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Refused: by the header, the metadata, the tokenizer, the template, the weights or the
    /// first generation.
    Refused(Error),
    /// The header was read but the model would cost more than [`BUDGET`] bytes: the pool
    /// refuses it before reading any weight.
    OverBudget,
    /// Loaded, and generated a token or two.
    Generated,
}

/// Writes `bytes` to a file and takes it the pool's way, checking the largest allocation of
/// each step.
pub(super) fn load(bytes: &[u8]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    let limit = HEADER_SLACK + 64 * bytes.len();
    let (needed, largest) = largest_allocation(|| read_header(&path));
    assert!(
        largest <= limit,
        "reading the header of a {}-byte file allocated {largest} bytes at once (limit {limit})",
        bytes.len()
    );
    let needed = match needed {
        Ok(needed) => needed,
        Err(e) => return Outcome::Refused(e),
    };
    if needed > BUDGET {
        return Outcome::OverBudget;
    }
    let (generated, largest) = largest_allocation(|| load_and_generate(&path));
    assert!(
        largest as u64 <= BUDGET,
        "loading a model estimated at {needed} bytes allocated {largest} bytes at once"
    );
    match generated {
        Ok(()) => Outcome::Generated,
        Err(e) => Outcome::Refused(e),
    }
}

/// The pool's first step: the header alone, and the bytes the model would cost.
fn read_header(path: &Path) -> Result<u64, Error> {
    let header = GgufFile::open(path)?;
    header.ensure_supported()?;
    let meta = header.metadata(None, false)?;
    Ok(meta.weights_bytes.saturating_add(meta.session_bytes()))
}

/// The weights, a chat prompt, two greedy tokens.
fn load_and_generate(path: &Path) -> Result<(), Error> {
    let model = Model::load(path)?;
    let prompt = model.encode_chat(&[Message::user("hello world")])?;
    let mut session = model.session();
    let params = SamplingParams::greedy(2);
    session.generate(&prompt, &params, &CancelToken::new(), |_| {})?;
    Ok(())
}

/// `outcome` is a refusal a caller can act on: one of the crate's load errors, with a reason.
fn assert_clear(outcome: &Outcome) {
    let Outcome::Refused(e) = outcome else {
        return;
    };
    match e {
        Error::InvalidModel { reason, .. } => assert!(!reason.is_empty(), "{e:?}"),
        Error::UnsupportedArchitecture { .. }
        | Error::Tokenizer(_)
        | Error::Template(_)
        | Error::ContextLengthExceeded { .. } => {}
        other => panic!("a malformed file must be refused as such, not with {other:?}"),
    }
}

/// A file refused because it is malformed (not for its size, nor after loading).
pub(super) fn assert_invalid(outcome: &Outcome) {
    assert!(
        matches!(outcome, Outcome::Refused(Error::InvalidModel { .. })),
        "expected an invalid-model error, got {outcome:?}"
    );
}

/// A hostile value for a field.
#[derive(Clone, Debug)]
enum Hostile {
    Zero,
    One,
    /// Every bit set (`u32::MAX` in a 4-byte field).
    AllOnes,
    /// `2^k` (0 where the field is narrower).
    Power(u32),
    /// The field's value plus a small delta.
    Near(i8),
    Random(u64),
}

impl Hostile {
    /// The value to write over a field that holds `original`.
    fn resolve(&self, original: u64) -> u64 {
        match *self {
            Self::Zero => 0,
            Self::One => 1,
            Self::AllOnes => u64::MAX,
            Self::Power(k) => 1 << k,
            Self::Near(d) => original.wrapping_add_signed(d.into()),
            Self::Random(v) => v,
        }
    }
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        Just(Hostile::Zero),
        Just(Hostile::One),
        Just(Hostile::AllOnes),
        (0u32..64).prop_map(Hostile::Power),
        any::<i8>().prop_map(Hostile::Near),
        any::<u64>().prop_map(Hostile::Random),
    ]
}

/// Whether a field of `kind` set to `value` makes the file malformed whatever else it holds.
fn must_refuse(kind: Kind, value: u64, file_len: u64) -> bool {
    match kind {
        Kind::Version => !(1..=3).contains(&value),
        // Each entry takes at least one byte, each length counts bytes or entries.
        Kind::TensorCount
        | Kind::KvCount
        | Kind::KeyLen
        | Kind::StringLen
        | Kind::NameLen
        | Kind::ArrayLen => value > file_len,
        Kind::ValueType | Kind::ArrayType => value > 12,
        Kind::Dims => value > 4,
        // No tensor of the tiny model has an empty dimension, and every format it uses takes
        // more than half a byte per element: the tensor runs past the end.
        Kind::Dim => value > 2 * file_len,
        Kind::DType => !matches!(value, 0..=3 | 6..=15 | 30),
        Kind::Offset => value > file_len,
        Kind::Integer => false,
    }
}

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

proptest! {
    #![proptest_config(config())]

    /// Cut anywhere before the last tensor ends, a file is refused as invalid; cut in the
    /// padding after, it still loads.
    #[test]
    fn truncated_files_are_refused(cut in prop_oneof![
        (0..valid().layout.header_end),
        (0..valid().bytes.len()),
        (valid().data_end..=valid().bytes.len()),
    ]) {
        let v = valid();
        let outcome = load(&v.bytes[..cut]);
        if cut < v.data_end {
            assert_invalid(&outcome);
        } else {
            prop_assert!(matches!(outcome, Outcome::Generated), "{outcome:?}");
        }
    }

    /// One field of the header set to a hostile value: refused with a load error or loaded
    /// and working, never a panic or a huge allocation; refused as invalid where the value
    /// cannot be right.
    #[test]
    fn hostile_header_fields_are_refused_or_harmless(
        kind in any::<Index>(),
        field in any::<Index>(),
        value in hostile(),
    ) {
        let v = valid();
        let kinds = v.layout.kinds();
        let kind = kinds[kind.index(kinds.len())];
        let fields = v.layout.of_kind(kind);
        let field = fields[field.index(fields.len())];
        let mut bytes = v.bytes.clone();
        let value = value.resolve(field.get(&bytes));
        field.set(&mut bytes, value);
        let written = field.get(&bytes);
        let outcome = load(&bytes);
        assert_clear(&outcome);
        if must_refuse(kind, written, bytes.len() as u64) {
            assert_invalid(&outcome);
        }
    }

    /// Random bytes after the magic and a version: refused as invalid.
    #[test]
    fn random_bytes_after_the_magic_are_refused(
        version in prop_oneof![Just(2u32), Just(3), Just(1), any::<u32>()],
        tail in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(version.to_le_bytes());
        bytes.extend(tail);
        assert_invalid(&load(&bytes));
    }

    /// A valid prefix of the header, then random bytes: no panic, no huge allocation, a
    /// clear error where refused.
    #[test]
    fn random_bytes_after_a_valid_prefix_are_harmless(
        cut in any::<Index>(),
        tail in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let v = valid();
        let mut bytes = v.bytes[..cut.index(v.layout.header_end)].to_vec();
        bytes.extend(tail);
        assert_clear(&load(&bytes));
    }

    /// A few bytes of the header (or anywhere) flipped: no panic, no huge allocation, a
    /// clear error where refused.
    #[test]
    fn flipped_bytes_are_harmless(
        flips in prop::collection::vec((any::<bool>(), any::<Index>(), 1u8..), 1..8),
    ) {
        let v = valid();
        let mut bytes = v.bytes.clone();
        for (in_header, at, mask) in flips {
            let within = if in_header { v.layout.header_end } else { bytes.len() };
            bytes[at.index(within)] ^= mask;
        }
        assert_clear(&load(&bytes));
    }
}

#[test]
fn the_valid_file_loads_and_its_layout_is_complete() {
    let v = valid();
    assert!(matches!(load(&v.bytes), Outcome::Generated));
    let alignment = v.layout.of_kind(Kind::Integer)[0];
    assert_eq!(alignment.get(&v.bytes), 32, "general.alignment first");
    let kinds = v.layout.kinds();
    assert_eq!(kinds.len(), 14, "{kinds:?}");
    assert!(v.layout.header_end < v.data_end && v.data_end <= v.bytes.len());
}
