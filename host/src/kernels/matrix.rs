//! Matrix products on f32 slices through the `gemm` crate (the kernels candle's CPU matmul
//! uses), for the fused training ops: operands are read through their strides, so transposed
//! views and one head's columns of a [tokens, heads · head_dim] matrix need no copy.

use gemm::Parallelism;

type CandleResult<T> = candle_core::Result<T>;

/// A matrix operand: its data and its (row, column) strides in elements.
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub column_stride: usize,
}

/// Whether the `rows × columns` matrix at the start of `o` lies inside its data.
fn reaches(o: &Operand, rows: usize, columns: usize) -> bool {
    rows == 0
        || columns == 0
        || (rows - 1) * o.row_stride + (columns - 1) * o.column_stride < o.data.len()
}

fn parallelism(parallel: bool) -> Parallelism {
    let threads = rayon::current_num_threads();
    if parallel && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// One gemm call: `dst = alpha · dst + a · b` (dst read only when `read_dst`).
///
/// # Safety
/// `dst` must be valid for writes of the [m, n] matrix with rows `dst_row_stride` apart (and
/// initialised where `read_dst`), and `a`, `b` must reach their [m, k] and [k, n] matrices.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_row_stride: usize,
    read_dst: bool,
    alpha: f32,
    a: &Operand,
    b: &Operand,
    parallel: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            read_dst,
            a.data.as_ptr(),
            a.column_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.column_stride as isize,
            b.row_stride as isize,
            alpha,
            1.0,
            false,
            false,
            false,
            parallelism(parallel),
        );
    }
}

/// `a [m, k] · b [k, n]` as a fresh row-major [m, n], on rayon's threads.
pub(crate) fn product(
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
) -> CandleResult<Vec<f32>> {
    // gemm reads through raw pointers: hold the extents it will touch.
    if !reaches(&a, m, k) || !reaches(&b, k, n) {
        candle_core::bail!("linear: operands too short for a [{m}, {k}] · [{k}, {n}] product");
    }
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    if m == 0 || n == 0 {
        return Ok(out);
    }
    // SAFETY: every index gemm reads is inside `a.data` / `b.data` (checked above), and `out`
    // has room for the m × n row-major result. With read_dst false gemm writes every element
    // of dst before reading any (alpha 0 on the first depth block; k = 0 writes zeros), so
    // the buffer is initialised when its length is set.
    unsafe {
        run((m, n, k), out.as_mut_ptr(), n, false, 0.0, &a, &b, true);
        out.set_len(m * n);
    }
    Ok(out)
}

/// `dst = a [m, k] · b [k, n]`, or `dst += a · b` with `accumulate`, for `dst` an [m, n]
/// matrix with rows `dst_row_stride` apart (columns adjacent). `parallel` splits the product
/// over rayon's threads; callers that already run one product per task pass false.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product_into(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_row_stride: usize,
    a: Operand,
    b: Operand,
    accumulate: bool,
    parallel: bool,
) -> CandleResult<()> {
    let target = Operand {
        data: dst,
        row_stride: dst_row_stride,
        column_stride: 1,
    };
    if !reaches(&a, m, k) || !reaches(&b, k, n) || !reaches(&target, m, n) {
        candle_core::bail!("operands too short for a [{m}, {k}] · [{k}, {n}] product");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // SAFETY: every index gemm reads or writes is inside `a.data`, `b.data` or `dst` (checked
    // above), and `dst` is borrowed mutably for the call. Without accumulate gemm overwrites
    // dst (read_dst false); with it, dst = 1 · dst + 1 · a · b.
    unsafe {
        run(
            (m, n, k),
            dst.as_mut_ptr(),
            dst_row_stride,
            accumulate,
            if accumulate { 1.0 } else { 0.0 },
            &a,
            &b,
            parallel,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain triple loop over strided operands.
    fn plain(m: usize, n: usize, k: usize, a: &Operand, b: &Operand) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|l| {
                        a.data[i * a.row_stride + l * a.column_stride]
                            * b.data[l * b.row_stride + j * b.column_stride]
                    })
                    .sum();
            }
        }
        out
    }

    fn values(count: usize, seed: usize) -> Vec<f32> {
        (0..count)
            .map(|i| ((i * 37 + seed * 11) % 23) as f32 / 7.0 - 1.5)
            .collect()
    }

    #[test]
    fn strided_products_overwrite_or_accumulate_into_strided_rows() {
        let (m, n, k) = (5, 3, 4);
        // a: every other column of a [5, 8] matrix; b: the transpose of a [3, 4] matrix.
        let a_data = values(5 * 8, 1);
        let b_data = values(3 * 4, 2);
        let a = || Operand {
            data: &a_data,
            row_stride: 8,
            column_stride: 2,
        };
        let b = || Operand {
            data: &b_data,
            row_stride: 1,
            column_stride: 4,
        };
        let expected = plain(m, n, k, &a(), &b());
        assert_eq!(product(m, n, k, a(), b()).unwrap().len(), m * n);
        for (got, want) in product(m, n, k, a(), b()).unwrap().iter().zip(&expected) {
            assert!((got - want).abs() < 1e-5);
        }
        // Into columns 2..5 of a [5, 6] buffer; the other columns stay as they were.
        for parallel in [false, true] {
            let mut dst = vec![7f32; m * 6];
            product_into(m, n, k, &mut dst[2..], 6, a(), b(), false, parallel).unwrap();
            product_into(m, n, k, &mut dst[2..], 6, a(), b(), true, parallel).unwrap();
            for i in 0..m {
                assert_eq!(&dst[i * 6..i * 6 + 2], &[7.0, 7.0]);
                assert_eq!(dst[i * 6 + 5], 7.0);
                for j in 0..n {
                    let want = 2.0 * expected[i * n + j];
                    assert!((dst[i * 6 + 2 + j] - want).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn operands_too_short_are_refused() {
        let data = vec![1f32; 6];
        let a = Operand {
            data: &data,
            row_stride: 3,
            column_stride: 1,
        };
        let b = Operand {
            data: &data,
            row_stride: 3,
            column_stride: 1,
        };
        let mut dst = vec![0f32; 6];
        // [2, 3] · [3, 3] needs 9 elements of b (a and dst are long enough).
        assert!(product_into(2, 3, 3, &mut dst, 3, a, b, false, false).is_err());
    }
}
