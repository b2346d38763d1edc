//! AVX2 + FMA + F16C versions of [`super::QMatrix::gemv`], chosen at run time by
//! [`available`]; `super`'s scalar code is the fallback and the reference the tests compare to.
//!
//! Per 32-value block: the weights are widened to 32 bytes (`Q4_1`: nibbles, unsigned;
//! `Q8_0`: signed, made unsigned with the sign moved onto the activation as ggml does),
//! multiplied with the 32 `i8` activations and summed pairwise (`maddubs` into `i16`, which
//! cannot saturate here: at most `2 x 15 x 127` or `2 x 128 x 127`), summed again into 8 `i32`
//! (`madd`), converted to `f32` and accumulated with the product of the two block scales.
//! Where the CPU has AVX-512 VNNI (on 256-bit registers), one `vpdpbusd` replaces `maddubs` +
//! `madd`: the same four products summed per lane, so the same integers and the same bits
//! (`gemv_avx2` and `gemv_vnni` are one set of kernels, stamped out by `gemv_kernels!`).
//! Rows are taken one at a time (see `rows`). The integer part of each block is exact;
//! only the order of the float additions differs from the scalar code (8 lanes, then a
//! horizontal sum).
//!
//! [`gemm`] multiplies a batch of tokens with 16-bit activations ([`super::Q16Batch`]) in
//! tiles of up to 4 tokens × 2 rows: the weights widened to `i16`, `madd` (or VNNI's
//! `vpdpwssd`) per block into 8 `i32` lanes (exact: at most `2 x 128 x 32767` per lane and
//! product pair), then `f32` as above.
//!
//! The only unsafe code of the crate: intrinsics need `unsafe` for their pointer loads and for
//! calling `#[target_feature]` functions. The public functions check every length the loads
//! rely on, then call the kernels.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use std::ops::Range;

use super::{BLOCK, Format, Q8Vector, Q16Batch, TILE};

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

/// `out[r] = row r of data . x`, rows in `format`; with `vnni`, the block sums through
/// `vpdpbusd`.
pub(super) fn gemv(
    format: Format,
    data: &[u8],
    row_bytes: usize,
    x: &Q8Vector,
    out: &mut [f32],
    vnni: bool,
) {
    let blocks = check(format, data, row_bytes, x, out);
    assert!(
        !vnni || vnni_available(),
        "VNNI kernels on a CPU without them"
    );
    let q4 = format == Format::Q4_1;
    // SAFETY: `check` asserted that the CPU has AVX2, FMA and F16C (and VNNI where asked
    // for), that `data` holds `out.len()` rows of `blocks` blocks of `format` and that `x`
    // holds `blocks` blocks: the bounds the kernels read within.
    unsafe {
        match (vnni, q4) {
            (true, true) => gemv_vnni::rows::<true>(data, row_bytes, blocks, x, out),
            (true, false) => gemv_vnni::rows::<false>(data, row_bytes, blocks, x, out),
            (false, true) => gemv_avx2::rows::<true>(data, row_bytes, blocks, x, out),
            (false, false) => gemv_avx2::rows::<false>(data, row_bytes, blocks, x, out),
        }
    }
}

/// Activations per pass over a block of rows in [`many`]: 4 accumulators, and the weights of a
/// block in one register.
const MANY: usize = 4;
const _: () = assert!(MANY == 4, "a group's minimum terms are one 4-lane vector");
/// Rows per block of [`many`]: their weights (at most 16 rows of 1536 `Q4_1` values, 15 KB)
/// come from memory once and stay in L1 while every group of activations reads them.
const MANY_ROWS: usize = 16;

