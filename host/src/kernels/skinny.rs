//! Matrix products for the decode path, where only a few rows (one per sequence in the batch)
//! meet a large weight matrix: `y[m, n] = x[m, k] · w[n, k]ᵀ` with m ≤ a handful.
//!
//! A general GEMM packs and tiles for large m; at m = 1…8 the product is bound by reading the
//! weights, so this kernel streams every weight row exactly once, keeps the few input rows in
//! L1 and multiplies each weight row with all of them while it is in registers (AVX-512 or
//! AVX2 + FMA where the CPU has them), prefetching the weights into L2 ahead of the loads. The
//! output rows are split over rayon's threads. Reading the weights
//! once for the whole batch is what makes a decode step of 5 sequences cost about as much as a
//! step of one.

use rayon::prelude::*;

/// Largest number of input rows handled in one pass over the weights (a group of 5 samples
/// fits one pass).
pub const MAX_ROWS: usize = 6;

/// Weight rows per parallel task: large enough to amortise the scheduling, small enough to
/// spread a 576-row projection over two threads.
const ROWS_PER_TASK: usize = 64;

/// `x` is [m, k] row-major, `w` is [n, k] row-major; returns y = x · wᵀ as [m, n] row-major.
/// Any m works; rows are taken in groups of [`MAX_ROWS`] (each group reads `w` once).
pub fn matmul_transposed(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert_eq!(w.len(), n * k, "w must be [n, k]");
    matmul_transposed_many(x, m, &[w], k)
        .pop()
        .unwrap_or_default()
}

/// [`matmul_transposed`] of one input against several weight matrices sharing `k` (the q, k, v
/// projections; gate and up), in one parallel pass: one hand-off to the thread pool instead of
/// one per matrix. Returns one [m, n_i] product per weight matrix.
pub fn matmul_transposed_many(x: &[f32], m: usize, weights: &[&[f32]], k: usize) -> Vec<Vec<f32>> {
    assert_eq!(x.len(), m * k, "x must be [m, k]");
    for w in weights {
        assert!(k > 0 && w.len().is_multiple_of(k), "w must be [n, k]");
    }
    let mut products: Vec<Vec<f32>> = weights
        .iter()
        .map(|w| vec![0f32; m * (w.len() / k)])
        .collect();
    for start in (0..m).step_by(MAX_ROWS) {
        let rows = (m - start).min(MAX_ROWS);
        let xs = &x[start * k..(start + rows) * k];
        // A task is a run of weight rows and, for each input row of this group, the stretch of
        // its output row that those weight rows fill.
        let mut tasks: Vec<(Run, Stretches)> = Vec::new();
        for (w, y) in weights.iter().zip(products.iter_mut()) {
            let outputs = task_outputs(y, start, rows, w.len() / k);
            tasks.extend(runs(w, k).zip(outputs));
        }
        tasks
            .into_par_iter()
            .for_each(|(run, mut outs)| block(xs, rows, run, k, &mut outs));
    }
    products
}

/// A task's weight rows, and the weights from its first row to the end of the matrix: the
/// kernels prefetch ahead along the matrix, past the task's last row (rayon hands a thread
/// neighbouring tasks), never past the matrix.
#[derive(Clone, Copy)]
struct Run<'a> {
    weights: &'a [f32],
    stream: &'a [f32],
}

/// The runs of [`ROWS_PER_TASK`] weight rows of `w` ([n, k]).
fn runs(w: &[f32], k: usize) -> impl Iterator<Item = Run<'_>> {
    (0..w.len()).step_by(ROWS_PER_TASK * k).map(move |at| Run {
        weights: &w[at..(at + ROWS_PER_TASK * k).min(w.len())],
        stream: &w[at..],
    })
}

/// One output stretch per input row of a task: the part of the row its weight rows fill.
type Stretches<'a> = Vec<&'a mut [f32]>;

/// The output stretches of every task over rows `start..start + rows` of `y` ([m, n]): task t
/// takes weight rows t·ROWS_PER_TASK.. (up to ROWS_PER_TASK of them).
fn task_outputs(y: &mut [f32], start: usize, rows: usize, n: usize) -> Vec<Stretches<'_>> {
    if n == 0 {
        return Vec::new();
    }
    let mut per_row: Vec<_> = y[start * n..(start + rows) * n]
        .chunks_mut(n)
        .map(|row| row.chunks_mut(ROWS_PER_TASK))
        .collect();
    (0..n.div_ceil(ROWS_PER_TASK))
        .map(|task| {
            per_row
                .iter_mut()
                .map(|row| row.next())
                .collect::<Option<Vec<_>>>()
                .unwrap_or_else(|| unreachable!("task {task}: one stretch per output row"))
        })
        .collect()
}

