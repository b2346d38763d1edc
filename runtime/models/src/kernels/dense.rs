//! Dense `f32` matrix products for prompts, **batch-invariant**: every output element is one
//! dot product computed in the same order of operations whatever the number of rows, the
//! tile the element falls in, the row it sits at or the way the work is split over threads.
//! So a prompt token's values do not depend on how many other tokens were processed with it:
//! what the prompt cache needs to reuse a prefix without changing a single bit of the rest
//! (see `crate::session`).
//!
//! A BLAS-style GEMM (candle's, through the `gemm` crate) picks its kernels, blockings of the
//! shared dimension and a matrix-vector path by the matrix sizes and by the CPU features it
//! finds at run time, so the same row can round differently in a batch of 1 and of 40.
//!
//! The element `(i, j)` of `x · wᵀ` is [`dot`]`(x[i], w[j])`: eight lanes, each a sequential
//! fused multiply-add over every eighth column, the lanes added pairwise in a fixed order, then
//! the columns past the last multiple of 8 in sequence. Tiles of 4 rows × 3 columns share each
//! load of `x` and `w` (the code is the same per element, so a tile computes what [`dot`]
//! does); columns are split over the rayon pool in blocks that fit the L2 cache, rows never.

use std::array;

use rayon::prelude::*;

/// Rows of `x` per tile.
const TILE_ROWS: usize = 4;
/// Rows of `w` (output columns) per tile.
const TILE_COLS: usize = 3;
/// Output columns per task: 48 rows of `w` of 576 floats are 110 KB, re-read from L2 by every
/// group of [`TILE_ROWS`] rows of `x`.
const BLOCK_COLS: usize = 16 * TILE_COLS;
/// Below this many multiply-adds a product stays on the calling thread.
const MIN_PARALLEL_WORK: usize = 1 << 16;

/// `x · wᵀ`: `x` is `m` rows of `k` floats, `w` is `n` rows of `k`; returns `m` rows of `n`.
pub(crate) fn matmul(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    assert!(
        k > 0 && x.len().is_multiple_of(k) && w.len().is_multiple_of(k),
        "matmul: {} and {} floats are not rows of {k}",
        x.len(),
        w.len()
    );
    let (m, n) = (x.len() / k, w.len() / k);
    let mut out = vec![0f32; m * n];
    if m * n * k < MIN_PARALLEL_WORK || rayon::current_num_threads() <= 1 {
        block(x, w, k, &mut out);
        return out;
    }
    let blocks: Vec<Vec<f32>> = w
        .par_chunks(BLOCK_COLS * k)
        .map(|w| {
            let mut part = vec![0f32; m * (w.len() / k)];
            block(x, w, k, &mut part);
            part
        })
        .collect();
    for (b, part) in blocks.iter().enumerate() {
        let cols = part.len() / m;
        let start = b * BLOCK_COLS;
        for (row, part) in out.chunks_exact_mut(n).zip(part.chunks_exact(cols)) {
            row[start..start + cols].copy_from_slice(part);
        }
    }
    out
}

/// `x · wᵀ` into `out` (`m` rows of `w.len() / k`), on this thread.
fn block(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    let n = w.len() / k;
    let xs: Vec<&[f32]> = x.chunks_exact(k).collect();
    let ws: Vec<&[f32]> = w.chunks_exact(k).collect();
    let full_rows = xs.len() / TILE_ROWS * TILE_ROWS;
    let full_cols = n / TILE_COLS * TILE_COLS;
    for r in (0..full_rows).step_by(TILE_ROWS) {
        let x: [&[f32]; TILE_ROWS] = array::from_fn(|i| xs[r + i]);
        for c in (0..full_cols).step_by(TILE_COLS) {
            let w: [&[f32]; TILE_COLS] = array::from_fn(|j| ws[c + j]);
            let y = tile(x, w);
            for (i, y) in y.iter().enumerate() {
                out[(r + i) * n + c..][..TILE_COLS].copy_from_slice(y);
            }
        }
        for c in full_cols..n {
            let y = tile(x, [ws[c]]);
            for (i, y) in y.iter().enumerate() {
                out[(r + i) * n + c] = y[0];
            }
        }
    }
    for r in full_rows..xs.len() {
        for c in 0..n {
            out[r * n + c] = dot(xs[r], ws[c]);
        }
    }
}

/// The dot product of every row of `x` with every row of `w` (all `k` long): with AVX2 and
/// FMA where the CPU has them, else [`tile_portable`]; both compute the same bits.
#[inline(always)]
fn tile<const R: usize, const C: usize>(x: [&[f32]; R], w: [&[f32]; C]) -> [[f32; C]; R] {
    #[cfg(target_arch = "x86_64")]
    if super::simd() {
        return super::x86::dense_tile(x, w);
    }
    tile_portable(x, w)
}

