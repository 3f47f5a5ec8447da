//! One rollout's record: token ids as sampled, the loss mask, the segments and what happened.

use serde::{Deserialize, Serialize};

/// Who produced a stretch of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentKind {
    /// Sampled by the policy (loss mask 1).
    Generated,
    /// Appended by the host: search results or parser feedback (loss mask 0).
    Observation,
}

/// A stretch of response tokens `[start, end)` of one kind, with its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub kind: SegmentKind,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// A finished rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// The group (the prompt's position in its batch); advantages are normalised per group.
    pub group: usize,
    /// Index of the question in its dataset.
    pub example: usize,
    /// The dataset's id of the question.
    pub id: String,
    /// Which sample of its group this is.
    pub sample: usize,
    pub question: String,
    pub golden_answers: Vec<String>,
    pub prompt_text: String,
    pub prompt_ids: Vec<u32>,
    /// Everything after the prompt, sampled and appended, exactly as fed to the model.
    pub response_ids: Vec<u32>,
    /// 1 for sampled tokens, 0 for appended ones; one per response token.
    pub loss_mask: Vec<u8>,
    pub segments: Vec<Segment>,
    /// The response as the reward plugin sees it (the final EOS token left out).
    pub response_text: String,
    /// Queries sent to the search plugin, in order.
    pub queries: Vec<String>,
    /// The answer the parser read from the last turn, if any.
    pub answer: Option<String>,
    /// eos, stop:SEQUENCE, length, max-turns, or error.
    pub finish: String,
    /// Turns that ended at a stop sequence.
    pub turns: u32,
    /// Why a plugin failed on this rollout; such a rollout is left out of the loss.
    pub error: Option<String>,
    /// Reward total (None when the rollout or its scoring failed).
    pub reward: Option<f64>,
    /// Reward components by name, in the plugin's order.
    pub components: Vec<(String, f64)>,
    /// Group-normalised advantage (0 for failed rollouts).
    pub advantage: f64,
}

impl Trajectory {
    /// Sampled tokens in the response.
    pub fn generated_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m == 1).count()
    }

    /// Prompt and response ids, as one sequence.
    pub fn full_ids(&self) -> Vec<u32> {
        let mut ids = self.prompt_ids.clone();
        ids.extend_from_slice(&self.response_ids);
        ids
    }

    /// The loss mask over the log-prob grid of `full_ids` (position t predicts token t + 1):
    /// 1 where the predicted token was sampled; 0 everywhere else. Failed rollouts keep none.
    pub fn logprob_mask(&self) -> Vec<f32> {
        let total = self.prompt_ids.len() + self.response_ids.len();
        let mut mask = vec![0.0f32; total.saturating_sub(1)];
        if self.error.is_some() {
            return mask;
        }
        for (j, &m) in self.loss_mask.iter().enumerate() {
            let position = self.prompt_ids.len() + j;
            if m == 1 && position >= 1 {
                mask[position - 1] = 1.0;
            }
        }
        mask
    }
}

/// Contiguous runs of sampled / appended tokens of a response.
pub fn segment_ranges(sampled: &[bool]) -> Vec<(SegmentKind, usize, usize)> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for i in 1..=sampled.len() {
        if i == sampled.len() || sampled[i] != sampled[start] {
            let kind = if sampled[start] {
                SegmentKind::Generated
            } else {
                SegmentKind::Observation
            };
            ranges.push((kind, start, i));
            start = i;
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_sampled_and_appended_tokens() {
        assert!(segment_ranges(&[]).is_empty());
        let ranges = segment_ranges(&[true, true, false, false, false, true]);
        assert_eq!(
            ranges,
            vec![
                (SegmentKind::Generated, 0, 2),
                (SegmentKind::Observation, 2, 5),
                (SegmentKind::Generated, 5, 6)
            ]
        );
    }

    #[test]
    fn logprob_mask_shifts_by_one_and_drops_failed_rollouts() {
        let mut t = Trajectory {
            group: 0,
            example: 0,
            id: "q".into(),
            sample: 0,
            question: String::new(),
            golden_answers: vec![],
            prompt_text: String::new(),
            prompt_ids: vec![1, 2, 3],
            response_ids: vec![4, 5, 6, 7],
            loss_mask: vec![1, 0, 0, 1],
            segments: vec![],
            response_text: String::new(),
            queries: vec![],
            answer: None,
            finish: "eos".into(),
            turns: 0,
            error: None,
            reward: Some(1.0),
            components: vec![],
            advantage: 0.0,
        };
        // Positions 0..6 predict tokens 1..7; token 3 (first response token) is predicted at 2.
        assert_eq!(t.logprob_mask(), vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
        assert_eq!(t.generated_tokens(), 2);
        t.error = Some("boom".into());
        assert_eq!(t.logprob_mask(), vec![0.0; 6]);
    }
}
