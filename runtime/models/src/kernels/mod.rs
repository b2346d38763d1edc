//! Quantized matrix-vector products for generation (one token at a time), where candle has no
//! SIMD kernel (`Q4_1`) or costs more in dispatch than in arithmetic.
//!
//! - [`QMatrix`]: a row-major matrix of ggml blocks (`Q4_1` or `Q8_0`, the byte layout of the
//!   GGUF file, so loading is a copy), possibly the rows of several weight matrices stacked
//!   (fused q/k/v, gate/up).
//! - [`Q8Vector`]: an activation quantized to 8-bit blocks of 32 exactly as llama.cpp's
//!   `quantize_row_q8_1` and candle's `BlockQ8_1::from_float` do (`Q8_0` is the same without the
//!   block sums), so the products stay those of candle's quantized path up to the order of the
//!   float additions.
//! - [`QMatrix::gemv`]: rows times the vector, with AVX2 (`x86` module, chosen at run time) or
//!   the portable scalar code, which is also the reference the SIMD code is tested against.
//! - [`par_gemv`]: the same, rows split over the rayon pool in one fork/join.
//! - [`batch`]: products for several tokens at once, with 16-bit activations ([`Q16Batch`],
//!   [`par_gemm`]): prompts through the quantized weights.
//! - [`dense`]: batch-invariant `f32` matrix products for prompts (the opt-in `f32` copies).
//!
//! SIMD code runs where the CPU has it ([`isa`]); `SLMFN_KERNELS=scalar` in the environment
//! forces the portable code (what a CPU without AVX2 runs), `SLMFN_KERNELS=avx2` leaves out
//! AVX-512 VNNI; read once per process.

use std::ops::Range;

use candle_core::quantized::{GgmlDType, QTensor};

use crate::gguf::GgufFile;
use crate::mapped::Bytes;
use half::f16;
use rayon::prelude::*;

pub(crate) mod batch;
pub(crate) mod dense;
mod many;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use batch::{Q16Batch, par_gemm};
pub(crate) use many::par_gemv_many;

/// The instruction sets the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    /// Portable code: the reference, and what a CPU without AVX2 runs.
    Scalar,
    /// AVX2 + FMA + F16C (x86-64-v3).
    Avx2,
    /// AVX2 with AVX-512 VNNI on 256-bit registers for the integer block sums (`vpdpwssd` in
    /// the prompt products, `vpdpbusd` in generation's): the same integers, fewer
    /// instructions, the same bits as [`Isa::Avx2`].
    Avx2Vnni,
}

impl Isa {
    /// What this CPU runs, best first.
    pub(crate) fn supported() -> Vec<Isa> {
        let mut all = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::available() {
                all.push(Isa::Avx2);
            }
            if x86::vnni_available() {
                all.push(Isa::Avx2Vnni);
            }
        }
        all.reverse();
        all
    }
}

/// The instruction set the kernels use: the best this CPU has, capped by `SLMFN_KERNELS`
/// (`scalar` or `avx2`) in the environment, read once per process.
pub(crate) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = match std::env::var("SLMFN_KERNELS").as_deref() {
            Ok("scalar") => Isa::Scalar,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx2Vnni,
        };
        Isa::supported()[0].min(cap)
    })
}

impl Isa {
    /// A name for logs and benchmarks: `avx2+avx512vnni`, `avx2` or `scalar`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx2Vnni => "avx2+avx512vnni",
        }
    }
}

/// Whether the SIMD kernels run ([`isa`] is not [`Isa::Scalar`]).
pub(crate) fn simd() -> bool {
    isa() != Isa::Scalar
}

/// Tokens per tile of the batched SIMD kernel ([`batch`]); the block-major scales are padded by
/// `TILE - 1` values so a tile at the last tokens may load `TILE` of them.
pub(crate) const TILE: usize = 4;

/// Values per quantization block.
pub(crate) const BLOCK: usize = 32;

