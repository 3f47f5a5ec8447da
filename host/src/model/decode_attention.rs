//! Attention of one new token per sequence over its own key/value cache, for the whole decode
//! batch in one parallel pass (every sequence × kv head is one task, its query heads together). Replaces, per layer and
//! sequence, a chain of small tensor ops (two matrix products, a softmax, reshapes and a
//! concatenation) whose fixed costs dominated a decode step.

use rayon::prelude::*;

/// One sequence's cache of one layer: keys and values laid out [kv_heads, capacity, head_dim],
/// of which the first `len` positions of every head are filled.
#[derive(Clone, Copy)]
pub struct CacheView<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub capacity: usize,
    pub len: usize,
}

/// `queries` is [batch, heads, head_dim] (one new token per sequence, after rotary embedding);
/// query head h attends over kv head h / (heads / kv_heads) of its sequence's cache. Returns
/// softmax(q·kᵀ / √head_dim) · v as [batch, heads, head_dim].
pub fn decode_attention(
    queries: &[f32],
    caches: &[CacheView],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    assert_eq!(
        queries.len(),
        caches.len() * heads * head_dim,
        "queries must be [batch, heads, head_dim]"
    );
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "heads must be a multiple of kv_heads"
    );
    for cache in caches {
        let needed = kv_heads * cache.capacity * head_dim;
        assert!(
            cache.len <= cache.capacity
                && cache.keys.len() >= needed
                && cache.values.len() >= needed,
            "cache smaller than [kv_heads, capacity, head_dim]"
        );
    }
    let repeat = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0f32; queries.len()];
    // One task per sequence and kv head: its `repeat` query heads read each key and value row
    // once, while it is in L1.
    out.par_chunks_mut(repeat * head_dim)
        .zip(queries.par_chunks(repeat * head_dim))
        .enumerate()
        .for_each(|(task, (out, group_queries))| {
            let cache = &caches[task / kv_heads];
            let base = (task % kv_heads) * cache.capacity * head_dim;
            let keys = &cache.keys[base..base + cache.len * head_dim];
            let values = &cache.values[base..base + cache.len * head_dim];
            attend(group_queries, keys, values, head_dim, scale, out);
        });
    out
}

/// The query heads `queries` ([repeat, head_dim]) of one kv head over its keys and values
/// ([len, head_dim] each), into `out` ([repeat, head_dim], zeroed).
fn attend(
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    head_dim: usize,
    scale: f32,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { attend_avx2(queries, keys, values, head_dim, scale, out) };
        return;
    }
    attend_body(queries, keys, values, head_dim, scale, out);
}

/// [`attend_body`] with the scores of four keys at a time from AVX2 + FMA (four independent
/// sums, one shared reduction), the rest of the body vectorised 8 floats wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    head_dim: usize,
    scale: f32,
    out: &mut [f32],
) {
    let scores = |query: &[f32], scores: &mut [f32]| {
        let mut blocks = keys.chunks_exact(4 * head_dim);
        let mut t = 0;
        for block in &mut blocks {
            // SAFETY: the CPU supports AVX2 and FMA (this function's precondition).
            let four = unsafe { dot4_avx2(query, block) };
            for s in four {
                scores[t] = s * scale;
                t += 1;
            }
        }
        for key in blocks.remainder().chunks_exact(head_dim) {
            scores[t] = dot(query, key) * scale;
            t += 1;
        }
    };
    attend_with(queries, keys, values, head_dim, out, scores);
}

/// Dot products of `query` with the four rows of `keys` ([4, query.len()]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(query: &[f32], keys: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let d = query.len();
    assert_eq!(keys.len(), 4 * d, "four keys of the query's width");
    let whole = d / 8 * 8;
    let (q, k) = (query.as_ptr(), keys.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 8 ≤ whole ≤ d: inside the query and each key row.
        let qv = unsafe { _mm256_loadu_ps(q.add(i)) };
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(qv, unsafe { _mm256_loadu_ps(k.add(r * d + i)) }, *a);
        }
        i += 8;
    }
    let pairs = _mm256_hadd_ps(
        _mm256_hadd_ps(acc[0], acc[1]),
        _mm256_hadd_ps(acc[2], acc[3]),
    );
    let sums = _mm_add_ps(
        _mm256_castps256_ps128(pairs),
        _mm256_extractf128_ps(pairs, 1),
    );
    let mut four = [0f32; 4];
    // SAFETY: `four` holds four floats.
    unsafe { _mm_storeu_ps(four.as_mut_ptr(), sums) };
    for (r, total) in four.iter_mut().enumerate() {
        for t in whole..d {
            *total += query[t] * keys[r * d + t];
        }
    }
    four
}

fn attend_body(
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    head_dim: usize,
    scale: f32,
    out: &mut [f32],
) {
    attend_with(queries, keys, values, head_dim, out, |query, scores| {
        for (score, key) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
            *score = dot(query, key) * scale;
        }
    });
}

