//! The generation engine of rollouts: a batch of sequences sampled together.
//!
//! - Samples of one prompt share its prefill (computed once; its cache is shared read-only by
//!   the samples, each of which keeps only its own positions).
//! - Every sequence has its own seeded random generator, so a run is reproducible and a
//!   sequence's tokens do not depend on what else is in the batch.
//! - A turn ends at a stop sequence (matched on the decoded text of the turn), an EOS id or
//!   the token budget. A sequence stopped at a stop sequence waits: the caller may append
//!   tokens (an observation) and resume it, or finish it. Finished sequences leave the batch;
//!   the others go on.

use super::stop_rules::{Progress, StopCheck};
pub use super::stop_rules::{SeqState, Stop, StopRules};
use super::tokenizer::ModelTokenizer;
use super::transformer::{KvCache, Policy};
use super::worker::on_worker;
use crate::kernels::vector_math;
use anyhow::{Result, bail};
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 or `greedy` picks the most likely token.
    pub temperature: f32,
    /// Nucleus: keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    pub greedy: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            greedy: false,
        }
    }
}

/// One sequence of the batch.
pub struct Sequence {
    /// Prompt, sampled and appended tokens, in order.
    pub tokens: Vec<u32>,
    /// How many of `tokens` are the prompt.
    pub prompt_len: usize,
    /// For every token after the prompt: true when the model sampled it, false when the caller
    /// appended it.
    pub sampled: Vec<bool>,
    /// For every token after the prompt: its log-probability under the model (temperature 1),
    /// NaN for appended tokens.
    pub logprobs: Vec<f32>,
    pub state: SeqState,
    generated: usize,
    turn_start: usize,
    cache: KvCache,
    next_logits: Option<Tensor>,
    rng: ChaCha8Rng,
}

impl Sequence {
    /// The tokens after the prompt.
    pub fn response(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// What the stop rules read of it.
    fn progress(&self) -> Progress<'_> {
        Progress {
            tokens: &self.tokens,
            prompt_len: self.prompt_len,
            turn_start: self.turn_start,
            generated: self.generated,
        }
    }
}

/// A batch of sequences decoded together.
pub struct Engine<'m> {
    policy: &'m Policy,
    params: SamplingParams,
    check: StopCheck<'m>,
    sequences: Vec<Sequence>,
}

