//! Batched generation in the pool (`parallel > 1`): concurrent sessions step together and
//! answer as they would alone; jobs go to the session that holds their prompt.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use slmfn_models::testing::TinyModel;
use slmfn_models::{
    CancelToken, Completion, FinishReason, Job, Message, ModelPool, ModelSpec, PoolConfig, Prompt,
    SamplingParams,
};

const WAIT: Duration = Duration::from_secs(60);

fn greedy(n: usize) -> Option<SamplingParams> {
    Some(SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(n)
    })
}

fn chat(question: &str) -> Prompt {
    Prompt::Chat(vec![Message::user(question)])
}

/// A job whose chunks go to `on_chunk` and whose outcome to the returned receiver.
fn job(
    prompt: Prompt,
    scope: &str,
    max_tokens: usize,
    cancel: CancelToken,
    on_chunk: impl FnMut(&str) + Send + 'static,
) -> (Job, mpsc::Receiver<slmfn_models::Result<Completion>>) {
    let (tx, rx) = mpsc::channel();
    let job = Job {
        prompt,
        cache_scope: scope.to_string(),
        params: greedy(max_tokens),
        cancel,
        on_chunk: Box::new(on_chunk),
        on_done: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    };
    (job, rx)
}

/// Calls `signal` once, at the `n`th chunk.
fn at_chunk(n: usize, signal: impl FnOnce() + Send + 'static) -> impl FnMut(&str) + Send {
    let mut seen = 0;
    let mut signal = Some(signal);
    move |_| {
        seen += 1;
        if seen == n
            && let Some(signal) = signal.take()
        {
            signal();
        }
    }
}

/// Three agents on the real model with `parallel = 3`: the second joins while the first is in
/// the middle of its answer (held in a stream callback until the second has streamed), the
/// third joins later and is cancelled after three chunks. The steps really ran together (more
/// session steps than forward passes), and each answer is, token for token, the one the same
/// job gets alone; the cancelled one is a prefix of its own. Gated by `SLMFN_MODEL_PATH`.
#[test]
fn concurrent_generations_step_together_and_answer_as_alone() {
    let Some(path) = std::env::var_os("SLMFN_MODEL_PATH") else {
        eprintln!("note: SLMFN_MODEL_PATH is not set; skipping the batching test");
        return;
    };
    let pool = ModelPool::new(
        PoolConfig::default(),
        vec![ModelSpec {
            parallel: 3,
            ..ModelSpec::new("smol", PathBuf::from(path))
        }],
    )
    .unwrap();
    let questions = [
        "Name three fruits and their colors.",
        "What is the capital of France?",
        "Write a short poem about the sea.",
    ];
    let lengths = [40, 32, 24];
    let alone: Vec<Completion> = questions
        .iter()
        .zip(lengths)
        .map(|(q, n)| {
            pool.generate("smol", chat(q), greedy(n), CancelToken::new(), |_| {})
                .unwrap()
        })
        .collect();
    assert_eq!(
        pool.status()[0].batched_session_steps,
        pool.status()[0].batched_steps
    );

    let (a_at_2, a_streaming) = mpsc::channel();
    let (b_at_1, b_streaming) = mpsc::channel::<()>();
    let (b_at_2, b_further) = mpsc::channel();
    let (first, first_done) = job(
        chat(questions[0]),
        "a",
        lengths[0],
        CancelToken::new(),
        at_chunk(2, move || {
            a_at_2.send(()).unwrap();
            // A member held between steps: the others' steps go on without it.
            b_streaming
                .recv_timeout(WAIT)
                .expect("the second job streams");
        }),
    );
    pool.submit("smol", first).unwrap();
    a_streaming
        .recv_timeout(WAIT)
        .expect("the first job streams");
    let mut b_chunks = 0;
    let (second, second_done) = job(
        chat(questions[1]),
        "b",
        lengths[1],
        CancelToken::new(),
        move |_| {
            b_chunks += 1;
            match b_chunks {
                1 => b_at_1.send(()).unwrap(),
                2 => b_at_2.send(()).unwrap(),
                _ => {}
            }
        },
    );
    pool.submit("smol", second).unwrap();
    b_further
        .recv_timeout(WAIT)
        .expect("the second job streams on");
    let cancel = CancelToken::new();
    let (third, third_done) = job(
        chat(questions[2]),
        "c",
        lengths[2],
        cancel.clone(),
        at_chunk(3, move || cancel.cancel()),
    );
    pool.submit("smol", third).unwrap();

    let first = first_done.recv_timeout(WAIT).unwrap().unwrap();
    let second = second_done.recv_timeout(WAIT).unwrap().unwrap();
    let third = third_done.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(
        first.tokens, alone[0].tokens,
        "{:?} vs {:?}",
        first.text, alone[0].text
    );
    assert_eq!(
        second.tokens, alone[1].tokens,
        "{:?} vs {:?}",
        second.text, alone[1].text
    );
    assert_eq!(first.finish_reason, FinishReason::Length);
    assert_eq!(third.finish_reason, FinishReason::Cancelled);
    assert!(
        third.tokens.len() >= 3 && alone[2].tokens.starts_with(&third.tokens),
        "{:?} vs {:?}",
        third.text,
        alone[2].text
    );
    let status = &pool.status()[0];
    assert!(
        status.batched_session_steps > status.batched_steps,
        "sessions stepped together: {} session steps in {} passes",
        status.batched_session_steps,
        status.batched_steps
    );
}

/// With two sessions free, a job goes to the one that holds its scope's prompt, and a job of a
/// new scope to the other (idle longer), so that alternating callers both keep their prompts.
#[test]
fn a_job_goes_to_the_session_holding_its_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    TinyModel::default().write(&path).unwrap();
    let pool = ModelPool::new(
        PoolConfig::default(),
        vec![ModelSpec {
            parallel: 2,
            ..ModelSpec::new("tiny", &path)
        }],
    )
    .unwrap();
    let prompt = |who: &str| {
        Prompt::Text(format!(
            "{who}: a long shared instruction that this caller sends again with every request"
        ))
    };
    let run = |who: &str| {
        let (job, done) = job(prompt(who), who, 2, CancelToken::new(), |_| {});
        pool.submit("tiny", job).unwrap();
        done.recv_timeout(WAIT).unwrap().unwrap()
    };
    let (a, b) = (run("alice"), run("bob"));
    assert_eq!((a.usage.cached_tokens, b.usage.cached_tokens), (0, 0));
    for round in 0..3 {
        for (who, first) in [("alice", &a), ("bob", &b)] {
            let again = run(who);
            assert_eq!(
                again.usage.cached_tokens,
                first.usage.prompt_tokens - 1,
                "round {round}: {who}'s prompt is cached in the session that ran it"
            );
        }
    }
}