/// SwiGLU's activation of two products, silu(x · gateᵀ) ⊙ (x · upᵀ), for `gate` and `up`
/// [n, k]; returns [m, n]. Each parallel task multiplies a run of gate rows and the same run of
/// up rows and applies the activation to the stretch it has just produced, while it is in its
/// core's cache: no separate pass over the two products, and neither is handed between
/// threads. Equal, bit for bit, to [`crate::kernels::vector_math::silu_times`] of the two products.
pub fn matmul_swiglu(x: &[f32], m: usize, gate: &[f32], up: &[f32], k: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x must be [m, k]");
    assert!(
        k > 0 && gate.len().is_multiple_of(k) && up.len() == gate.len(),
        "gate and up must both be [n, k]"
    );
    let n = gate.len() / k;
    let mut y = vec![0f32; m * n];
    if n == 0 {
        return y;
    }
    for start in (0..m).step_by(MAX_ROWS) {
        let rows = (m - start).min(MAX_ROWS);
        let xs = &x[start * k..(start + rows) * k];
        let tasks: Vec<_> = runs(gate, k)
            .zip(runs(up, k))
            .zip(task_outputs(&mut y, start, rows, n))
            .collect();
        tasks.into_par_iter().for_each(|((g, u), outs)| {
            let count = g.weights.len() / k;
            let mut gated = vec![0f32; rows * count];
            let mut upped = vec![0f32; rows * count];
            block(
                xs,
                rows,
                g,
                k,
                &mut gated.chunks_mut(count).collect::<Vec<_>>(),
            );
            block(
                xs,
                rows,
                u,
                k,
                &mut upped.chunks_mut(count).collect::<Vec<_>>(),
            );
            for (r, out) in outs.into_iter().enumerate() {
                let stretch = r * count..(r + 1) * count;
                crate::kernels::vector_math::silu_times_into(
                    &gated[stretch.clone()],
                    &upped[stretch],
                    out,
                );
            }
        });
    }
    y
}

/// Weight rows per pass of the AVX-512 kernel for an input of `bytes` (rows × k × 4). Past
/// 24 KB the input rows no longer stay in L1 beside the weight stream, and each input load
/// that serves four weight rows instead of one keeps the kernel off L2. Measured in decode
/// steps with 2 threads: SmolLM2's down projection (five rows of k = 1536, 30 KB) took
/// 285–310 ms per 64 steps with four rows per pass against 313–380 with one, Qwen2.5-0.5B's
/// (k = 4864, 97 KB) 665–805 against 930–1,050; below 24 KB one row per pass is as fast. The
/// sums do not depend on it.
fn tile_for(bytes: usize) -> usize {
    if bytes > FOUR_ROWS_ABOVE { 4 } else { 1 }
}

const FOUR_ROWS_ABOVE: usize = 24 * 1024;

/// How far ahead (in floats) the kernels prefetch a weight row into L2. With several rows the
/// FMAs between two weight loads hold back the hardware prefetcher and the next misses; a
/// `prefetcht1` 8 KB ahead keeps the stream going without pulling lines into L1 (where they
/// would evict the input rows). Measured on SmolLM2's shapes, 2 threads: five rows cost
/// 1.06–1.15× one row instead of 1.5–1.8×. One row gains too: SmolLM2 batch-1 decode 43.2
/// against 39.8 tok/s (four alternating runs, 2026-12-06; an earlier session had measured
/// one row slightly faster without); 2,048 to 8,192 floats ahead ran alike.
const PREFETCH_AHEAD: usize = 2048;

/// The vector kernels, best first. Which one runs depends only on the CPU, never on the number
/// of rows, so a row's sums stay the same whatever else is in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// 16 floats per step; four weight rows per pass for large inputs.
    Avx512,
    /// 8 floats per step, two accumulators per row.
    Avx2,
    /// Scalar, for other CPUs.
    Plain,
}

impl Kernel {
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2;
            }
        }
        Kernel::Plain
    }

    /// Whether this CPU can run the kernel.
    #[cfg(test)]
    fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 | Kernel::Avx2 => false,
            Kernel::Plain => true,
        }
    }
}

