//! Matrix products for the decode path, where only a few rows (one per sequence in the batch)
//! meet a large weight matrix: `y[m, n] = x[m, k] · w[n, k]ᵀ` with m ≤ a handful.
//!
//! A general GEMM packs and tiles for large m; at m = 1…8 the product is bound by reading the
//! weights, so this kernel streams every weight row exactly once, keeps the few input rows in
//! L1 and multiplies each weight row with all of them while it is in registers (AVX2 + FMA
//! where the CPU has them). The output rows are split over rayon's threads. Reading the weights
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
        // Computed weight-row-major ([n, rows]) so that every task owns one contiguous chunk.
        let mut transposed: Vec<Vec<f32>> = weights
            .iter()
            .map(|w| vec![0f32; (w.len() / k) * rows])
            .collect();
        let mut tasks: Vec<(&[f32], &mut [f32])> = Vec::new();
        for (w, yt) in weights.iter().zip(transposed.iter_mut()) {
            for (task, out) in yt.chunks_mut(ROWS_PER_TASK * rows).enumerate() {
                let first = task * ROWS_PER_TASK;
                let count = out.len() / rows;
                tasks.push((&w[first * k..(first + count) * k], out));
            }
        }
        tasks
            .into_par_iter()
            .for_each(|(w, out)| block(xs, rows, w, k, out));
        for (y, yt) in products.iter_mut().zip(&transposed) {
            let n = yt.len() / rows;
            for j in 0..n {
                for r in 0..rows {
                    y[(start + r) * n + j] = yt[j * rows + r];
                }
            }
        }
    }
    products
}

/// out[j * rows + r] = dot(x[r], w[j]) for every weight row j of `w`.
fn block(x: &[f32], rows: usize, w: &[f32], k: usize, out: &mut [f32]) {
    // The vector kernel reads x and w without bounds checks: hold the shapes it relies on.
    assert!(
        (1..=MAX_ROWS).contains(&rows),
        "1..={MAX_ROWS} rows per pass"
    );
    assert!(
        x.len() == rows * k
            && w.len().is_multiple_of(k.max(1))
            && out.len() == w.len() / k.max(1) * rows
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe {
            match rows {
                1 => avx::block::<1>(x, w, k, out),
                2 => avx::block::<2>(x, w, k, out),
                3 => avx::block::<3>(x, w, k, out),
                4 => avx::block::<4>(x, w, k, out),
                5 => avx::block::<5>(x, w, k, out),
                6 => avx::block::<6>(x, w, k, out),
                _ => unreachable!("rows checked above"),
            }
        }
        return;
    }
    block_plain(x, rows, w, k, out);
}

fn block_plain(x: &[f32], rows: usize, w: &[f32], k: usize, out: &mut [f32]) {
    for (j, weights) in w.chunks_exact(k).enumerate() {
        for r in 0..rows {
            let input = &x[r * k..(r + 1) * k];
            out[j * rows + r] = input.iter().zip(weights).map(|(a, b)| a * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
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
    pub unsafe fn block<const M: usize>(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
        let step = 8 * U;
        let whole = k / step * step;
        let xp = x.as_ptr();
        for (j, weights) in w.chunks_exact(k).enumerate() {
            let wp = weights.as_ptr();
            let mut acc = [[_mm256_setzero_ps(); U]; M];
            let mut i = 0;
            while i < whole {
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
                out[j * M + r] = total;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sum(v: __m256) -> f32 {
        let low = _mm256_castps256_ps128(v);
        let high = _mm256_extractf128_ps(v, 1);
        let quad = _mm_add_ps(low, high);
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        let single = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
        _mm_cvtss_f32(single)
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
    fn the_plain_fallback_agrees_with_the_vector_kernel() {
        let (m, n, k) = (5, 70, 100);
        let x = values(m * k, 3);
        let w = values(n * k, 11);
        let mut plain = vec![0f32; n * m];
        block_plain(&x, m, &w, k, &mut plain);
        let mut vector = vec![0f32; n * m];
        block(&x, m, &w, k, &mut vector);
        for (a, b) in plain.iter().zip(&vector) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
        }
    }

    #[test]
    fn a_rows_product_is_bit_identical_whatever_else_is_in_the_batch() {
        let (n, k) = (40, 77);
        let w = values(n * k, 5);
        for m in 1..=13 {
            let x = values(m * k, 9);
            let together = matmul_transposed(&x, m, &w, n, k);
            for r in 0..m {
                let alone = matmul_transposed(&x[r * k..(r + 1) * k], 1, &w, n, k);
                assert_eq!(
                    &together[r * n..(r + 1) * n],
                    alone.as_slice(),
                    "m {m} row {r}"
                );
            }
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
    #[should_panic(expected = "w must be [n, k]")]
    fn mismatched_shapes_are_refused() {
        matmul_transposed(&[0.0; 4], 1, &[0.0; 6], 2, 4);
    }
}
