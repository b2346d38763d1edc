//! Sampling parameters and the sampler that turns logits into the next token.
//!
//! Order of operations (llama.cpp's default chain, minus the exotic samplers): repeat penalty
//! over a look-back window, then greedy when `temperature == 0`, else top-k, temperature,
//! softmax, top-p, and a draw from a seeded RNG. The same seed, parameters, model and prompt
//! always give the same tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::constraint::Grammar;
use crate::error::{Error, Result};

/// Longest stop string accepted: stop strings are held back while they might still match, so a
/// huge one would delay streaming for no use.
pub const MAX_STOP_LEN: usize = 256;
/// Most stop strings per request (OpenAI allows 4; some clients send a few more).
pub const MAX_STOPS: usize = 16;

/// How to pick tokens and when to stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Most tokens to generate. Prompt + `max_tokens` must fit the context window.
    pub max_tokens: usize,
    /// Softmax temperature; `0` picks the most likely token (greedy, deterministic).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; `1` keeps all.
    pub top_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens; `1` is off.
    pub repeat_penalty: f32,
    /// How many of the latest tokens (prompt included) the repeat penalty looks at.
    pub repeat_last_n: usize,
    /// RNG seed; `None` draws one from the OS. Ignored by greedy decoding.
    pub seed: Option<u64>,
    /// Generation stops before any of these strings; they are not part of the output.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (benchmarks that need exactly
    /// `max_tokens`); they are then printed as nothing. Ignored under a `grammar`.
    pub ignore_eos: bool,
    /// Constrains the output to a JSON schema, Lark grammar or regex (see
    /// [`crate::constraint`]). The output obeys it by construction; when `max_tokens` runs out
    /// first, the completion ends with `FinishReason::Length` and is incomplete.
    pub grammar: Option<Grammar>,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults (temperature 0.8, top-k 40, top-p 0.95, no repeat penalty).
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
            stop: Vec::new(),
            ignore_eos: false,
            grammar: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        if self.stop.len() > MAX_STOPS {
            return bad(format!(
                "at most {MAX_STOPS} stop strings, got {}",
                self.stop.len()
            ));
        }
        if let Some(s) = self
            .stop
            .iter()
            .find(|s| s.is_empty() || s.len() > MAX_STOP_LEN)
        {
            return bad(format!(
                "stop strings must be 1 to {MAX_STOP_LEN} bytes, got {} bytes",
                s.len()
            ));
        }
        Ok(())
    }
}

/// Picks tokens from logits. One per generation: it owns the RNG stream.
#[derive(Debug)]
pub struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    repeat_penalty: f32,
    repeat_last_n: usize,
    rng: StdRng,
    /// Reused between tokens: candidate ids, then their probabilities.
    ids: Vec<u32>,
    probs: Vec<f32>,
}

impl Sampler {
    /// A sampler for `params` (validated here).
    pub fn new(params: &SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Self {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            repeat_penalty: params.repeat_penalty,
            repeat_last_n: params.repeat_last_n,
            rng,
            ids: Vec::new(),
            probs: Vec::new(),
        })
    }

    /// Whether this sampler always takes the argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// The next token given the logits of the last position and the tokens so far (prompt and
    /// generated, for the repeat penalty). `logits` is modified in place. NaN logits never win.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        assert!(!logits.is_empty(), "no logits to sample from");
        self.apply_repeat_penalty(logits, history);
        if self.is_greedy() {
            return argmax(logits);
        }
        // Candidates (sorted most likely first only when top-p needs the order).
        self.ids.clear();
        self.ids.extend(0..logits.len() as u32);
        let logit = |id: &u32| {
            let l = logits[*id as usize];
            if l.is_nan() { f32::NEG_INFINITY } else { l }
        };
        let by_logit_desc = |a: &u32, b: &u32| logit(b).total_cmp(&logit(a));
        if self.top_k > 0 && self.top_k < self.ids.len() {
            self.ids
                .select_nth_unstable_by(self.top_k - 1, by_logit_desc);
            self.ids.truncate(self.top_k);
        }
        if self.top_p < 1.0 {
            self.ids.sort_unstable_by(by_logit_desc);
        }
        // Softmax with temperature over the candidates.
        let max = self.ids.iter().map(logit).fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return argmax(logits);
        }
        self.probs.clear();
        let mut sum = 0.0f32;
        for id in &self.ids {
            let p = ((logit(id) - max) / self.temperature).exp();
            sum += p;
            self.probs.push(p);
        }
        // Top-p: the shortest prefix whose mass reaches top_p (at least one token).
        let mut keep = self.probs.len();
        if self.top_p < 1.0 {
            let mut cumulative = 0.0;
            for (i, p) in self.probs.iter().enumerate() {
                cumulative += p / sum;
                if cumulative >= self.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &self.probs[..keep];
        let total: f32 = kept.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, p) in kept.iter().enumerate() {
            if r < *p {
                return self.ids[i];
            }
            r -= p;
        }
        // Rounding left r just above the last probability: the last candidate that can be
        // drawn (a masked one, at probability 0, never is).
        let last = kept.iter().rposition(|&p| p > 0.0).unwrap_or(0);
        self.ids[last]
    }

    /// CTRL-style penalty (as candle's `apply_repeat_penalty` and llama.cpp): each distinct
    /// token of the window has its logit divided by the penalty if positive, multiplied if not.
    fn apply_repeat_penalty(&mut self, logits: &mut [f32], history: &[u32]) {
        if self.repeat_penalty == 1.0 || self.repeat_last_n == 0 {
            return;
        }
        let window = &history[history.len().saturating_sub(self.repeat_last_n)..];
        self.ids.clear();
        self.ids.extend_from_slice(window);
        self.ids.sort_unstable();
        self.ids.dedup();
        for &id in &self.ids {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l >= 0.0 {
                    *l / self.repeat_penalty
                } else {
                    *l * self.repeat_penalty
                };
            }
        }
    }
}

