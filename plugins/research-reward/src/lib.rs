//! The ReSearch reward: format check, EOS check, F1 of the `\boxed{}` answer (0.1 floor).
//! Like the reference, it reads the response only up to the model's assistant marker (the
//! host's `host.assistant-marker`): a response that starts a new assistant turn is cut there.
//!
//! Components: `answer` (F1 of the extracted boxed answer, 0 when there is none), `format`
//! (1 when the format check passes) and `eos` (1 when the response, as read, ended with EOS).

use research_sdk::config;
use research_sdk::reward::{Finish, Reward, RewardScore, Sample};

struct ResearchReward {
    /// The model's assistant marker, set by the host when the model has a chat template.
    marker: Option<String>,
}

impl Reward for ResearchReward {
    fn new() -> Result<Self, String> {
        Ok(ResearchReward {
            marker: config::get(config::ASSISTANT_MARKER),
        })
    }

    fn score(&self, sample: Sample) -> Result<RewardScore, String> {
        let (response, eos) = qa_scoring::research::as_reference_reads(
            &sample.response,
            matches!(sample.finish, Finish::Eos),
            self.marker.as_deref(),
        );
        let scored = qa_scoring::research::score(response, eos, &sample.golden_answers);
        Ok(RewardScore::new(scored.total)
            .with("answer", scored.answer_f1)
            .with("format", f64::from(u8::from(scored.format_ok)))
            .with("eos", f64::from(u8::from(eos))))
    }
}

research_sdk::export_reward!(ResearchReward);
