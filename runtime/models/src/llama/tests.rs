//! The forward pass against candle-transformers' `quantized_llama`, `quantized_qwen2` and
//! `quantized_qwen3` on the same files, one tiny model of each architecture.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};

use super::Phase;
use crate::testing::TinyModel;
use crate::{LoadOptions, Message, Model};

/// The architectures of the forward pass (`crate::gguf::SUPPORTED_ARCHITECTURES`).
pub(super) const ARCHITECTURES: [&str; 3] = ["llama", "qwen2", "qwen3"];

/// A tiny model of `architecture` at `dir/{architecture}.gguf`.
pub(super) fn tiny(dir: &Path, architecture: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{architecture}.gguf"));
    TinyModel {
        architecture: architecture.into(),
        ..TinyModel::default()
    }
    .write(&path)
    .unwrap();
    path
}

/// A model's `forward(tokens, position)`.
type Forward = Box<dyn FnMut(&Tensor, usize) -> candle_core::Result<Tensor>>;

/// candle-transformers' model of the file's architecture.
fn candle_model(path: &Path) -> Forward {
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let arch = content.metadata["general.architecture"]
        .to_string()
        .unwrap()
        .clone();
    let dev = &Device::Cpu;
    match arch.as_str() {
        "llama" => {
            let mut m = quantized_llama::ModelWeights::from_gguf(content, &mut file, dev).unwrap();
            Box::new(move |x, pos| m.forward(x, pos))
        }
        "qwen2" => {
            let mut m = quantized_qwen2::ModelWeights::from_gguf(content, &mut file, dev).unwrap();
            Box::new(move |x, pos| m.forward(x, pos))
        }
        "qwen3" => {
            let mut m = quantized_qwen3::ModelWeights::from_gguf(content, &mut file, dev).unwrap();
            Box::new(move |x, pos| m.forward(x, pos))
        }
        other => panic!("no candle model for {other}"),
    }
}

/// Logits after each step of `steps` (first the prompt, then one token at a time).
fn candle_logits(path: &Path, steps: &[&[u32]]) -> Vec<Vec<f32>> {
    let mut forward = candle_model(path);
    let mut pos = 0;
    steps
        .iter()
        .map(|tokens| {
            let x = Tensor::new(*tokens, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits = forward(&x, pos).unwrap();
            pos += tokens.len();
            logits.squeeze(0).unwrap().to_vec1().unwrap()
        })
        .collect()
}

/// `forward(tokens, phase)` over `steps`: the first as the prompt, the rest generated.
fn by_step(steps: &[&[u32]], mut forward: impl FnMut(&[u32], Phase) -> Vec<f32>) -> Vec<Vec<f32>> {
    steps
        .iter()
        .enumerate()
        .map(|(i, tokens)| {
            let phase = if i == 0 {
                Phase::Prompt
            } else {
                Phase::Generate
            };
            forward(tokens, phase)
        })
        .collect()
}

fn our_logits(model: &Model, steps: &[&[u32]]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache();
    by_step(steps, |tokens, phase| {
        model.forward(&mut cache, tokens, phase).unwrap()
    })
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

const STEPS: &[&[u32]] = &[&[1, 40, 50, 60, 70, 80, 90, 100, 110], &[120], &[130], &[7]];

/// Copies the GGUF at `src` to `dst`, passing the metadata and each tensor through `edit`.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit_metadata: impl FnOnce(&mut HashMap<String, gguf_file::Value>),
    mut edit_tensor: impl FnMut(&str, QTensor) -> QTensor,
) {
    let mut file = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|name| {
            let t = content.tensor(&mut file, name, &Device::Cpu).unwrap();
            (name.clone(), edit_tensor(name, t))
        })
        .collect();
    let mut metadata = content.metadata;
    edit_metadata(&mut metadata);
    let metadata: Vec<_> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<_> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::fs::File::create(dst).unwrap();
    gguf_file::write(&mut out, &metadata, &tensors).unwrap();
}

