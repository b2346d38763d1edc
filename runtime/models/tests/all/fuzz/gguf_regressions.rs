//! The malformed files the GGUF properties found, written out: each crashed the loader (a
//! panic, an abort, undefined behaviour) or was accepted and failed later as someone else's
//! fault, before the fix its test names.

use slmfn_models::gguf::GgufFile;
use slmfn_models::{Error, Model};

use super::alloc::largest_allocation;
use super::gguf::{Outcome, assert_invalid, load, valid};
use super::layout::{Field, Kind};

/// Field `nth` of `kind` in the entry `name` (a metadata key or a tensor) of the valid file.
fn field(name_kind: Kind, name: &str, kind: Kind, nth: usize) -> Field {
    let v = valid();
    let fields = v.layout.entry(&v.bytes, name_kind, name);
    fields
        .iter()
        .filter(|f| f.kind == kind)
        .nth(nth)
        .copied()
        .unwrap()
}

/// The integer value of metadata key `key`.
fn metadata(key: &str) -> Field {
    field(Kind::KeyLen, key, Kind::Integer, 0)
}

/// Dimension `nth` of tensor `name`, in the file's order (columns first).
fn dim(name: &str, nth: usize) -> Field {
    field(Kind::NameLen, name, Kind::Dim, nth)
}

/// The valid file with each field set to its value.
fn mutated(changes: &[(Field, u64)]) -> Vec<u8> {
    let mut bytes = valid().bytes.clone();
    for (field, value) in changes {
        field.set(&mut bytes, *value);
    }
    bytes
}

/// The reason of an invalid-model refusal.
fn reason(outcome: &Outcome) -> &str {
    assert_invalid(outcome);
    match outcome {
        Outcome::Refused(Error::InvalidModel { reason, .. }) => reason,
        _ => unreachable!(),
    }
}

/// Was: "attempt to multiply with overflow", in candle's `Shape::elem_count` (the product
/// of the dimensions) or in the weight estimate (4 bytes per element), both called by
/// `GgufFile::metadata`. Shrunk cases: the first dimension set to `u64::MAX`, and bit 7 of
/// byte 6 of `blk.1.ffn_up.weight`'s first dimension flipped (64 + 2^55: 2^62 elements).
#[test]
fn an_element_count_that_overflows_is_refused() {
    for (tensor, value, why) in [
        ("token_embd.weight", u64::MAX, "has too many elements"),
        (
            "blk.1.ffn_up.weight",
            64 + (1 << 55),
            "runs past the end of the file",
        ),
    ] {
        let outcome = load(&mutated(&[(dim(tensor, 0), value)]));
        let reason = reason(&outcome);
        assert!(
            reason.starts_with(&format!("tensor `{tensor}`")),
            "{reason}"
        );
        assert!(reason.contains(why), "{reason}");
    }
}

/// Was: an abort (undefined behaviour in release builds): candle builds a tensor of no
/// elements from a dangling pointer (`slice::from_raw_parts` misaligned). Shrunk case: a
/// dimension set to 0.
#[test]
fn a_tensor_of_no_elements_is_refused() {
    let outcome = load(&mutated(&[(dim("blk.0.attn_norm.weight", 0), 0)]));
    let reason = reason(&outcome);
    assert!(
        reason.contains("`blk.0.attn_norm.weight` has no elements"),
        "{reason}"
    );
}

/// Was: loaded, then the first prompt panicked in the batched kernels ("… values in rows of
/// 96"): the matrix is narrower than the metadata's feed-forward width. Shrunk case: a matrix
/// dimension changed, its bytes still inside the file.
#[test]
fn a_matrix_of_the_wrong_shape_is_refused() {
    let outcome = load(&mutated(&[(dim("blk.0.ffn_down.weight", 0), 96)]));
    let reason = reason(&outcome);
    assert!(
        reason.contains("`blk.0.ffn_down.weight` has shape Some((64, 96)), expected [64, 128]"),
        "{reason}"
    );
}

/// Was: loaded; then every request was refused as the caller's fault ("token id 1 is outside
/// the vocabulary of 0 tokens", `InvalidInput`), and with a vocabulary of `u32::MAX` the first
/// constrained request allocated a word per id (~100 GB). Shrunk case: `llama.vocab_size` 0.
#[test]
fn a_vocabulary_the_model_does_not_hold_is_refused() {
    for (vocab, why) in [
        (
            0,
            "the tokenizer has 285 tokens, the model a vocabulary of 0".to_string(),
        ),
        (
            u32::MAX.into(),
            format!(
                "`token_embd.weight` has shape Some((285, 64)), expected [{}, 64]",
                u32::MAX
            ),
        ),
    ] {
        let outcome = load(&mutated(&[(metadata("llama.vocab_size"), vocab)]));
        let reason = reason(&outcome);
        assert!(reason.contains(&why), "{reason}");
    }
}

/// Was: "attempt to divide by zero" in candle's `Content::read`, which divides by
/// `general.alignment` unchecked.
#[test]
fn an_alignment_of_zero_is_refused() {
    let outcome = load(&mutated(&[(metadata("general.alignment"), 0)]));
    let reason = reason(&outcome);
    assert!(reason.contains("`general.alignment`"), "{reason}");
}

/// Was: `Vec::with_capacity(block_count)` of layers, 4 billion of them (an abort), when a file
/// declares more blocks than it holds and is loaded without the pool's budget.
#[test]
fn a_block_count_past_the_tensors_is_not_reserved() {
    let bytes = mutated(&[(metadata("llama.block_count"), u32::MAX.into())]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let (loaded, largest) = largest_allocation(|| Model::load(&path));
    let err = loaded.unwrap_err();
    assert!(
        err.to_string().contains("blk.2.attn_q.weight"),
        "the first missing block is named: {err}"
    );
    assert!(largest < 16 << 20, "{largest} bytes at once");
}

/// Was: "attempt to multiply with overflow" in `ModelMetadata::session_bytes` (and in the
/// pool's estimate, `parallel` sessions of it): 4 billion blocks of a 4-billion-token window
/// take more than `u64` bytes. Now the estimate saturates, past any budget.
#[test]
fn a_session_past_u64_bytes_saturates() {
    let bytes = mutated(&[
        (metadata("llama.block_count"), u32::MAX.into()),
        (metadata("llama.context_length"), u32::MAX.into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let meta = GgufFile::open(&path)
        .unwrap()
        .metadata(None, false)
        .unwrap();
    assert_eq!(meta.session_bytes(), u64::MAX);
    assert!(matches!(load(&bytes), Outcome::OverBudget));
}

/// A header cut short says so (candle's own words: "failed to fill whole buffer").
#[test]
fn a_truncated_header_says_so() {
    for cut in [2, 20] {
        let outcome = load(&valid().bytes[..cut]);
        let reason = reason(&outcome);
        assert_eq!(
            reason,
            format!("truncated GGUF header: the file ends at {cut} bytes")
        );
    }
}