/// `out[t * rows + r] = row r of data . xs[t]`, rows in `format`, for
/// `rows = out.len() / xs.len()`: generation's products for several sessions in one pass over
/// the weights. Each block of a row is widened once and multiplied with every activation, in
/// the one-row kernel's order of operations for each, so every token gets the bits [`gemv`]
/// gives it alone.
pub(super) fn many(
    format: Format,
    data: &[u8],
    row_bytes: usize,
    xs: &[&Q8Vector],
    out: &mut [f32],
    vnni: bool,
) {
    assert!(!xs.is_empty(), "no activation");
    assert!(
        !vnni || vnni_available(),
        "VNNI kernels on a CPU without them"
    );
    assert!(out.len().is_multiple_of(xs.len()), "output length");
    let rows = out.len() / xs.len();
    for x in xs {
        check(format, data, row_bytes, x, &out[..rows]);
    }
    let q4 = format == Format::Q4_1;
    let groups: Vec<_> = xs
        .chunks(MANY)
        .map(|group| {
            (
                group,
                if q4 {
                    token_minor_sums(group)
                } else {
                    Vec::new()
                },
            )
        })
        .collect();
    for r0 in (0..rows).step_by(MANY_ROWS) {
        let n = MANY_ROWS.min(rows - r0);
        let block = &data[r0 * row_bytes..(r0 + n) * row_bytes];
        for (g, (group, sums)) in groups.iter().enumerate() {
            let at = Place {
                stride: rows,
                row: r0,
                rows: n,
                token: g * MANY,
            };
            // SAFETY: `check` asserted, for every activation, that the CPU has AVX2, FMA and
            // F16C, that `data` (so `block`, whole rows of it) holds rows of
            // `row_bytes / block bytes` blocks and that the activation has as many blocks;
            // `at` addresses rows `r0..r0 + n` of tokens `g * MANY..` within `out`; `sums`
            // holds 4 values per block (`Q4_1`).
            unsafe {
                if vnni {
                    gemv_vnni::many_group(q4, block, row_bytes, group, sums, out, at)
                } else {
                    gemv_avx2::many_group(q4, block, row_bytes, group, sums, out, at)
                }
            }
        }
    }
}

/// The block sums of a group of at most [`MANY`] activations token-minor (4 per block, unused
/// lanes 0): a row's minimum terms for every token of the group are one vector operation per
/// block.
fn token_minor_sums(group: &[&Q8Vector]) -> Vec<f32> {
    let mut sums = vec![0f32; group[0].s.len() * MANY];
    for (t, x) in group.iter().enumerate() {
        for (b, &s) in x.s.iter().enumerate() {
            sums[b * MANY + t] = s;
        }
    }
    sums
}

/// Where `many_rows` writes: `out[(token + t) * stride + row + r]` for its `rows` rows `r`.
#[derive(Clone, Copy)]
struct Place {
    stride: usize,
    row: usize,
    rows: usize,
    token: usize,
}