/// The block formats our kernels read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `d: f16, m: f16, qs: [u8; 16]`: value `j` is `d * q + m`, `q` the low nibble of `qs[j]`
    /// for `j < 16` and the high nibble of `qs[j - 16]` above.
    Q4_1,
    /// `d: f16, qs: [i8; 32]`: value `j` is `d * qs[j]`.
    Q8_0,
}

impl Format {
    /// Bytes of one block of [`BLOCK`] values.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }

    pub(crate) fn from_ggml(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            _ => None,
        }
    }
}

/// A row-major matrix of quantized blocks (`rows x cols`, `cols` a multiple of [`BLOCK`]).
pub(crate) struct QMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    data: Bytes,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl QMatrix {
    /// `data`: `rows` rows of `cols / BLOCK` blocks each, in the ggml layout.
    pub(crate) fn new(format: Format, rows: usize, cols: usize, data: Vec<u8>) -> Self {
        Self::from_bytes(format, rows, cols, Bytes::Owned(data))
    }

    /// `data` as in [`Self::new`], owned or a range of a mapped file.
    pub(crate) fn from_bytes(format: Format, rows: usize, cols: usize, data: Bytes) -> Self {
        assert!(
            cols.is_multiple_of(BLOCK) && cols > 0,
            "{cols} columns: not whole blocks"
        );
        assert_eq!(
            data.len(),
            rows * cols / BLOCK * format.block_bytes(),
            "{rows}x{cols} {format:?}"
        );
        Self {
            format,
            rows,
            cols,
            data,
        }
    }

    /// A copy of a 2-D CPU `QTensor` (`(rows, cols)`) in a format we read; `None` otherwise.
    pub(crate) fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<Self>> {
        let Some(format) = Format::from_ggml(t.dtype()) else {
            return Ok(None);
        };
        let Ok((rows, cols)) = t.shape().dims2() else {
            return Ok(None);
        };
        if !t.device().is_cpu() || !cols.is_multiple_of(BLOCK) {
            return Ok(None);
        }
        Ok(Some(Self::new(format, rows, cols, t.data()?.into_owned())))
    }

    /// Matrix `name` of `file` where the file holds it (a range of the mapped file), when it
    /// is a 2-D matrix in a format we read; `None` otherwise (or for a malformed entry, which
    /// candle's reader then reports).
    pub(crate) fn from_gguf(file: &mut GgufFile, name: &str) -> crate::error::Result<Option<Self>> {
        let Some((dtype, dims, range)) = file.tensor_range(name) else {
            return Ok(None);
        };
        let (Some(format), &[rows, cols]) = (Format::from_ggml(dtype), &dims[..]) else {
            return Ok(None);
        };
        if cols == 0
            || !cols.is_multiple_of(BLOCK)
            || range.len() != rows * cols / BLOCK * format.block_bytes()
        {
            return Ok(None);
        }
        let mapped = file.mapped()?;
        Ok(Bytes::mapped(&mapped, range).map(|data| Self::from_bytes(format, rows, cols, data)))
    }

