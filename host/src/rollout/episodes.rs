//! Scored rollouts of questions: render the prompt (prompt plugin + chat template), roll out,
//! score with the reward plugin. Training and evaluation both go through here.

use super::generator::Generation;
use super::runner::{PromptInput, RolloutPlugins, RolloutSettings, RolloutTimes, run_rollouts};
use super::trajectory::Trajectory;
use crate::data::qa::QaExample;
use crate::model::{LoadedModel, ModelConfig, ModelTokenizer, Policy};
use crate::plugins::{Finish, PluginSet, Rendered, RewardSample};
use anyhow::{Context, Result};
use std::time::Instant;

/// What rollouts need of the policy model: its config and tokenizer for every backend, its
/// weights only when the host samples (an inference server holds its own).
#[derive(Clone, Copy)]
pub struct RolloutModel<'a> {
    pub config: &'a ModelConfig,
    pub tokenizer: &'a ModelTokenizer,
    pub policy: Option<&'a Policy>,
}

impl<'a> From<&'a LoadedModel> for RolloutModel<'a> {
    fn from(model: &'a LoadedModel) -> Self {
        RolloutModel {
            config: model.policy.config(),
            tokenizer: &model.tokenizer,
            policy: Some(&model.policy),
        }
    }
}

/// The model, where it samples, the plugins, and the parser's stop sequences (asked once).
pub struct Episodes<'a> {
    pub model: RolloutModel<'a>,
    pub generation: &'a Generation,
    pub plugins: &'a PluginSet,
    pub stop_sequences: &'a [String],
}

impl Episodes<'_> {
    /// Renders and tokenises the prompt of a question; an error text names what failed.
    pub fn render(&self, question: &str) -> Result<(String, Vec<u32>), String> {
        render_prompt(
            self.plugins,
            self.model.tokenizer,
            self.model.config.max_position_embeddings,
            question,
        )
    }

    /// Rolls out `settings.group_size` samples of each of `examples` (indices into `set`),
    /// group g seeded by `seed(g)`, and scores them. A failed prompt or plugin call is pushed
    /// to `errors` (and recorded in the trajectory); the batch goes on.
    pub fn run(
        &self,
        set: &[QaExample],
        examples: &[usize],
        settings: &RolloutSettings,
        seed: impl Fn(usize) -> u64,
        times: &mut RolloutTimes,
        errors: &mut Vec<String>,
    ) -> Result<Vec<Trajectory>> {
        let mut prompts = Vec::new();
        for (group, &example) in examples.iter().enumerate() {
            let qa = set
                .get(example)
                .with_context(|| format!("no question {example} (the set has {})", set.len()))?;
            let started = Instant::now();
            let rendered = self.render(&qa.question);
            times.plugins += started.elapsed().as_secs_f64();
            match rendered {
                Ok((text, ids)) => prompts.push(PromptInput {
                    group,
                    example,
                    id: qa.id.clone(),
                    question: qa.question.clone(),
                    golden_answers: qa.golden_answers.clone(),
                    text,
                    ids,
                    seed: seed(group),
                }),
                Err(error) => errors.push(format!("question {}: prompt: {error}", qa.id)),
            }
        }
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let plugins = RolloutPlugins {
            parser: self.plugins.parser.as_ref().context("no parser plugin")?,
            search: self.plugins.search.as_ref().context("no search plugin")?,
            stop_sequences: self.stop_sequences.to_vec(),
        };
        let mut trajectories = run_rollouts(
            self.generation,
            &self.model,
            &plugins,
            &prompts,
            settings,
            times,
        )?;
        let reward = self.plugins.reward()?;
        let started = Instant::now();
        for t in &mut trajectories {
            if let Some(error) = &t.error {
                errors.push(format!("question {} sample {}: {error}", t.id, t.sample));
                continue;
            }
            let finish: Finish = t.finish.parse().unwrap_or(Finish::Length);
            let sample = RewardSample {
                question: t.question.clone(),
                golden_answers: t.golden_answers.clone(),
                response: t.response_text.clone(),
                finish,
                num_searches: t.queries.len() as u32,
                metadata: set[t.example].metadata.clone(),
            };
            match reward.score(&sample) {
                Ok(score) => {
                    t.reward = Some(score.total);
                    t.components = score.components;
                }
                Err(error) => {
                    errors.push(format!("question {} sample {}: {error}", t.id, t.sample));
                    t.error = Some(error.to_string());
                    t.finish = "error".into();
                }
            }
        }
        times.plugins += started.elapsed().as_secs_f64();
        Ok(trajectories)
    }
}

/// Renders a question with the prompt plugin (and the chat template when the plugin returns
/// messages) and tokenises it; refused when it leaves no room in a `context`-token window.
pub fn render_prompt(
    plugins: &PluginSet,
    tokenizer: &ModelTokenizer,
    context: usize,
    question: &str,
) -> Result<(String, Vec<u32>), String> {
    let prompt = plugins.prompt.as_ref().ok_or("no prompt plugin loaded")?;
    let text = match prompt.render(question).map_err(|e| e.to_string())? {
        Rendered::Text(text) => text,
        Rendered::Chat(messages) => tokenizer
            .apply_chat_template(&messages, true)
            .map_err(|e| format!("{e:#}"))?,
    };
    let ids = tokenizer.encode(&text).map_err(|e| format!("{e:#}"))?;
    if ids.is_empty() {
        return Err("the rendered prompt has no tokens".into());
    }
    if ids.len() + 2 > context {
        return Err(format!(
            "the prompt has {} tokens; the model's context is {context}",
            ids.len()
        ));
    }
    Ok((text, ids))
}