/// `t` with its values mapped by `f`, stored as `f32`.
fn map_f32(t: &QTensor, f: impl FnOnce(Tensor) -> Tensor) -> QTensor {
    QTensor::quantize(&f(t.dequantize(&Device::Cpu).unwrap()), GgmlDType::F32).unwrap()
}

/// Rewrites a GGUF with every tensor dequantized to `f32`: candle then runs it dense.
fn write_f32_copy(src: &Path, dst: &Path) {
    rewrite(src, dst, |_| {}, |_, t| map_f32(&t, |t| t));
}

/// Our generation kernels (8-bit activations, one token at a time, every step including the
/// prompt's tokens) against candle's quantized models: the same integer block products, float
/// sums in another order. (Our prompts, with 16-bit activations, are checked against the exact
/// logits by `quantized_prompt_is_close_to_the_f32_logits`.)
///
/// Qwen2's value bias is zeroed here: it gives every input of the output projection a large
/// common offset, so the `Q4_1` products become differences of large terms (the block minimum
/// times the activation sum against the scaled integer products). There our kernels' order of
/// float additions (SIMD lanes, minima summed apart) and candle's (sequential, block by block)
/// round differently, which now and then moves an activation across an 8-bit rounding boundary
/// in the next quantized product: logits then part by ~1e-2 (measured).
/// The value bias is checked exactly by `dense_prompt_matches_candle_on_f32_weights` (prompts)
/// and `buffer_decode_matches_tensor_decode` (generation).
#[test]
fn quantized_forward_matches_candle() {
    let dir = tempfile::tempdir().unwrap();
    let options = LoadOptions {
        dense_prefill: false,
        ..LoadOptions::default()
    };
    for arch in ARCHITECTURES {
        let path = dir.path().join(format!("{arch}-quantized.gguf"));
        rewrite(
            &tiny(dir.path(), arch),
            &path,
            |_| {},
            |name, t| match name.ends_with("attn_v.bias") {
                true => map_f32(&t, |t| t.zeros_like().unwrap()),
                false => t,
            },
        );
        let model = Model::load_with(&path, &options).unwrap();
        let mut cache = model.new_cache();
        let ours: Vec<Vec<f32>> = STEPS
            .iter()
            .map(|tokens| {
                let mut last = Vec::new();
                for &t in *tokens {
                    last = model.forward(&mut cache, &[t], Phase::Generate).unwrap();
                }
                last
            })
            .collect();
        let diff = max_diff(&ours, &candle_logits(&path, STEPS));
        assert!(diff < 1e-4, "{arch}: max |logit difference| {diff}");
    }
}

/// Our prompt path through the quantized weights (16-bit activations) against candle on `f32`
/// copies of the same (dequantized) weights: only the activations' rounding differs, far less
/// than with 8-bit activations (candle's quantized model on the same file).
#[test]
fn quantized_prompt_is_close_to_the_f32_logits() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHITECTURES {
        let path = tiny(dir.path(), arch);
        let f32_path = dir.path().join(format!("{arch}-f32.gguf"));
        write_f32_copy(&path, &f32_path);
        let model = Model::load(&path).unwrap();
        let exact = candle_logits(&f32_path, &STEPS[..1]);
        let ours = max_diff(&our_logits(&model, &STEPS[..1]), &exact);
        let eight_bit = max_diff(&candle_logits(&path, &STEPS[..1]), &exact);
        assert!(ours < 1e-3, "{arch}: max |logit difference| {ours}");
        assert!(
            ours * 20.0 < eight_bit,
            "{arch}: ours {ours}, 8-bit activations {eight_bit}"
        );
    }
}

