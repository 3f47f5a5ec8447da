//! Element-wise maths over f32 slices, written so the compiler vectorises it: e^x for x ≤ 0,
//! erf, GELU and a row softmax, with no calls into libm (whose scalar `expf`/`roundf` stop a
//! loop from vectorising). Each slice function runs an AVX2 build of the same loop where the CPU
//! has AVX2 — the same operations in the same order, only eight lanes wide (no FMA contraction),
//! so both builds give bit-identical results.

/// 1.5 · 2²³: adding it to an f32 of magnitude below 2²² rounds it to an integer (ties to even)
/// and leaves that integer in the low mantissa bits.
const ROUNDING: f32 = 12_582_912.0;

/// Whether this CPU runs the AVX2 builds.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Runs `$body` (a block using only safe code) compiled once for AVX2 and once for the
/// baseline, picking the AVX2 build at run time where the CPU has it. Used as a whole function
/// body: `with_avx2!(run(x: &mut [f32]) { ... })`.
macro_rules! with_avx2 {
    ($name:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)? $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn wide($($arg: $ty),*) $(-> $ret)? $body
        fn narrow($($arg: $ty),*) $(-> $ret)? $body
        #[cfg(target_arch = "x86_64")]
        if $crate::kernels::vector_math::has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { wide($($arg),*) };
        }
        narrow($($arg),*)
    }};
}
pub(crate) use with_avx2;

/// e^x for x ≤ 0 (relative error < 3e-7; 0 below −87, where e^x would be subnormal — so a
/// masked score of −1e9 or −∞ gets exactly no weight): x = n·ln2 + r with |r| ≤ ln2/2, e^r by
/// its Taylor polynomial of degree 6, 2ⁿ through the exponent bits.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let underflow = x < -87.0;
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUNDING;
    let n = shifted - ROUNDING;
    // ln 2 in two parts (Cody–Waite) so n·ln2 is exact enough in f32.
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n sits in the low mantissa bits of `shifted`; n + 127 ≥ 1 is 2ⁿ's biased exponent.
    let exponent = shifted
        .to_bits()
        .wrapping_sub(ROUNDING.to_bits())
        .wrapping_add(127);
    let e = f32::from_bits(exponent << 23) * p;
    if underflow { 0.0 } else { e }
}

/// erf with |error| < 1e-6 in f32 (Abramowitz and Stegun 7.1.26: 1.5e-7, plus f32 rounding).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let polynomial = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - polynomial * exp_nonpositive(-a * a)).copysign(x)
}

/// Exact-form GELU, x/2 · (1 + erf(x/√2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `values[i] = gelu(values[i] + bias[i % bias.len()])`: a bias row added to every row of a
/// row-major matrix, then GELU. `bias` empty means no bias.
pub fn bias_gelu_in_place(values: &mut [f32], bias: &[f32]) {
    with_avx2!(run(values: &mut [f32], bias: &[f32]) {
        if bias.is_empty() {
            for x in values.iter_mut() {
                *x = gelu(*x);
            }
        } else {
            for row in values.chunks_mut(bias.len()) {
                for (x, b) in row.iter_mut().zip(bias) {
                    *x = gelu(*x + b);
                }
            }
        }
    })
}

/// `values[i] = (values[i] + bias[i % bias.len()]) + residual[i]`: a dense layer's bias and
/// the residual connection in one pass.
pub fn bias_residual_in_place(values: &mut [f32], bias: &[f32], residual: &[f32]) {
    assert_eq!(values.len(), residual.len(), "residual must match");
    assert!(
        !bias.is_empty() && values.len().is_multiple_of(bias.len()),
        "bias must divide the rows"
    );
    with_avx2!(run(values: &mut [f32], bias: &[f32], residual: &[f32]) {
        for (row, residual_row) in values
            .chunks_mut(bias.len())
            .zip(residual.chunks(bias.len()))
        {
            for ((x, b), r) in row.iter_mut().zip(bias).zip(residual_row) {
                *x = (*x + b) + r;
            }
        }
    })
}

