//! Weight matrices: quantized for generation (our kernels or candle's), optionally an `f32`
//! copy for prompts, and an optional bias (Qwen2's q/k/v projections).

use std::cmp::Reverse;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::Phase;
use super::ops::add_assign;
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::kernels::{Q8Vector, Q16Batch, QMatrix, dense, par_gemm, par_gemv, par_gemv_many};

/// Where the quantized weights of a matrix live.
pub(super) enum Quant {
    /// Our kernels (`crate::kernels`): rows `rows` of `matrix`, which may stack the rows of
    /// several weight matrices read by one pass over the same activation (q/k/v, gate/up).
    Own {
        matrix: Arc<QMatrix>,
        rows: Range<usize>,
    },
    /// candle's, for the formats and devices our kernels do not cover.
    Candle(QMatMul),
}

/// A weight matrix: quantized for generation, optionally dense for prompts.
pub(super) struct Linear {
    quant: Quant,
    /// `(out, in)` `f32` copy for prompt processing; `None` when dense prefill is off or the
    /// stored weights are already `f32` (then `quant` is dense too).
    pub(super) dense: Option<Tensor>,
    /// `(out,)`, added to every output row.
    pub(super) bias: Option<Tensor>,
}

impl Linear {
    pub(super) fn candle(q: Arc<QTensor>) -> Result<Self> {
        Ok(Self {
            quant: Quant::Candle(QMatMul::from_arc(q)?),
            dense: None,
            bias: None,
        })
    }

    pub(super) fn own(matrix: Arc<QMatrix>, rows: Range<usize>) -> Self {
        Self {
            quant: Quant::Own { matrix, rows },
            dense: None,
            bias: None,
        }
    }

    /// Output rows of our kernels' matrix (0 for candle's).
    fn out_rows(&self) -> usize {
        match &self.quant {
            Quant::Own { rows, .. } => rows.len(),
            Quant::Candle(_) => 0,
        }
    }

    /// `(out, in)`; `None` for a tensor that is not a matrix.
    pub(super) fn shape(&self) -> Option<(usize, usize)> {
        match &self.quant {
            Quant::Own { matrix, rows } => Some((rows.len(), matrix.cols())),
            Quant::Candle(QMatMul::QTensor(q)) => q.shape().dims2().ok(),
            Quant::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims2().ok(),
        }
    }

    /// Elements of the quantized weights (0 for float formats).
    fn quantized_elements(&self) -> usize {
        match &self.quant {
            Quant::Own { matrix, rows } => rows.len() * matrix.cols(),
            Quant::Candle(QMatMul::QTensor(q)) => q.shape().elem_count(),
            Quant::Candle(_) => 0,
        }
    }

    /// The `f32` values of the quantized weights, `(out, in)`; `None` for float formats.
    fn dequantize(&self) -> Result<Option<Tensor>> {
        Ok(match &self.quant {
            Quant::Own { matrix, rows } => Some(Tensor::from_vec(
                matrix.dequantize(rows.clone()),
                (rows.len(), matrix.cols()),
                &Device::Cpu,
            )?),
            Quant::Candle(QMatMul::QTensor(q)) => Some(q.dequantize(&q.device())?),
            Quant::Candle(_) => None,
        })
    }

