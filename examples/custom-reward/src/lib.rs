//! F1 with a length penalty: the answer is the text of the last `<answer>…</answer>` (its
//! `\boxed{}` content when it has one); the total is its token F1 against the golden answers
//! minus `penalty-per-100-words` for every 100 words of the response past `free-words`.

use qa_scoring::{metrics, research, searchr1};
use research_sdk::config;
use research_sdk::reward::{Reward, RewardScore, Sample};

struct F1LengthPenalty {
    /// Words the response may have before the penalty starts.
    free_words: f64,
    /// Penalty for every 100 words past `free_words`.
    per_100: f64,
}

impl Reward for F1LengthPenalty {
    /// Reads the settings once: a bad value fails `host plugins check` and the run's start.
    fn new() -> Result<Self, String> {
        let free_words: f64 = config::get_parsed("free-words", 300.0)?;
        let per_100: f64 = config::get_parsed("penalty-per-100-words", 0.05)?;
        if !(free_words >= 0.0 && per_100 >= 0.0) {
            return Err("free-words and penalty-per-100-words must not be negative".into());
        }
        Ok(F1LengthPenalty {
            free_words,
            per_100,
        })
    }

    fn score(&self, sample: Sample) -> Result<RewardScore, String> {
        let answer = searchr1::last_answer(&sample.response)
            .map(|span| research::boxed_answer(&span).unwrap_or(span))
            .unwrap_or_default();
        let f1 = metrics::f1(&answer, &sample.golden_answers);
        let words = qa_scoring::text::py_split(&sample.response).count() as f64;
        let penalty = self.per_100 * (words - self.free_words).max(0.0) / 100.0;
        Ok(RewardScore::new((f1 - penalty).max(0.0))
            .with("f1", f1)
            .with("length_penalty", penalty)
            .with("words", words))
    }
}

research_sdk::export_reward!(F1LengthPenalty);