/// Lanes of the partial maxima and sums (so reductions vectorise without reassociating a
/// single running value).
const LANES: usize = 8;

/// Softmax of `row + bias` in place (`bias` the same length as `row`: 0 for real keys, a large
/// negative number such as −1e30 for padding, which then gets probability 0). Each row needs at
/// least one key that is not masked.
pub fn softmax_with_bias_in_place(row: &mut [f32], bias: &[f32]) {
    assert_eq!(row.len(), bias.len(), "bias must match the row");
    with_avx2!(run(row: &mut [f32], bias: &[f32]) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += b;
        }
        let max = max(row);
        let inverse = 1.0 / exp_in_place(row, max);
        for x in row.iter_mut() {
            *x *= inverse;
        }
    })
}

/// SwiGLU's activation, `gate[i] · σ(gate[i]) · up[i]` (silu(gate) times up), with e^x from
/// [`exp_nonpositive`] of −|gate| so that it never overflows.
pub fn silu_times(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len(), "gate and up must match");
    let mut out = vec![0f32; gate.len()];
    silu_times_into(gate, up, &mut out);
    out
}

/// [`silu_times`] into `out` (of the same length).
pub fn silu_times_into(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(
        gate.len() == up.len() && out.len() == gate.len(),
        "gate, up and out must match"
    );
    with_avx2!(run(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            // e = e^−|g| ≤ 1: σ(g) = 1 / (1 + e) for g ≥ 0, e / (1 + e) below.
            let e = exp_nonpositive(-g.abs());
            let numerator = if g >= 0.0 { 1.0 } else { e };
            *o = g * numerator / (1.0 + e) * u;
        }
    })
}

/// Sum of `values`, in eight lanes (vectorisable).
pub fn sum(values: &[f32]) -> f32 {
    with_avx2!(run(values: &[f32]) -> f32 {
        let mut sums = [0f32; LANES];
        let mut chunks = values.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (s, &x) in sums.iter_mut().zip(chunk) {
                *s += x;
            }
        }
        sums.iter().chain(chunks.remainder()).fold(0.0, |total, &x| total + x)
    })
}

/// Largest element of `values` (−∞ when empty); NaNs are skipped.
pub fn max(values: &[f32]) -> f32 {
    with_avx2!(run(values: &[f32]) -> f32 {
        let mut maxima = [f32::NEG_INFINITY; LANES];
        let mut chunks = values.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (m, &x) in maxima.iter_mut().zip(chunk) {
                *m = if x > *m { x } else { *m };
            }
        }
        chunks
            .remainder()
            .iter()
            .chain(&maxima)
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
    })
}

/// `out[i] = e^(values[i]·scale − shift)` for `values[i]·scale ≤ shift` (e.g. `shift` the
/// largest `values[i]·scale`); returns the sum of `out`.
pub fn scaled_exp(values: &[f32], scale: f32, shift: f32, out: &mut [f32]) -> f32 {
    assert_eq!(values.len(), out.len(), "output must match the input");
    with_avx2!(run(values: &[f32], scale: f32, shift: f32, out: &mut [f32]) -> f32 {
        let mut sums = [0f32; LANES];
        let mut inputs = values.chunks_exact(LANES);
        let mut outputs = out.chunks_exact_mut(LANES);
        for (input, output) in (&mut inputs).zip(&mut outputs) {
            for ((s, o), &x) in sums.iter_mut().zip(output).zip(input) {
                *o = exp_nonpositive(x * scale - shift);
                *s += *o;
            }
        }
        let mut sum = 0f32;
        for (o, &x) in outputs.into_remainder().iter_mut().zip(inputs.remainder()) {
            *o = exp_nonpositive(x * scale - shift);
            sum += *o;
        }
        sums.iter().fold(sum, |total, s| total + s)
    })
}

