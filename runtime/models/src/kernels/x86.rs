//! AVX2 + FMA + F16C versions of [`super::QMatrix::gemv`], chosen at run time by
//! [`available`]; `super`'s scalar code is the fallback and the reference the tests compare to.
//!
//! Per 32-value block: the weights are widened to 32 bytes (`Q4_1`: nibbles, unsigned;
//! `Q8_0`: signed, made unsigned with the sign moved onto the activation as ggml does),
//! multiplied with the 32 `i8` activations and summed pairwise (`maddubs` into `i16`, which
//! cannot saturate here: at most `2 x 15 x 127` or `2 x 128 x 127`), summed again into 8 `i32`
//! (`madd`), converted to `f32` and accumulated with the product of the two block scales.
//! Rows are taken one at a time (see `q4_1_avx2`). The integer part of each block is exact;
//! only the order of the float additions differs from the scalar code (8 lanes, then a
//! horizontal sum).
//!
//! The only unsafe code of the crate: intrinsics need `unsafe` for their pointer loads and for
//! calling `#[target_feature]` functions. The public functions check every length the loads
//! rely on, then call the kernels.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{BLOCK, Format, Q8Vector};

/// Whether this CPU runs these kernels (cached by `std` after the first call).
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Checks what the kernels read: `out.len()` rows of `row_bytes`, whole blocks of `format`,
/// and an activation of as many blocks. Returns the blocks per row.
fn check(format: Format, data: &[u8], row_bytes: usize, x: &Q8Vector, out: &[f32]) -> usize {
    assert!(available(), "AVX2/FMA/F16C kernels on a CPU without them");
    let bb = format.block_bytes();
    assert!(row_bytes.is_multiple_of(bb), "row of {row_bytes} bytes");
    let blocks = row_bytes / bb;
    assert_eq!(data.len(), out.len() * row_bytes, "weight bytes");
    assert_eq!(x.qs.len(), blocks * BLOCK, "activation length");
    assert_eq!(x.d.len(), blocks, "activation scales");
    assert_eq!(x.s.len(), blocks, "activation sums");
    blocks
}

/// `out[r] = row r of data (Q4_1) . x`.
pub(super) fn q4_1(data: &[u8], row_bytes: usize, x: &Q8Vector, out: &mut [f32]) {
    let blocks = check(Format::Q4_1, data, row_bytes, x, out);
    // SAFETY: `check` asserted that the CPU has AVX2, FMA and F16C, that `data` holds
    // `out.len()` rows of `blocks` Q4_1 blocks and that `x` holds `blocks` blocks: the bounds
    // `q4_1_avx2` reads within.
    unsafe { q4_1_avx2(data, row_bytes, blocks, x, out) }
}

/// `out[r] = row r of data (Q8_0) . x`.
pub(super) fn q8_0(data: &[u8], row_bytes: usize, x: &Q8Vector, out: &mut [f32]) {
    let blocks = check(Format::Q8_0, data, row_bytes, x, out);
    // SAFETY: as in `q4_1`, for Q8_0 blocks.
    unsafe { q8_0_avx2(data, row_bytes, blocks, x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_avx2(data: &[u8], row_bytes: usize, blocks: usize, x: &Q8Vector, out: &mut [f32]) {
    // One row at a time, front to back: a single sequential stream, which the hardware
    // prefetchers follow. Taking four rows per activation load (four interleaved streams)
    // measured 4x slower once the weights come from memory rather than cache.
    for (r, out) in out.iter_mut().enumerate() {
        // SAFETY: row r is within `data` (`out.len()` rows of `row_bytes`, checked by the
        // caller); each row has `blocks` blocks, as many as `x`.
        *out = unsafe { q4_1_row(data.as_ptr().add(r * row_bytes), blocks, x) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_avx2(data: &[u8], row_bytes: usize, blocks: usize, x: &Q8Vector, out: &mut [f32]) {
    // One row at a time, as in `q4_1_avx2`.
    for (r, out) in out.iter_mut().enumerate() {
        // SAFETY: as in `q4_1_avx2`.
        *out = unsafe { q8_0_row(data.as_ptr().add(r * row_bytes), blocks, x) };
    }
}

/// The dot product of the Q4_1 row at `w` with `x`.
///
/// # Safety
/// `w` points to `blocks` Q4_1 blocks; `x` has `blocks` blocks; the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q4_1_row(w: *const u8, blocks: usize, x: &Q8Vector) -> f32 {
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for b in 0..blocks {
        // SAFETY: block b < blocks of the activation (32 bytes at b * 32 of `x.qs`) and of
        // the row (20 bytes at b * 20), which the caller vouches for.
        let (a, dm, q) = unsafe {
            let block = w.add(b * 20);
            (
                _mm256_loadu_si256(x.qs.as_ptr().add(b * BLOCK).cast()),
                block.cast::<i32>().read_unaligned(),
                _mm_loadu_si128(block.add(4).cast()),
            )
        };
        // d in lane 0, m in lane 1.
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm));
        let (d, m) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        // Values 0..16 are the low nibbles, 16..32 the high ones.
        let q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), ones);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * x.d[b]), acc);
        mins += m * x.s[b];
    }
    hsum(acc) + mins
}