impl<'m> Engine<'m> {
    /// An empty batch.
    pub fn new(
        policy: &'m Policy,
        tokenizer: &'m ModelTokenizer,
        params: SamplingParams,
        rules: StopRules,
    ) -> Engine<'m> {
        let check = StopCheck::new(rules, tokenizer, policy.config().max_position_embeddings);
        Engine {
            policy,
            params,
            check,
            sequences: Vec::new(),
        }
    }

    /// Limits every sequence's response (sampled and appended tokens together) to `tokens`:
    /// a sequence that reaches it finishes with [`Stop::Length`], also when an append fills it.
    pub fn set_response_budget(&mut self, tokens: usize) {
        self.check.set_response_budget(tokens);
    }

    /// Adds `copies` samples of `prompt`, prefilled once. Sample i draws from a generator
    /// seeded by (`seed`, i). Returns their indices.
    pub fn add_prompt(&mut self, prompt: &[u32], copies: usize, seed: u64) -> Result<Vec<usize>> {
        if prompt.is_empty() {
            bail!("the prompt has no tokens");
        }
        let mut cache = KvCache::default();
        let logits = self.policy.forward_step(prompt, &mut cache)?;
        let last = logits.get(prompt.len() - 1)?;
        let mut indices = Vec::with_capacity(copies);
        // The samples share the prompt's cache (read-only) and keep their own positions.
        for (copy, cache) in cache.branch(copies)?.into_iter().enumerate() {
            indices.push(self.sequences.len());
            self.sequences.push(Sequence {
                tokens: prompt.to_vec(),
                prompt_len: prompt.len(),
                sampled: Vec::new(),
                logprobs: Vec::new(),
                state: SeqState::Running,
                generated: 0,
                turn_start: prompt.len(),
                cache,
                next_logits: Some(last.clone()),
                rng: ChaCha8Rng::seed_from_u64(sample_seed(seed, copy as u64)),
            });
        }
        Ok(indices)
    }

    /// The sequences, in the order they were added.
    pub fn sequences(&self) -> &[Sequence] {
        &self.sequences
    }

    /// Whether any sequence is running.
    pub fn has_running(&self) -> bool {
        self.sequences.iter().any(|s| s.state == SeqState::Running)
    }

    /// One step: every running sequence samples a token; those still running then advance
    /// through one batched forward.
    pub fn step(&mut self) -> Result<()> {
        // The whole step runs on a worker of rayon's pool (see `model::worker`): its many short
        // parallel kernels (a few per layer) are handed between the pool's threads.
        on_worker(|| self.step_on_worker())
    }

    fn step_on_worker(&mut self) -> Result<()> {
        // Each running sequence draws its token from its own logits and generator, all of
        // them in parallel (a few vocabulary-sized passes each); the stop rules then run in
        // order.
        let params = self.params;
        let draws: Vec<(usize, Result<(u32, f32)>)> = self
            .sequences
            .par_iter_mut()
            .enumerate()
            .filter(|(_, sequence)| sequence.state == SeqState::Running)
            .map(|(index, sequence)| (index, draw_next(index, sequence, &params)))
            .collect();
        let mut advance = Vec::new();
        for (index, drawn) in draws {
            let (token, logprob) = drawn?;
            self.record(index, token, logprob)?;
            if self.sequences[index].state == SeqState::Running {
                advance.push((index, token));
            } else {
                // The token that ended the turn is not in the cache yet; it will be when the
                // sequence resumes.
                self.sequences[index].next_logits = None;
            }
        }
        if advance.is_empty() {
            return Ok(());
        }
        let tokens: Vec<u32> = advance.iter().map(|(_, t)| *t).collect();
        let mut caches: Vec<&mut KvCache> = Vec::with_capacity(advance.len());
        let mut wanted = advance.iter().map(|(i, _)| *i).peekable();
        for (index, sequence) in self.sequences.iter_mut().enumerate() {
            if wanted.peek() == Some(&index) {
                wanted.next();
                caches.push(&mut sequence.cache);
            }
        }
        let logits = self.policy.forward_decode(&tokens, &mut caches)?;
        for (row, (index, _)) in advance.iter().enumerate() {
            self.sequences[*index].next_logits = Some(logits.get(row)?);
        }
        Ok(())
    }

    /// Steps until no sequence is running.
    pub fn run(&mut self) -> Result<()> {
        while self.has_running() {
            self.step()?;
        }
        Ok(())
    }

    /// Appends `tokens` (an observation) to a stopped sequence and resumes it: the tokens are
    /// prefilled and a new turn starts after them.
    pub fn append(&mut self, index: usize, tokens: &[u32]) -> Result<()> {
        let policy = self.policy;
        let check = &self.check;
        let sequence = sequence_mut(&mut self.sequences, index)?;
        if !matches!(sequence.state, SeqState::Stopped(_)) {
            bail!(
                "sequence {index} is {:?}; only a stopped sequence can take appended tokens",
                sequence.state
            );
        }
        // The cache lacks the token that ended the turn; feed it with the new ones.
        let cached = sequence.cache.len();
        let mut pending: Vec<u32> = sequence.tokens[cached..].to_vec();
        pending.extend_from_slice(tokens);
        sequence.tokens.extend_from_slice(tokens);
        sequence
            .sampled
            .extend(std::iter::repeat_n(false, tokens.len()));
        sequence
            .logprobs
            .extend(std::iter::repeat_n(f32::NAN, tokens.len()));
        sequence.turn_start = sequence.tokens.len();
        if pending.is_empty() {
            bail!("nothing to append to sequence {index}");
        }
        let response_len = sequence.tokens.len() - sequence.prompt_len;
        if check.fills_budget(response_len) || check.room(&sequence.progress()) == 0 {
            // Nothing may follow: the appended tokens end the sequence.
            sequence.next_logits = None;
            sequence.state = SeqState::Finished(Stop::Length);
            return Ok(());
        }
        let logits = policy.forward_step(&pending, &mut sequence.cache)?;
        sequence.next_logits = Some(logits.get(pending.len() - 1)?);
        sequence.state = SeqState::Running;
        Ok(())
    }

    /// Ends a stopped sequence for good.
    pub fn finish(&mut self, index: usize) -> Result<()> {
        let sequence = sequence_mut(&mut self.sequences, index)?;
        if let SeqState::Stopped(stop) = &sequence.state {
            sequence.state = SeqState::Finished(stop.clone());
        }
        Ok(())
    }

    /// Appends a drawn token to a running sequence and applies the stop rules.
    fn record(&mut self, index: usize, token: u32, logprob: f32) -> Result<()> {
        let sequence = &mut self.sequences[index];
        sequence.tokens.push(token);
        sequence.sampled.push(true);
        sequence.logprobs.push(logprob);
        sequence.generated += 1;
        if let Some(state) = self.check.after_sampled(&sequence.progress())? {
            sequence.state = state;
        }
        Ok(())
    }
}