    /// Whether the blocks are a range of a mapped file (not a copy).
    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        self.data.is_mapped()
    }

    /// The rows of `parts` stacked into one matrix, when they share format and width (else
    /// `parts` back): a range of the mapped file when the parts follow each other there, else
    /// a copy.
    pub(crate) fn stack(mut parts: Vec<Self>) -> std::result::Result<Self, Vec<Self>> {
        let Some(first) = parts.first() else {
            return Err(parts);
        };
        let (format, cols) = (first.format, first.cols);
        if parts.iter().any(|p| p.format != format || p.cols != cols) {
            return Err(parts);
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        if let Some(data) = Bytes::adjacent(&parts.iter().map(|p| &p.data).collect::<Vec<_>>()) {
            return Ok(Self::from_bytes(format, rows, cols, data));
        }
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for p in parts {
            data.extend_from_slice(&p.data);
        }
        Ok(Self::new(format, rows, cols, data))
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.format.block_bytes()
    }

    fn row_data(&self, rows: Range<usize>) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[rows.start * rb..rows.end * rb]
    }

    /// Rows `rows` as `f32`, row-major (the values candle's `dequantize` gives).
    pub(crate) fn dequantize(&self, rows: Range<usize>) -> Vec<f32> {
        let mut out = vec![0f32; rows.len() * self.cols];
        for (block, out) in self
            .row_data(rows)
            .chunks_exact(self.format.block_bytes())
            .zip(out.chunks_exact_mut(BLOCK))
        {
            dequantize_block(self.format, block, out);
        }
        out
    }

    /// `out[i] = row(rows.start + i) . x`, on this thread.
    pub(crate) fn gemv(&self, x: &Q8Vector, rows: Range<usize>, out: &mut [f32]) {
        self.gemv_with(isa(), x, rows, out)
    }

    /// [`Self::gemv`] with the kernels of `isa`, which this CPU must have. The SIMD kernels
    /// give the same bits whether VNNI sums the blocks or not (the same integers, the same
    /// float operations).
    pub(crate) fn gemv_with(&self, isa: Isa, x: &Q8Vector, rows: Range<usize>, out: &mut [f32]) {
        assert_eq!(x.len(), self.cols, "activation length");
        assert_eq!(out.len(), rows.len(), "output length");
        assert!(rows.end <= self.rows, "rows {rows:?} of {}", self.rows);
        let data = self.row_data(rows);
        let rb = self.row_bytes();
        match isa {
            Isa::Scalar => self.gemv_scalar_data(data, x, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx2Vnni => {
                x86::gemv(self.format, data, rb, x, out, isa == Isa::Avx2Vnni)
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("{isa:?} off x86-64"),
        }
    }

    /// [`Self::gemv`] without SIMD: the reference, in candle's order of operations.
    #[cfg(test)]
    pub(crate) fn gemv_scalar(&self, x: &Q8Vector, rows: Range<usize>, out: &mut [f32]) {
        assert_eq!(x.len(), self.cols, "activation length");
        assert_eq!(out.len(), rows.len(), "output length");
        self.gemv_scalar_data(self.row_data(rows), x, out);
    }

    fn gemv_scalar_data(&self, data: &[u8], x: &Q8Vector, out: &mut [f32]) {
        let rb = self.row_bytes();
        for (row, out) in data.chunks_exact(rb).zip(out) {
            let (d, s) = (|b: usize| x.d[b], |b: usize| x.s[b]);
            *out = match self.format {
                Format::Q4_1 => scalar_q4_1(row, &x.qs, d, s),
                Format::Q8_0 => scalar_q8_0(row, &x.qs, d),
            };
        }
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

fn dequantize_block(format: Format, block: &[u8], out: &mut [f32]) {
    match format {
        Format::Q4_1 => {
            let (d, m) = (f16_at(block, 0), f16_at(block, 2));
            for (j, &q) in block[4..20].iter().enumerate() {
                out[j] = (q & 0x0F) as f32 * d + m;
                out[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
        Format::Q8_0 => {
            let d = f16_at(block, 0);
            for (o, &q) in out.iter_mut().zip(&block[2..34]) {
                *o = q as i8 as f32 * d;
            }
        }
    }
}

/// candle's `BlockQ4_1::vec_dot` (ggml's `ggml_vec_dot_q4_1_q8_1`, generic version): `row`
/// with the activation `xq` whose block `b` has scale `d(b)` and sum `s(b)`.
fn scalar_q4_1(row: &[u8], xq: &[i8], d: impl Fn(usize) -> f32, s: impl Fn(usize) -> f32) -> f32 {
    let mut sum = 0f32;
    for (b, block) in row.chunks_exact(Format::Q4_1.block_bytes()).enumerate() {
        let xq = &xq[b * BLOCK..(b + 1) * BLOCK];
        let mut sumi = 0i32;
        for (j, &q) in block[4..20].iter().enumerate() {
            sumi += (q & 0x0F) as i32 * xq[j] as i32 + (q >> 4) as i32 * xq[j + 16] as i32;
        }
        sum += sumi as f32 * f16_at(block, 0) * d(b) + f16_at(block, 2) * s(b);
    }
    sum
}

/// candle's `BlockQ8_0::vec_dot_unopt`, the activation given as in [`scalar_q4_1`].
fn scalar_q8_0(row: &[u8], xq: &[i8], d: impl Fn(usize) -> f32) -> f32 {
    let mut sum = 0f32;
    for (b, block) in row.chunks_exact(Format::Q8_0.block_bytes()).enumerate() {
        let xq = &xq[b * BLOCK..(b + 1) * BLOCK];
        let sumi: i32 = block[2..34]
            .iter()
            .zip(xq)
            .map(|(&w, &a)| w as i8 as i32 * a as i32)
            .sum();
        sum += sumi as f32 * f16_at(block, 0) * d(b);
    }
    sum
}

/// Quantizes the 32 values `xs` into `qs` as candle's `BlockQ8_1::from_float` does; returns
/// the scale `d` and the block sum `d * sum(qs)`, both rounded through `f16` as the ggml block
/// stores them.
fn quantize_block(xs: &[f32], qs: &mut [i8]) -> (f32, f32) {
    let amax = xs.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(xs) {
        *q = (v * id).round() as i8;
        sum += *q as i32;
    }
    let d16 = f16::from_f32(d);
    (d16.to_f32(), (f16::from_f32(sum as f32) * d16).to_f32())
}

/// An activation vector quantized to blocks of 32 `i8` with a scale `d` and, for `Q4_1`'s
/// minimum term, `s = d * sum(qs)` (both rounded through `f16` as the ggml block stores them).
#[derive(Clone, Debug, Default)]
pub(crate) struct Q8Vector {
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl Q8Vector {
    /// Values (a multiple of [`BLOCK`]).
    pub(crate) fn len(&self) -> usize {
        self.qs.len()
    }

    /// Quantizes `x` (whole blocks) into `self`, reusing its buffers: candle's
    /// `BlockQ8_1::from_float` step for step.
    pub(crate) fn quantize(&mut self, x: &[f32]) {
        assert!(x.len().is_multiple_of(BLOCK), "{} values", x.len());
        let blocks = x.len() / BLOCK;
        self.qs.resize(x.len(), 0);
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, 0.0);
        for (b, (xs, qs)) in x
            .chunks_exact(BLOCK)
            .zip(self.qs.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            (self.d[b], self.s[b]) = quantize_block(xs, qs);
        }
    }
}

/// A product of `tokens` tokens with `rows`, split by weight rows into one part per thread of
/// the current pool: `part(rows, buf)` writes a part's outputs (`tokens x rows`, token-major)
/// into a buffer of its own, copied into `out` (`tokens x rows.len()`, token-major) after.
pub(crate) fn par_row_parts(
    rows: Range<usize>,
    tokens: usize,
    threads: usize,
    out: &mut [f32],
    part: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    let n = rows.len();
    let chunk = n.div_ceil(threads);
    let parts: Vec<Vec<f32>> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|i| {
            let start = rows.start + i * chunk;
            let range = start..(start + chunk).min(rows.end);
            let mut buf = vec![0f32; tokens * range.len()];
            part(range, &mut buf);
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

/// Below this many rows a matrix-vector product stays on one thread.
const MIN_PARALLEL_ROWS: usize = 64;

/// [`QMatrix::gemv`] of `rows`, split over the current rayon pool. Call it from inside the
/// pool (e.g. within `rayon::scope`): the split then costs a work-stealing join, not a wake-up
/// of a sleeping thread.
pub(crate) fn par_gemv(m: &QMatrix, x: &Q8Vector, rows: Range<usize>, out: &mut [f32]) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || rows.len() < MIN_PARALLEL_ROWS {
        m.gemv(x, rows, out);
        return;
    }
    let chunk = rows.len().div_ceil(threads);
    out.par_chunks_mut(chunk).enumerate().for_each(|(i, out)| {
        let start = rows.start + i * chunk;
        m.gemv(x, start..start + out.len(), out)
    });
}

#[cfg(test)]
pub(super) mod tests {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    pub(super) fn random_matrix(
        rng: &mut StdRng,
        format: Format,
        rows: usize,
        cols: usize,
    ) -> QMatrix {
        let blocks = rows * cols / BLOCK;
        let mut data = Vec::with_capacity(blocks * format.block_bytes());
        for _ in 0..blocks {
            let d = f16::from_f32(rng.random_range(1e-4f32..0.05));
            data.extend(d.to_le_bytes());
            let rest = match format {
                Format::Q4_1 => {
                    let m = f16::from_f32(rng.random_range(-0.4f32..0.1));
                    data.extend(m.to_le_bytes());
                    16
                }
                Format::Q8_0 => 32,
            };
            // Every byte value, including -128 for Q8_0.
            data.extend((0..rest).map(|_| rng.random::<u8>()));
        }
        QMatrix::new(format, rows, cols, data)
    }

    pub(super) fn random_vector(rng: &mut StdRng, n: usize) -> Vec<f32> {
        let mut x: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        // An all-zero block (d = 0) and an outlier.
        if n >= 2 * BLOCK {
            x[BLOCK..2 * BLOCK].fill(0.0);
            x[0] = 40.0;
        }
        x
    }

    /// Scalar reference with the terms taken in absolute value: a bound on the float error.
    pub(super) fn magnitude(m: &QMatrix, x: &Q8Vector, row: usize) -> f32 {
        let deq = m.dequantize(row..row + 1);
        let mut xs = vec![0f32; x.len()];
        for (b, chunk) in xs.chunks_exact_mut(BLOCK).enumerate() {
            for (j, v) in chunk.iter_mut().enumerate() {
                *v = x.qs[b * BLOCK + j] as f32 * x.d[b];
            }
        }
        deq.iter().zip(&xs).map(|(w, a)| (w * a).abs()).sum()
    }

    #[test]
    fn simd_matches_scalar_reference() {
        let mut rng = StdRng::seed_from_u64(7);
        for format in [Format::Q4_1, Format::Q8_0] {
            for rows in [1, 2, 3, 4, 5, 7, 8, 9, 13, 64, 67] {
                for cols in [32, 64, 96, 576, 1536] {
                    let m = random_matrix(&mut rng, format, rows, cols);
                    let mut x = Q8Vector::default();
                    x.quantize(&random_vector(&mut rng, cols));
                    let mut fast = vec![0f32; rows];
                    let mut slow = vec![0f32; rows];
                    m.gemv(&x, 0..rows, &mut fast);
                    m.gemv_scalar(&x, 0..rows, &mut slow);
                    // With VNNI or without, the SIMD kernels give the same bits.
                    for isa in Isa::supported().into_iter().filter(|i| *i != Isa::Scalar) {
                        let mut other = vec![0f32; rows];
                        m.gemv_with(isa, &x, 0..rows, &mut other);
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&other),
                            bits(&fast),
                            "{isa:?} {format:?} {rows}x{cols}"
                        );
                    }
                    for r in 0..rows {
                        let tol = 1e-5 * magnitude(&m, &x, r) + 1e-6;
                        assert!(
                            (fast[r] - slow[r]).abs() <= tol,
                            "{format:?} {rows}x{cols} row {r}: {} vs {}",
                            fast[r],
                            slow[r]
                        );
                    }
                    // A sub-range starting at an odd row, and the parallel split.
                    if rows > 3 {
                        let mut part = vec![0f32; rows - 3];
                        m.gemv(&x, 3..rows, &mut part);
                        assert_eq!(part, fast[3..]);
                    }
                    let mut par = vec![0f32; rows];
                    par_gemv(&m, &x, 0..rows, &mut par);
                    assert_eq!(par, fast);
                }
            }
        }
    }

    #[test]
    fn quantize_matches_candle_q8_1() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = random_vector(&mut rng, 576);
        let mut ours = Q8Vector::default();
        ours.quantize(&x);
        let t = Tensor::from_slice(&x, (1, 576), &Device::Cpu).unwrap();
        let theirs = QTensor::quantize(&t, GgmlDType::Q8_1).unwrap();
        // `BlockQ8_1` is `d: f16, s: f16, qs: [i8; 32]`.
        for (b, block) in theirs.data().unwrap().chunks_exact(36).enumerate() {
            let qs: Vec<i8> = block[4..].iter().map(|&q| q as i8).collect();
            assert_eq!(ours.qs[b * BLOCK..(b + 1) * BLOCK], qs);
            assert_eq!(ours.d[b], f16_at(block, 0));
            assert_eq!(ours.s[b], f16_at(block, 2));
        }
    }

    /// Against candle's own quantized matmul on the same `QTensor`.
    #[test]
    fn gemv_matches_candle_qmatmul() {
        let mut rng = StdRng::seed_from_u64(11);
        for (dtype, rows, cols) in [
            (GgmlDType::Q4_1, 37, 576),
            (GgmlDType::Q8_0, 37, 576),
            (GgmlDType::Q4_1, 8, 64),
        ] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-0.3f32..0.3))
                .collect();
            let w = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let m = QMatrix::from_qtensor(&q).unwrap().unwrap();
            assert_eq!(
                m.dequantize(0..rows),
                q.dequantize(&Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            );
            let x = random_vector(&mut rng, cols);
            let expected: Vec<f32> = QMatMul::from_qtensor(q)
                .unwrap()
                .forward(&Tensor::from_slice(&x, (1, cols), &Device::Cpu).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut xq = Q8Vector::default();
            xq.quantize(&x);
            let mut ours = vec![0f32; rows];
            m.gemv(&xq, 0..rows, &mut ours);
            for r in 0..rows {
                let tol = 1e-5 * magnitude(&m, &xq, r) + 1e-6;
                assert!(
                    (ours[r] - expected[r]).abs() <= tol,
                    "{dtype:?} row {r}: {} vs {}",
                    ours[r],
                    expected[r]
                );
            }
        }
    }

    #[test]
    fn stack_concatenates_rows() {
        let mut rng = StdRng::seed_from_u64(5);
        let a = random_matrix(&mut rng, Format::Q4_1, 3, 64);
        let b = random_matrix(&mut rng, Format::Q4_1, 5, 64);
        let expected = [a.dequantize(0..3), b.dequantize(0..5)].concat();
        let s = QMatrix::stack(vec![a, b]).unwrap();
        assert_eq!((s.rows(), s.cols()), (8, 64));
        assert_eq!(s.dequantize(0..8), expected);
        let c = random_matrix(&mut rng, Format::Q8_0, 5, 64);
        assert_eq!(QMatrix::stack(vec![s, c]).unwrap_err().len(), 2);
    }
}

#[cfg(test)]
pub(crate) mod bench {
    //! `cargo test --release -p slmfn-models --lib kernels::bench -- --ignored --nocapture`:
    //! best-of-N timings of the kernels on SmolLM2-135M's shapes. Prints, asserts nothing.

    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The fastest of `reps` runs of `f`.
    pub(crate) fn best(reps: usize, mut f: impl FnMut()) -> Duration {
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap()
    }

    #[test]
    #[ignore]
    fn gemv_timings() {
        let mut rng = StdRng::seed_from_u64(1);
        for (format, rows, cols, reps) in [
            (Format::Q4_1, 960, 576, 2000),
            (Format::Q4_1, 3072, 576, 1000),
            (Format::Q4_1, 576, 1536, 2000),
            (Format::Q8_0, 49152, 576, 50),
        ] {
            let bytes = rows * cols / BLOCK * format.block_bytes();
            let data = (0..bytes).map(|_| rng.random::<u8>()).collect();
            let m = QMatrix::new(format, rows, cols, data);
            let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let mut q = Q8Vector::default();
            let mut out = vec![0f32; rows];
            let quantize = best(reps, || q.quantize(&x));
            let one = best(reps, || m.gemv(&q, 0..rows, &mut out));
            let scalar = best(reps.min(100), || m.gemv_scalar(&q, 0..rows, &mut out));
            let par = best(reps, || {
                rayon::scope(|_| par_gemv(&m, &q, 0..rows, &mut out));
            });
            let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
            println!(
                "{format:?} {rows}x{cols}: quantize {quantize:?}, simd {one:?} ({:.1} GB/s), \
                 scalar {scalar:?}, par {par:?} ({:.1} GB/s)",
                gbs(one),
                gbs(par)
            );
        }
    }

    /// Batched products on SmolLM2-135M's layer shapes, one thread and the pool, by tokens.
    #[test]
    #[ignore]
    fn gemm_timings() {
        let mut rng = StdRng::seed_from_u64(4);
        for (rows, cols) in [(960, 576), (3072, 576), (576, 1536)] {
            let bytes = rows * cols / BLOCK * 20;
            let data = (0..bytes).map(|_| rng.random::<u8>()).collect();
            let m = QMatrix::new(Format::Q4_1, rows, cols, data);
            for tokens in [1, 2, 4, 6, 8, 16, 43, 200] {
                let x: Vec<f32> = (0..tokens * cols)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect();
                let mut q = Q16Batch::default();
                let mut out = vec![0f32; rows * tokens];
                let quantize = best(50, || q.quantize(&x, cols));
                let one = best(50, || m.gemm(&q, 0..tokens, 0..rows, &mut out));
                let par = best(50, || rayon::scope(|_| par_gemm(&m, &q, 0..rows, &mut out)));
                let gmacs = |d: Duration| (rows * cols * tokens) as f64 / d.as_secs_f64() / 1e9;
                println!(
                    "{rows}x{cols}, {tokens:3} tokens: quantize {quantize:?}, one thread \
                     {one:?} ({:.1} GMAC/s), pool {par:?} ({:.1} GMAC/s)",
                    gmacs(one),
                    gmacs(par)
                );
            }
        }
    }

    /// The matrices of one SmolLM2-135M token (30 layers, output): more than the L3 cache, so
    /// read from memory as in generation.
    #[test]
    #[ignore]
    fn token_timings() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut random = |format: Format, rows: usize, cols: usize| {
            let bytes = rows * cols / BLOCK * format.block_bytes();
            QMatrix::new(
                format,
                rows,
                cols,
                (0..bytes).map(|_| rng.random::<u8>()).collect(),
            )
        };
        let mut mats = Vec::new();
        for _ in 0..30 {
            mats.push(random(Format::Q4_1, 960, 576));
            mats.push(random(Format::Q4_1, 576, 576));
            mats.push(random(Format::Q4_1, 3072, 576));
            mats.push(random(Format::Q4_1, 576, 1536));
        }
        mats.push(random(Format::Q8_0, 49152, 576));
        let bytes: usize = mats.iter().map(|m| m.data.len()).sum();
        let xs: Vec<Q8Vector> = [576, 1536]
            .iter()
            .map(|&n| {
                let mut q = Q8Vector::default();
                q.quantize(&(0..n).map(|i| (i as f32).sin()).collect::<Vec<_>>());
                q
            })
            .collect();
        let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; m.rows()]).collect();
        let x = |m: &QMatrix| if m.cols() == 576 { &xs[0] } else { &xs[1] };
        let one = best(10, || {
            for (m, out) in mats.iter().zip(&mut outs) {
                m.gemv(x(m), 0..m.rows(), out);
            }
        });
        let par = best(10, || {
            rayon::scope(|_| {
                for (m, out) in mats.iter().zip(&mut outs) {
                    par_gemv(m, x(m), 0..m.rows(), out);
                }
            })
        });
        let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
        println!(
            "token ({} MB): one thread {one:?} ({:.1} GB/s), pool {par:?} ({:.1} GB/s, {} threads)",
            bytes / 1_000_000,
            gbs(one),
            gbs(par),
            rayon::current_num_threads()
        );
    }
}
