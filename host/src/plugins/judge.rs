//! Typed access to a judge plugin: a language model behind a plugin (an OpenAI-compatible
//! endpoint, say) that completes the LLM-as-judge's prompts.

use super::error::PluginError;
use super::instance::InstancePool;
use super::types::Message;
use super::wit::{since_v0_2_0 as v0_2_0, since_v0_3_0 as v0_3_0};

/// The bindings of a judge plugin, by contract version (the kind exists from 0.2.0 on).
pub(crate) enum JudgeBindings {
    V0_2_0(v0_2_0::judge::JudgePlugin),
    V0_3_0(v0_3_0::judge::JudgePlugin),
}

/// A loaded judge plugin.
pub struct JudgePlugin {
    pub(crate) pool: InstancePool<JudgeBindings>,
}

impl JudgePlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.pool.name()
    }

    /// One completion per prompt; the answer must hold exactly one text per prompt.
    pub fn complete(
        &self,
        prompts: &[Vec<Message>],
        max_tokens: u32,
    ) -> Result<Vec<String>, PluginError> {
        const FUNCTION: &str = "judge.complete";
        let result = self.pool.call(FUNCTION, |bindings, store| match bindings {
            JudgeBindings::V0_2_0(b) => v0_2_0::complete(b, store, prompts, max_tokens),
            JudgeBindings::V0_3_0(b) => v0_3_0::complete(b, store, prompts, max_tokens),
        })?;
        let texts = self.pool.guest_result(FUNCTION, result)?;
        let problem = (texts.len() != prompts.len())
            .then(|| format!("{} completions for {} prompts", texts.len(), prompts.len()));
        self.pool.validated(FUNCTION, texts, problem)
    }
}