/// The generation kernels (one row, and several rows for several tokens), once per
/// instruction set: `$features` enabled, `$sums` for a block's integer sums.
macro_rules! gemv_kernels {
    ($module:ident, $features:literal, $sums:ident, $pass:literal, $q8:ident) => {
        mod $module {
            use std::arch::x86_64::*;

            use super::super::{BLOCK, Q8Vector};
            use super::{MANY, Place, hsum, $q8, $sums};

            /// The rows of `data` (`Q4_1` when `Q4`, else `Q8_0`) times `x`: see `super::q4_1`,
            /// which checks what this reads.
            #[target_feature(enable = $features)]
            pub(super) fn rows<const Q4: bool>(
                data: &[u8],
                row_bytes: usize,
                blocks: usize,
                x: &Q8Vector,
                out: &mut [f32],
            ) {
                // One row at a time, front to back: a single sequential stream, which the
                // hardware prefetchers follow. Taking four rows per activation load (four
                // interleaved streams) measured 4x slower once the weights come from memory
                // rather than cache.
                for (r, out) in out.iter_mut().enumerate() {
                    // SAFETY: row r is within `data` (`out.len()` rows of `row_bytes`, checked
                    // by the caller); each row has `blocks` blocks, as many as `x`.
                    *out = unsafe {
                        let w = data.as_ptr().add(r * row_bytes);
                        if Q4 {
                            q4_1_row(w, blocks, x)
                        } else {
                            q8_0_row(w, blocks, x)
                        }
                    };
                }
            }

            /// The dot product of the Q4_1 row at `w` with `x`.
            ///
            /// # Safety
            /// `w` points to `blocks` Q4_1 blocks; `x` has `blocks` blocks; the CPU has
            /// `$features`.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn q4_1_row(w: *const u8, blocks: usize, x: &Q8Vector) -> f32 {
                let low = _mm256_set1_epi8(0x0F);
                let mut acc = _mm256_setzero_ps();
                let mut mins = 0f32;
                for b in 0..blocks {
                    // SAFETY: block b < blocks of the activation (32 bytes at b * 32 of `x.qs`) and
                    // of the row (20 bytes at b * 20), which the caller vouches for.
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
                    let p = $sums(q, a);
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * x.d[b]), acc);
                    mins += m * x.s[b];
                }
                hsum(acc) + mins
            }

            /// The dot product of the Q8_0 row at `w` with `x`.
            ///
            /// # Safety
            /// As [`q4_1_row`], for Q8_0 blocks.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn q8_0_row(w: *const u8, blocks: usize, x: &Q8Vector) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for b in 0..blocks {
                    // SAFETY: block b < blocks of the activation (32 bytes) and of the row (34
                    // bytes at b * 34), which the caller vouches for.
                    let (a, d, q) = unsafe {
                        let block = w.add(b * 34);
                        (
                            _mm256_loadu_si256(x.qs.as_ptr().add(b * BLOCK).cast()),
                            // The scale and the first two values: a 32-bit load (`vmovd`, which
                            // clears the rest of the register; a 16-bit one compiles to an insert
                            // into whatever register is free, chaining the blocks through that
                            // register).
                            block.cast::<i32>().read_unaligned(),
                            _mm256_loadu_si256(block.add(2).cast()),
                        )
                    };
                    let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(d)));
                    // |q| (unsigned) times a with q's sign: maddubs wants one unsigned operand.
                    let p = $sums(_mm256_sign_epi8(q, q), _mm256_sign_epi8(a, q));
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * x.d[b]), acc);
                }
                hsum(acc)
            }

            /// `many_rows` for a group of 1 to 4 activations of `Q4_1` (`q4`) or `Q8_0` rows.
            ///
            /// # Safety
            /// As `many_rows`, for `group.len()` activations.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn many_group(
                q4: bool,
                block: &[u8],
                row_bytes: usize,
                group: &[&Q8Vector],
                sums: &[f32],
                out: &mut [f32],
                at: Place,
            ) {
                // SAFETY: the caller's contract, with `T` the group's size.
                unsafe {
                    match (q4, group.len()) {
                        (true, 1) => many_rows::<1, true>(block, row_bytes, group, sums, out, at),
                        (true, 2) => many_rows::<2, true>(block, row_bytes, group, sums, out, at),
                        (true, 3) => many_rows::<3, true>(block, row_bytes, group, sums, out, at),
                        (true, _) => many_rows::<4, true>(block, row_bytes, group, sums, out, at),
                        (false, 1) => many_rows::<1, false>(block, row_bytes, group, sums, out, at),
                        (false, 2) => many_rows::<2, false>(block, row_bytes, group, sums, out, at),
                        (false, 3) => many_rows::<3, false>(block, row_bytes, group, sums, out, at),
                        (false, _) => many_rows::<4, false>(block, row_bytes, group, sums, out, at),
                    }
                }
            }

            /// The rows of `data` times the `T` activations of `xs` into `out` at `at`.
            ///
            /// # Safety
            /// As `super::many` checks: `data` holds `at.rows` rows of `row_bytes` in `Q4_1`
            /// (`Q4`) or `Q8_0`, each with as many blocks as every activation; `xs` has `T`
            /// activations; the CPU has `$features`.
            #[target_feature(enable = $features)]
            unsafe fn many_rows<const T: usize, const Q4: bool>(
                data: &[u8],
                row_bytes: usize,
                xs: &[&Q8Vector],
                sums: &[f32],
                out: &mut [f32],
                at: Place,
            ) {
                let xs: [&Q8Vector; T] = std::array::from_fn(|t| xs[t]);
                let blocks = xs[0].d.len();
                // `$pass` rows per pass: each activation block is loaded once for all of them.
                let mut r = 0;
                while r < at.rows {
                    let n = (at.rows - r).min($pass);
                    let w = |i: usize| {
                        // SAFETY: row r + min(i, n - 1) is within `data` (the caller's
                        // contract); rows past `n` repeat the last and are not written.
                        unsafe { data.as_ptr().add((r + i.min(n - 1)) * row_bytes) }
                    };
                    let rows: [*const u8; $pass] = std::array::from_fn(w);
                    // SAFETY: every pointer is a row of `blocks` blocks within `data`.
                    let sums = unsafe { rows_many::<$pass, T, Q4>(rows, blocks, xs, sums) };
                    for (i, sums) in sums.iter().take(n).enumerate() {
                        for (t, &sum) in sums.iter().enumerate() {
                            out[(at.token + t) * at.stride + at.row + r + i] = sum;
                        }
                    }
                    r += n;
                }
            }

            /// [`q4_1_row`] (`Q4`) or [`q8_0_row`] of `R` rows for `T` activations at once: for
            /// each row and activation the same operations on the same values, in the same
            /// order, as those functions (the scale `d_w * d_x` and the minimum term
            /// `m_w * s_x` are the same `f32` products whether multiplied as scalars or in
            /// lanes; Q8_0's integer sums the same integers however they are formed): the same
            /// bits. `sums`: the activations' block sums, 4 per block (`Q4` only).
            ///
            /// # Safety
            /// As [`q4_1_row`] / [`q8_0_row`], for every row and activation.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn rows_many<const R: usize, const T: usize, const Q4: bool>(
                w: [*const u8; R],
                blocks: usize,
                xs: [&Q8Vector; T],
                sums: &[f32],
            ) -> [[f32; T]; R] {
                let low = _mm256_set1_epi8(0x0F);
                let mut acc = [[_mm256_setzero_ps(); T]; R];
                // Lane t: row i's minimum terms of token t.
                let mut mins = [_mm_setzero_ps(); R];
                for b in 0..blocks {
                    // Per row: the weights widened to 32 unsigned bytes (`Q4`; else the signed
                    // bytes in `sign` and what `$q8::row` makes of them), the row block's
                    // scale broadcast (and its minimum).
                    let mut q = [_mm256_setzero_si256(); R];
                    let mut sign = [_mm256_setzero_si256(); R];
                    let mut dw = [_mm256_setzero_ps(); R];
                    let mut mw = [_mm_setzero_ps(); R];
                    for i in 0..R {
                        // SAFETY: block b < blocks of each row, which the caller vouches for.
                        unsafe {
                            if Q4 {
                                let block = w[i].add(b * 20);
                                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(
                                    block.cast::<i32>().read_unaligned(),
                                ));
                                dw[i] = _mm256_broadcastss_ps(dm);
                                mw[i] = _mm_permute_ps::<0b01_01_01_01>(dm);
                                let raw = _mm_loadu_si128(block.add(4).cast());
                                q[i] = _mm256_and_si256(
                                    _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw),
                                    low,
                                );
                            } else {
                                let block = w[i].add(b * 34);
                                let dv = block.cast::<i32>().read_unaligned();
                                dw[i] = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(dv)));
                                sign[i] = _mm256_loadu_si256(block.add(2).cast());
                                q[i] = $q8::row(sign[i]);
                            }
                        }
                    }
                    if Q4 {
                        // SAFETY: 4 sums per block of `blocks` (the caller's `sums`).
                        let s = unsafe { _mm_loadu_ps(sums.as_ptr().add(b * MANY)) };
                        for i in 0..R {
                            mins[i] = _mm_add_ps(mins[i], _mm_mul_ps(mw[i], s));
                        }
                    }
                    for t in 0..T {
                        // SAFETY: block b < blocks of each activation (32 bytes at b * 32; one
                        // scale per block).
                        let (a, xd) = unsafe {
                            (
                                _mm256_loadu_si256(xs[t].qs.as_ptr().add(b * BLOCK).cast()),
                                _mm256_broadcast_ss(xs[t].d.get_unchecked(b)),
                            )
                        };
                        let a = if Q4 { a } else { $q8::activation(a) };
                        for i in 0..R {
                            let p = match Q4 {
                                true => $sums(q[i], a),
                                false => $q8::dot(q[i], a, sign[i]),
                            };
                            acc[i][t] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(p),
                                _mm256_mul_ps(dw[i], xd),
                                acc[i][t],
                            );
                        }
                    }
                }
                std::array::from_fn(|i| {
                    let mut lanes = [0f32; 4];
                    // SAFETY: `lanes` holds 4 floats.
                    unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), mins[i]) };
                    std::array::from_fn(|t| match Q4 {
                        true => hsum(acc[i][t]) + lanes[t],
                        false => hsum(acc[i][t]),
                    })
                })
            }
        }
    };
}