/// out[r][j] = dot(x[r], w[j]) for every input row r and weight row j of the run.
fn block(x: &[f32], rows: usize, run: Run, k: usize, out: &mut [&mut [f32]]) {
    // One row through the AVX-512 kernel ran 44.4 against 43.3 tok/s through the AVX2 one
    // (SmolLM2 batch 1, three alternating runs, both prefetching); the sums are equal bit for bit.
    block_with(Kernel::best(), tile_for(rows * k * 4), x, rows, run, k, out);
}

/// [`block`] with a chosen kernel (which the caller has checked the CPU supports) and weight
/// rows per pass (`tile`: 1 or 4; AVX-512 only; the sums do not depend on it).
fn block_with(
    kernel: Kernel,
    tile: usize,
    x: &[f32],
    rows: usize,
    run: Run,
    k: usize,
    out: &mut [&mut [f32]],
) {
    let (w, stream) = (run.weights, run.stream);
    // The vector kernels read x and w without bounds checks: hold the shapes they rely on.
    assert!(
        (1..=MAX_ROWS).contains(&rows),
        "1..={MAX_ROWS} rows per pass"
    );
    let n = w.len() / k.max(1);
    assert!(
        x.len() == rows * k
            && w.len() == n * k
            && out.len() == rows
            && out.iter().all(|row| row.len() == n)
            && stream.as_ptr() == w.as_ptr()
            && stream.len() >= w.len()
    );
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: `Kernel::best` (or a test) checked that the CPU supports AVX-512F.
        Kernel::Avx512 => unsafe {
            match rows {
                1 => avx512::block::<1>(x, w, stream, k, out, tile),
                2 => avx512::block::<2>(x, w, stream, k, out, tile),
                3 => avx512::block::<3>(x, w, stream, k, out, tile),
                4 => avx512::block::<4>(x, w, stream, k, out, tile),
                5 => avx512::block::<5>(x, w, stream, k, out, tile),
                6 => avx512::block::<6>(x, w, stream, k, out, tile),
                _ => unreachable!("rows checked above"),
            }
        },
        // SAFETY: `Kernel::best` (or a test) checked that the CPU supports AVX2 and FMA.
        Kernel::Avx2 => unsafe {
            match rows {
                1 => avx::block::<1>(x, w, stream, k, out),
                2 => avx::block::<2>(x, w, stream, k, out),
                3 => avx::block::<3>(x, w, stream, k, out),
                4 => avx::block::<4>(x, w, stream, k, out),
                5 => avx::block::<5>(x, w, stream, k, out),
                6 => avx::block::<6>(x, w, stream, k, out),
                _ => unreachable!("rows checked above"),
            }
        },
        Kernel::Plain => block_plain(x, rows, w, k, out),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernel, tile);
        block_plain(x, rows, w, k, out);
    }
}

fn block_plain(x: &[f32], rows: usize, w: &[f32], k: usize, out: &mut [&mut [f32]]) {
    for (j, weights) in w.chunks_exact(k).enumerate() {
        for r in 0..rows {
            let input = &x[r * k..(r + 1) * k];
            out[r][j] = input.iter().zip(weights).map(|(a, b)| a * b).sum();
        }
    }
}