/// Sequence `index` of `sequences`, or an error naming the batch's size.
fn sequence_mut(sequences: &mut [Sequence], index: usize) -> Result<&mut Sequence> {
    let count = sequences.len();
    sequences
        .get_mut(index)
        .ok_or_else(|| anyhow::anyhow!("no sequence {index} (the batch has {count})"))
}

/// Draws the next token of sequence `index` from its logits and generator: the token and its
/// log-probability under the model (temperature 1).
fn draw_next(index: usize, sequence: &mut Sequence, params: &SamplingParams) -> Result<(u32, f32)> {
    let logits = match &sequence.next_logits {
        Some(logits) => logits.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        None => bail!("sequence {index} has no logits to sample from"),
    };
    if logits.is_empty() {
        bail!("sequence {index} has logits over an empty vocabulary");
    }
    Ok(sample(&logits, params, &mut sequence.rng))
}

/// A token drawn from `logits` (not empty) under `params`, and its log-probability under the
/// model (temperature 1).
fn sample(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> (u32, f32) {
    // e^(logit − largest) serves both the normaliser of the log-probabilities and, at
    // temperature 1, the draw's weights: no log-softmax of the whole vocabulary is written.
    let largest = vector_math::max(logits);
    let mut exps = vec![0f32; logits.len()];
    let total = vector_math::scaled_exp(logits, 1.0, largest, &mut exps);
    let scores = Scores {
        logits,
        largest,
        exps: &exps,
        total,
    };
    let token = choose(&scores, params, rng);
    // The same sums, in the same order, as `vector_math::log_softmax`.
    let normaliser = largest + total.ln();
    (token, logits[token as usize] - normaliser)
}

/// One sequence's next-token logits with what every way of choosing needs: their largest
/// value and e^(logit − largest) (the weights at temperature 1) with its sum.
struct Scores<'a> {
    logits: &'a [f32],
    largest: f32,
    exps: &'a [f32],
    total: f32,
}

impl Scores<'_> {
    /// The likeliest token (the lowest id among equals; 0 when no logit is a number).
    fn argmax(&self) -> u32 {
        self.logits
            .iter()
            .position(|&x| x == self.largest)
            .map_or(0, |i| i as u32)
    }
}

/// Picks a token under `params`. Every choice depends only on differences of logits, so it
/// is the same on logits as on log-probabilities.
fn choose(scores: &Scores, params: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
    if params.greedy || params.temperature <= 0.0 {
        return scores.argmax();
    }
    if params.top_k == 0 && params.top_p >= 1.0 {
        // Plain temperature sampling: no need to sort the vocabulary.
        if params.temperature == 1.0 {
            return draw(scores.exps, scores.total, rng)
                .map_or_else(|| scores.argmax(), |i| i as u32);
        }
        let inverse_temperature = 1.0 / params.temperature;
        let mut weights = vec![0f32; scores.logits.len()];
        let total = vector_math::scaled_exp(
            scores.logits,
            inverse_temperature,
            scores.largest * inverse_temperature,
            &mut weights,
        );
        return draw(&weights, total, rng).map_or_else(|| scores.argmax(), |i| i as u32);
    }
    let (candidates, weights) = truncated(scores.logits, params);
    let total = weights.iter().sum();
    draw(&weights, total, rng).map_or_else(|| scores.argmax(), |i| candidates[i])
}

