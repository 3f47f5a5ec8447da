//! Attention of one new token per sequence over its key/value cache, for the whole decode
//! batch in one parallel pass (every sequence × kv head is one task, its query heads
//! together). Replaces, per layer and sequence, a chain of small tensor ops (two matrix
//! products, a softmax, reshapes and a concatenation) whose fixed costs dominated a decode
//! step. A cache may come in two segments: positions shared with other sequences (a prompt's
//! prefill), then the sequence's own; the result is the same, bit for bit, as over one buffer
//! holding both.

use rayon::prelude::*;

/// Keys and values of one layer laid out [kv_heads, capacity, head_dim], of which the first
/// `len` positions of every head are filled.
#[derive(Clone, Copy)]
pub struct Segment<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub capacity: usize,
    pub len: usize,
}

/// One sequence's cache of one layer: the shared positions (if any), then its own.
#[derive(Clone, Copy)]
pub struct CacheView<'a> {
    pub shared: Option<Segment<'a>>,
    pub own: Segment<'a>,
}

impl<'a> Segment<'a> {
    /// Keys and values of kv head `group`: [len, head_dim] each.
    fn group(&self, group: usize, head_dim: usize) -> (&'a [f32], &'a [f32]) {
        let base = group * self.capacity * head_dim;
        let end = base + self.len * head_dim;
        (&self.keys[base..end], &self.values[base..end])
    }
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
    for segment in caches.iter().flat_map(|c| c.shared.iter().chain([&c.own])) {
        let needed = kv_heads * segment.capacity * head_dim;
        assert!(
            segment.len <= segment.capacity
                && segment.keys.len() >= needed
                && segment.values.len() >= needed,
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
            let group = task % kv_heads;
            let own = cache.own.group(group, head_dim);
            match cache.shared {
                Some(shared) => {
                    let segments = [shared.group(group, head_dim), own];
                    attend(group_queries, &segments, head_dim, scale, out);
                }
                None => attend(group_queries, &[own], head_dim, scale, out),
            }
        });
    out
}

/// Keys and values ([len, head_dim] each) of one stretch of positions.
type KeysValues<'a> = (&'a [f32], &'a [f32]);

/// The query heads `queries` ([repeat, head_dim]) of one kv head over the keys and values of
/// `segments`, in order, into `out` ([repeat, head_dim], zeroed).
fn attend(queries: &[f32], segments: &[KeysValues], head_dim: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { attend_avx2(queries, segments, head_dim, scale, out) };
        return;
    }
    attend_with(queries, segments, head_dim, out, |query, keys, scores| {
        for (score, key) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
            *score = dot(query, key) * scale;
        }
    });
}

/// [`attend_with`] with the scores of four keys at a time from AVX2 + FMA (four independent
/// sums, one shared reduction; a key left over takes the same sums alone, so a key's score
/// does not depend on where its block starts), the rest vectorised 8 floats wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(
    queries: &[f32],
    segments: &[KeysValues],
    head_dim: usize,
    scale: f32,
    out: &mut [f32],
) {
    let scores = |query: &[f32], keys: &[f32], scores: &mut [f32]| {
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
            // SAFETY: as above.
            scores[t] = unsafe { dot1_avx2(query, key) } * scale;
            t += 1;
        }
    };
    attend_with(queries, segments, head_dim, out, scores);
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
    // Lanes summed pairwise: ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) per key.
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

/// The dot product of one key in [`dot4_avx2`]'s order, bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot1_avx2(query: &[f32], key: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let d = query.len();
    assert_eq!(key.len(), d, "a key of the query's width");
    let whole = d / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 8 ≤ whole ≤ d.
        let (qv, kv) = unsafe {
            (
                _mm256_loadu_ps(query.as_ptr().add(i)),
                _mm256_loadu_ps(key.as_ptr().add(i)),
            )
        };
        acc = _mm256_fmadd_ps(qv, kv, acc);
        i += 8;
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    let mut total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for t in whole..d {
        total += query[t] * key[t];
    }
    total
}

