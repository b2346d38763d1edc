//! Several sessions' steps in one forward pass (`super::rows`) against each session alone.

use super::tests::{ARCHITECTURES, load_llama, tiny};
use super::{LlamaCache, Phase, Step};

/// One session's forward passes: tokens and phase of each.
type Script = Vec<(Vec<u32>, Phase)>;

fn scripts() -> Vec<Script> {
    let tokens =
        |seed: u32, n: u32| -> Vec<u32> { (0..n).map(|i| 1 + (seed + i * 37) % 200).collect() };
    let generate = |seed: u32, n: u32| -> Script {
        tokens(seed, n)
            .into_iter()
            .map(|t| (vec![t], Phase::Generate))
            .collect()
    };
    let mut a = vec![(tokens(1, 9), Phase::Prompt)];
    a.extend(generate(5, 7));
    // A prompt in two chunks, generated tokens, a grammar's forced run, more tokens.
    let mut b = vec![
        (tokens(2, 5), Phase::Prompt),
        (tokens(3, 12), Phase::Prompt),
    ];
    b.extend(generate(7, 4));
    b.push((tokens(11, 3), Phase::Prompt));
    b.extend(generate(13, 2));
    let mut c = vec![(tokens(4, 3), Phase::Prompt)];
    c.extend(generate(17, 5));
    // A one-token prompt: a prompt step the width of a generated one.
    let mut d = vec![(tokens(6, 1), Phase::Prompt)];
    d.extend(generate(19, 3));
    vec![a, b, c, d]
}

/// Each session's steps run together with whichever others are active — sessions starting at
/// different steps, ending at different steps — give the same logits, bit for bit, as the
/// session alone; on the three architectures, with quantized and with dense prefill.
#[test]
fn batched_steps_give_each_session_its_own_bits() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = scripts();
    let starts = [0usize, 2, 2, 6];
    for arch in ARCHITECTURES {
        let path = tiny(dir.path(), arch);
        for dense in [false, true] {
            let llama = load_llama(&path, dense);
            let alone: Vec<Vec<Vec<f32>>> = scripts
                .iter()
                .map(|script| {
                    let mut cache = llama.new_cache();
                    script
                        .iter()
                        .map(|(tokens, phase)| llama.forward(&mut cache, tokens, *phase).unwrap())
                        .collect()
                })
                .collect();
            let mut caches: Vec<LlamaCache> = scripts.iter().map(|_| llama.new_cache()).collect();
            let mut widest = 0;
            for t in 0.. {
                let active: Vec<(usize, usize)> = starts
                    .iter()
                    .enumerate()
                    .filter(|&(s, &start)| t >= start && t - start < scripts[s].len())
                    .map(|(s, &start)| (s, t - start))
                    .collect();
                if active.is_empty() && t > 0 {
                    break;
                }
                widest = widest.max(active.len());
                let mut steps: Vec<Step<'_>> = caches
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(s, cache)| {
                        let &(_, k) = active.iter().find(|(a, _)| *a == s)?;
                        let (tokens, phase) = &scripts[s][k];
                        Some(Step {
                            cache,
                            tokens,
                            phase: *phase,
                        })
                    })
                    .collect();
                let logits = llama.forward_steps(&mut steps).unwrap();
                for (&(s, k), logits) in active.iter().zip(&logits) {
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert!(
                        bits(logits) == bits(&alone[s][k]),
                        "{arch}, dense {dense}: session {s}, step {k} (global step {t})"
                    );
                }
            }
            assert!(widest >= 3, "the schedule batches sessions");
        }
    }
}

/// A step that fails (a token outside the vocabulary) fails the whole pass; the batcher then
/// retries each session alone (`crate::batcher`), which needs the caches mended.
#[test]
fn a_failed_pass_leaves_caches_that_mend() {
    let dir = tempfile::tempdir().unwrap();
    let llama = load_llama(&tiny(dir.path(), "llama"), false);
    let (good, bad) = (vec![5u32, 6, 7], vec![1u32 << 30]);
    let mut first = llama.new_cache();
    let mut second = llama.new_cache();
    let mut steps = vec![
        Step {
            cache: &mut first,
            tokens: &good,
            phase: Phase::Prompt,
        },
        Step {
            cache: &mut second,
            tokens: &bad,
            phase: Phase::Prompt,
        },
    ];
    assert!(llama.forward_steps(&mut steps).is_err());
    drop(steps);
    first.mend();
    let again = llama.forward(&mut first, &good, Phase::Prompt).unwrap();
    let fresh = llama
        .forward(&mut llama.new_cache(), &good, Phase::Prompt)
        .unwrap();
    assert_eq!(again, fresh);
}