    /// `x`: `(batch, seq, in)` → `(batch, seq, out)`, plus the bias; dense in the prompt phase.
    pub(super) fn forward(&self, x: &Tensor, phase: Phase) -> Result<Tensor> {
        let y = self.product(x, phase)?;
        Ok(match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        })
    }

    /// Whether [`Self::rows`] can run: `f32` weights (a dense copy, or stored so) on the CPU, or
    /// our quantized kernels.
    pub(super) fn has_rows(&self) -> bool {
        match (&self.dense, &self.quant) {
            (Some(w), _) | (None, Quant::Candle(QMatMul::Tensor(w))) => {
                w.device().is_cpu() && w.dtype() == DType::F32
            }
            (None, quant) => matches!(quant, Quant::Own { .. }),
        }
    }

    /// `x`: rows of `in` floats → rows of `out`, plus the bias, on plain buffers (the CPU
    /// prompt path): the dense copy through the batch-invariant [`dense::matmul`], else our
    /// batched quantized kernels. Either way a row's result does not depend on the other rows.
    /// Only where [`Self::has_rows`].
    pub(super) fn rows(&self, x: &[f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
        let mut y = match (&self.dense, &self.quant) {
            (Some(w), _) | (None, Quant::Candle(QMatMul::Tensor(w))) => {
                let (storage, layout) = w.storage_and_layout();
                let candle_core::Storage::Cpu(cpu) = &*storage else {
                    return Err(candle_core::Error::Msg("dense rows off the CPU".into()).into());
                };
                let (n, k) = w.dims2()?;
                if !layout.is_contiguous() {
                    return Err(candle_core::Error::Msg("dense rows not contiguous".into()).into());
                }
                let data = &cpu.as_slice::<f32>()?[layout.start_offset()..][..n * k];
                dense::matmul(x, data, k)
            }
            (None, Quant::Own { matrix, rows }) => quantized_rows(matrix, rows, x),
            (None, Quant::Candle(_)) => {
                return Err(candle_core::Error::Msg(
                    "no row kernels for candle's quantized formats".into(),
                )
                .into());
            }
        };
        if let Some(bias) = bias {
            y.chunks_exact_mut(bias.len())
                .for_each(|row| add_assign(row, bias));
        }
        Ok(y)
    }

    fn product(&self, x: &Tensor, phase: Phase) -> Result<Tensor> {
        let (b, seq, k) = x.dims3()?;
        match (&self.dense, &self.quant) {
            (Some(w), _) if phase == Phase::Prompt => {
                let y = x.reshape((b * seq, k))?.matmul(&w.t()?)?;
                Ok(y.reshape((b, seq, ()))?)
            }
            (_, Quant::Candle(q)) => Ok(q.forward(x)?),
            (_, Quant::Own { matrix, rows }) => {
                let xs: Vec<f32> = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                let n = rows.len();
                let mut out = vec![0f32; b * seq * n];
                if b * seq == 1 {
                    let mut q = Q8Vector::default();
                    q.quantize(&xs);
                    rayon::scope(|_| par_gemv(matrix, &q, rows.clone(), &mut out));
                } else {
                    out = quantized_rows(matrix, rows, &xs);
                }
                Ok(Tensor::from_vec(out, (b, seq, n), x.device())?)
            }
        }
    }
}

/// [`Linear::rows`] of several matrices over the same input, each output with its bias: one
/// batched product where they are row ranges of one stacked matrix (q/k/v, gate/up), whose
/// output rows are then split.
pub(super) fn rows_of(
    linears: &[&Linear],
    x: &[f32],
    biases: &[Option<&[f32]>],
) -> Result<Vec<Vec<f32>>> {
    let plain = |l: &Linear| l.dense.is_none() && matches!(l.quant, Quant::Own { .. });
    let whole = match linears.iter().all(|l| plain(l)) {
        true => stacked(linears),
        false => None,
    };
    let Some(matrix) = whole else {
        return linears
            .iter()
            .zip(biases)
            .map(|(l, bias)| l.rows(x, *bias))
            .collect();
    };
    let all = quantized_rows(&matrix, &(0..matrix.rows()), x);
    let mut outs: Vec<Vec<f32>> = linears
        .iter()
        .map(|l| Vec::with_capacity(all.len() / matrix.rows() * l.out_rows()))
        .collect();
    split_rows(linears, &all, matrix.rows(), biases, &mut outs);
    Ok(outs)
}

/// Appends to `outs[i]`, for each output row of a stacked product (`all`, rows of `width`),
/// the part that is `linears[i]`'s, plus its bias.
fn split_rows(
    linears: &[&Linear],
    all: &[f32],
    width: usize,
    biases: &[Option<&[f32]>],
    outs: &mut [Vec<f32>],
) {
    for row in all.chunks_exact(width) {
        let mut start = 0;
        for ((l, out), bias) in linears.iter().zip(outs.iter_mut()).zip(biases) {
            let part = &row[start..start + l.out_rows()];
            start += part.len();
            let at = out.len();
            out.extend_from_slice(part);
            if let Some(bias) = bias {
                add_assign(&mut out[at..], bias);
            }
        }
    }
}

/// [`rows_of`] where the first `decoding` rows of `x` are generated tokens: those go through
/// generation's 8-bit products with `stacked` (the matrix whose rows the `linears` are, in
/// order), each the bits of its one-token product, and come first in every output.
pub(super) fn rows_mixed(
    linears: &[&Linear],
    stacked: Option<&QMatrix>,
    x: &[f32],
    decoding: usize,
    biases: &[Option<&[f32]>],
) -> Result<Vec<Vec<f32>>> {
    let Some(matrix) = stacked.filter(|_| decoding > 0) else {
        return rows_of(linears, x, biases);
    };
    let cols = matrix.cols();
    let (generated, prompt) = x.split_at(decoding * cols);
    let mut outs = match prompt.is_empty() {
        true => vec![Vec::new(); linears.len()],
        false => rows_of(linears, prompt, biases)?,
    };
    let xs: Vec<Q8Vector> = generated
        .chunks_exact(cols)
        .map(|row| {
            let mut q = Q8Vector::default();
            q.quantize(row);
            q
        })
        .collect();
    let refs: Vec<&Q8Vector> = xs.iter().collect();
    let mut all = vec![0f32; decoding * matrix.rows()];
    par_gemv_many(matrix, &refs, 0..matrix.rows(), &mut all);
    let mut heads: Vec<Vec<f32>> = linears
        .iter()
        .zip(&outs)
        .map(|(l, out)| Vec::with_capacity(decoding * l.out_rows() + out.len()))
        .collect();
    split_rows(linears, &all, matrix.rows(), biases, &mut heads);
    for (head, out) in heads.iter_mut().zip(&mut outs) {
        head.extend_from_slice(out);
        *out = std::mem::take(head);
    }
    Ok(outs)
}