/// The dot product of the Q8_0 row at `w` with `x`.
///
/// # Safety
/// As [`q4_1_row`], for Q8_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q8_0_row(w: *const u8, blocks: usize, x: &Q8Vector) -> f32 {
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for b in 0..blocks {
        // SAFETY: block b < blocks of the activation (32 bytes) and of the row (34 bytes at
        // b * 34), which the caller vouches for.
        let (a, d, q) = unsafe {
            let block = w.add(b * 34);
            (
                _mm256_loadu_si256(x.qs.as_ptr().add(b * BLOCK).cast()),
                // The scale and the first two values: a 32-bit load (`vmovd`, which clears
                // the rest of the register; a 16-bit one compiles to an insert into whatever
                // register is free, chaining the blocks through that register).
                block.cast::<i32>().read_unaligned(),
                _mm256_loadu_si256(block.add(2).cast()),
            )
        };
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(d)));
        // |q| (unsigned) times a with q's sign: maddubs wants one unsigned operand.
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(a, q));
        let p = _mm256_madd_epi16(p, ones);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * x.d[b]), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// [`super::dense`]'s tile with AVX2 and FMA: the dot products of each of the `R` rows of `x`
/// with each of the `C` rows of `w` (all as long), in the portable code's exact order of
/// operations (eight lanes of fused multiply-adds, [`hsum`]'s pairwise lane sum, the columns
/// past the last multiple of 8 in sequence), so both give the same bits.
pub(super) fn dense_tile<const R: usize, const C: usize>(
    x: [&[f32]; R],
    w: [&[f32]; C],
) -> [[f32; C]; R] {
    assert!(available(), "AVX2/FMA kernels on a CPU without them");
    let k = x[0].len();
    assert!(
        x.iter().chain(&w).all(|r| r.len() == k),
        "rows of different lengths"
    );
    // SAFETY: the CPU has AVX2 and FMA (asserted), and every row holds `k` floats, the bound
    // `dense_tile_avx2` reads within.
    unsafe { dense_tile_avx2(x, w) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dense_tile_avx2<const R: usize, const C: usize>(
    x: [&[f32]; R],
    w: [&[f32]; C],
) -> [[f32; C]; R] {
    let k = x[0].len();
    let steps = k / 8;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut wv = [_mm256_setzero_ps(); C];
    for s in 0..steps {
        let off = s * 8;
        for j in 0..C {
            // SAFETY: off + 8 <= k, the length of every row (checked by `dense_tile`).
            wv[j] = unsafe { _mm256_loadu_ps(w[j].as_ptr().add(off)) };
        }
        for i in 0..R {
            // SAFETY: as above.
            let xv = unsafe { _mm256_loadu_ps(x[i].as_ptr().add(off)) };
            for j in 0..C {
                acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
            }
        }
    }
    let tail = steps * 8;
    let mut out = [[0f32; C]; R];
    for i in 0..R {
        for j in 0..C {
            let mut sum = hsum(acc[i][j]);
            for (a, b) in x[i][tail..].iter().zip(&w[j][tail..]) {
                sum = a.mul_add(*b, sum);
            }
            out[i][j] = sum;
        }
    }
    out
}
