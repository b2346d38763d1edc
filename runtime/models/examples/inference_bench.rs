//! The slmfn side of `benches/inference.sh` (slmfn vs llama.cpp on the same GGUF). Prints one
//! JSON object per line for `benches/inference/driver.py`; run that script, not this directly.
//!
//! ```text
//! inference_bench encode MODEL PROMPT_FILE N SYSTEM_FILE QUESTION_FILE...
//!     token ids: PROMPT_FILE's text cut to N tokens (raw completion, BOS as the model wants),
//!     and one chat prompt (system + user) per question file, rendered with the model's
//!     template; the llama.cpp side evaluates exactly these ids
//! inference_bench generate MODEL TOKENS_JSON GEN RUNS [dense]
//!     load (timed), then RUNS greedy generations of GEN tokens, end-of-generation ignored;
//!     `dense` processes the prompt with `f32` copies of the matrices (the opt-in) instead of
//!     the quantized kernels
//! inference_bench pool MODEL SYSTEM_FILE
//!     a ModelPool as the runtime builds it (one session, model preloaded), then for each line
//!     of standard input (a question file) one chat call (system + question) of max_tokens=1,
//!     greedy, timed around `ModelPool::generate`: the driver interleaves these calls with
//!     requests to a deployed agent
//! inference_bench constrained MODEL QUESTION GEN RUNS
//!     decode tok/s of greedy generation free and under a JSON schema (every token masked),
//!     alternating
//! inference_bench concurrent MODEL QUESTIONS_FILE GEN STREAMS
//!     a ModelPool with `parallel = STREAMS`, model preloaded; the first STREAMS lines of
//!     QUESTIONS_FILE as chats, submitted at once, each greedy for GEN tokens (end of
//!     generation ignored): the chats' token ids (for the llama.cpp side), aggregate tok/s
//!     (all tokens over the time from submitting to the last answer) and every stream's times
//!     between tokens
//! inference_bench prompt-cache MODEL A_JSON B_JSON RUNS
//!     per run: time to first token of B from an empty cache, then of B right after A, the
//!     prefix they share reused (the session's prompt cache)
//! ```
//!
//! Threads: candle's (`RAYON_NUM_THREADS`, else every core); the driver sets it.

mod common;

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use slmfn_models::ModelSpec;
use slmfn_models::pool::{ModelPool, PoolConfig, Prompt};
use slmfn_models::{CancelToken, LoadOptions, Message, Model, SamplingParams};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> anyhow::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing argument {i}; see the doc comment"))
    };
    match arg(0)? {
        "encode" => encode(arg(1)?, arg(2)?, arg(3)?.parse()?, arg(4)?, &args[5..]),
        "generate" => generate(
            arg(1)?,
            arg(2)?,
            arg(3)?.parse()?,
            arg(4)?.parse()?,
            args.get(5).map(String::as_str) == Some("dense"),
        ),
        "pool" => pool(arg(1)?, arg(2)?),
        "concurrent" => concurrent(arg(1)?, arg(2)?, arg(3)?.parse()?, arg(4)?.parse()?),
        "prompt-cache" => prompt_cache(arg(1)?, arg(2)?, arg(3)?, arg(4)?.parse()?),
        "constrained" => constrained(arg(1)?, arg(2)?, arg(3)?.parse()?, arg(4)?.parse()?),
        other => {
            bail!(
                "unknown mode `{other}` (encode, generate, pool, concurrent, prompt-cache, constrained)"
            )
        }
    }
}

/// Per run, greedy generation of GEN tokens of a chat asking QUESTION free (end of
/// generation ignored) and under a JSON schema no answer completes within GEN tokens (a
/// string of at least 4 GEN characters: every token masked, none forced), prompt cache
/// cleared before each: decode tok/s of both, alternating.
fn constrained(path: &str, question: &str, gen_len: usize, runs: usize) -> anyhow::Result<()> {
    let model = Model::load(path)?;
    let prompt = model.encode_chat(&[Message::user(question)])?;
    let free = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(gen_len)
    };
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string", "minLength": 4 * gen_len}}, "required": ["answer"]});
    let constrained = SamplingParams {
        grammar: Some(slmfn_models::Grammar::JsonSchema(schema)),
        ..SamplingParams::greedy(gen_len)
    };
    let mut session = model.session();
    for run in 0..runs {
        for (side, params) in [("free", &free), ("constrained", &constrained)] {
            session.clear_prompt_cache();
            let c = session.generate(&prompt, params, &CancelToken::new(), |_| {})?;
            let u = c.usage;
            println!(
                "{}",
                json!({
                    "event": "constrained",
                    "run": run,
                    "side": side,
                    "completion_tokens": u.completion_tokens,
                    "forced_tokens": u.forced_tokens,
                    "constraint_us_per_token": u.constraint_duration.as_secs_f64() * 1e6
                        / u.completion_tokens.max(1) as f64,
                    "decode_tok_s": u.generation_tokens_per_second(),
                    "ttft_s": u.time_to_first_token.as_secs_f64(),
                })
            );
        }
    }
    Ok(())
}