/// `values[i] ← e^(values[i] − shift)` for `values[i] ≤ shift`; returns the sum.
pub fn exp_in_place(values: &mut [f32], shift: f32) -> f32 {
    with_avx2!(run(values: &mut [f32], shift: f32) -> f32 {
        let mut sums = [0f32; LANES];
        let mut chunks = values.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (s, x) in sums.iter_mut().zip(chunk) {
                *x = exp_nonpositive(*x - shift);
                *s += *x;
            }
        }
        let mut sum = 0f32;
        for x in chunks.into_remainder() {
            *x = exp_nonpositive(*x - shift);
            sum += *x;
        }
        sums.iter().fold(sum, |total, s| total + s)
    })
}

/// Log-softmax of one row of logits: `logits[i] − max − ln Σ e^(logits[j] − max)`.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let largest = max(logits);
    let mut exps = vec![0f32; logits.len()];
    let normaliser = largest + scaled_exp(logits, 1.0, largest, &mut exps).ln();
    // The buffer is reused for the result.
    for (out, &x) in exps.iter_mut().zip(logits) {
        *out = x - normaliser;
    }
    exps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_f64(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }

    #[test]
    fn the_exponential_is_within_3e_7_relative_down_to_minus_87() {
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (fast, exact) = (exp_nonpositive(x), (x as f64).exp());
            assert!(
                ((fast as f64 - exact) / exact).abs() < 3e-7,
                "{x}: {fast} vs {exact}"
            );
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        // Below the range it is exactly 0, never NaN or negative.
        for x in [-87.5f32, -1e3, -1e30, f32::NEG_INFINITY] {
            assert_eq!(exp_nonpositive(x), 0.0, "{x}");
        }
    }

    #[test]
    fn erf_is_within_1e_6_of_an_f64_erf() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf(x) as f64 - erf_f64(x as f64)).abs());
        }
        assert!(worst < 1e-6, "{worst}");
        assert!(erf(0.0).abs() < 1e-7 && erf(-1.0) == -erf(1.0));
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    fn values(count: usize) -> Vec<f32> {
        (0..count)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 16) as f32 / 4096.0 - 8.0)
            .collect()
    }

    #[test]
    fn bias_and_gelu_match_the_scalar_definition_bit_for_bit() {
        let bias = values(37);
        for len in [0, 1, 37, 37 * 9] {
            let input = values(len).iter().map(|x| x * 0.5).collect::<Vec<_>>();
            let mut fast = input.clone();
            bias_gelu_in_place(&mut fast, &bias);
            for (i, (&got, &x)) in fast.iter().zip(&input).enumerate() {
                assert_eq!(got, gelu(x + bias[i % 37]), "element {i}");
                let exact = 0.5
                    * (x + bias[i % 37]) as f64
                    * (1.0 + erf_f64((x + bias[i % 37]) as f64 / std::f64::consts::SQRT_2));
                assert!((got as f64 - exact).abs() < 1e-5 * (1.0 + exact.abs()));
            }
        }
        let mut plain = values(20);
        let expected: Vec<f32> = plain.iter().map(|&x| gelu(x)).collect();
        bias_gelu_in_place(&mut plain, &[]);
        assert_eq!(plain, expected);
    }

    #[test]
    fn bias_and_residual_add_in_the_composed_order() {
        let (bias, residual) = (values(24), values(24 * 5));
        let mut x: Vec<f32> = values(24 * 5).iter().rev().copied().collect();
        let expected: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| (v + bias[i % 24]) + residual[i])
            .collect();
        bias_residual_in_place(&mut x, &bias, &residual);
        assert_eq!(x, expected);
    }

    #[test]
    #[should_panic(expected = "bias must divide the rows")]
    fn a_bias_that_does_not_divide_the_rows_is_refused() {
        bias_residual_in_place(&mut [0.0; 10], &[0.0; 3], &[0.0; 10]);
    }

    #[test]
    fn softmax_with_bias_matches_an_f64_softmax_and_masks_padding() {
        for len in [1usize, 7, 8, 9, 64, 131] {
            let scores: Vec<f32> = values(len).iter().map(|x| x * 1.7).collect();
            // Every third key is padding.
            let bias: Vec<f32> = (0..len)
                .map(|i| if i % 3 == 2 { -1e30 } else { 0.0 })
                .collect();
            let mut row = scores.clone();
            softmax_with_bias_in_place(&mut row, &bias);
            let max = scores
                .iter()
                .zip(&bias)
                .filter(|(_, b)| **b == 0.0)
                .map(|(s, _)| *s as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = scores
                .iter()
                .zip(&bias)
                .filter(|(_, b)| **b == 0.0)
                .map(|(s, _)| (*s as f64 - max).exp())
                .sum();
            for (i, (&p, &s)) in row.iter().zip(&scores).enumerate() {
                if i % 3 == 2 {
                    assert_eq!(p, 0.0, "padding key {i} of {len}");
                } else {
                    let expected = (s as f64 - max).exp() / total;
                    assert!(
                        (p as f64 - expected).abs() < 1e-6,
                        "{len} {i}: {p} vs {expected}"
                    );
                }
            }
            assert!((row.iter().map(|&p| p as f64).sum::<f64>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn log_softmax_matches_an_f64_log_softmax() {
        for len in [1usize, 5, 8, 17, 49_152] {
            let logits: Vec<f32> = values(len).iter().map(|x| x * 2.5).collect();
            let fast = log_softmax(&logits);
            let top = logits
                .iter()
                .map(|&x| x as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let lse = top
                + logits
                    .iter()
                    .map(|&x| (x as f64 - top).exp())
                    .sum::<f64>()
                    .ln();
            for (i, (&got, &x)) in fast.iter().zip(&logits).enumerate() {
                assert!((got as f64 - (x as f64 - lse)).abs() < 2e-5, "{len} {i}");
            }
        }
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(max(&[3.0, f32::NAN, 7.0, -1.0]), 7.0);
    }

    #[test]
    fn scaled_exponentials_sum_to_what_they_hold() {
        let input: Vec<f32> = values(29);
        let top = max(&input) * 0.5;
        let mut out = vec![0f32; 29];
        let sum = scaled_exp(&input, 0.5, top, &mut out);
        let total: f64 = out.iter().map(|&e| e as f64).sum();
        assert!((sum as f64 - total).abs() < 1e-5 * total);
        for (&e, &x) in out.iter().zip(&input) {
            let exact = ((x * 0.5 - top) as f64).exp();
            assert!((e as f64 - exact).abs() <= 3e-7 * exact + 1e-38);
        }
    }

    #[test]
    fn sums_match_an_f64_sum_for_every_remainder() {
        for n in [0, 1, 7, 8, 9, 29, 256, 1001] {
            let input: Vec<f32> = values(n);
            let exact: f64 = input.iter().map(|&x| x as f64).sum();
            let ours = sum(&input) as f64;
            assert!(
                (ours - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                "n {n}: {ours} vs {exact}"
            );
        }
    }

    #[test]
    fn silu_times_up_matches_an_f64_silu() {
        let gate: Vec<f32> = values(1001).iter().map(|x| x * 12.0).collect();
        let up: Vec<f32> = values(1001).iter().rev().copied().collect();
        let ours = silu_times(&gate, &up);
        for ((&o, &g), &u) in ours.iter().zip(&gate).zip(&up) {
            let exact = g as f64 / (1.0 + (-g as f64).exp()) * u as f64;
            assert!(
                (o as f64 - exact).abs() <= 1e-6 * (1.0 + exact.abs()),
                "{g} {u}: {o} vs {exact}"
            );
        }
        // Far out on both sides: no overflow, no NaN.
        assert_eq!(silu_times(&[200.0, -200.0], &[1.0, 1.0]), vec![200.0, 0.0]);
    }
}