gemv_kernels!(gemv_avx2, "avx2,fma,f16c", sums_madd, 2, q8_sign);
gemv_kernels!(
    gemv_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    sums_vnni,
    2,
    q8_offset
);

/// Batched `Q8_0` block sums with `maddubs`, which wants one unsigned operand: the weights'
/// magnitudes (`row`) times the activations with the weights' signs.
mod q8_sign {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn row(w: __m256i) -> __m256i {
        _mm256_sign_epi8(w, w)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn activation(a: __m256i) -> __m256i {
        a
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn dot(magnitudes: __m256i, a: __m256i, w: __m256i) -> __m256i {
        super::sums_madd(magnitudes, _mm256_sign_epi8(a, w))
    }
}

/// Batched `Q8_0` block sums with VNNI: the activations + 128 (unsigned) times the signed
/// weights, each lane starting from -128 times its four weights' sum (`row`, once per row
/// block for every activation), so it ends at the same integer as [`q8_sign`]'s: one
/// `vpdpbusd` per row and activation.
mod q8_offset {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    #[inline]
    pub(super) fn row(w: __m256i) -> __m256i {
        let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(-128), w);
        _mm256_sub_epi32(_mm256_setzero_si256(), sums)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn activation(a: __m256i) -> __m256i {
        _mm256_xor_si256(a, _mm256_set1_epi8(-128))
    }

    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    #[inline]
    pub(super) fn dot(start: __m256i, a: __m256i, w: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(start, a, w)
    }
}

/// The 8 `i32` sums of 4 adjacent products of a block's 32 unsigned weights `q` and signed
/// activations `a`: `maddubs` into pairs (which cannot saturate here, see the module docs),
/// `madd` into quadruples.
#[target_feature(enable = "avx2")]
#[inline]
fn sums_madd(q: __m256i, a: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), _mm256_set1_epi16(1))
}