/// The row paths (prompts on plain rows, generation through `decode_token`) against the
/// tensor path over the same weights: the same maths, so equal up to float summation order
/// (matrix products, attention, norms).
#[test]
fn buffer_decode_matches_tensor_decode() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHITECTURES {
        let path = tiny(dir.path(), arch);
        let load = || {
            let mut file = crate::gguf::GgufFile::open(&path).unwrap();
            let meta = file.metadata(None, true).unwrap();
            super::Llama::load(&mut file, &meta, &Device::Cpu, true).unwrap()
        };
        let fast = load();
        let mut slow = load();
        assert!(
            fast.decode.is_some(),
            "{arch}: Q4_1 layers and Q8_0 output use our kernels"
        );
        slow.decode = None;
        slow.rows = false;
        assert!(fast.rows, "{arch}: prompts run on plain rows");
        let run = |llama: &super::Llama| -> Vec<Vec<f32>> {
            let mut cache = llama.new_cache();
            by_step(STEPS, |tokens, phase| {
                llama.forward(&mut cache, tokens, phase).unwrap()
            })
        };
        let diff = max_diff(&run(&fast), &run(&slow));
        assert!(diff < 1e-4, "{arch}: max |logit difference| {diff}");
    }
}

#[test]
fn dense_prompt_matches_candle_on_f32_weights() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHITECTURES {
        let path = tiny(dir.path(), arch);
        let f32_path = dir.path().join(format!("{arch}-f32.gguf"));
        write_f32_copy(&path, &f32_path);
        let dense = LoadOptions {
            dense_prefill: true,
            ..LoadOptions::default()
        };
        let model = Model::load_with(&path, &dense).unwrap();
        let ours = our_logits(&model, &STEPS[..1]);
        let exact = candle_logits(&f32_path, &STEPS[..1]);
        let diff = max_diff(&ours, &exact);
        assert!(diff < 1e-4, "{arch}: max |logit difference| {diff}");
        // The quantized kernels are measurably further from the exact logits.
        let quantized = candle_logits(&path, &STEPS[..1]);
        assert!(
            max_diff(&quantized, &exact) > 10.0 * diff.max(1e-6),
            "{arch}"
        );
    }
}

/// The architectures differ where they say they do: the same weights read as another
/// architecture give other logits (a forward pass that ignored biases, q/k norms or the rope
/// style would not).
#[test]
fn architecture_changes_the_logits() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["qwen2", "qwen3"] {
        let path = tiny(dir.path(), arch);
        let model = Model::load(&path).unwrap();
        let ours = our_logits(&model, STEPS);
        // The same file with `general.architecture` rewritten to llama: biases and q/k norms
        // are not read, rope pairs adjacent dims.
        let as_llama = dir.path().join(format!("{arch}-as-llama.gguf"));
        let as_llama_metadata = |metadata: &mut HashMap<String, gguf_file::Value>| {
            let keys: Vec<String> = metadata.keys().cloned().collect();
            for k in keys {
                if let Some(rest) = k.strip_prefix(&format!("{arch}.")) {
                    let v = metadata[&k].clone();
                    metadata.insert(format!("llama.{rest}"), v);
                }
            }
            metadata.insert(
                "general.architecture".into(),
                gguf_file::Value::String("llama".into()),
            );
        };
        rewrite(&path, &as_llama, as_llama_metadata, |_, t| t);
        let llama = our_logits(&Model::load(&as_llama).unwrap(), STEPS);
        assert!(max_diff(&ours, &llama) > 1e-2, "{arch} ran as llama");
    }
}

/// A llama-family model read straight from `path`, with or without dense prefill.
pub(super) fn load_llama(path: &Path, dense: bool) -> super::Llama {
    let mut file = crate::gguf::GgufFile::open(path).unwrap();
    let meta = file.metadata(None, dense).unwrap();
    super::Llama::load(&mut file, &meta, &Device::Cpu, dense).unwrap()
}