/// Tokens sorted before a nucleus is looked for: enough for most nuclei, and grown fourfold
/// until the nucleus fits.
const NUCLEUS_HEAD: usize = 64;

/// The tokens that top-k and top-p keep, most likely first (ties: lower id first), with their
/// weights `exp((x − max) / T)` for logits (or log-probabilities) x. Only as many of the most
/// likely tokens are sorted as the nucleus needs (usually a few dozen of a 50k–150k
/// vocabulary), not the whole vocabulary.
fn truncated(logits: &[f32], params: &SamplingParams) -> (Vec<u32>, Vec<f32>) {
    let by_likelihood = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut scaled: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, x)| (i as u32, x / params.temperature))
        .collect();
    let vocabulary = scaled.len();
    // Sorts the `count` most likely tokens into the front of `scaled`.
    let sort_head = |scaled: &mut Vec<(u32, f32)>, count: usize| {
        if count < scaled.len() {
            scaled.select_nth_unstable_by(count, by_likelihood);
        }
        scaled[..count].sort_by(by_likelihood);
    };
    // With top-k the candidates are the k most likely; without it, the whole vocabulary.
    let limit = match params.top_k {
        0 => vocabulary,
        k => k.min(vocabulary),
    };
    // Only a nucleus over the whole vocabulary starts from a small head; top-k sorts its k.
    let mut head = if params.top_p < 1.0 && limit == vocabulary {
        NUCLEUS_HEAD.min(limit)
    } else {
        limit
    };
    sort_head(&mut scaled, head);
    let Some(&(_, max)) = scaled.first() else {
        return (Vec::new(), Vec::new());
    };
    let weight = |value: f32| (value - max).exp();
    let mut keep = head;
    if params.top_p < 1.0 {
        // The candidates' total weight: the top k's, or the whole vocabulary's.
        let total: f32 = scaled[..limit].iter().map(|c| weight(c.1)).sum();
        keep = loop {
            let mut cumulative = 0.0;
            let reached = scaled[..head].iter().position(|c| {
                cumulative += weight(c.1) / total;
                cumulative >= params.top_p
            });
            match reached {
                Some(position) => break position + 1,
                None if head == limit => break limit,
                None => {
                    head = (head * 4).min(limit);
                    sort_head(&mut scaled, head);
                }
            }
        };
    }
    scaled.truncate(keep);
    let weights = scaled.iter().map(|c| weight(c.1)).collect();
    (scaled.into_iter().map(|c| c.0).collect(), weights)
}

/// Weights per block of [`draw`]'s scan.
const DRAW_BLOCK: usize = 256;

/// Index drawn with probability proportional to `weights` (whose sum is `total`; None when
/// they are all zero). The scan skips whole blocks by their sums (vectorised) and walks one
/// weight at a time only through the block the draw falls in; a weight of zero is never drawn.
fn draw(weights: &[f32], total: f32, rng: &mut ChaCha8Rng) -> Option<usize> {
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let mut target = rng.random::<f32>() * total;
    for (block, chunk) in weights.chunks(DRAW_BLOCK).enumerate() {
        let sum = vector_math::sum(chunk);
        if target > sum {
            target -= sum;
            continue;
        }
        for (i, w) in chunk.iter().enumerate() {
            target -= w;
            if target <= 0.0 && *w > 0.0 {
                return Some(block * DRAW_BLOCK + i);
            }
        }
        // Rounding left a sliver of the target: the draw goes on into the next block.
    }
    weights.iter().rposition(|w| *w > 0.0)
}

