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

/// Queries compared with the codes in one pass over them: each stored code row is loaded and
/// widened once for all of them.
const QUERIES_PER_PASS: usize = 4;

/// A query's codes widened to i16, the form the vector kernel multiplies with.
fn widened_codes(query: &[f32]) -> Vec<i16> {
    let mut codes = vec![0i8; query.len()];
    quantize(query, &mut codes);
    codes.into_iter().map(i16::from).collect()
}

/// Integer dot products of one stored code row with `Q` widened queries of the same length.
fn dots<const Q: usize>(row: &[i8], queries: [&[i16]; Q]) -> [i32; Q] {
    assert!(
        queries.iter().all(|q| q.len() == row.len()),
        "queries must be as long as the codes"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above); lengths checked above.
        return unsafe { dots_avx2(row, queries) };
    }
    queries.map(|q| row.iter().zip(q).map(|(&x, &y)| x as i32 * y as i32).sum())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dots_avx2<const Q: usize>(row: &[i8], queries: [&[i16]; Q]) -> [i32; Q] {
    use std::arch::x86_64::*;
    let n = row.len();
    let mut sums = [_mm256_setzero_si256(); Q];
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n, the length of the row and of every query.
        let codes = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(row.as_ptr().add(i).cast()) });
        for (sum, query) in sums.iter_mut().zip(&queries) {
            let values = unsafe { _mm256_loadu_si256(query.as_ptr().add(i).cast()) };
            *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(codes, values));
        }
        i += 16;
    }
    let mut totals = [0i32; Q];
    for ((total, sum), query) in totals.iter_mut().zip(sums).zip(&queries) {
        let halves = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let pairs = _mm_add_epi32(halves, _mm_shuffle_epi32(halves, 0b01_00_11_10));
        let four = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0b10_11_00_01));
        *total = _mm_cvtsi128_si32(four)
            + row[i..]
                .iter()
                .zip(&query[i..])
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum::<i32>();
    }
    totals
}

/// Exact dot product in f32.
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

    /// Dimensions of the stored vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The `k` best (key, cosine) of each query, best first. Several queries are split over two
    /// threads, each comparing up to [`QUERIES_PER_PASS`] of them with the codes in one pass;
    /// the results equal one query at a time.
    pub fn search(&self, queries: &Embeddings, k: usize) -> Vec<Vec<(u32, f32)>> {
        let rows = queries.len();
        let rows_of = |range: std::ops::Range<usize>| -> Vec<&[f32]> {
            range.map(|i| queries.row(i)).collect()
        };
        if rows <= QUERIES_PER_PASS {
            return self.search_group(&rows_of(0..rows), k);
        }
        // Two lanes, each taking its queries a group at a time.
        let per_lane = rows.div_ceil(2);
        let mut results: Vec<Vec<(u32, f32)>> = vec![Vec::new(); rows];
        std::thread::scope(|scope| {
            for (lane, chunk) in results.chunks_mut(per_lane).enumerate() {
                let rows_of = &rows_of;
                scope.spawn(move || {
                    let first = lane * per_lane;
                    for (group, slots) in chunk.chunks_mut(QUERIES_PER_PASS).enumerate() {
                        let start = first + group * QUERIES_PER_PASS;
                        let found = self.search_group(&rows_of(start..start + slots.len()), k);
                        for (slot, hits) in slots.iter_mut().zip(found) {
                            *slot = hits;
                        }
                    }
                });
            }
        });
        results
    }

    /// Up to [`QUERIES_PER_PASS`] queries in one pass over the codes, then each query's
    /// candidates re-ranked exactly.
    fn search_group(&self, queries: &[&[f32]], k: usize) -> Vec<Vec<(u32, f32)>> {
        let n = self.keys.len();
        if n == 0 || k == 0 {
            return vec![Vec::new(); queries.len()];
        }
        let widened: Vec<Vec<i16>> = queries.iter().map(|q| widened_codes(q)).collect();
        let mut approximate: Vec<Vec<(f32, u32)>> =
            queries.iter().map(|_| Vec::with_capacity(n)).collect();
        match queries.len() {
            0 => {}
            1 => self.approximate_scores::<1>(&widened, &mut approximate),
            2 => self.approximate_scores::<2>(&widened, &mut approximate),
            3 => self.approximate_scores::<3>(&widened, &mut approximate),
            4 => self.approximate_scores::<4>(&widened, &mut approximate),
            more => unreachable!("{more} queries in one pass; at most {QUERIES_PER_PASS}"),
        }
        approximate
            .into_iter()
            .zip(queries)
            .map(|(scores, query)| self.rerank(scores, query, k))
            .collect()
    }

    /// Every stored vector's approximate score (integer dot product × the vector's scale) for
    /// each of `Q` queries.
    fn approximate_scores<const Q: usize>(
        &self,
        widened: &[Vec<i16>],
        approximate: &mut [Vec<(f32, u32)>],
    ) {
        let queries: [&[i16]; Q] = std::array::from_fn(|j| widened[j].as_slice());
        for (i, (codes, scale)) in self.codes.chunks(self.dims).zip(&self.scales).enumerate() {
            for (scores, dot) in approximate.iter_mut().zip(dots(codes, queries)) {
                scores.push((dot as f32 * scale, i as u32));
            }
        }
    }

    /// The best [`CANDIDATES_PER_RESULT`]·k approximate candidates re-ranked by their exact
    /// cosine; the `k` best.
    fn rerank(&self, mut approximate: Vec<(f32, u32)>, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let n = approximate.len();
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
    fn the_simd_dot_products_equal_the_plain_ones_at_every_length() {
        let a: Vec<i8> = (0..100).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let queries: Vec<Vec<i16>> = (0..4)
            .map(|q| {
                (0..100)
                    .map(|i| ((i * 91 + 5 + q * 13) % 255 - 127) as i16)
                    .collect()
            })
            .collect();
        for n in 0..100 {
            let plain: Vec<i32> = queries
                .iter()
                .map(|q| {
                    a[..n]
                        .iter()
                        .zip(&q[..n])
                        .map(|(&x, &y)| x as i32 * y as i32)
                        .sum()
                })
                .collect();
            assert_eq!(dots(&a[..n], [&queries[0][..n]]), [plain[0]], "length {n}");
            let four: [&[i16]; 4] = std::array::from_fn(|q| &queries[q][..n]);
            assert_eq!(dots(&a[..n], four).to_vec(), plain, "length {n}");
        }
    }

    #[test]
    #[should_panic(expected = "queries must be as long as the codes")]
    fn a_query_of_another_length_is_refused() {
        dots(&[1i8; 16], [&[1i16; 15][..]]);
    }

    #[test]
    fn the_scan_finds_the_same_neighbours_as_a_full_f32_comparison() {
        // 3000 pseudo-random unit vectors of 48 dims and 43 random queries (lanes of 22 and 21 in
        // groups of up to four), one and many at once.
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
            data: unit(43),
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
