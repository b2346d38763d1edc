use std::path::Path;

use candle_core::Device;

use super::testing::TinyBert;
use super::*;

fn load_dir(dir: &Path) -> EmbeddingModel {
    TinyBert::default().write_dir(dir).unwrap();
    EmbeddingModel::load_with(dir, &Device::Cpu).unwrap()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn embed_gives_one_unit_vector_per_text_of_the_hidden_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_dir(dir.path());
    assert_eq!(model.dimensions(), 16);
    assert_eq!(model.max_tokens(), 32);
    assert_eq!(model.header().pooling, Pooling::Mean);
    let texts = ["hello world", "the cat sat on the mat", "Zebras?"];
    let out = model.embed(&texts).unwrap();
    assert_eq!(out.vectors.len(), 3);
    for v in &out.vectors {
        assert_eq!(v.len(), 16);
        assert!((norm(v) - 1.0).abs() < 1e-5, "not unit length: {}", norm(v));
        assert!(v.iter().all(|x| x.is_finite()));
    }
    // [CLS] hello world [SEP] + [CLS] the cat sat on the mat [SEP] + [CLS] z ##e ##b ##r ##a ##s ? [SEP]
    assert_eq!(out.prompt_tokens, 4 + 8 + 9);
    assert!(
        max_diff(&out.vectors[0], &out.vectors[1]) > 1e-3,
        "different texts, same vector"
    );
    // Deterministic.
    assert_eq!(model.embed(&texts).unwrap(), out);
}

#[test]
fn the_tokenizer_files_truncation_and_padding_are_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_dir(dir.path());
    // The file asks for truncation to 8 and fixed padding to 12.
    assert_eq!(model.tokenize("hello").unwrap(), vec![2, 5, 3]);
    let long = model
        .tokenize("the cat sat on the mat the dog sat on the mat")
        .unwrap();
    assert_eq!(long.len(), 14);
    assert_eq!((long[0], long[13]), (2, 3));
}

#[test]
fn a_text_embeds_the_same_alone_and_in_a_batch_with_longer_ones() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_dir(dir.path());
    let short = "hello world";
    let alone = model.embed(&[short]).unwrap().vectors.remove(0);
    let long = "the cat sat on the mat and the dog sat on the mat today";
    let batch = model.embed(&[long, short, "a dog", long]).unwrap();
    assert!(
        max_diff(&alone, &batch.vectors[1]) < 1e-5,
        "padding changed the vector: {alone:?} vs {:?}",
        batch.vectors[1]
    );
    // Order is the input's, whatever the batching.
    let long_alone = model.embed(&[long]).unwrap().vectors.remove(0);
    assert!(max_diff(&long_alone, &batch.vectors[0]) < 1e-5);
    assert!(max_diff(&long_alone, &batch.vectors[3]) < 1e-5);
}

#[test]
fn many_texts_are_split_into_bounded_batches_in_order() {
    let lengths = [3usize, 30, 5, 5, 1, 12];
    let mut tokens: Vec<Vec<u32>> = Vec::new();
    for i in 0..200 {
        tokens.push(vec![7; lengths[i % lengths.len()] + 2]);
    }
    let groups = batches(&tokens);
    let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
    for group in &groups {
        let longest = group.iter().map(|&i| tokens[i].len()).max().unwrap();
        assert!(group.len() <= MAX_BATCH_TEXTS);
        assert!(group.len() == 1 || group.len() * longest <= BATCH_TOKENS);
    }
    assert!(groups.len() >= 200 / MAX_BATCH_TEXTS);

    // Through the model: 150 texts come back in order, each as it would alone.
    let dir = tempfile::tempdir().unwrap();
    let model = load_dir(dir.path());
    let words = ["hello", "world", "cat", "dog", "mat", "password"];
    let texts: Vec<String> = (0..150)
        .map(|i| {
            (0..(i % 9) + 1)
                .map(|j| words[(i + j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let all = model.embed(&texts).unwrap();
    for i in [0, 7, 64, 149] {
        let alone = model.embed(&texts[i..=i]).unwrap().vectors.remove(0);
        assert!(max_diff(&alone, &all.vectors[i]) < 1e-5, "text {i}");
    }
}

#[test]
fn texts_past_the_position_table_are_refused_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_dir(dir.path());
    // 30 words + [CLS] + [SEP] = 32 = max_position_embeddings: fits.
    let fits = vec!["cat"; 30].join(" ");
    let out = model.embed(&[fits.as_str()]).unwrap();
    assert_eq!(out.prompt_tokens, 32);
    let too_long = vec!["cat"; 31].join(" ");
    let e = model.embed(&["hello", too_long.as_str()]).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("text 1") && message.contains("33 tokens") && message.contains("32"),
        "{message}"
    );
    assert!(model.tokenize(&too_long).is_err());
    // Token ids are checked too.
    let e = model.embed_tokens(&[vec![2; 33]]).unwrap_err();
    assert!(e.to_string().contains("33 tokens"), "{e}");
    let e = model.embed_tokens(&[vec![2, 9999, 3]]).unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
}

#[test]
fn empty_and_oversized_calls_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_dir(dir.path());
    let none: [&str; 0] = [];
    assert!(matches!(model.embed(&none), Err(Error::InvalidInput(_))));
    let many = vec!["a"; MAX_INPUTS + 1];
    let e = model.embed(&many).unwrap_err();
    assert!(e.to_string().contains("at most 2048"), "{e}");
    // An empty string is a text: [CLS] [SEP].
    let out = model.embed(&[""]).unwrap();
    assert_eq!(out.prompt_tokens, 2);
    assert!((norm(&out.vectors[0]) - 1.0).abs() < 1e-5);
}

#[test]
fn a_zip_loads_like_the_directory_with_or_without_a_top_directory() {
    let dir = tempfile::tempdir().unwrap();
    let from_dir = load_dir(&dir.path().join("model"));
    let texts = ["hello world", "how do i reset my password?"];
    let expected = from_dir.embed(&texts).unwrap();
    for prefix in ["", "all-tiny/"] {
        let zip = dir.path().join(format!("model{}.zip", prefix.len()));
        TinyBert::default().write_zip(&zip, prefix).unwrap();
        let header = EmbeddingHeader::read(&zip).unwrap();
        assert_eq!(header, *from_dir.header());
        let model = EmbeddingModel::load_with(&zip, &Device::Cpu).unwrap();
        assert_eq!(model.embed(&texts).unwrap(), expected, "prefix {prefix:?}");
    }
}

#[test]
fn the_header_counts_f32_weights_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    TinyBert::default().write_dir(dir.path()).unwrap();
    let header = EmbeddingHeader::read(dir.path()).unwrap();
    let tiny = TinyBert::default();
    let floats: usize = tiny
        .tensors()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "embeddings.position_ids")
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(header.weights_bytes, floats as u64 * 4);
    assert!(EmbeddingModel::activation_bytes(&header) > 0);
}

