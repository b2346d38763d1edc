//! Quantized matrix products over several activation rows at once — a prompt's tokens — where
//! [`QMatrix::gemv`] takes one: what prompts run through without `f32` copies of the weights.
//!
//! - [`Q8Batch`]: the rows quantized exactly as [`Q8Vector`] quantizes one (8-bit blocks of
//!   32 with a scale and, for `Q4_1`'s minimum, a block sum), the scales stored block by block
//!   so that a tile of tokens reads them in one load.
//! - [`QMatrix::gemm`]: every weight row times every token. The AVX2 kernel (`super::x86`)
//!   takes tiles of up to 4 tokens × 2 weight rows: each weight block is unpacked once for 4
//!   tokens and each activation block loaded once for 2 rows, over weight rows in blocks that
//!   stay in L1 while all the tokens pass. Each product is computed with the per-element
//!   operations of `gemv` in the same order, so a token's result is the same bits in any batch,
//!   at any place of a tile, and the same as generation's `gemv` for that token: prompts stay
//!   batch-invariant (what the prompt cache needs) and a generated position's keys are what a
//!   prompt holding that token would compute.
//! - [`par_gemm`]: the same over the rayon pool, split by tokens when there are enough of them,
//!   else by weight rows.

use std::ops::Range;

use rayon::prelude::*;

use super::{BLOCK, Format, Isa, QMatrix, quantize_block, scalar_q4_1, scalar_q8_0};

/// Tokens per tile of the SIMD kernel; the block-major scales are padded by `TILE - 1`
/// values so a tile at the last tokens may load `TILE` of them.
pub(super) const TILE: usize = 4;

/// Activation rows (tokens) quantized to 8-bit blocks, as [`super::Q8Vector`] each.
#[derive(Clone, Debug, Default)]
pub(crate) struct Q8Batch {
    pub(super) tokens: usize,
    /// Blocks per token.
    pub(super) blocks: usize,
    /// Token-major: token `t`'s block `b` at `(t * blocks + b) * BLOCK`.
    pub(super) qs: Vec<i8>,
    /// Block-major scales: token `t`'s block `b` at `b * tokens + t`, then `TILE - 1` zeros.
    pub(super) d: Vec<f32>,
    /// Block sums `d * sum(qs)`, laid out as `d`.
    pub(super) s: Vec<f32>,
}

impl Q8Batch {
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

    fn qs_of(&self, t: usize) -> &[i8] {
        let cols = self.cols();
        &self.qs[t * cols..(t + 1) * cols]
    }
}

impl QMatrix {
    /// `out[i * rows.len() + j] = row(rows.start + j) . token (tokens.start + i)`, on this
    /// thread, with the kernels of [`super::isa`].
    pub(crate) fn gemm(
        &self,
        x: &Q8Batch,
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
        x: &Q8Batch,
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

    fn gemm_scalar_data(&self, data: &[u8], x: &Q8Batch, tokens: Range<usize>, out: &mut [f32]) {
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
pub(crate) fn par_gemm(m: &QMatrix, x: &Q8Batch, rows: Range<usize>, out: &mut [f32]) {
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
    let chunk = n.div_ceil(threads);
    let parts: Vec<Vec<f32>> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|i| {
            let start = rows.start + i * chunk;
            let part = start..(start + chunk).min(rows.end);
            let mut buf = vec![0f32; tokens * part.len()];
            m.gemm(x, 0..tokens, part, &mut buf);
            buf
        })
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let width = part.len() / tokens;
        for (row, part) in out.chunks_exact_mut(n).zip(part.chunks_exact(width)) {
            row[i * chunk..i * chunk + width].copy_from_slice(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::super::Q8Vector;
    use super::super::tests::{magnitude, random_matrix, random_vector};
    use super::*;

    fn random_batch(rng: &mut StdRng, tokens: usize, cols: usize) -> (Vec<f32>, Q8Batch) {
        let x: Vec<f32> = (0..tokens).flat_map(|_| random_vector(rng, cols)).collect();
        let mut q = Q8Batch::default();
        q.quantize(&x, cols);
        (x, q)
    }

    #[test]
    fn batch_quantizes_each_token_as_a_vector() {
        let mut rng = StdRng::seed_from_u64(21);
        let (x, batch) = random_batch(&mut rng, 5, 96);
        for (t, x) in x.chunks_exact(96).enumerate() {
            let mut v = Q8Vector::default();
            v.quantize(x);
            assert_eq!(batch.qs_of(t), &v.qs[..]);
            for b in 0..3 {
                assert_eq!(batch.d[b * 5 + t], v.d[b]);
                assert_eq!(batch.s[b * 5 + t], v.s[b]);
            }
        }
    }

    /// Every token's products are those `gemv` gives it alone (the same bits), over odd
    /// sizes, sub-ranges of tokens and rows, and the parallel splits; the scalar code agrees
    /// within the float reordering.
    #[test]
    fn gemm_gives_each_token_its_gemv() {
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
                        let mut v = Q8Vector::default();
                        v.quantize(x);
                        let mut alone = vec![0f32; rows];
                        m.gemv(&v, 0..rows, &mut alone);
                        assert_eq!(
                            all[t * rows..(t + 1) * rows],
                            alone,
                            "{format:?} {rows}x{cols}, token {t} of {tokens}"
                        );
                        for r in 0..rows {
                            let tol = 1e-5 * magnitude(&m, &v, r) + 1e-6;
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
        let mut x = Q8Batch::default();
        x.quantize(&[], 64);
        assert_eq!(x.tokens(), 0);
        par_gemm(&m, &x, 0..4, &mut []);
    }
}