/// Prefetches the cache line at `ahead` floats past `at` into L2, if it lies before `end`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_l2(at: *const f32, ahead: usize, end: *const f32) {
    let target = at.wrapping_add(ahead);
    if target < end {
        // SAFETY: a prefetch never faults, and `target` lies inside the weight matrix.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(target.cast())
        };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PREFETCH_AHEAD, horizontal_sum, prefetch_l2};
    use std::arch::x86_64::*;

    /// `M` input rows against every weight row of `w`, 16 floats per step with one accumulator
    /// per (input row, weight row) pair. `tile` weight rows (1 or 4) are taken per pass
    /// (each input load serves all of them). The sums are the same either way, the same whatever `M` is
    /// (so a sequence's logits do not depend on what else is in the batch), and bit for bit
    /// the AVX2 kernel's.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block<const M: usize>(
        x: &[f32],
        w: &[f32],
        stream: &[f32],
        k: usize,
        out: &mut [&mut [f32]],
        tile: usize,
    ) {
        let n = w.len() / k;
        // Prefetches stop at the end of the matrix.
        let end = stream.as_ptr_range().end;
        let mut j = 0;
        // SAFETY (each call): rows j..j + 4 (then j) lie inside `w`; `out` holds a value per
        // weight row for each of the M input rows.
        if tile == 4 {
            while j + 4 <= n {
                unsafe { rows::<M, 4>(x, w, j, k, out, end) };
                j += 4;
            }
        }
        while j < n {
            // SAFETY: as above, for one row.
            unsafe { rows::<M, 1>(x, w, j, k, out, end) };
            j += 1;
        }
    }

    /// The sum of one (input row, weight row) pair from its 16-lane accumulator: the AVX2
    /// kernel's order (its two 8-float accumulators are this one's halves, added, summed
    /// across, then the tail one float at a time).
    #[target_feature(enable = "avx512f")]
    fn finish(acc: __m512, input: &[f32], weights: &[f32], whole: usize) -> f32 {
        let halves = _mm256_add_ps(
            _mm512_castps512_ps256(acc),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc))),
        );
        let mut total = horizontal_sum(halves);
        for t in whole * 16..input.len() {
            total += input[t] * weights[t];
        }
        total
    }

    /// Weight rows `first..first + J` against the `M` input rows.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const M: usize, const J: usize>(
        x: &[f32],
        w: &[f32],
        first: usize,
        k: usize,
        out: &mut [&mut [f32]],
        prefetch_until: *const f32,
    ) {
        let whole = k / 16;
        let xp = x.as_ptr();
        // SAFETY (all loads below): `first + J ≤ n` rows of k floats in `w`, `M` rows of k
        // floats in `x`; the vector loads stay below `whole * 16 ≤ k`.
        let wp = unsafe { w.as_ptr().add(first * k) };
        let mut acc = [[_mm512_setzero_ps(); J]; M];
        for c in 0..whole {
            let mut wv = [_mm512_setzero_ps(); J];
            for (jj, v) in wv.iter_mut().enumerate() {
                let at = unsafe { wp.add(jj * k + c * 16) };
                prefetch_l2(at, PREFETCH_AHEAD, prefetch_until);
                *v = unsafe { _mm512_loadu_ps(at) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = unsafe { _mm512_loadu_ps(xp.add(r * k + c * 16)) };
                for (a, v) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, *v, *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (jj, a) in row.iter().enumerate() {
                let (input, weights) = (&x[r * k..(r + 1) * k], &w[(first + jj) * k..][..k]);
                out[r][first + jj] = finish(*a, input, weights, whole);
            }
        }
    }
}

/// Sum of the eight floats of `v`, in the order both vector kernels use.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_sum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm256_castps256_ps128(v);
    let high = _mm256_extractf128_ps(v, 1);
    let quad = _mm_add_ps(low, high);
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let single = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
    _mm_cvtss_f32(single)
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{PREFETCH_AHEAD, horizontal_sum, prefetch_l2};
    use std::arch::x86_64::*;

    /// Independent accumulators per row: enough to hide the FMA latency at M = 1, few enough
    /// for M = 6 to stay in the 16 vector registers.
    const U: usize = 2;

    /// `M` input rows against every weight row of `w`, one weight row at a time: each 8-float
    /// weight slice is loaded once and multiplied into all `M` rows. Every (input row, weight
    /// row) pair is summed in the same order whatever `M` is, so a sequence's logits do not
    /// depend on what else is in the batch. (Taking two weight rows at a time to reuse the
    /// input loads measured slower here: two streams per thread.)
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block<const M: usize>(
        x: &[f32],
        w: &[f32],
        stream: &[f32],
        k: usize,
        out: &mut [&mut [f32]],
    ) {
        let step = 8 * U;
        let whole = k / step * step;
        let xp = x.as_ptr();
        // Prefetches stop at the end of the matrix.
        let end = stream.as_ptr_range().end;
        for (j, weights) in w.chunks_exact(k).enumerate() {
            let wp = weights.as_ptr();
            let mut acc = [[_mm256_setzero_ps(); U]; M];
            let mut i = 0;
            while i < whole {
                // One line (16 floats) per step.
                prefetch_l2(wp.wrapping_add(i), PREFETCH_AHEAD, end);
                for u in 0..U {
                    // SAFETY: i + 8u + 8 ≤ whole ≤ k: inside this weight row and every input row.
                    let wv = unsafe { _mm256_loadu_ps(wp.add(i + 8 * u)) };
                    for (r, row) in acc.iter_mut().enumerate() {
                        let xv = unsafe { _mm256_loadu_ps(xp.add(r * k + i + 8 * u)) };
                        row[u] = _mm256_fmadd_ps(xv, wv, row[u]);
                    }
                }
                i += step;
            }
            for (r, row) in acc.iter().enumerate() {
                let mut sum = row[0];
                for lane in row.iter().skip(1) {
                    sum = _mm256_add_ps(sum, *lane);
                }
                let mut total = horizontal_sum(sum);
                for t in whole..k {
                    total += x[r * k + t] * weights[t];
                }
                out[r][j] = total;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                y[r * n + j] = (0..k)
                    .map(|t| x[r * k + t] as f64 * w[j * k + t] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    fn values(count: usize, seed: u32) -> Vec<f32> {
        (0..count as u32)
            .map(|i| {
                ((i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    /// Every kernel this CPU runs, with one and four weight rows per pass (AVX-512 only).
    fn kernels() -> Vec<(Kernel, usize)> {
        let all = [
            (Kernel::Avx512, 1),
            (Kernel::Avx512, 4),
            (Kernel::Avx2, 1),
            (Kernel::Plain, 1),
        ];
        all.into_iter().filter(|(k, _)| k.available()).collect()
    }

    /// `x · wᵀ` through one kernel (rows in groups of MAX_ROWS, one task), as [m, n].
    fn product_with(
        kernel: Kernel,
        tile: usize,
        x: &[f32],
        m: usize,
        w: &[f32],
        k: usize,
    ) -> Vec<f32> {
        let n = w.len() / k;
        let mut y = vec![0f32; m * n];
        for start in (0..m).step_by(MAX_ROWS) {
            let rows = (m - start).min(MAX_ROWS);
            let mut out: Vec<&mut [f32]> = y[start * n..(start + rows) * n].chunks_mut(n).collect();
            block_with(
                kernel,
                tile,
                &x[start * k..(start + rows) * k],
                rows,
                Run {
                    weights: w,
                    stream: w,
                },
                k,
                &mut out,
            );
        }
        y
    }

    #[test]
    fn every_row_count_and_odd_widths_match_a_plain_product() {
        // Widths with and without a tail after the vector loop, row counts across the kernels'
        // specialisations and beyond one group of MAX_ROWS, and n not a multiple of a task.
        for k in [1, 7, 8, 31, 64, 77, 576] {
            for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 13] {
                let n = 131;
                let x = values(m * k, m as u32);
                let w = values(n * k, 7 + k as u32);
                let ours = matmul_transposed(&x, m, &w, n, k);
                let plain = reference(&x, m, &w, n, k);
                for (i, (a, b)) in ours.iter().zip(&plain).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "m {m} k {k} element {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_kernel_matches_a_plain_product() {
        let kernels = kernels();
        assert!(kernels.contains(&(Kernel::Plain, 1)));
        // n = 7 leaves three rows after the four-row tiles; k = 1 has no full vector step.
        for (kernel, tile) in kernels {
            for k in [1, 15, 16, 17, 100, 1541] {
                for m in [1, 3, 5, 6, 8] {
                    let n = 7;
                    let x = values(m * k, 3 + m as u32);
                    let w = values(n * k, 11 + k as u32);
                    let ours = product_with(kernel, tile, &x, m, &w, k);
                    let plain = reference(&x, m, &w, n, k);
                    for (i, (a, b)) in ours.iter().zip(&plain).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{kernel:?} tile {tile} m {m} k {k} element {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_vector_kernels_and_tiling_give_the_same_bits() {
        let vector: Vec<(Kernel, usize)> = kernels()
            .into_iter()
            .filter(|(k, _)| *k != Kernel::Plain)
            .collect();
        for k in [7, 16, 77, 1536] {
            let (m, n) = (5, 10);
            let x = values(m * k, 2);
            let w = values(n * k, 4);
            let products: Vec<Vec<f32>> = vector
                .iter()
                .map(|&(kernel, tile)| product_with(kernel, tile, &x, m, &w, k))
                .collect();
            for (product, kernel) in products.iter().zip(&vector).skip(1) {
                assert_eq!(
                    product, &products[0],
                    "k {k}: {kernel:?} vs {:?}",
                    vector[0]
                );
            }
        }
    }

    #[test]
    fn the_plain_fallback_agrees_with_the_vector_kernel() {
        let (m, n, k) = (5, 70, 100);
        let x = values(m * k, 3);
        let w = values(n * k, 11);
        let mut plain = vec![0f32; n * m];
        block_plain(&x, m, &w, k, &mut plain.chunks_mut(n).collect::<Vec<_>>());
        let mut vector = vec![0f32; n * m];
        let run = Run {
            weights: &w,
            stream: &w,
        };
        block(&x, m, run, k, &mut vector.chunks_mut(n).collect::<Vec<_>>());
        for (a, b) in plain.iter().zip(&vector) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
        }
    }

    #[test]
    fn a_rows_product_is_bit_identical_whatever_else_is_in_the_batch() {
        // Through the public entry (the CPU's best kernel; k = 1541 with 6 rows is past the
        // tiling threshold, 1 row is not) and through every kernel.
        for k in [77, 1541] {
            let n = 40;
            let w = values(n * k, 5);
            for m in 1..=13 {
                let x = values(m * k, 9);
                let together = matmul_transposed(&x, m, &w, n, k);
                for r in 0..m {
                    let alone = matmul_transposed(&x[r * k..(r + 1) * k], 1, &w, n, k);
                    assert_eq!(
                        &together[r * n..(r + 1) * n],
                        alone.as_slice(),
                        "k {k} m {m} row {r}"
                    );
                }
            }
        }
        for (kernel, tile) in kernels() {
            let (n, k) = (9, 300);
            let w = values(n * k, 6);
            let x = values(6 * k, 1);
            let together = product_with(kernel, tile, &x, 6, &w, k);
            let alone = product_with(kernel, tile, &x[2 * k..3 * k], 1, &w, k);
            assert_eq!(
                &together[2 * n..3 * n],
                alone.as_slice(),
                "{kernel:?} {tile}"
            );
        }
    }

    #[test]
    fn several_weights_in_one_pass_equal_one_product_each() {
        let (m, k) = (5, 96);
        let x = values(m * k, 1);
        let shapes = [70usize, 3, 129];
        let weights: Vec<Vec<f32>> = shapes.iter().map(|&n| values(n * k, n as u32)).collect();
        let slices: Vec<&[f32]> = weights.iter().map(Vec::as_slice).collect();
        let together = matmul_transposed_many(&x, m, &slices, k);
        for ((w, &n), product) in weights.iter().zip(&shapes).zip(&together) {
            assert_eq!(product, &matmul_transposed(&x, m, w, n, k));
        }
    }

    #[test]
    fn runs_cover_the_matrix_and_stream_to_its_end() {
        let k = 3;
        let w = values((2 * ROWS_PER_TASK + 2) * k, 1);
        let runs: Vec<Run> = runs(&w, k).collect();
        assert_eq!(
            runs.iter().map(|r| r.weights.len() / k).collect::<Vec<_>>(),
            vec![ROWS_PER_TASK, ROWS_PER_TASK, 2]
        );
        for (i, run) in runs.iter().enumerate() {
            let at = i * ROWS_PER_TASK * k;
            assert_eq!(run.weights.as_ptr(), w[at..].as_ptr());
            assert_eq!(run.stream.len(), w.len() - at);
        }
        assert_eq!(super::runs(&[], k).count(), 0);
    }

    #[test]
    fn the_fused_swiglu_equals_the_activation_of_the_two_products() {
        let k = 40;
        for m in [1, 5, 7] {
            for n in [1, 63, 64, 130] {
                let x = values(m * k, 2 + m as u32);
                let gate = values(n * k, 5 + n as u32);
                let up = values(n * k, 9 + n as u32);
                let fused = matmul_swiglu(&x, m, &gate, &up, k);
                let apart = crate::kernels::vector_math::silu_times(
                    &matmul_transposed(&x, m, &gate, n, k),
                    &matmul_transposed(&x, m, &up, n, k),
                );
                assert_eq!(fused, apart, "m {m} n {n}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "gate and up must both be [n, k]")]
    fn a_swiglu_with_mismatched_weights_is_refused() {
        matmul_swiglu(&[0.0; 4], 1, &[0.0; 8], &[0.0; 4], 4);
    }

    #[test]
    #[should_panic(expected = "w must be [n, k]")]
    fn mismatched_shapes_are_refused() {
        matmul_transposed(&[0.0; 4], 1, &[0.0; 6], 2, 4);
    }
}