/// Index of the largest logit; the first one on ties; NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_value {
            best = i;
            best_value = l;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }

    fn draws(p: &SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(p).unwrap();
        (0..n)
            .map(|_| s.sample(&mut logits.to_vec(), &[]))
            .collect()
    }

    #[test]
    fn greedy_is_argmax_and_ignores_nan() {
        let logits = [0.1, f32::NAN, 3.0, 3.0, -1.0];
        assert_eq!(argmax(&logits), 2);
        let mut s = Sampler::new(&SamplingParams::greedy(1)).unwrap();
        assert_eq!(s.sample(&mut logits.to_vec(), &[]), 2);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.1).collect();
        let p = params(1.0, 0, 1.0, 42);
        let a = draws(&p, &logits, 50);
        assert_eq!(a, draws(&p, &logits, 50));
        assert_ne!(a, draws(&params(1.0, 0, 1.0, 43), &logits, 50));
    }

    #[test]
    fn top_k_and_top_p_restrict_candidates() {
        let logits = [5.0, 4.0, 3.0, 0.0, -2.0];
        let top2 = draws(&params(5.0, 2, 1.0, 1), &logits, 200);
        assert!(top2.iter().all(|&t| t < 2), "{top2:?}");
        assert!(top2.contains(&0) && top2.contains(&1));
        // p(0) ≈ 0.665 at T=1: top_p 0.5 keeps only token 0.
        let nucleus = draws(&params(1.0, 0, 0.5, 1), &logits, 100);
        assert!(nucleus.iter().all(|&t| t == 0), "{nucleus:?}");
    }

    #[test]
    fn temperature_flattens_the_distribution() {
        let logits = [2.0, 1.0, 0.0];
        let count0 = |t: f32| {
            draws(&params(t, 0, 1.0, 7), &logits, 2000)
                .iter()
                .filter(|&&x| x == 0)
                .count()
        };
        // p(0) is 0.67 at T=1 and 0.41 at T=5.
        let (cold, hot) = (count0(1.0), count0(5.0));
        assert!((1200..1500).contains(&cold), "{cold}");
        assert!((700..950).contains(&hot), "{hot}");
    }

    #[test]
    fn repeat_penalty_demotes_recent_tokens_only_within_window() {
        let mut s = Sampler::new(&SamplingParams {
            repeat_penalty: 2.0,
            repeat_last_n: 2,
            ..SamplingParams::greedy(1)
        })
        .unwrap();
        // Token 0 is best, but was just seen: 3.0 / 2 < 2.0.
        assert_eq!(s.sample(&mut [3.0, 2.0, -1.0], &[0]), 1);
        // Token 0 is outside the 2-token window.
        assert_eq!(s.sample(&mut [3.0, 2.0, -1.0], &[0, 2, 2]), 0);
        // Negative logits get more negative.
        let mut logits = vec![-1.0, -1.5];
        assert_eq!(s.sample(&mut logits, &[0]), 1);
        assert_eq!(logits, [-2.0, -1.5]);
    }

    #[test]
    fn invalid_params_are_rejected() {
        let bad = [
            SamplingParams {
                max_tokens: 0,
                ..Default::default()
            },
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            SamplingParams {
                stop: vec![String::new()],
                ..Default::default()
            },
            SamplingParams {
                stop: vec!["x".repeat(MAX_STOP_LEN + 1)],
                ..Default::default()
            },
            SamplingParams {
                stop: vec!["x".into(); MAX_STOPS + 1],
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(
                matches!(Sampler::new(&p), Err(Error::InvalidInput(_))),
                "{p:?}"
            );
        }
    }
}