/// `x` (rows of `matrix.cols()` floats) times rows `rows` of `matrix`: the tokens quantized to
/// 16 bits per block, then one batched product over the pool (each token's result
/// independent of the others).
fn quantized_rows(matrix: &QMatrix, rows: &Range<usize>, x: &[f32]) -> Vec<f32> {
    rayon::scope(|_| {
        let mut q = Q16Batch::default();
        q.quantize(x, matrix.cols());
        let mut out = vec![0f32; q.tokens() * rows.len()];
        par_gemm(matrix, &q, rows.clone(), &mut out);
        out
    })
}

/// Reads the matrices `names` (same input width). When our kernels read them all, they become
/// row ranges of one stacked matrix, which generation multiplies in one pass.
pub(super) fn load_stacked(
    file: &mut GgufFile,
    names: &[String],
    device: &Device,
) -> Result<Vec<Linear>> {
    // On the CPU our kernels read the blocks where the mapped file holds them.
    let mapped = match device.is_cpu() {
        true => names
            .iter()
            .map(|n| QMatrix::from_gguf(file, n))
            .collect::<Result<Option<Vec<_>>>>()?,
        false => None,
    };
    let own = match mapped {
        Some(own) => own,
        None => {
            let tensors = names
                .iter()
                .map(|n| file.tensor(n, device))
                .collect::<Result<Vec<_>>>()?;
            let own = tensors
                .iter()
                .map(QMatrix::from_qtensor)
                .collect::<candle_core::Result<Option<Vec<_>>>>()?;
            let Some(own) = own else {
                return tensors
                    .into_iter()
                    .map(|t| Linear::candle(Arc::new(t)))
                    .collect();
            };
            own
        }
    };
    let sizes: Vec<usize> = own.iter().map(QMatrix::rows).collect();
    match QMatrix::stack(own) {
        Ok(matrix) => {
            let matrix = Arc::new(matrix);
            let mut start = 0;
            Ok(sizes
                .iter()
                .map(|&n| {
                    start += n;
                    Linear::own(matrix.clone(), start - n..start)
                })
                .collect())
        }
        // Mixed formats: each on its own.
        Err(parts) => Ok(parts
            .into_iter()
            .map(|m| {
                let rows = 0..m.rows();
                Linear::own(Arc::new(m), rows)
            })
            .collect()),
    }
}

/// The whole matrix behind `linears` when they are our kernels' and, in order, cover its rows:
/// what one generation-time product computes for all of them.
pub(super) fn stacked(linears: &[&Linear]) -> Option<Arc<QMatrix>> {
    let mut whole: Option<&Arc<QMatrix>> = None;
    let mut next = 0;
    for linear in linears {
        let Quant::Own { matrix, rows } = &linear.quant else {
            return None;
        };
        if whole.is_some_and(|w| !Arc::ptr_eq(w, matrix)) || rows.start != next {
            return None;
        }
        whole = Some(matrix);
        next = rows.end;
    }
    whole.filter(|w| w.rows() == next).cloned()
}

/// Adds the dense `f32` copies, dequantizing on every core: this is most of the load time
/// (0.25 s of single-threaded work for SmolLM2-135M), and cold starts wait for it.
pub(super) fn densify(linears: Vec<&mut Linear>) -> Result<()> {
    // Largest first, so that the big output projection does not finish last on its own.
    let mut order: Vec<usize> = (0..linears.len()).collect();
    order.sort_by_key(|&i| Reverse(linears[i].quantized_elements()));
    let threads = candle_core::utils::get_num_threads().clamp(1, linears.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<Option<Tensor>>>>> =
        linears.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let dense = linears[i].dequantize();
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(dense);
                }
            });
        }
    });
    for (linear, result) in linears.into_iter().zip(results) {
        let result = result.into_inner().unwrap_or_else(|e| e.into_inner());
        linear.dense = result.expect("every linear was dequantized")?;
    }
    Ok(())
}
