//! One-bit codes (the sign of each dimension) and Hamming distances: the cheap first stage of
//! the scan. A 384-dimensional vector becomes six 64-bit words, so comparing a query with every
//! stored vector reads 48 bytes per vector (an eighth of the int8 codes) and costs a handful of
//! XOR + POPCNT instructions; the stages after it only look at the rows it keeps.

/// The sign bits of many vectors, `words_per_row` 64-bit words each.
pub struct SignCodes {
    words_per_row: usize,
    words: Vec<u64>,
}

/// Bit `d` of a row's code is set when dimension `d` is positive.
fn encode_into(vector: &[f32], words: &mut [u64]) {
    words.fill(0);
    for (d, x) in vector.iter().enumerate() {
        if *x > 0.0 {
            words[d / 64] |= 1 << (d % 64);
        }
    }
}

impl SignCodes {
    /// Codes of `rows` vectors of `dims` dimensions laid one after the other in `data`.
    pub fn new(data: &[f32], dims: usize) -> SignCodes {
        let dims = dims.max(1);
        let words_per_row = dims.div_ceil(64);
        let mut words = vec![0u64; data.len() / dims * words_per_row];
        for (vector, code) in data.chunks(dims).zip(words.chunks_mut(words_per_row)) {
            encode_into(vector, code);
        }
        SignCodes {
            words_per_row,
            words,
        }
    }

    /// The code of one query.
    pub fn encode(&self, query: &[f32]) -> Vec<u64> {
        let mut code = vec![0u64; self.words_per_row];
        encode_into(query, &mut code);
        code
    }

    /// Number of coded rows.
    pub fn len(&self) -> usize {
        self.words.len() / self.words_per_row.max(1)
    }