fn concurrent(path: &str, questions: &str, gen_len: usize, streams: usize) -> anyhow::Result<()> {
    let questions: Vec<String> = read(questions)?.lines().map(str::to_string).collect();
    anyhow::ensure!(questions.len() >= streams, "fewer than {streams} questions");
    let pool = ModelPool::new(
        PoolConfig::default(),
        vec![ModelSpec {
            parallel: streams,
            queue_depth: streams,
            preload: true,
            ..ModelSpec::new("bench", path)
        }],
    )?;
    pool.load("bench")?;
    let model = pool.loaded("bench")?.context("loaded")?;
    let prompts = questions[..streams]
        .iter()
        .map(|q| model.encode_chat(&[Message::user(q.clone())]))
        .collect::<slmfn_models::Result<Vec<_>>>()?;
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(gen_len)
    };
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, prompt) in prompts.iter().enumerate() {
        let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (chunk_times, tx) = (times.clone(), tx.clone());
        pool.submit(
            "bench",
            slmfn_models::Job {
                prompt: Prompt::Tokens(prompt.clone()),
                cache_scope: format!("stream-{i}"),
                params: Some(params.clone()),
                cancel: CancelToken::new(),
                on_chunk: Box::new(move |_| chunk_times.lock().unwrap().push(Instant::now())),
                on_done: Box::new(move |r| {
                    let _ = tx.send((i, r, Instant::now(), times));
                }),
            },
        )?;
    }
    drop(tx);
    let (mut tokens, mut last, mut gaps, mut ttfts) = (0, started, Vec::new(), Vec::new());
    for (i, result, done, times) in rx {
        let c = result.with_context(|| format!("stream {i}"))?;
        tokens += c.usage.completion_tokens;
        last = last.max(done);
        let times = times.lock().unwrap();
        if let Some(first) = times.first() {
            ttfts.push((*first - started).as_secs_f64());
        }
        gaps.extend(times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()));
    }
    let status = &pool.status()[0];
    println!(
        "{}",
        json!({
            "event": "concurrent",
            "streams": streams,
            "prompts": prompts,
            "tokens": tokens,
            "wall_s": (last - started).as_secs_f64(),
            "aggregate_tok_s": tokens as f64 / (last - started).as_secs_f64(),
            "ttft_s": ttfts,
            "gaps_s": gaps,
            "batched_steps": status.batched_steps,
            "batched_session_steps": status.batched_session_steps,
        })
    );
    Ok(())
}

fn read(path: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(text.trim().to_string())
}

fn encode(
    model: &str,
    prompt_file: &str,
    n: usize,
    system_file: &str,
    questions: &[String],
) -> anyhow::Result<()> {
    let model = Model::load(model)?;
    let text = read(prompt_file)?;
    let mut raw = model.encode_prompt(&text)?;
    anyhow::ensure!(
        raw.len() >= n,
        "{prompt_file} has {} tokens, fewer than {n}",
        raw.len()
    );
    raw.truncate(n);
    let system = read(system_file)?;
    let mut chats = Vec::new();
    for q in questions {
        let messages = [Message::system(system.clone()), Message::user(read(q)?)];
        chats.push(model.encode_chat(&messages)?);
    }
    println!(
        "{}",
        json!({
            "raw": raw,
            "raw_text": model.tokenizer().decode(&raw),
            "chats": chats,
            "eos": model.tokenizer().eos(),
        })
    );
    Ok(())
}

