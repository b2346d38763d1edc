//! Generation's products for several sessions at once: one pass over a matrix's rows for the
//! next token of each ([`QMatrix::gemv_many`]), the weights read from memory once instead of
//! once per session. Each token's result is the same bits [`QMatrix::gemv`] gives it alone
//! (the same 8-bit activations, the same operations per block in the same order), so batching
//! sessions changes no answer (see `crate::batcher`).

use std::ops::Range;

use super::{Isa, MIN_PARALLEL_ROWS, Q8Vector, QMatrix};

impl QMatrix {
    /// `out[t * rows.len() + j] = row(rows.start + j) . xs[t]`, on this thread: for each `t`,
    /// what [`Self::gemv`] writes for `xs[t]`.
    pub(crate) fn gemv_many(&self, xs: &[&Q8Vector], rows: Range<usize>, out: &mut [f32]) {
        self.gemv_many_with(super::isa(), xs, rows, out)
    }

    /// [`Self::gemv_many`] with the kernels of `isa`, which this CPU must have: for each `t`,
    /// what [`Self::gemv_with`] writes for `xs[t]` with the same `isa`.
    pub(crate) fn gemv_many_with(
        &self,
        isa: Isa,
        xs: &[&Q8Vector],
        rows: Range<usize>,
        out: &mut [f32],
    ) {
        assert!(rows.end <= self.rows, "rows {rows:?} of {}", self.rows);
        assert_eq!(out.len(), xs.len() * rows.len(), "output length");
        for x in xs {
            assert_eq!(x.len(), self.cols, "activation length");
        }
        if xs.is_empty() || rows.is_empty() {
            return;
        }
        let data = self.row_data(rows.clone());
        #[cfg(target_arch = "x86_64")]
        if isa != Isa::Scalar {
            let vnni = isa == Isa::Avx2Vnni;
            super::x86::many(self.format, data, self.row_bytes(), xs, out, vnni);
            return;
        }
        for (x, out) in xs.iter().zip(out.chunks_exact_mut(rows.len())) {
            self.gemv_with(isa, x, rows.clone(), out);
        }
    }
}

/// [`QMatrix::gemv_many`] of `rows`, split by rows over the current rayon pool (call it from
/// inside the pool, as [`super::par_gemv`]): each part into its own buffer, copied into place.
pub(crate) fn par_gemv_many(m: &QMatrix, xs: &[&Q8Vector], rows: Range<usize>, out: &mut [f32]) {
    let threads = rayon::current_num_threads();
    let n = rows.len();
    if threads <= 1 || n < MIN_PARALLEL_ROWS || xs.is_empty() {
        m.gemv_many(xs, rows, out);
        return;
    }
    super::par_row_parts(rows, xs.len(), threads, out, |part, buf| {
        m.gemv_many(xs, part, buf)
    });
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::super::Format;
    use super::super::tests::{random_matrix, random_vector};
    use super::*;

    /// `tokens` random activations of `cols` values, quantized.
    fn activations(rng: &mut StdRng, tokens: usize, cols: usize) -> Vec<Q8Vector> {
        (0..tokens)
            .map(|_| {
                let mut q = Q8Vector::default();
                q.quantize(&random_vector(rng, cols));
                q
            })
            .collect()
    }

    /// Every token of a batch gets exactly the bits of its own matrix-vector product, for
    /// batches across the 4-activation groups, odd row counts and both formats, on one thread
    /// and split over a pool.
    #[test]
    fn many_tokens_get_the_bits_of_one() {
        let mut rng = StdRng::seed_from_u64(11);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for format in [Format::Q4_1, Format::Q8_0] {
            for (rows, cols) in [(1, 32), (7, 64), (131, 96), (200, 576)] {
                let m = random_matrix(&mut rng, format, rows, cols);
                for tokens in [1, 2, 3, 4, 5, 8, 9] {
                    let xs = activations(&mut rng, tokens, cols);
                    let refs: Vec<&Q8Vector> = xs.iter().collect();
                    let range = rows / 3..rows;
                    let mut alone = vec![0f32; tokens * range.len()];
                    for (x, out) in xs.iter().zip(alone.chunks_exact_mut(range.len().max(1))) {
                        m.gemv(x, range.clone(), out);
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    // Every instruction set's batch gives its own one-token bits; the SIMD
                    // sets (with VNNI or without) give the same bits as each other.
                    for isa in Isa::supported() {
                        let mut one = vec![0f32; alone.len()];
                        for (x, out) in xs.iter().zip(one.chunks_exact_mut(range.len().max(1))) {
                            m.gemv_with(isa, x, range.clone(), out);
                        }
                        let mut many = vec![f32::NAN; alone.len()];
                        m.gemv_many_with(isa, &refs, range.clone(), &mut many);
                        assert_eq!(bits(&many), bits(&one), "{isa:?} {format:?} {rows}x{cols}");
                        if isa != Isa::Scalar {
                            assert_eq!(
                                bits(&one),
                                bits(&alone),
                                "{isa:?} {format:?} {rows}x{cols}"
                            );
                        }
                    }
                    let mut many = vec![f32::NAN; alone.len()];
                    m.gemv_many(&refs, range.clone(), &mut many);
                    let mut split = vec![f32::NAN; alone.len()];
                    pool.install(|| par_gemv_many(&m, &refs, range.clone(), &mut split));
                    assert_eq!(
                        bits(&many),
                        bits(&alone),
                        "{format:?} {rows}x{cols} {tokens}"
                    );
                    assert_eq!(
                        bits(&split),
                        bits(&alone),
                        "{format:?} {rows}x{cols} {tokens}"
                    );
                }
            }
        }
    }

    /// Not a test: per-token time of a batched product with and without VNNI
    /// (`cargo test -p slmfn-models --lib many_timings -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn many_timings() {
        let mut rng = StdRng::seed_from_u64(5);
        let shapes = [
            (Format::Q4_1, 960, 576),
            (Format::Q4_1, 3072, 576),
            (Format::Q4_1, 576, 1536),
            (Format::Q8_0, 8192, 576),
        ];
        for (format, rows, cols) in shapes {
            let m = random_matrix(&mut rng, format, rows, cols);
            for tokens in [1, 4, 8] {
                let xs = activations(&mut rng, tokens, cols);
                let refs: Vec<&Q8Vector> = xs.iter().collect();
                let mut out = vec![0f32; tokens * rows];
                let times: Vec<String> = Isa::supported()
                    .into_iter()
                    .filter(|i| *i != Isa::Scalar)
                    .map(|isa| {
                        let t = super::super::bench::best(500, || {
                            m.gemv_many_with(isa, &refs, 0..rows, &mut out)
                        });
                        format!("{isa:?} {:?}/token", t / tokens as u32)
                    })
                    .collect();
                println!("{format:?} {rows}x{cols} x{tokens}: {}", times.join(", "));
            }
        }
    }
}