/// [`tile`] in portable code: the reference the SIMD version is tested against.
#[inline(always)]
fn tile_portable<const R: usize, const C: usize>(x: [&[f32]; R], w: [&[f32]; C]) -> [[f32; C]; R] {
    let x8: [&[[f32; 8]]; R] = array::from_fn(|i| x[i].as_chunks::<8>().0);
    let w8: [&[[f32; 8]]; C] = array::from_fn(|j| w[j].as_chunks::<8>().0);
    let chunks = x8[0].len();
    let mut acc = [[[0f32; 8]; C]; R];
    for step in 0..chunks {
        let wv: [[f32; 8]; C] = array::from_fn(|j| w8[j][step]);
        for i in 0..R {
            let xv = x8[i][step];
            for j in 0..C {
                for l in 0..8 {
                    acc[i][j][l] = xv[l].mul_add(wv[j][l], acc[i][j][l]);
                }
            }
        }
    }
    let tail = chunks * 8;
    array::from_fn(|i| array::from_fn(|j| finish(&acc[i][j], &x[i][tail..], &w[j][tail..])))
}

/// The lanes of one element added pairwise, then the columns past the last multiple of 8.
#[inline(always)]
fn finish(lanes: &[f32; 8], x_tail: &[f32], w_tail: &[f32]) -> f32 {
    let half: [f32; 4] = array::from_fn(|l| lanes[l] + lanes[l + 4]);
    let mut sum = (half[0] + half[2]) + (half[1] + half[3]);
    for (a, b) in x_tail.iter().zip(w_tail) {
        sum = a.mul_add(*b, sum);
    }
    sum
}

/// One element of [`matmul`]: the same operations as every tile computes for it.
pub(crate) fn dot(x: &[f32], w: &[f32]) -> f32 {
    tile([x], [w])[0][0]
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn random(rng: &mut StdRng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1f32..1.0)).collect()
    }

    /// The SIMD tile computes the portable code's bits, partial tiles and tails included.
    #[test]
    fn simd_tiles_equal_the_portable_code() {
        let mut rng = StdRng::seed_from_u64(3);
        for k in [8, 13, 576, 1539] {
            let rows: Vec<Vec<f32>> = (0..7).map(|_| random(&mut rng, k)).collect();
            let x: [&[f32]; 4] = std::array::from_fn(|i| rows[i].as_slice());
            let w: [&[f32]; 3] = std::array::from_fn(|j| rows[4 + j].as_slice());
            assert_eq!(tile(x, w), tile_portable(x, w), "k {k}");
            assert_eq!(tile([x[0]], [w[0]]), tile_portable([x[0]], [w[0]]), "k {k}");
        }
    }

    /// Each row's products are the same bits alone, in any batch, at any row of it, on one
    /// thread or many, and close to a plain `f64` sum.
    #[test]
    fn rows_are_batch_invariant() {
        let mut rng = StdRng::seed_from_u64(7);
        // 13 columns: a tail after the lanes; 101 output columns: partial tiles and blocks.
        for (k, n) in [(64, 101), (13, 7), (576, 200)] {
            let w = random(&mut rng, n * k);
            let x = random(&mut rng, 11 * k);
            let whole = matmul(&x, &w, k);
            for (i, row) in x.chunks_exact(k).enumerate() {
                let alone = matmul(row, &w, k);
                assert_eq!(alone, whole[i * n..(i + 1) * n], "row {i} (k {k}, n {n})");
                let mut shifted = random(&mut rng, 2 * k);
                shifted.extend_from_slice(row);
                let later = matmul(&shifted, &w, k);
                assert_eq!(later[2 * n..], alone[..], "row {i} third in a batch");
                for (j, wrow) in w.chunks_exact(k).enumerate() {
                    assert_eq!(dot(row, wrow).to_bits(), alone[j].to_bits());
                    let exact: f64 = row
                        .iter()
                        .zip(wrow)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum();
                    assert!(
                        (alone[j] as f64 - exact).abs() < 1e-4,
                        "{} vs {exact}",
                        alone[j]
                    );
                }
            }
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| matmul(&x, &w, k)), whole, "one thread");
        }
    }
}

#[cfg(test)]
mod bench {
    //! `cargo test --release -p slmfn-models --lib kernels::dense::bench -- --ignored
    //! --nocapture`: best-of-5 times of [`matmul`] against candle's GEMM on SmolLM2-135M's
    //! shapes (200 prompt rows). Prints, asserts nothing.

    use std::time::Duration;

    use candle_core::{Device, Tensor};

    use super::*;

    fn best(f: impl FnMut()) -> Duration {
        crate::kernels::bench::best(5, f)
    }

    #[test]
    #[ignore]
    fn matmul_timings() {
        let m = 200;
        for (n, k) in [(576, 576), (192, 576), (1536, 576), (576, 1536)] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let ours = best(|| {
                std::hint::black_box(matmul(&x, &w, k));
            });
            let (xt, wt) = (
                Tensor::from_slice(&x, (m, k), &Device::Cpu).unwrap(),
                Tensor::from_slice(&w, (n, k), &Device::Cpu).unwrap(),
            );
            let candle = best(|| {
                std::hint::black_box(xt.matmul(&wt.t().unwrap()).unwrap());
            });
            let gmac = |d: Duration| (m * n * k) as f64 / d.as_secs_f64() / 1e9;
            eprintln!(
                "{m}x{k} . {k}x{n}: ours {:6.2} ms ({:5.1} GMAC/s), candle {:6.2} ms ({:5.1} GMAC/s)",
                ours.as_secs_f64() * 1e3,
                gmac(ours),
                candle.as_secs_f64() * 1e3,
                gmac(candle)
            );
        }
    }
}
