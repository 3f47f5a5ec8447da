//! The int8 and f32 vector products of the retrieval scan: symmetric per-vector quantisation to
//! int8 codes, integer dot products of a code row with a widened query (AVX2 where the CPU has
//! it), an f32 dot product summed in eight lanes, and a cache prefetch hint.

/// Symmetric per-vector quantisation: `x ≈ scale · code`, codes in [-127, 127].
pub fn quantize(vector: &[f32], codes: &mut [i8]) -> f32 {
    let largest = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
    for (code, x) in codes.iter_mut().zip(vector) {
        *code = (x / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// A query's codes widened to i16, the form the vector kernel multiplies with.
pub fn widened_codes(query: &[f32]) -> Vec<i16> {
    let mut codes = vec![0i8; query.len()];
    quantize(query, &mut codes);
    codes.into_iter().map(i16::from).collect()
}

/// Integer dot product of a stored code row with a widened query of the same length.
pub fn dot(row: &[i8], query: &[i16]) -> i32 {
    assert_eq!(
        query.len(),
        row.len(),
        "queries must be as long as the codes"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above); lengths checked above.
        return unsafe { dot_avx2(row, query) };
    }
    row.iter()
        .zip(query)
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(row: &[i8], query: &[i16]) -> i32 {
    use std::arch::x86_64::*;
    let n = row.len();
    let mut sum = _mm256_setzero_si256();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n, the length of the row and of the query.
        let codes = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(row.as_ptr().add(i).cast()) });
        let values = unsafe { _mm256_loadu_si256(query.as_ptr().add(i).cast()) };
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(codes, values));
        i += 16;
    }
    let halves = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let pairs = _mm_add_epi32(halves, _mm_shuffle_epi32(halves, 0b01_00_11_10));
    let four = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0b10_11_00_01));
    _mm_cvtsi128_si32(four)
        + row[i..]
            .iter()
            .zip(&query[i..])
            .map(|(&x, &y)| x as i32 * y as i32)
            .sum::<i32>()
}

/// Asks the CPU to bring `values` into its caches (a hint: no effect on results).
pub fn prefetch<T>(values: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(64 / std::mem::size_of::<T>().max(1)) {
        let address = line.as_ptr().cast::<i8>();
        // SAFETY: a prefetch never faults, and the address lies inside `values`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address) };
    }
}

/// Dot product in f32, summed in eight lanes (so the compiler can keep them in one vector
/// register instead of adding one product at a time).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_blocks, b_blocks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_blocks
        .remainder()
        .iter()
        .zip(b_blocks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_blocks.zip(b_blocks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reconstruct_within_half_a_step() {
        let vector = [0.5f32, -0.25, 0.125, 0.0, -0.5];
        let mut codes = [0i8; 5];
        let scale = quantize(&vector, &mut codes);
        assert_eq!(codes, [127, -64, 32, 0, -127]);
        for (x, c) in vector.iter().zip(codes) {
            assert!((x - scale * c as f32).abs() <= scale / 2.0);
        }
    }

    #[test]
    fn the_simd_dot_products_equal_the_plain_ones_at_every_length() {
        let a: Vec<i8> = (0..100).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let q: Vec<i16> = (0..100)
            .map(|i| ((i * 91 + 5) % 255 - 127) as i16)
            .collect();
        for n in 0..100 {
            let plain: i32 = a[..n]
                .iter()
                .zip(&q[..n])
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            assert_eq!(dot(&a[..n], &q[..n]), plain, "length {n}");
        }
    }

    #[test]
    fn the_f32_dot_product_sums_every_element() {
        for n in [0, 1, 7, 8, 9, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(dot_f32(&a, &b), plain, "length {n}");
        }
    }

    #[test]
    #[should_panic(expected = "queries must be as long as the codes")]
    fn a_query_of_another_length_is_refused() {
        dot(&[1i8; 16], &[1i16; 15]);
    }
}
