//! Brute-force search over int8 codes: every stored vector is compared with the query as 8-bit
//! integers (a quarter of f32's memory traffic; AVX2 where the CPU has it), and the best
//! candidates are re-ranked with their f32 vectors, so returned scores are exact cosines and the
//! ranking is exact unless a true neighbour falls outside the candidate pool.

use super::embedder::Embeddings;

/// Candidates re-ranked per query: `k` × this, at least [`MIN_CANDIDATES`].
const CANDIDATES_PER_RESULT: usize = 8;
const MIN_CANDIDATES: usize = 64;

/// Vectors with their int8 codes.
pub struct QuantizedScan {
    keys: Vec<u32>,
    dims: usize,
    vectors: Vec<f32>,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// Symmetric per-vector quantisation: `x ≈ scale · code`, codes in [-127, 127].
fn quantize(vector: &[f32], codes: &mut [i8]) -> f32 {
    let largest = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
    for (code, x) in codes.iter_mut().zip(vector) {
        *code = (x / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Integer dot product of two equally long code vectors.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { dot_i8_avx2(a, b) };
    }
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let mut sum = _mm256_setzero_si256();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n, so both 16-byte loads stay inside the slices.
        let (x, y) = unsafe {
            (
                _mm_loadu_si128(a.as_ptr().add(i).cast()),
                _mm_loadu_si128(b.as_ptr().add(i).cast()),
            )
        };
        // Widen to i16, multiply, and add neighbouring products into i32 lanes.
        let products = _mm256_madd_epi16(_mm256_cvtepi8_epi16(x), _mm256_cvtepi8_epi16(y));
        sum = _mm256_add_epi32(sum, products);
        i += 16;
    }
    let halves = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let pairs = _mm_add_epi32(halves, _mm_shuffle_epi32(halves, 0b01_00_11_10));
    let total = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0b10_11_00_01));
    let mut result = _mm_cvtsi128_si32(total);
    while i < n {
        result += a[i] as i32 * b[i] as i32;
        i += 1;
    }
    result
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl QuantizedScan {
    /// Quantises `vectors` (row `i` has key `keys[i]`).
    pub fn new(keys: Vec<u32>, vectors: Embeddings) -> QuantizedScan {
        let dims = vectors.dims.max(1);
        let mut codes = vec![0i8; vectors.data.len()];
        let scales = vectors
            .data
            .chunks(dims)
            .zip(codes.chunks_mut(dims))
            .map(|(vector, codes)| quantize(vector, codes))
            .collect();
        QuantizedScan {
            keys,
            dims,
            vectors: vectors.data,
            codes,
            scales,
        }
    }

    /// The `k` best (key, cosine) of each query, best first.
    pub fn search(&self, queries: &Embeddings, k: usize) -> Vec<Vec<(u32, f32)>> {
        let rows = queries.len();
        if rows <= 1 {
            return (0..rows)
                .map(|i| self.search_one(queries.row(i), k))
                .collect();
        }
        // Queries are independent: two lanes share them.
        let per_lane = rows.div_ceil(2);
        let mut results: Vec<Vec<(u32, f32)>> = vec![Vec::new(); rows];
        std::thread::scope(|scope| {
            for (lane, chunk) in results.chunks_mut(per_lane).enumerate() {
                scope.spawn(move || {
                    for (offset, slot) in chunk.iter_mut().enumerate() {
                        *slot = self.search_one(queries.row(lane * per_lane + offset), k);
                    }
                });
            }
        });
        results
    }

    fn search_one(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let n = self.keys.len();
        if n == 0 || k == 0 {
            return Vec::new();
        }
        let mut query_codes = vec![0i8; self.dims];
        quantize(query, &mut query_codes);
        let mut approximate: Vec<(f32, u32)> = self
            .codes
            .chunks(self.dims)
            .zip(&self.scales)
            .enumerate()
            .map(|(i, (codes, scale))| (dot_i8(codes, &query_codes) as f32 * scale, i as u32))
            .collect();
        let pool = (k * CANDIDATES_PER_RESULT).max(MIN_CANDIDATES).min(n);
        if pool < n {
            approximate.select_nth_unstable_by(pool, |a, b| b.0.total_cmp(&a.0));
            approximate.truncate(pool);
        }
        let mut exact: Vec<(f32, usize)> = approximate
            .into_iter()
            .map(|(_, i)| {
                let i = i as usize;
                let row = &self.vectors[i * self.dims..(i + 1) * self.dims];
                (dot_f32(row, query), i)
            })
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        exact
            .into_iter()
            .take(k)
            .map(|(score, i)| (self.keys[i], score))
            .collect()
    }
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
    fn the_simd_dot_product_equals_the_plain_one_at_every_length() {
        let a: Vec<i8> = (0..100).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..100).map(|i| ((i * 91 + 5) % 255 - 127) as i8).collect();
        for n in 0..100 {
            let plain: i32 = a[..n]
                .iter()
                .zip(&b[..n])
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            assert_eq!(dot_i8(&a[..n], &b[..n]), plain, "length {n}");
        }
    }

    #[test]
    fn the_scan_finds_the_same_neighbours_as_a_full_f32_comparison() {
        // 3000 pseudo-random unit vectors of 48 dims and 40 random queries, one and many at once.
        let (n, dims) = (3000, 48);
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut unit = |count: usize| -> Vec<f32> {
            let mut data: Vec<f32> = (0..count * dims).map(|_| next()).collect();
            for row in data.chunks_mut(dims) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                row.iter_mut().for_each(|x| *x /= norm);
            }
            data
        };
        let data = unit(n);
        let queries = Embeddings {
            dims,
            data: unit(40),
        };
        let keys = (0..n as u32).map(|i| i * 3).collect();
        let scan = QuantizedScan::new(
            keys,
            Embeddings {
                dims,
                data: data.clone(),
            },
        );
        let together = scan.search(&queries, 10);
        for (q, hits) in together.iter().enumerate() {
            let mut truth: Vec<(f32, u32)> = data
                .chunks(dims)
                .enumerate()
                .map(|(i, v)| (dot_f32(v, queries.row(q)), i as u32 * 3))
                .collect();
            truth.sort_by(|a, b| b.0.total_cmp(&a.0));
            let expected: Vec<u32> = truth.iter().take(10).map(|t| t.1).collect();
            let got: Vec<u32> = hits.iter().map(|h| h.0).collect();
            assert_eq!(got, expected);
            assert!(
                (hits[0].1 - truth[0].0).abs() < 1e-6,
                "scores are exact cosines"
            );
            let alone = scan.search(
                &Embeddings {
                    dims,
                    data: queries.row(q).to_vec(),
                },
                10,
            );
            assert_eq!(&alone[0], hits);
        }
    }
}