/// The prompt cache's promise, bit for bit: a prompt's logits are the same whole, split at
/// every point, token by token, and after the cache held another prompt's keys and values
/// (with generated positions after them) and kept the common prefix — with dense prefill
/// (the batch-invariant `f32` kernel) and without (our quantized kernels row by row).
#[test]
fn prompt_logits_are_batch_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let prompt: Vec<u32> = (0..41).map(|i| 1 + (i * 37) % 200).collect();
    let other: Vec<u32> = prompt[..23].iter().copied().chain([9, 8, 7, 6]).collect();
    for arch in ARCHITECTURES {
        let path = tiny(dir.path(), arch);
        for dense in [true, false] {
            let llama = load_llama(&path, dense);
            assert!(llama.batch_invariant(), "{arch}, dense {dense}");
            let run = |cache: &mut super::LlamaCache, tokens: &[u32]| {
                llama.forward(cache, tokens, Phase::Prompt).unwrap()
            };
            let whole = run(&mut llama.new_cache(), &prompt);
            for split in 1..prompt.len() {
                let mut cache = llama.new_cache();
                run(&mut cache, &prompt[..split]);
                let rest = run(&mut cache, &prompt[split..]);
                assert_eq!(rest, whole, "{arch}, dense {dense}: split at {split}");
            }
            let mut cache = llama.new_cache();
            let mut last = Vec::new();
            for token in &prompt {
                last = run(&mut cache, std::slice::from_ref(token));
            }
            assert_eq!(last, whole, "{arch}, dense {dense}: one token at a time");

            let mut cache = llama.new_cache();
            run(&mut cache, &other);
            for token in [3, 4, 5] {
                llama
                    .forward(&mut cache, &[token], Phase::Generate)
                    .unwrap();
            }
            cache.truncate(23);
            let reused = run(&mut cache, &prompt[23..]);
            assert_eq!(
                reused, whole,
                "{arch}, dense {dense}: after a cached prefix"
            );
        }
    }
}

/// Where the prompt path is candle's (a format our kernels do not read, without dense copies)
/// it is not batch-invariant, and sessions do not reuse prefixes; `f32` files run on rows.
#[test]
fn prompt_cache_only_where_prompts_are_batch_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny(dir.path(), "llama");
    let q4_0 = dir.path().join("llama-q4_0.gguf");
    rewrite(
        &path,
        &q4_0,
        |_| {},
        |name, t| {
            if name.starts_with("blk.") && name.ends_with(".weight") && t.shape().dims().len() == 2
            {
                let w = t.dequantize(&Device::Cpu).unwrap();
                QTensor::quantize(&w, GgmlDType::Q4_0).unwrap()
            } else {
                t
            }
        },
    );
    assert!(!load_llama(&q4_0, false).batch_invariant());
    assert!(load_llama(&q4_0, true).batch_invariant());
    let f32_path = dir.path().join("llama-f32.gguf");
    write_f32_copy(&path, &f32_path);
    assert!(load_llama(&f32_path, false).batch_invariant());

    let options = LoadOptions {
        dense_prefill: false,
        ..LoadOptions::default()
    };
    let model = Model::load_with(&q4_0, &options).unwrap();
    assert!(!model.prompt_cache());
    let mut session = model.session();
    let prompt = [1, 40, 50, 60, 70];
    let params = crate::SamplingParams::greedy(3);
    let cancel = crate::CancelToken::new();
    let first = session.generate(&prompt, &params, &cancel, |_| {}).unwrap();
    assert_eq!(session.reusable_prefix(&prompt), 0);
    let again = session.generate(&prompt, &params, &cancel, |_| {}).unwrap();
    assert_eq!(again.usage.cached_tokens, 0);
    assert_eq!(again.tokens, first.tokens);
}