fn generate(
    path: &str,
    tokens_json: &str,
    gen_len: usize,
    runs: usize,
    dense: bool,
) -> anyhow::Result<()> {
    let prompt: Vec<u32> = serde_json::from_str(&read(tokens_json)?)?;
    let options = LoadOptions {
        dense_prefill: dense,
        ..LoadOptions::default()
    };
    let started = Instant::now();
    let model = Model::load_with(path, &options)?;
    let load = started.elapsed();
    println!(
        "{}",
        json!({
            "event": "load",
            "load_s": load.as_secs_f64(),
            "rss_after_load_kb": common::status_kb("VmRSS"),
            "threads": candle_core::utils::get_num_threads(),
            "dense_prefill": options.dense_prefill,
            "kernels": slmfn_models::cpu_kernels(),
            "avx2": cfg!(target_feature = "avx2"),
            "fma": cfg!(target_feature = "fma"),
            "f16c": cfg!(target_feature = "f16c"),
            "avx512f": cfg!(target_feature = "avx512f"),
        })
    );
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(gen_len)
    };
    let mut session = model.session();
    for run in 0..runs {
        // Every run prefills the whole prompt, like llama.cpp's after `reset()`.
        session.clear_prompt_cache();
        let c = session.generate(&prompt, &params, &CancelToken::new(), |_| {})?;
        let u = c.usage;
        println!(
            "{}",
            json!({
                "event": "run",
                "run": run,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "prompt_s": u.prompt_duration.as_secs_f64(),
                "ttft_s": u.time_to_first_token.as_secs_f64(),
                "total_s": u.duration.as_secs_f64(),
                "prompt_tps": u.prompt_tokens_per_second(),
                "gen_tps": u.generation_tokens_per_second(),
                "tokens": c.tokens,
            })
        );
    }
    println!(
        "{}",
        json!({ "event": "end", "peak_rss_kb": common::status_kb("VmHWM") })
    );
    Ok(())
}

fn pool(path: &str, system_file: &str) -> anyhow::Result<()> {
    let mut spec = ModelSpec::new("smollm2", path);
    spec.preload = true;
    let pool = ModelPool::new(PoolConfig::default(), vec![spec])?;
    let started = Instant::now();
    pool.preload()?;
    println!(
        "{}",
        json!({ "event": "load", "load_s": started.elapsed().as_secs_f64() })
    );
    let system = read(system_file)?;
    // What the runtime passes for an agent's `max_tokens: 1, temperature: 0` over the model's
    // defaults.
    let params = SamplingParams {
        max_tokens: 1,
        temperature: 0.0,
        ..SamplingParams::default()
    };
    for line in std::io::stdin().lines() {
        let question_file = line?;
        let messages = vec![
            Message::system(system.clone()),
            Message::user(read(question_file.trim())?),
        ];
        let started = Instant::now();
        let c = pool.generate(
            "smollm2",
            Prompt::Chat(messages),
            Some(params.clone()),
            CancelToken::new(),
            |_| {},
        )?;
        let wall = started.elapsed();
        println!(
            "{}",
            json!({
                "event": "run",
                "wall_s": wall.as_secs_f64(),
                "ttft_s": c.usage.time_to_first_token.as_secs_f64(),
                "prompt_tokens": c.usage.prompt_tokens,
                "cached_tokens": c.usage.cached_tokens,
                "text": c.text,
            })
        );
    }
    Ok(())
}

/// Per run: time to first token of B from an empty cache, then of B after A, reusing the prefix
/// they share (the session's prompt cache). Greedy, one token, dense prefill.
fn prompt_cache(path: &str, a_json: &str, b_json: &str, runs: usize) -> anyhow::Result<()> {
    let a: Vec<u32> = serde_json::from_str(&read(a_json)?)?;
    let b: Vec<u32> = serde_json::from_str(&read(b_json)?)?;
    let started = Instant::now();
    let model = Model::load(path)?;
    println!(
        "{}",
        json!({"event": "load", "load_s": started.elapsed().as_secs_f64()})
    );
    let params = SamplingParams::greedy(1);
    let mut session = model.session();
    let first = |session: &mut slmfn_models::Session, prompt: &[u32]| {
        session.generate(prompt, &params, &CancelToken::new(), |_| {})
    };
    for run in 0..runs {
        session.clear_prompt_cache();
        let fresh = first(&mut session, &b)?;
        session.clear_prompt_cache();
        first(&mut session, &a)?;
        let cached = first(&mut session, &b)?;
        println!(
            "{}",
            json!({
                "event": "run",
                "run": run,
                "fresh_ttft_s": fresh.usage.time_to_first_token.as_secs_f64(),
                "cached_ttft_s": cached.usage.time_to_first_token.as_secs_f64(),
                "cached_tokens": cached.usage.cached_tokens,
                "prompt_tokens": cached.usage.prompt_tokens,
                "fresh_token": fresh.tokens.first(),
                "cached_token": cached.tokens.first(),
            })
        );
    }
    println!("{}", json!({"event": "end"}));
    Ok(())
}
