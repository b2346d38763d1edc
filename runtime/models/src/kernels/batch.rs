//! Quantized matrix products over several activation rows at once — a prompt's tokens — where
//! [`QMatrix::gemv`] takes one: what prompts run through without `f32` copies of the weights.
//!
//! - [`Q16Batch`]: the rows quantized to **16-bit** integers per block of 32 (a scale
//!   `d = max|x| / 32767` and, for `Q4_1`'s minimum, the block sum `d * sum(q)`), the scales
//!   stored block by block so that a tile of tokens reads them in one load. 8-bit activations
//!   (llama.cpp's `Q8_1`, and generation's [`super::Q8Vector`]) move SmolLM2-135M's logits by
//!   up to ~1.5 from the `f32` ones — enough to flip the first token of "What is the capital
//!   of France?" from "The" to "L" and get an answer in broken French; 16 bits leave the
//!   weights' own rounding as the only error that matters, for about a third more
//!   integer work.
//! - [`QMatrix::gemm`]: every weight row times every token, in integers per block (exact),
//!   then `f32` as `gemv` does. The AVX2 kernel (`super::x86`) takes tiles of up to 4 tokens ×
//!   2 weight rows: each weight block is widened once for 4 tokens and each activation block
//!   loaded once for 2 rows, over weight rows in blocks that stay in L1 while all the tokens
//!   pass; with AVX-512 VNNI, `vpdpwssd` does the multiply-adds. A token's results are the same
//!   bits in any batch and at any place of a tile (each product is the same sequence of
//!   operations), so prompts stay batch-invariant: what the prompt cache needs.
//! - [`par_gemm`]: the same over the rayon pool, split by tokens when there are enough of them,
//!   else by weight rows.

use std::ops::Range;

use rayon::prelude::*;

use half::f16;

use super::{BLOCK, Format, Isa, QMatrix, TILE};

/// Activation rows (tokens) quantized to 16-bit blocks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Q16Batch {
    pub(super) tokens: usize,
    /// Blocks per token.
    pub(super) blocks: usize,
    /// Token-major: token `t`'s block `b` at `(t * blocks + b) * BLOCK`.
    pub(super) qs: Vec<i16>,
    /// Block-major scales: token `t`'s block `b` at `b * tokens + t`, then `TILE - 1` zeros.
    pub(super) d: Vec<f32>,
    /// Block sums `d * sum(qs)`, laid out as `d`.
    pub(super) s: Vec<f32>,
}

impl Q16Batch {
    /// Quantizes `x`, rows of `cols` values (whole blocks), reusing the buffers.
    pub(crate) fn quantize(&mut self, x: &[f32], cols: usize) {
        assert!(
            cols > 0 && cols.is_multiple_of(BLOCK) && x.len().is_multiple_of(cols),
            "{} values in rows of {cols}",
            x.len()
        );
        let (tokens, blocks) = (x.len() / cols, cols / BLOCK);
        self.tokens = tokens;
        self.blocks = blocks;
        self.qs.resize(x.len(), 0);
        // Token-major scales first (each token on its own), then transposed.
        let mut ds = vec![(0f32, 0f32); tokens * blocks];
        x.par_chunks(cols)
            .zip(self.qs.par_chunks_mut(cols))
            .zip(ds.par_chunks_mut(blocks))
            .for_each(|((x, qs), ds)| {
                for ((x, qs), ds) in x
                    .chunks_exact(BLOCK)
                    .zip(qs.chunks_exact_mut(BLOCK))
                    .zip(ds)
                {
                    *ds = quantize_block(x, qs);
                }
            });
        let len = tokens * blocks + TILE - 1;
        self.d.clear();
        self.d.resize(len, 0.0);
        self.s.clear();
        self.s.resize(len, 0.0);
        for (t, ds) in ds.chunks_exact(blocks).enumerate() {
            for (b, &(d, s)) in ds.iter().enumerate() {
                self.d[b * tokens + t] = d;
                self.s[b * tokens + t] = s;
            }
        }
    }

    /// Tokens held.
    pub(crate) fn tokens(&self) -> usize {
        self.tokens
    }

    /// Values per token.
    pub(crate) fn cols(&self) -> usize {
        self.blocks * BLOCK
    }

    fn qs_of(&self, t: usize) -> &[i16] {
        let cols = self.cols();
        &self.qs[t * cols..(t + 1) * cols]
    }
}