/// Derives the seed of sample `index` from a prompt's seed (splitmix64).
pub fn sample_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;

    /// The rule `truncated` implements, by sorting the whole vocabulary.
    fn truncated_by_full_sort(log_probs: &[f32], params: &SamplingParams) -> (Vec<u32>, Vec<f32>) {
        let mut candidates: Vec<(u32, f32)> = log_probs
            .iter()
            .enumerate()
            .map(|(i, lp)| (i as u32, lp / params.temperature))
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if params.top_k > 0 {
            candidates.truncate(params.top_k);
        }
        let max = candidates.first().map_or(0.0, |c| c.1);
        let mut weights: Vec<f32> = candidates.iter().map(|c| (c.1 - max).exp()).collect();
        if params.top_p < 1.0 {
            let total: f32 = weights.iter().sum();
            let mut cumulative = 0.0;
            let mut keep = weights.len();
            for (i, w) in weights.iter().enumerate() {
                cumulative += w / total;
                if cumulative >= params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            weights.truncate(keep);
        }
        candidates.truncate(weights.len());
        (candidates.into_iter().map(|c| c.0).collect(), weights)
    }

    /// Log-softmax of pseudo-random logits with `spread` between the likeliest and the rest
    /// (small: a flat distribution with a large nucleus; large: a peaked one).
    fn distribution(vocabulary: usize, spread: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let logits: Vec<f32> = (0..vocabulary)
            .map(|_| spread * rng.random::<f32>().powi(8))
            .collect();
        vector_math::log_softmax(&logits)
    }

    #[test]
    fn the_partial_sort_keeps_the_same_tokens_as_a_full_sort() {
        let mut nuclei = Vec::new();
        for (seed, spread) in [(1, 2.0), (2, 8.0), (3, 30.0), (4, 80.0)] {
            let log_probs = distribution(5000, spread, seed);
            for (temperature, top_p, top_k) in [
                (1.0, 0.9, 0),
                (0.7, 0.95, 0),
                (1.3, 0.5, 0),
                (1.0, 1.0, 40),
                (1.0, 0.9, 40),
                (1.0, 0.99, 3000),
                (1.0, 1e-6, 0),
            ] {
                let params = SamplingParams {
                    temperature,
                    top_p,
                    top_k,
                    greedy: false,
                };
                let fast = truncated(&log_probs, &params);
                let full = truncated_by_full_sort(&log_probs, &params);
                assert_eq!(fast.0, full.0, "{params:?} spread {spread}");
                for (a, b) in fast.1.iter().zip(&full.1) {
                    assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
                }
                if top_k == 0 {
                    nuclei.push(fast.0.len());
                }
            }
        }
        // Nuclei from a single token to more than the first sorted head (so it had to grow).
        assert!(nuclei.contains(&1));
        assert!(nuclei.iter().any(|&n| n > NUCLEUS_HEAD * 4), "{nuclei:?}");
    }

    #[test]
    fn draws_follow_the_weights_across_blocks_and_never_pick_a_zero_weight() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Two tokens far apart (different blocks) with weights 1 : 3.
        let mut weights = vec![0f32; 3 * DRAW_BLOCK + 17];
        weights[10] = 1.0;
        weights[3 * DRAW_BLOCK + 5] = 3.0;
        let total = 4.0;
        let draws = 4000;
        let mut late = 0;
        for _ in 0..draws {
            match draw(&weights, total, &mut rng) {
                Some(10) => {}
                Some(i) if i == 3 * DRAW_BLOCK + 5 => late += 1,
                other => panic!("drew {other:?}, a token of weight zero"),
            }
        }
        let share = late as f64 / draws as f64;
        assert!((share - 0.75).abs() < 0.03, "share {share}");
        // Alternating zero and positive weights: only the positive ones are drawn, all of
        // them eventually.
        let weights: Vec<f32> = (0..1000).map(|i| (i % 2) as f32).collect();
        let total: f32 = weights.iter().sum();
        let mut seen = vec![false; 1000];
        for _ in 0..20_000 {
            let i = draw(&weights, total, &mut rng).expect("positive weights");
            assert_eq!(i % 2, 1, "drew token {i} of weight zero");
            seen[i] = true;
        }
        assert!(seen.iter().skip(1).step_by(2).all(|s| *s));
        // Nothing to draw from.
        assert_eq!(draw(&[0.0; 10], 0.0, &mut rng), None);
        assert_eq!(draw(&[1.0, f32::NAN], f32::NAN, &mut rng), None);
    }

    /// The way tokens were chosen before `sample`: on the log-softmax of the logits.
    fn choose_on_log_probs(
        log_probs: &[f32],
        params: &SamplingParams,
        rng: &mut ChaCha8Rng,
    ) -> u32 {
        let argmax = || {
            let best = vector_math::max(log_probs);
            log_probs
                .iter()
                .position(|&lp| lp == best)
                .map_or(0, |i| i as u32)
        };
        if params.greedy || params.temperature <= 0.0 {
            return argmax();
        }
        if params.top_k == 0 && params.top_p >= 1.0 {
            let inverse_temperature = 1.0 / params.temperature;
            let max = vector_math::max(log_probs) * inverse_temperature;
            let mut weights = vec![0f32; log_probs.len()];
            let total = vector_math::scaled_exp(log_probs, inverse_temperature, max, &mut weights);
            return draw(&weights, total, rng).map_or_else(argmax, |i| i as u32);
        }
        let (candidates, weights) = truncated(log_probs, params);
        let total = weights.iter().sum();
        draw(&weights, total, rng).map_or_else(argmax, |i| candidates[i])
    }

    #[test]
    fn sampling_on_logits_picks_what_the_log_softmax_would_and_reports_its_log_prob() {
        for (seed, spread, offset) in [(1, 3.0, 0.0), (2, 20.0, 7.5), (3, 60.0, -12.0)] {
            // Evenly spaced values in shuffled order: no two logits so close that subtracting
            // the normaliser could make them equal (which would reorder ties for top-k / top-p).
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut ranks: Vec<u32> = (0..3000).collect();
            ranks.shuffle(&mut rng);
            let logits: Vec<f32> = ranks
                .iter()
                .map(|&rank| offset + spread * rank as f32 / 3000.0)
                .collect();
            let log_probs = vector_math::log_softmax(&logits);
            for params in [
                SamplingParams {
                    greedy: true,
                    ..SamplingParams::default()
                },
                SamplingParams::default(),
                SamplingParams {
                    temperature: 0.7,
                    ..SamplingParams::default()
                },
                SamplingParams {
                    top_p: 0.9,
                    ..SamplingParams::default()
                },
                SamplingParams {
                    top_k: 40,
                    temperature: 1.3,
                    ..SamplingParams::default()
                },
            ] {
                let (mut ours, mut theirs) = (
                    ChaCha8Rng::seed_from_u64(seed + 10),
                    ChaCha8Rng::seed_from_u64(seed + 10),
                );
                let mut distinct = std::collections::BTreeSet::new();
                for _ in 0..300 {
                    let (token, logprob) = sample(&logits, &params, &mut ours);
                    let expected = choose_on_log_probs(&log_probs, &params, &mut theirs);
                    assert_eq!(token, expected, "{params:?} spread {spread}");
                    // Bit for bit the log-softmax's value.
                    assert_eq!(logprob, log_probs[token as usize], "{params:?}");
                    distinct.insert(token);
                }
                if params.greedy {
                    assert_eq!(distinct.len(), 1);
                } else if params.top_k > 0 {
                    assert!(distinct.len() <= params.top_k, "{params:?}");
                } else if spread < 10.0 {
                    assert!(distinct.len() > 50, "{params:?}: {}", distinct.len());
                }
            }
        }
        // Greedy ties go to the lowest id; a one-token vocabulary has log-probability 0.
        let greedy = SamplingParams {
            greedy: true,
            ..SamplingParams::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(sample(&[0.5, 2.0, 2.0, 1.0], &greedy, &mut rng).0, 1);
        assert_eq!(
            sample(&[3.25], &SamplingParams::default(), &mut rng),
            (0, 0.0)
        );
    }

    #[test]
    fn ties_are_kept_lowest_id_first_and_an_empty_vocabulary_keeps_nothing() {
        let log_probs = vec![(0.25f32).ln(); 4];
        let params = SamplingParams {
            top_p: 0.6,
            ..SamplingParams::default()
        };
        assert_eq!(truncated(&log_probs, &params).0, vec![0, 1, 2]);
        assert_eq!(truncated(&[], &params), (Vec::new(), Vec::new()));
    }
}