/// `SLMFN_MODEL_PATH=... cargo test --release -p slmfn-models --lib prompt_path_timings --
/// --ignored --nocapture`: best-of-3 prefill time of the real model on plain rows (what prompts
/// run through), through the quantized weights (the default) and through `f32` copies, and
/// candle's tensor path on the same `f32` copies. Prints, asserts nothing.
#[test]
#[ignore]
fn prompt_path_timings() {
    let Some(path) = std::env::var_os("SLMFN_MODEL_PATH") else {
        eprintln!("SLMFN_MODEL_PATH is not set");
        return;
    };
    let quantized = load_llama(Path::new(&path), false);
    let dense = load_llama(Path::new(&path), true);
    for len in [48, 6, 8, 43, 200, 512, 6] {
        let tokens: Vec<u32> = (0..len).map(|i| 100 + (i * 7919) % 40000).collect();
        let time = |llama: &super::Llama, rows: bool| {
            (0..3)
                .map(|_| {
                    let mut cache = llama.new_cache();
                    let t = std::time::Instant::now();
                    if rows {
                        llama.prompt_rows(&mut cache, &tokens).unwrap();
                    } else {
                        llama
                            .forward_tensors(&mut cache, &tokens, Phase::Prompt)
                            .unwrap();
                    }
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        let report = |d: std::time::Duration| {
            format!(
                "{:7.1} ms ({:5.0} tok/s)",
                d.as_secs_f64() * 1e3,
                len as f64 / d.as_secs_f64()
            )
        };
        eprintln!(
            "{len:4} tokens: quantized rows {}, f32 rows {}, f32 tensors {}",
            report(time(&quantized, true)),
            report(time(&dense, true)),
            report(time(&dense, false)),
        );
    }
}

/// The real model's prompts through the quantized kernels (activations rounded to 16 bits per
/// block) against candle's `f32` reference (the dense copies through candle's tensors): over
/// 64 chats, the same top token in at least 95% (all of them when measured), logits within
/// 0.05 (0.006 measured), and — on every eighth chat, where candle's own quantized model
/// (8-bit activations) runs too — at least 20 times closer to the reference than it (1.35
/// measured). Gated by `SLMFN_MODEL_PATH`.
#[test]
fn real_quantized_prompts_agree_with_the_f32_reference() {
    let Some(path) = std::env::var_os("SLMFN_MODEL_PATH") else {
        eprintln!("note: SLMFN_MODEL_PATH is not set; skipping the real-model test");
        return;
    };
    let path = Path::new(&path);
    let model = Model::load(path).unwrap();
    let quantized = load_llama(path, false);
    let dense = load_llama(path, true);
    let subjects = [
        "the capital of France",
        "how to reset a password",
        "why my build fails with exit code 137",
        "the weather in Lisbon",
        "a refund for order 1234",
        "what a Kubernetes pod is",
        "the price of gold today",
        "how to write a for loop in Rust",
        "the boiling point of water",
        "a summary of the support ticket",
        "which tool lists open invoices",
        "the difference between TCP and UDP",
        "the square root of 144",
        "a haiku about the sea",
        "the CEO of the company",
        "how to cancel my subscription",
    ];
    let forms = [
        "What is {}?",
        "Tell me about {}.",
        "{}",
        "Please explain {} in one line.",
    ];
    let top = |l: &[f32]| (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap();
    let (mut agree, mut total, mut worst) = (0, 0, 0f32);
    let (mut ours_vs_f32, mut candle_vs_f32) = (0f32, 0f32);
    for (i, question) in subjects
        .iter()
        .flat_map(|s| forms.map(|f| f.replace("{}", s)))
        .enumerate()
    {
        let tokens = model.encode_chat(&[Message::user(question)]).unwrap();
        let ours = quantized
            .forward(&mut quantized.new_cache(), &tokens, Phase::Prompt)
            .unwrap();
        let reference = dense
            .forward_tensors(&mut dense.new_cache(), &tokens, Phase::Prompt)
            .unwrap();
        agree += usize::from(top(&ours) == top(&reference));
        total += 1;
        let diff = max_diff(&[ours], std::slice::from_ref(&reference));
        worst = worst.max(diff);
        if i % 8 == 0 {
            let candle = candle_logits(path, &[&tokens]);
            ours_vs_f32 = ours_vs_f32.max(diff);
            candle_vs_f32 = candle_vs_f32.max(max_diff(&candle, &[reference]));
        }
    }
    eprintln!(
        "top-1 agreement {agree}/{total}, max |logit difference| {worst}; on every eighth: \
         ours {ours_vs_f32}, candle's quantized {candle_vs_f32}"
    );
    assert!(agree * 100 >= total * 95, "top-1 agreement {agree}/{total}");
    assert!(
        ours_vs_f32 * 20.0 <= candle_vs_f32,
        "ours {ours_vs_f32} vs candle's quantized {candle_vs_f32} from the f32 logits"
    );
    assert!(worst < 0.05, "max |logit difference| {worst}");
}

/// The portable kernels a CPU without AVX2 runs, forced with `SLMFN_KERNELS=scalar` in a child
/// process (the choice is made once per process): a prompt and generated steps give the
/// logits the SIMD kernels give, up to the order of the float additions (which can move an
/// activation across an 8-bit rounding boundary in generation: ~1e-4 measured).
#[test]
fn forced_scalar_kernels_run_the_model_like_simd() {
    const CHILD: &str = "SLMFN_TEST_SCALAR_CHILD";
    let logits = |path: &Path| {
        let model = Model::load(path).unwrap();
        our_logits(&model, STEPS)
    };
    if let Some(path) = std::env::var_os(CHILD) {
        assert_eq!(crate::kernels::isa(), crate::kernels::Isa::Scalar);
        println!(
            "LOGITS {}",
            serde_json::to_string(&logits(Path::new(&path))).unwrap()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHITECTURES {
        let path = tiny(dir.path(), arch);
        let stdout = run_child(
            "forced_scalar_kernels_run_the_model_like_simd",
            &[
                ("SLMFN_KERNELS", "scalar".as_ref()),
                (CHILD, path.as_os_str()),
            ],
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("LOGITS ").map(|(_, json)| json))
            .unwrap_or_else(|| panic!("no logits from the child: {stdout}"));
        let scalar: Vec<Vec<f32>> = serde_json::from_str(line).unwrap();
        let diff = max_diff(&scalar, &logits(&path));
        assert!(
            diff < 1e-3,
            "{arch}: scalar vs SIMD max |logit difference| {diff}"
        );
    }
}

/// The real model's matrices are ranges of the mapped file, not copies — but q/k/v, which the
/// file keeps apart (`attn_k`, `attn_output`, `attn_q`, `attn_v` in name order) and
/// generation multiplies as one stacked matrix: those are copied once. Loading the model in a
/// fresh process grows its peak resident size by less than the file plus a bound for the
/// copied q/k/v, the tokenizer and the rest. Gated by `SLMFN_MODEL_PATH`.
#[test]
fn real_model_weights_are_mapped_not_copied() {
    const CHILD: &str = "SLMFN_TEST_RSS_CHILD";
    let Some(path) = std::env::var_os("SLMFN_MODEL_PATH") else {
        eprintln!("note: SLMFN_MODEL_PATH is not set; skipping the real-model test");
        return;
    };
    let status_kb = |key: &str| -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap()
    };
    if std::env::var_os(CHILD).is_some() {
        let before = status_kb("VmHWM");
        let model = Model::load(&path).unwrap();
        println!("RSS {} {}", before, status_kb("VmHWM"));
        drop(model);
        return;
    }
    let llama = load_llama(Path::new(&path), false);
    assert!(llama.embeddings_mapped(), "token embeddings");
    let decode = llama.decode.as_ref().expect("our kernels run SmolLM2");
    for (i, l) in decode.layers.iter().enumerate() {
        assert!(
            l.gate_up.is_mapped() && l.down.is_mapped() && l.wo.is_mapped(),
            "layer {i}"
        );
        assert!(
            !l.qkv.is_mapped(),
            "layer {i}: q/k/v are stacked from parts apart"
        );
    }
    let stdout = run_child(
        "real_model_weights_are_mapped_not_copied",
        &[(CHILD, "1".as_ref())],
    );
    let (before, after) = stdout
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("RSS ")?;
            let (a, b) = rest.split_once(' ')?;
            Some((a.parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no RSS from the child: {stdout}"));
    let file_kb = std::fs::metadata(&path).unwrap().len() / 1024;
    let growth = after.saturating_sub(before);
    // The file's pages (mapped) + q/k/v copied (10 MB) + tokenizer, template, scratch: 1.5x
    // the file measured; a second copy of the weights would be 2.5x.
    let bound = file_kb + file_kb / 2 + 30 * 1024;
    eprintln!("peak RSS growth {growth} kB for a {file_kb} kB file (bound {bound} kB)");
    assert!(
        growth <= bound,
        "peak RSS grew {growth} kB loading a {file_kb} kB file"
    );
}

/// Runs this test binary's test `name` (in `llama::tests`) alone in a child process with `env`
/// added (for what is chosen once per process, or measured per process); returns its stdout
/// after asserting it passed.
fn run_child(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("llama::tests::{name}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