    /// True when no row is coded.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The Hamming distance of `code` (from [`SignCodes::encode`]) to every row, in row order.
    pub fn distances(&self, code: &[u64], out: &mut Vec<u16>) {
        assert_eq!(
            code.len(),
            self.words_per_row,
            "query code of another length"
        );
        out.clear();
        out.reserve(self.len());
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: POPCNT is present (checked just above).
            unsafe { self.distances_popcnt(code, out) };
            return;
        }
        self.distances_plain(code, out);
    }

    fn distances_plain(&self, code: &[u64], out: &mut Vec<u16>) {
        out.extend(self.words.chunks(self.words_per_row).map(|row| {
            row.iter()
                .zip(code)
                .map(|(a, b)| (a ^ b).count_ones() as u16)
                .sum::<u16>()
        }));
    }

    /// The same loop with the POPCNT instruction (without it `count_ones` compiles to a dozen
    /// shifts and masks), unrolled for the common widths (384, 768 and 1024 dimensions).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn distances_popcnt(&self, code: &[u64], out: &mut Vec<u16>) {
        // SAFETY (all arms): POPCNT is enabled in this function.
        match self.words_per_row {
            6 => unsafe { self.distances_popcnt_fixed::<6>(code, out) },
            12 => unsafe { self.distances_popcnt_fixed::<12>(code, out) },
            16 => unsafe { self.distances_popcnt_fixed::<16>(code, out) },
            _ => {
                use std::arch::x86_64::_popcnt64;
                out.extend(self.words.chunks_exact(self.words_per_row).map(|row| {
                    let mut bits = 0;
                    for (a, b) in row.iter().zip(code) {
                        bits += _popcnt64((a ^ b) as i64);
                    }
                    bits as u16
                }));
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn distances_popcnt_fixed<const W: usize>(&self, code: &[u64], out: &mut Vec<u16>) {
        use std::arch::x86_64::_popcnt64;
        let code: [u64; W] = std::array::from_fn(|w| code[w]);
        let (rows, _) = self.words.as_chunks::<W>();
        out.resize(rows.len(), 0);
        // A plain loop: a closure here would be compiled apart from this function, as a call
        // per row.
        for (distance, row) in out.iter_mut().zip(rows) {
            let mut bits = 0;
            for w in 0..W {
                bits += _popcnt64((row[w] ^ code[w]) as i64);
            }
            *distance = bits as u16;
        }
    }

    /// Every row at most as far from `code` as its `at_least`-th nearest row (so ties at that
    /// distance are all kept and the set does not depend on row order), in row order.
    pub fn nearest(&self, code: &[u64], at_least: usize, scratch: &mut Vec<u16>) -> Vec<u32> {
        self.distances(code, scratch);
        let rows = scratch.len();
        if at_least >= rows {
            return (0..rows as u32).collect();
        }
        if at_least == 0 {
            return Vec::new();
        }
        // Distances lie in 0..=bits: a histogram finds the cut-off in one pass (four of them,
        // summed after, so that increments of the same count do not wait on each other).
        let bins = self.words_per_row * 64 + 1;
        let mut counts = vec![0u32; 4 * bins];
        let (quads, rest) = scratch.split_at(rows / 4 * 4);
        for quad in quads.chunks_exact(4) {
            for (part, &d) in quad.iter().enumerate() {
                counts[part * bins + d as usize] += 1;
            }
        }
        for &d in rest {
            counts[d as usize] += 1;
        }
        let mut seen = 0;
        let cutoff = (0..bins)
            .position(|d| {
                seen += (0..4)
                    .map(|part| counts[part * bins + d] as usize)
                    .sum::<usize>();
                seen >= at_least
            })
            .unwrap_or(bins - 1) as u16;
        // Branch-free compaction: every row is written, the end moves past the kept ones (the
        // histogram counted them: `seen`, plus one slot for the last write).
        let mut kept = vec![0u32; seen + 1];
        let mut end = 0;
        for (i, &d) in scratch.iter().enumerate() {
            kept[end] = i as u32;
            end += usize::from(d <= cutoff);
        }
        kept.truncate(end);
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_signs_across_word_boundaries() {
        let mut vector = vec![-1f32; 130];
        for d in [0, 63, 64, 129] {
            vector[d] = 0.5;
        }
        let codes = SignCodes::new(&vector, 130);
        assert_eq!(codes.len(), 1);
        assert_eq!(codes.words, vec![1 | 1 << 63, 1, 1 << 1]);
        // Zero counts as not positive.
        assert_eq!(codes.encode(&[0.0; 130]), vec![0, 0, 0]);
    }

    #[test]
    fn distances_count_the_differing_signs() {
        let dims = 70;
        let rows: Vec<Vec<f32>> = (0..5)
            .map(|r| {
                (0..dims)
                    .map(|d| if d < r * 10 { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect();
        let codes = SignCodes::new(&rows.concat(), dims);
        let query = codes.encode(&vec![-1.0; dims]);
        let mut distances = Vec::new();
        codes.distances(&query, &mut distances);
        assert_eq!(distances, vec![0, 10, 20, 30, 40]);
        let mut plain = Vec::new();
        codes.distances_plain(&query, &mut plain);
        assert_eq!(plain, distances);
    }

    #[test]
    fn nearest_keeps_every_tie_at_the_cutoff() {
        // Distances 0, 1, 1, 1, 2, 3 from the all-negative query.
        let dims = 8;
        let ones = [0, 1, 1, 1, 2, 3];
        let data: Vec<f32> = ones
            .iter()
            .flat_map(|&n| (0..dims).map(move |d| if d < n { 1.0 } else { -1.0 }))
            .collect();
        let codes = SignCodes::new(&data, dims);
        let query = codes.encode(&[-1.0; 8]);
        let mut scratch = Vec::new();
        assert_eq!(codes.nearest(&query, 1, &mut scratch), vec![0]);
        assert_eq!(codes.nearest(&query, 2, &mut scratch), vec![0, 1, 2, 3]);
        assert_eq!(codes.nearest(&query, 5, &mut scratch), vec![0, 1, 2, 3, 4]);
        assert_eq!(codes.nearest(&query, 6, &mut scratch).len(), 6);
        assert_eq!(codes.nearest(&query, 60, &mut scratch).len(), 6);
        assert!(codes.nearest(&query, 0, &mut scratch).is_empty());
    }

    #[test]
    #[should_panic(expected = "query code of another length")]
    fn a_query_code_of_another_length_is_refused() {
        let codes = SignCodes::new(&[1.0; 128], 128);
        codes.distances(&[0u64], &mut Vec::new());
    }
}