/// Softmax-weighted sum of `values` for each query head, given `fill_scores(query, scores)`
/// that writes the scaled scores of one query head against every key.
#[inline(always)]
fn attend_with(
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    head_dim: usize,
    out: &mut [f32],
    fill_scores: impl Fn(&[f32], &mut [f32]),
) {
    let len = keys.len() / head_dim;
    if len == 0 {
        return;
    }
    // scores[h * len + t]: query head h against key t, then its softmax weight.
    let mut scores = vec![0f32; queries.len() / head_dim * len];
    for (query, row) in queries
        .chunks_exact(head_dim)
        .zip(scores.chunks_exact_mut(len))
    {
        fill_scores(query, row);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total = crate::vector_math::exp_in_place(row, max);
        for weight in row.iter_mut() {
            *weight /= total;
        }
    }
    for (t, value) in values.chunks_exact(head_dim).enumerate() {
        for (h, out) in out.chunks_exact_mut(head_dim).enumerate() {
            let weight = scores[h * len + t];
            for (o, v) in out.iter_mut().zip(value) {
                *o += weight * v;
            }
        }
    }
}

/// Dot product with eight independent partial sums (vectorisable, unlike a plain fold).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_whole, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b_whole, b_rest) = b.split_at(a_whole.len());
    for (x, y) in a_whole.chunks_exact(8).zip(b_whole.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(count: usize, seed: u32) -> Vec<f32> {
        (0..count as u32)
            .map(|i| {
                ((i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    /// Plain per-head attention in f64.
    fn reference(query: &[f32], keys: &[f32], values: &[f32], len: usize, hd: usize) -> Vec<f32> {
        let scores: Vec<f64> = (0..len)
            .map(|t| {
                (0..hd)
                    .map(|i| query[i] as f64 * keys[t * hd + i] as f64)
                    .sum::<f64>()
                    / (hd as f64).sqrt()
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        (0..hd)
            .map(|i| {
                (0..len)
                    .map(|t| weights[t] * values[t * hd + i] as f64)
                    .sum::<f64>()
                    / total
            })
            .map(|x| x as f32)
            .collect()
    }

    #[test]
    fn grouped_heads_of_sequences_of_different_lengths_match_plain_attention() {
        let (heads, kv_heads, hd, capacity) = (6, 2, 12, 20);
        let lens = [1usize, 7, 20];
        let storage: Vec<(Vec<f32>, Vec<f32>)> = lens
            .iter()
            .enumerate()
            .map(|(s, _)| {
                (
                    values(kv_heads * capacity * hd, 10 + s as u32),
                    values(kv_heads * capacity * hd, 20 + s as u32),
                )
            })
            .collect();
        let caches: Vec<CacheView> = storage
            .iter()
            .zip(lens)
            .map(|((k, v), len)| CacheView {
                keys: k,
                values: v,
                capacity,
                len,
            })
            .collect();
        let queries = values(lens.len() * heads * hd, 3);
        let out = decode_attention(&queries, &caches, heads, kv_heads, hd);
        for (s, cache) in caches.iter().enumerate() {
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                let range = g * capacity * hd..(g * capacity + cache.len) * hd;
                let q = &queries[(s * heads + h) * hd..(s * heads + h + 1) * hd];
                let expected = reference(
                    q,
                    &cache.keys[range.clone()],
                    &cache.values[range],
                    cache.len,
                    hd,
                );
                let got = &out[(s * heads + h) * hd..(s * heads + h + 1) * hd];
                for (a, b) in got.iter().zip(&expected) {
                    assert!((a - b).abs() < 1e-5, "sequence {s} head {h}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn positions_beyond_the_filled_length_are_ignored() {
        let (hd, capacity) = (8, 4);
        let mut keys = values(capacity * hd, 1);
        let mut vals = values(capacity * hd, 2);
        let query = values(hd, 3);
        let cache = CacheView {
            keys: &keys,
            values: &vals,
            capacity,
            len: 2,
        };
        let before = decode_attention(&query, &[cache], 1, 1, hd);
        for x in &mut keys[2 * hd..] {
            *x = 1e6;
        }
        for x in &mut vals[2 * hd..] {
            *x = f32::NAN;
        }
        let cache = CacheView {
            keys: &keys,
            values: &vals,
            capacity,
            len: 2,
        };
        assert_eq!(decode_attention(&query, &[cache], 1, 1, hd), before);
    }

    #[test]
    #[should_panic(expected = "cache smaller")]
    fn a_cache_too_small_for_its_shape_is_refused() {
        let keys = [0f32; 8];
        let cache = CacheView {
            keys: &keys,
            values: &keys,
            capacity: 2,
            len: 1,
        };
        decode_attention(&[0f32; 8], &[cache], 1, 1, 8);
    }
}