/// Softmax-weighted sum of the values for each query head, given `fill_scores(query, keys,
/// scores)` that writes the scaled scores of one query head against the keys of a segment.
#[inline(always)]
fn attend_with(
    queries: &[f32],
    segments: &[KeysValues],
    head_dim: usize,
    out: &mut [f32],
    fill_scores: impl Fn(&[f32], &[f32], &mut [f32]),
) {
    let len: usize = segments.iter().map(|(keys, _)| keys.len() / head_dim).sum();
    if len == 0 {
        return;
    }
    // scores[h * len + t]: query head h against key t (over the segments in order), then its
    // softmax weight.
    let mut scores = vec![0f32; queries.len() / head_dim * len];
    for (query, row) in queries
        .chunks_exact(head_dim)
        .zip(scores.chunks_exact_mut(len))
    {
        let mut at = 0;
        for (keys, _) in segments {
            let count = keys.len() / head_dim;
            fill_scores(query, keys, &mut row[at..at + count]);
            at += count;
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total = crate::kernels::vector_math::exp_in_place(row, max);
        for weight in row.iter_mut() {
            *weight /= total;
        }
    }
    let values = segments
        .iter()
        .flat_map(|(_, values)| values.chunks_exact(head_dim));
    for (t, value) in values.enumerate() {
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

    /// A cache with no shared prompt segment: `len` of `capacity` positions filled.
    fn own_only<'a>(
        keys: &'a [f32],
        values: &'a [f32],
        capacity: usize,
        len: usize,
    ) -> CacheView<'a> {
        CacheView {
            shared: None,
            own: Segment {
                keys,
                values,
                capacity,
                len,
            },
        }
    }

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
            .map(|((k, v), len)| own_only(k, v, capacity, len))
            .collect();
        let queries = values(lens.len() * heads * hd, 3);
        let out = decode_attention(&queries, &caches, heads, kv_heads, hd);
        for (s, cache) in caches.iter().enumerate() {
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                let range = g * capacity * hd..(g * capacity + cache.own.len) * hd;
                let q = &queries[(s * heads + h) * hd..(s * heads + h + 1) * hd];
                let expected = reference(
                    q,
                    &cache.own.keys[range.clone()],
                    &cache.own.values[range],
                    cache.own.len,
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
    fn a_shared_segment_then_an_own_one_equal_one_buffer_bit_for_bit() {
        // 2 kv heads × 3 query heads each, head_dim 12 (a tail after the 8-wide steps);
        // 9 shared + 6 own positions: the 4-key blocks start at different keys in the two
        // layouts.
        let (heads, kv_heads, hd) = (6, 2, 12);
        let (shared_len, own_len) = (9, 6);
        let all = shared_len + own_len;
        let keys = values(kv_heads * all * hd, 31);
        let vals = values(kv_heads * all * hd, 32);
        // The same positions split in two buffers (capacity larger than the filled length).
        let split = |from: usize, count: usize, capacity: usize, data: &[f32]| {
            let mut out = vec![f32::NAN; kv_heads * capacity * hd];
            for g in 0..kv_heads {
                let src = (g * all + from) * hd;
                out[g * capacity * hd..(g * capacity + count) * hd]
                    .copy_from_slice(&data[src..src + count * hd]);
            }
            out
        };
        let (shared_k, shared_v) = (
            split(0, shared_len, 11, &keys),
            split(0, shared_len, 11, &vals),
        );
        let (own_k, own_v) = (
            split(shared_len, own_len, 8, &keys),
            split(shared_len, own_len, 8, &vals),
        );
        let queries = values(heads * hd, 33);
        let flat = own_only(&keys, &vals, all, all);
        let segmented = CacheView {
            shared: Some(Segment {
                keys: &shared_k,
                values: &shared_v,
                capacity: 11,
                len: shared_len,
            }),
            own: Segment {
                keys: &own_k,
                values: &own_v,
                capacity: 8,
                len: own_len,
            },
        };
        let a = decode_attention(&queries, &[flat], heads, kv_heads, hd);
        let b = decode_attention(&queries, &[segmented], heads, kv_heads, hd);
        assert_eq!(a, b);
        assert!(a.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn positions_beyond_the_filled_length_are_ignored() {
        let (hd, capacity) = (8, 4);
        let mut keys = values(capacity * hd, 1);
        let mut vals = values(capacity * hd, 2);
        let query = values(hd, 3);
        let cache = own_only(&keys, &vals, capacity, 2);
        let before = decode_attention(&query, &[cache], 1, 1, hd);
        for x in &mut keys[2 * hd..] {
            *x = 1e6;
        }
        for x in &mut vals[2 * hd..] {
            *x = f32::NAN;
        }
        let cache = own_only(&keys, &vals, capacity, 2);
        assert_eq!(decode_attention(&query, &[cache], 1, 1, hd), before);
    }

    #[test]
    #[should_panic(expected = "cache smaller")]
    fn a_cache_too_small_for_its_shape_is_refused() {
        let keys = [0f32; 8];
        let cache = own_only(&keys, &keys, 2, 1);
        decode_attention(&[0f32; 8], &[cache], 1, 1, 8);
    }
}
