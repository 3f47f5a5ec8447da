//! Search by scanning every stored vector in three stages, each looking at fewer rows more
//! closely: one-bit sign codes and Hamming distances over all rows keep a shortlist
//! ([`SignCodes`]), int8 codes compared with the query as 8-bit integers (AVX2 where the CPU has
//! it) keep the best candidates of the shortlist, and those are re-ranked with their f32 vectors.
//! Returned scores are exact cosines, and the ranking is exact unless a true neighbour falls
//! out of the shortlist or the candidates (measured on MiniLM vectors of 12,324 Wikipedia
//! passages: recall@10 ≥ 0.998, see docs/benchmarks.md).

use super::embedder::Embeddings;
use crate::kernels::int8::{dot, dot_f32, prefetch, quantize, widened_codes};
use crate::kernels::sign_codes::SignCodes;

/// Rows kept by the sign-code stage per query: the largest of `k` × this, [`MIN_SHORTLIST`]
/// and a [`SHORTLIST_FRACTION`]th of the rows (recall is measured on 12,324 passages; the
/// fraction keeps the stage from narrowing further as an index grows).
const SHORTLIST_PER_RESULT: usize = 100;
const MIN_SHORTLIST: usize = 1024;
const SHORTLIST_FRACTION: usize = 16;

/// Candidates re-ranked per query: `k` × this, at least [`MIN_CANDIDATES`].
const CANDIDATES_PER_RESULT: usize = 4;
const MIN_CANDIDATES: usize = 32;

/// Vectors with their sign codes and int8 codes.
pub struct QuantizedScan {
    keys: Vec<u32>,
    dims: usize,
    vectors: Vec<f32>,
    signs: SignCodes,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// How many shortlisted rows ahead the int8 stage asks for a row's codes.
const PREFETCH_DISTANCE: usize = 8;

impl QuantizedScan {
    /// Codes `vectors` (row `i` has key `keys[i]`).
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
            signs: SignCodes::new(&vectors.data, dims),
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
    /// threads; the results equal one query at a time.
    pub fn search(&self, queries: &Embeddings, k: usize) -> Vec<Vec<(u32, f32)>> {
        let rows = queries.len();
        if rows <= 1 {
            return (0..rows)
                .map(|i| self.search_one(queries.row(i), k))
                .collect();
        }
        let per_lane = rows.div_ceil(2);
        let mut results: Vec<Vec<(u32, f32)>> = vec![Vec::new(); rows];
        std::thread::scope(|scope| {
            for (lane, slots) in results.chunks_mut(per_lane).enumerate() {
                scope.spawn(move || {
                    for (offset, slot) in slots.iter_mut().enumerate() {
                        *slot = self.search_one(queries.row(lane * per_lane + offset), k);
                    }
                });
            }
        });
        results
    }

    /// One query through the three stages.
    fn search_one(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let n = self.keys.len();
        if n == 0 || k == 0 {
            return Vec::new();
        }
        let shortlist = self.signs.nearest(
            &self.signs.encode(query),
            k.saturating_mul(SHORTLIST_PER_RESULT)
                .max(MIN_SHORTLIST)
                .max(n / SHORTLIST_FRACTION),
            &mut Vec::new(),
        );
        let approximate = self.approximate_scores(&shortlist, &widened_codes(query));
        self.rerank(approximate, query, k)
    }

    /// The int8 score (integer dot product × the row's scale) of each shortlisted row. The rows
    /// are scattered over the codes, so each is requested from memory a few rows ahead of its
    /// turn.
    fn approximate_scores(&self, shortlist: &[u32], widened: &[i16]) -> Vec<(f32, u32)> {
        let row_codes = |i: u32| &self.codes[i as usize * self.dims..(i as usize + 1) * self.dims];
        shortlist
            .iter()
            .enumerate()
            .map(|(position, &i)| {
                if let Some(&ahead) = shortlist.get(position + PREFETCH_DISTANCE) {
                    prefetch(row_codes(ahead));
                }
                (
                    dot(row_codes(i), widened) as f32 * self.scales[i as usize],
                    i,
                )
            })
            .collect()
    }

    /// The best [`CANDIDATES_PER_RESULT`]·k approximate candidates re-ranked by their exact
    /// cosine; the `k` best.
    fn rerank(&self, mut approximate: Vec<(f32, u32)>, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let n = approximate.len();
        let pool = k
            .saturating_mul(CANDIDATES_PER_RESULT)
            .max(MIN_CANDIDATES)
            .min(n);
        if pool < n {
            approximate.select_nth_unstable_by(pool, |a, b| b.0.total_cmp(&a.0));
            approximate.truncate(pool);
        }
        let row = |i: u32| &self.vectors[i as usize * self.dims..(i as usize + 1) * self.dims];
        let mut exact: Vec<(f32, usize)> = approximate
            .iter()
            .enumerate()
            .map(|(position, &(_, i))| {
                if let Some(&(_, ahead)) = approximate.get(position + PREFETCH_DISTANCE) {
                    prefetch(row(ahead));
                }
                (dot_f32(row(i), query), i as usize)
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
    fn the_scan_finds_the_neighbours_of_a_full_f32_comparison() {
        // 5000 unit vectors of 64 dims in 250 clusters of 20 (embeddings of related passages
        // lie close together, as here) and 43 queries near cluster centres (lanes of 22 and 21),
        // one and many at once. The sign-code stage keeps about a fifth of the rows.
        let (clusters, per_cluster, dims) = (250, 20, 64);
        let n = clusters * per_cluster;
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut near = |centre: &[f32], spread: f32| -> Vec<f32> {
            let mut row: Vec<f32> = centre.iter().map(|c| c + spread * next()).collect();
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
            row
        };
        let origin = vec![0f32; dims];
        let centres: Vec<Vec<f32>> = (0..clusters).map(|_| near(&origin, 1.0)).collect();
        let data: Vec<f32> = (0..n)
            .flat_map(|i| near(&centres[i / per_cluster], 0.4))
            .collect();
        let queries = Embeddings {
            dims,
            data: (0..43).flat_map(|q| near(&centres[q * 5], 0.4)).collect(),
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
        let mut found = 0;
        for (q, hits) in together.iter().enumerate() {
            let mut truth: Vec<(f32, u32)> = data
                .chunks(dims)
                .enumerate()
                .map(|(i, v)| (dot_f32(v, queries.row(q)), i as u32 * 3))
                .collect();
            truth.sort_by(|a, b| b.0.total_cmp(&a.0));
            let expected: Vec<u32> = truth.iter().take(10).map(|t| t.1).collect();
            found += hits.iter().filter(|h| expected.contains(&h.0)).count();
            assert_eq!(hits.len(), 10);
            for hit in hits {
                let row = (hit.0 / 3) as usize;
                let exact = dot_f32(&data[row * dims..(row + 1) * dims], queries.row(q));
                assert_eq!(hit.1, exact, "scores are exact cosines");
            }
            assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            let alone = scan.search(
                &Embeddings {
                    dims,
                    data: queries.row(q).to_vec(),
                },
                10,
            );
            assert_eq!(&alone[0], hits);
        }
        let recall = found as f64 / (43.0 * 10.0);
        assert!(recall >= 0.99, "recall@10 {recall}");
    }
}