/// The 32 values `xs` as `i16` in `qs`: returns the scale `d = max|x| / 32767` and the block
/// sum `d * sum(qs)`.
fn quantize_block(xs: &[f32], qs: &mut [i16]) -> (f32, f32) {
    let amax = xs.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let d = amax / 32767.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(xs) {
        *q = (v * id).round() as i16;
        sum += *q as i32;
    }
    (d, d * sum as f32)
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// `row` (`Q4_1`) times the 16-bit activation `xq` whose block `b` has scale `d(b)` and sum
/// `s(b)`: per block the exact integer sum, then `sum * (d_w * d_x) + m_w * s_x`.
fn scalar_q4_1(row: &[u8], xq: &[i16], d: impl Fn(usize) -> f32, s: impl Fn(usize) -> f32) -> f32 {
    let mut sum = 0f32;
    for (b, block) in row.chunks_exact(Format::Q4_1.block_bytes()).enumerate() {
        let xq = &xq[b * BLOCK..(b + 1) * BLOCK];
        let mut sumi = 0i32;
        for (j, &q) in block[4..20].iter().enumerate() {
            sumi += (q & 0x0F) as i32 * xq[j] as i32 + (q >> 4) as i32 * xq[j + 16] as i32;
        }
        sum += sumi as f32 * (f16_at(block, 0) * d(b)) + f16_at(block, 2) * s(b);
    }
    sum
}

/// `row` (`Q8_0`) times the activation, as in [`scalar_q4_1`].
fn scalar_q8_0(row: &[u8], xq: &[i16], d: impl Fn(usize) -> f32) -> f32 {
    let mut sum = 0f32;
    for (b, block) in row.chunks_exact(Format::Q8_0.block_bytes()).enumerate() {
        let xq = &xq[b * BLOCK..(b + 1) * BLOCK];
        let sumi: i32 = block[2..34]
            .iter()
            .zip(xq)
            .map(|(&w, &a)| w as i8 as i32 * a as i32)
            .sum();
        sum += sumi as f32 * (f16_at(block, 0) * d(b));
    }
    sum
}

impl QMatrix {
    /// `out[i * rows.len() + j] = row(rows.start + j) . token (tokens.start + i)`, on this
    /// thread, with the kernels of [`super::isa`].
    pub(crate) fn gemm(
        &self,
        x: &Q16Batch,
        tokens: Range<usize>,
        rows: Range<usize>,
        out: &mut [f32],
    ) {
        self.gemm_with(super::isa(), x, tokens, rows, out)
    }

    /// [`Self::gemm`] with the kernels of `isa`, which this CPU must have.
    pub(crate) fn gemm_with(
        &self,
        isa: Isa,
        x: &Q16Batch,
        tokens: Range<usize>,
        rows: Range<usize>,
        out: &mut [f32],
    ) {
        assert_eq!(x.cols(), self.cols, "activation length");
        assert!(tokens.end <= x.tokens, "tokens {tokens:?} of {}", x.tokens);
        assert!(rows.end <= self.rows, "rows {rows:?} of {}", self.rows);
        assert_eq!(out.len(), tokens.len() * rows.len(), "output length");
        let data = self.row_data(rows);
        let (format, rb) = (self.format, self.row_bytes());
        match isa {
            Isa::Scalar => self.gemm_scalar_data(data, x, tokens, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => super::x86::gemm(format, data, rb, x, tokens, out, false),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Vnni => super::x86::gemm(format, data, rb, x, tokens, out, true),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("{isa:?} off x86-64"),
        }
    }

    fn gemm_scalar_data(&self, data: &[u8], x: &Q16Batch, tokens: Range<usize>, out: &mut [f32]) {
        let rb = self.row_bytes();
        let n = data.len() / rb;
        if n == 0 {
            return;
        }
        for (t, out) in tokens.zip(out.chunks_exact_mut(n)) {
            let qs = x.qs_of(t);
            let d = |b: usize| x.d[b * x.tokens + t];
            let s = |b: usize| x.s[b * x.tokens + t];
            for (row, out) in data.chunks_exact(rb).zip(out) {
                *out = match self.format {
                    Format::Q4_1 => scalar_q4_1(row, qs, d, s),
                    Format::Q8_0 => scalar_q8_0(row, qs, d),
                };
            }
        }
    }
}

/// Below this many token × row products a batched product stays on one thread.
const MIN_PARALLEL_PRODUCTS: usize = 1 << 12;

/// [`QMatrix::gemm`] of every token of `x` with `rows`, over the current rayon pool:
/// `out[t * rows.len() + j]`. Long batches split by tokens (each thread reads all the
/// weights, from the shared cache, and writes its own output rows); short ones by weight rows,
/// each thread into its own buffer, copied into place after.
pub(crate) fn par_gemm(m: &QMatrix, x: &Q16Batch, rows: Range<usize>, out: &mut [f32]) {
    let threads = rayon::current_num_threads();
    let (tokens, n) = (x.tokens, rows.len());
    if threads <= 1 || tokens * n < MIN_PARALLEL_PRODUCTS || n == 0 {
        m.gemm(x, 0..tokens, rows, out);
        return;
    }
    if tokens >= 2 * TILE * threads {
        let per = tokens.div_ceil(threads).next_multiple_of(TILE);
        out.par_chunks_mut(per * n)
            .enumerate()
            .for_each(|(i, out)| {
                let start = i * per;
                m.gemm(x, start..start + out.len() / n, rows.clone(), out)
            });
        return;
    }
    super::par_row_parts(rows, tokens, threads, out, |part, buf| {
        m.gemm(x, 0..tokens, part, buf)
    });
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::super::tests::{random_matrix, random_vector};
    use super::*;

    fn random_batch(rng: &mut StdRng, tokens: usize, cols: usize) -> (Vec<f32>, Q16Batch) {
        let x: Vec<f32> = (0..tokens).flat_map(|_| random_vector(rng, cols)).collect();
        let mut q = Q16Batch::default();
        q.quantize(&x, cols);
        (x, q)
    }

    /// `sum |w_j| |x_j|` over row `r` and token `t`: a bound on the float error's scale.
    fn magnitude(m: &QMatrix, x: &Q16Batch, r: usize, t: usize) -> f32 {
        let deq = m.dequantize(r..r + 1);
        deq.iter()
            .zip(x.qs_of(t))
            .enumerate()
            .map(|(j, (w, &q))| (w * q as f32 * x.d[j / BLOCK * x.tokens + t]).abs())
            .sum()
    }

    #[test]
    fn quantized_values_are_within_half_a_step() {
        let mut rng = StdRng::seed_from_u64(21);
        let (x, batch) = random_batch(&mut rng, 5, 96);
        for (t, x) in x.chunks_exact(96).enumerate() {
            for (j, &v) in x.iter().enumerate() {
                let d = batch.d[j / BLOCK * 5 + t];
                let back = batch.qs_of(t)[j] as f32 * d;
                assert!(
                    (back - v).abs() <= d * 0.5001,
                    "token {t} value {j}: {v} vs {back}"
                );
            }
            for b in 0..3 {
                let sum: i32 = batch.qs_of(t)[b * BLOCK..(b + 1) * BLOCK]
                    .iter()
                    .map(|&q| q as i32)
                    .sum();
                assert_eq!(batch.s[b * 5 + t], batch.d[b * 5 + t] * sum as f32);
            }
        }
        // The all-zero block has scale 0 and values 0.
        assert_eq!(batch.d[5], 0.0);
    }

    /// Against the `f32` product of the dequantized weights with the unquantized activations:
    /// 16-bit activations leave an error far below 8-bit ones'.
    #[test]
    fn products_are_close_to_the_f32_ones() {
        let mut rng = StdRng::seed_from_u64(22);
        for format in [Format::Q4_1, Format::Q8_0] {
            let (rows, cols, tokens) = (37, 576, 6);
            let m = random_matrix(&mut rng, format, rows, cols);
            let (x, batch) = random_batch(&mut rng, tokens, cols);
            let mut out = vec![0f32; tokens * rows];
            m.gemm(&batch, 0..tokens, 0..rows, &mut out);
            let w = m.dequantize(0..rows);
            for (t, x) in x.chunks_exact(cols).enumerate() {
                for (r, w) in w.chunks_exact(cols).enumerate() {
                    let exact: f64 = w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let scale: f64 = w
                        .iter()
                        .zip(x)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let err = (out[t * rows + r] as f64 - exact).abs();
                    assert!(
                        err <= 1e-4 * scale + 1e-6,
                        "{format:?} token {t} row {r}: {err} of {scale}"
                    );
                }
            }
        }
    }

    /// Every token's products are the same bits alone and in any batch, over odd sizes,
    /// sub-ranges of tokens and rows, every instruction set the CPU has and the parallel
    /// splits; the scalar code agrees within the float reordering.
    #[test]
    fn a_tokens_products_do_not_depend_on_the_batch() {
        let mut rng = StdRng::seed_from_u64(23);
        for format in [Format::Q4_1, Format::Q8_0] {
            for (rows, cols) in [(1, 32), (3, 64), (5, 96), (17, 576), (64, 576), (67, 1536)] {
                let m = random_matrix(&mut rng, format, rows, cols);
                for tokens in [1, 2, 3, 4, 5, 7, 9, 33] {
                    let (x, batch) = random_batch(&mut rng, tokens, cols);
                    let mut all = vec![0f32; tokens * rows];
                    m.gemm(&batch, 0..tokens, 0..rows, &mut all);
                    let mut slow = vec![0f32; tokens * rows];
                    m.gemm_with(Isa::Scalar, &batch, 0..tokens, 0..rows, &mut slow);
                    for isa in Isa::supported() {
                        if isa != Isa::Scalar {
                            let mut other = vec![0f32; tokens * rows];
                            m.gemm_with(isa, &batch, 0..tokens, 0..rows, &mut other);
                            assert_eq!(other, all, "{isa:?}: {format:?} {rows}x{cols}, {tokens}");
                        }
                    }
                    for (t, x) in x.chunks_exact(cols).enumerate() {
                        let mut one = Q16Batch::default();
                        one.quantize(x, cols);
                        let mut alone = vec![0f32; rows];
                        m.gemm(&one, 0..1, 0..rows, &mut alone);
                        assert_eq!(
                            all[t * rows..(t + 1) * rows],
                            alone,
                            "{format:?} {rows}x{cols}, token {t} of {tokens}"
                        );
                        for r in 0..rows {
                            let tol = 1e-5 * magnitude(&m, &batch, r, t) + 1e-6;
                            let (fast, slow) = (all[t * rows + r], slow[t * rows + r]);
                            assert!(
                                (fast - slow).abs() <= tol,
                                "{format:?} {rows}x{cols} token {t} row {r}: {fast} vs {slow}"
                            );
                        }
                    }
                    if tokens > 2 && rows > 2 {
                        let mut part = vec![0f32; (tokens - 1) * (rows - 2)];
                        m.gemm(&batch, 1..tokens, 2..rows, &mut part);
                        for (t, part) in part.chunks_exact(rows - 2).enumerate() {
                            assert_eq!(part, &all[(t + 1) * rows + 2..(t + 2) * rows]);
                        }
                    }
                    let mut par = vec![0f32; tokens * rows];
                    rayon::scope(|_| par_gemm(&m, &batch, 0..rows, &mut par));
                    assert_eq!(
                        par, all,
                        "{format:?} {rows}x{cols}, {tokens} tokens, parallel"
                    );
                }
            }
        }
    }

    /// Both parallel splits (by tokens, by rows) on a pool of 3, with a row sub-range.
    #[test]
    fn par_gemm_splits_agree() {
        let mut rng = StdRng::seed_from_u64(29);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let m = random_matrix(&mut rng, Format::Q4_1, 301, 576);
        for tokens in [2, 5, 24, 41] {
            let (_, batch) = random_batch(&mut rng, tokens, 576);
            let mut one = vec![0f32; tokens * 290];
            m.gemm(&batch, 0..tokens, 11..301, &mut one);
            let mut par = vec![0f32; tokens * 290];
            pool.install(|| par_gemm(&m, &batch, 11..301, &mut par));
            assert_eq!(par, one, "{tokens} tokens");
        }
    }

    #[test]
    fn zero_rows_or_tokens_are_empty() {
        let mut rng = StdRng::seed_from_u64(31);
        let m = random_matrix(&mut rng, Format::Q4_1, 4, 64);
        let (_, batch) = random_batch(&mut rng, 3, 64);
        m.gemm(&batch, 0..3, 2..2, &mut []);
        m.gemm(&batch, 1..1, 0..4, &mut []);
        par_gemm(&m, &batch, 0..0, &mut []);
        let mut x = Q16Batch::default();
        x.quantize(&[], 64);
        assert_eq!(x.tokens(), 0);
        par_gemm(&m, &x, 0..4, &mut []);
    }
}