#[test]
fn broken_models_are_clear_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    TinyBert::default().write_dir(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = EmbeddingModel::load_with(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::InvalidModel { .. }), "{e:?}");
    assert!(e.to_string().contains("no tokenizer.json"), "{e}");

    let not_zip = dir.path().join("model.gguf");
    std::fs::write(&not_zip, b"GGUF....").unwrap();
    let e = EmbeddingModel::load_with(&not_zip, &Device::Cpu).unwrap_err();
    assert!(
        e.to_string().contains("neither a directory nor a zip"),
        "{e}"
    );

    let missing = dir.path().join("nope");
    let e = EmbeddingModel::load_with(&missing, &Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");

    // CLS pooling is read from 1_Pooling/config.json; max pooling is refused.
    let pooled = tempfile::tempdir().unwrap();
    TinyBert::default().write_dir(pooled.path()).unwrap();
    let pooling = pooled.path().join("1_Pooling/config.json");
    std::fs::write(
        &pooling,
        r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    let cls = EmbeddingModel::load_with(pooled.path(), &Device::Cpu).unwrap();
    assert_eq!(cls.header().pooling, Pooling::Cls);
    let v = cls.embed(&["hello"]).unwrap().vectors.remove(0);
    assert!((norm(&v) - 1.0).abs() < 1e-5);
    std::fs::write(&pooling, r#"{"pooling_mode_max_tokens": true}"#).unwrap();
    let e = EmbeddingModel::load_with(pooled.path(), &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("unsupported pooling"), "{e}");
}

/// The real all-MiniLM-L6-v2 (`SLMFN_EMBED_MODEL_PATH`: the cached `minilm.zip`, fetched by
/// `scripts/test.sh`); skipped with a note when unset.
#[test]
fn real_minilm_when_available() {
    let Some(path) = std::env::var_os("SLMFN_EMBED_MODEL_PATH") else {
        eprintln!("note: skipped: SLMFN_EMBED_MODEL_PATH is not set");
        return;
    };
    let model = EmbeddingModel::load_with(&path, &Device::Cpu).unwrap();
    assert_eq!((model.dimensions(), model.max_tokens()), (384, 512));
    let texts = [
        "How do I reset my password?",
        "I forgot my password",
        "The weather is lovely today.",
    ];
    let out = model.embed(&texts).unwrap();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for v in &out.vectors {
        assert!((norm(v) - 1.0).abs() < 1e-4);
    }
    let similar = dot(&out.vectors[0], &out.vectors[1]);
    let unrelated = dot(&out.vectors[0], &out.vectors[2]);
    assert!(
        similar > 0.5 && unrelated < 0.2 && similar > unrelated + 0.3,
        "similar {similar}, unrelated {unrelated}"
    );
    // [CLS] how do i reset my password ? [SEP]
    assert_eq!(model.tokenize(texts[0]).unwrap().len(), 9);
    let too_long = "word ".repeat(600);
    assert!(model.embed(&[too_long.as_str()]).is_err());
}