/// [`sums_madd`] in one VNNI `vpdpbusd`: the same four products per lane, the same integers.
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
#[inline]
fn sums_vnni(q: __m256i, a: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, a)
}

/// Weight rows per tile of [`gemm`].
const TILE_ROWS: usize = 2;
/// Weight rows per pass of all the tokens: 16 rows of 1536 `Q4_1` values are 15 KB, which
/// stay in L1 while every tile of tokens reads them.
const ROW_BLOCK: usize = 16;

/// Whether this CPU has AVX-512 VNNI on 256-bit registers (`vpdpwssd`), which [`gemm`] uses
/// for the integer block sums in place of `madd` + `add` (the same integers).
pub(super) fn vnni_available() -> bool {
    available() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
}

/// `out[i * n + r] = row r of data . token (tokens.start + i) of x`, `n` the rows in `data`;
/// with `vnni`, the integer sums through `vpdpwssd`.
pub(super) fn gemm(
    format: Format,
    data: &[u8],
    row_bytes: usize,
    x: &Q16Batch,
    tokens: Range<usize>,
    out: &mut [f32],
    vnni: bool,
) {
    assert!(available(), "AVX2/FMA/F16C kernels on a CPU without them");
    assert!(
        !vnni || vnni_available(),
        "VNNI kernels on a CPU without them"
    );
    let bb = format.block_bytes();
    assert!(row_bytes.is_multiple_of(bb), "row of {row_bytes} bytes");
    let blocks = row_bytes / bb;
    assert!(data.len().is_multiple_of(row_bytes), "weight bytes");
    let n = data.len() / row_bytes;
    assert_eq!(x.blocks, blocks, "activation length");
    assert!(tokens.end <= x.tokens, "tokens");
    assert_eq!(x.qs.len(), x.tokens * blocks * BLOCK, "activation values");
    let scales = x.tokens * blocks + TILE - 1;
    assert!(
        x.d.len() >= scales && x.s.len() >= scales,
        "activation scales"
    );
    assert_eq!(out.len(), tokens.len() * n, "output length");
    // SAFETY: the CPU has AVX2, FMA and F16C, and VNNI where asked for (asserted); `data`
    // holds `n` rows of `blocks` blocks of `format`; every token of `tokens` has `blocks`
    // blocks in `x.qs`, and the block-major scales hold `tokens * blocks` values plus
    // `TILE - 1`, so a tile's 4-wide loads at any token stay inside them: the bounds the
    // kernels read within.
    unsafe {
        if vnni {
            with_vnni::gemm(format, data, row_bytes, n, x, tokens, out)
        } else {
            with_avx2::gemm(format, data, row_bytes, n, x, tokens, out)
        }
    }
}

