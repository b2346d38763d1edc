//! The llama-family architectures the forward pass runs, and what each changes in it.

use super::ops::Rope;

/// What an architecture changes in the llama forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Arch {
    /// How rotary embeddings pair dimensions.
    pub(super) rope: Rope,
    /// The q/k/v projections have biases (`blk.N.attn_{q,k,v}.bias`).
    pub(super) qkv_bias: bool,
    /// Queries and keys get a per-head RMS norm before the rotary embeddings
    /// (`blk.N.attn_{q,k}_norm.weight`).
    pub(super) qk_norm: bool,
}

impl Arch {
    /// The architecture named by `general.architecture`, if we run it. Every name in
    /// [`crate::gguf::SUPPORTED_ARCHITECTURES`] has one.
    pub(super) fn of(name: &str) -> Option<Self> {
        Some(match name {
            // SmolLM, Llama 2/3, TinyLlama, ...
            "llama" => Self {
                rope: Rope::Interleaved,
                qkv_bias: false,
                qk_norm: false,
            },
            // Qwen2, Qwen2.5.
            "qwen2" => Self {
                rope: Rope::Halves,
                qkv_bias: true,
                qk_norm: false,
            },
            "qwen3" => Self {
                rope: Rope::Halves,
                qkv_bias: false,
                qk_norm: true,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_supported_architecture_has_its_variant() {
        for name in crate::gguf::SUPPORTED_ARCHITECTURES.split(", ") {
            assert!(super::Arch::of(name).is_some(), "{name}");
        }
        assert!(super::Arch::of("gpt2").is_none());
    }
}
