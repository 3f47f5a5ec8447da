//! The Search-R1 reward: exact match of the last `<answer>` of the response.
//!
//! Config `format = true` switches to the v0.3 format reward table. Components: `em`,
//! `format` (1 when the tag sequence is valid) and `has_answer`.

use research_sdk::config;
use research_sdk::reward::{Reward, RewardScore, Sample};

struct SearchR1Reward {
    /// The v0.3 format reward table instead of plain EM.
    format_reward: bool,
}

impl Reward for SearchR1Reward {
    fn new() -> Result<Self, String> {
        Ok(SearchR1Reward {
            format_reward: config::get_bool("format", false)?,
        })
    }

    fn score(&self, sample: Sample) -> Result<RewardScore, String> {
        let scored = qa_scoring::searchr1::score(
            &sample.response,
            &sample.golden_answers,
            self.format_reward,
        );
        Ok(RewardScore::new(scored.total)
            .with("em", scored.em)
            .with("format", f64::from(u8::from(scored.format_ok)))
            .with("has_answer", f64::from(u8::from(scored.has_answer))))
    }
}

research_sdk::export_reward!(SearchR1Reward);