/// The integer sums of a block's 32 products in 8 lanes: `w` and `a` the block's values 0..16
/// (`lo`) and 16..32 (`hi`) as `i16`.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_madd(w_lo: __m256i, w_hi: __m256i, a_lo: __m256i, a_hi: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_madd_epi16(w_lo, a_lo), _mm256_madd_epi16(w_hi, a_hi))
}

/// [`dot_madd`] with VNNI's multiply-accumulate (the same integers).
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
#[inline]
fn dot_vnni(w_lo: __m256i, w_hi: __m256i, a_lo: __m256i, a_hi: __m256i) -> __m256i {
    let sum = _mm256_dpwssd_epi32(_mm256_setzero_si256(), w_lo, a_lo);
    _mm256_dpwssd_epi32(sum, w_hi, a_hi)
}

/// The batched kernels, once per instruction set: `$features` enabled, `$dot` for the
/// integer block sums.
macro_rules! gemm_kernels {
    ($module:ident, $features:literal, $dot:ident) => {
        mod $module {
            use std::arch::x86_64::*;
            use std::ops::Range;

            use super::super::{BLOCK, Format, Q16Batch, TILE};
            use super::{ROW_BLOCK, TILE_ROWS, hsum};

            /// See [`super::gemm`], which checks what this reads.
            ///
            /// # Safety
            /// As `super::gemm` asserts, `n` rows in `data`.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn gemm(
                format: Format,
                data: &[u8],
                row_bytes: usize,
                n: usize,
                x: &Q16Batch,
                tokens: Range<usize>,
                out: &mut [f32],
            ) {
                for r0 in (0..n).step_by(ROW_BLOCK) {
                    let rows = r0..(r0 + ROW_BLOCK).min(n);
                    let mut t = tokens.start;
                    while t < tokens.end {
                        let take = (tokens.end - t).min(TILE);
                        let at = (t - tokens.start) * n;
                        let out = &mut *out;
                        let rows = rows.clone();
                        // SAFETY: rows within `n`, tokens t..t + take within `tokens`, which
                        // the caller vouches for.
                        unsafe {
                            match (format, take) {
                                (Format::Q4_1, 1) => {
                                    block::<1, true>(data, row_bytes, rows, x, t, out, at, n)
                                }
                                (Format::Q4_1, 2) => {
                                    block::<2, true>(data, row_bytes, rows, x, t, out, at, n)
                                }
                                (Format::Q4_1, 3) => {
                                    block::<3, true>(data, row_bytes, rows, x, t, out, at, n)
                                }
                                (Format::Q4_1, _) => {
                                    block::<4, true>(data, row_bytes, rows, x, t, out, at, n)
                                }
                                (Format::Q8_0, 1) => {
                                    block::<1, false>(data, row_bytes, rows, x, t, out, at, n)
                                }
                                (Format::Q8_0, 2) => {
                                    block::<2, false>(data, row_bytes, rows, x, t, out, at, n)
                                }
                                (Format::Q8_0, 3) => {
                                    block::<3, false>(data, row_bytes, rows, x, t, out, at, n)
                                }
                                (Format::Q8_0, _) => {
                                    block::<4, false>(data, row_bytes, rows, x, t, out, at, n)
                                }
                            }
                        }
                        t += take;
                    }
                }
            }

            /// Tokens `t..t + R` times rows `rows` of `data` (`Q4_1` if `Q4`, else `Q8_0`),
            /// into `out[at + i * n + r]`.
            ///
            /// # Safety
            /// The rows are within `data`, the tokens within `x`; the CPU has `$features`.
            #[target_feature(enable = $features)]
            #[inline]
            #[allow(clippy::too_many_arguments)]
            unsafe fn block<const R: usize, const Q4: bool>(
                data: &[u8],
                row_bytes: usize,
                rows: Range<usize>,
                x: &Q16Batch,
                t: usize,
                out: &mut [f32],
                at: usize,
                n: usize,
            ) {
                let mut put = |r: usize, tile: &[[f32; TILE_ROWS]; R], c: usize| {
                    for (i, tile) in tile.iter().enumerate() {
                        let o = at + i * n + r;
                        out[o..o + c].copy_from_slice(&tile[..c]);
                    }
                };
                let mut r = rows.start;
                while r + TILE_ROWS <= rows.end {
                    // SAFETY: rows r and r + 1 are within `data`; the tokens, see the caller.
                    let w = unsafe { data.as_ptr().add(r * row_bytes) };
                    let tile = unsafe { tile::<R, TILE_ROWS, Q4>(w, row_bytes, x, t) };
                    put(r, &tile, TILE_ROWS);
                    r += TILE_ROWS;
                }
                if r < rows.end {
                    // SAFETY: row r is within `data`.
                    let w = unsafe { data.as_ptr().add(r * row_bytes) };
                    let tile = unsafe { tile::<R, 1, Q4>(w, row_bytes, x, t) };
                    put(r, &tile.map(|[v]| [v, 0.0]), 1);
                }
            }

            /// The products of tokens `t..t + R` of `x` with the `C` rows at `w` (`row_bytes`
            /// apart), in `Q4_1` if `Q4`, else `Q8_0`: per product and block the exact integer
            /// sum, accumulated as `fma(f32(sum), d_w * d_x, acc)` over the blocks in order,
            /// `hsum` of the 8 lanes, plus (`Q4_1`) the minimum terms `m_w * s_x` added in
            /// block order in the lanes of one vector. The same operations for every product
            /// whatever `R`, `C` and the instruction set: the same bits.
            ///
            /// # Safety
            /// `w` points to `C` rows of `x.blocks` blocks each, `row_bytes` apart; tokens
            /// `t..t + R` are within `x`, whose block-major scales carry `TILE - 1` padding
            /// values; the CPU has `$features`.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn tile<const R: usize, const C: usize, const Q4: bool>(
                w: *const u8,
                row_bytes: usize,
                x: &Q16Batch,
                t: usize,
            ) -> [[f32; C]; R] {
                const { assert!(R <= TILE && C <= TILE_ROWS && C > 0) };
                let (blocks, tokens) = (x.blocks, x.tokens);
                let bb = if Q4 { 20 } else { 34 };
                let low = _mm_set1_epi8(0x0F);
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                // Lane 4c + i: the minimum terms of row c and token t + i.
                let mut mins = _mm256_setzero_ps();
                for b in 0..blocks {
                    let mut w_lo = [_mm256_setzero_si256(); C];
                    let mut w_hi = [_mm256_setzero_si256(); C];
                    let mut dw = [_mm256_setzero_ps(); C];
                    let mut mw = [_mm_setzero_ps(); C];
                    for c in 0..C {
                        // SAFETY: block b of row c is within the `C` rows at `w` (caller).
                        unsafe {
                            let block = w.add(c * row_bytes + b * bb);
                            let dm = block.cast::<i32>().read_unaligned();
                            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm));
                            dw[c] = _mm256_broadcastss_ps(dm);
                            if Q4 {
                                mw[c] = _mm_permute_ps::<0b01_01_01_01>(dm);
                                let raw = _mm_loadu_si128(block.add(4).cast());
                                let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low);
                                w_lo[c] = _mm256_cvtepu8_epi16(_mm_and_si128(raw, low));
                                w_hi[c] = _mm256_cvtepu8_epi16(hi);
                            } else {
                                w_lo[c] =
                                    _mm256_cvtepi8_epi16(_mm_loadu_si128(block.add(2).cast()));
                                w_hi[c] =
                                    _mm256_cvtepi8_epi16(_mm_loadu_si128(block.add(18).cast()));
                            }
                        }
                    }
                    let at = b * tokens + t;
                    if Q4 {
                        // SAFETY: 4 sums from `at` are within the padded block-major sums.
                        let s = unsafe { _mm_loadu_ps(x.s.as_ptr().add(at)) };
                        let m = _mm256_set_m128(mw[C - 1], mw[0]);
                        mins = _mm256_add_ps(mins, _mm256_mul_ps(m, _mm256_set_m128(s, s)));
                    }
                    for i in 0..R {
                        // SAFETY: token t + i is within `x` (caller): its block b is 32
                        // values at this offset, its scale at `at + i`.
                        let (a_lo, a_hi, dx) = unsafe {
                            let a = x.qs.as_ptr().add(((t + i) * blocks + b) * BLOCK);
                            (
                                _mm256_loadu_si256(a.cast()),
                                _mm256_loadu_si256(a.add(16).cast()),
                                _mm256_set1_ps(*x.d.get_unchecked(at + i)),
                            )
                        };
                        for c in 0..C {
                            let p = super::$dot(w_lo[c], w_hi[c], a_lo, a_hi);
                            let scale = _mm256_mul_ps(dw[c], dx);
                            acc[i][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[i][c]);
                        }
                    }
                }
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` holds 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mins) };
                let mut result = [[0f32; C]; R];
                for i in 0..R {
                    for c in 0..C {
                        let sum = hsum(acc[i][c]);
                        result[i][c] = if Q4 { sum + lanes[4 * c + i] } else { sum };
                    }
                }
                result
            }
        }
    };
}

gemm_kernels!(with_avx2, "avx2,fma,f16c", dot_madd);
gemm_kernels!(with_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", dot_vnni);

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
