//! Typed access to a prompt plugin.

use super::error::PluginError;
use super::instance::{Instance, InstancePool, OutputSize};
use super::types::Rendered;
use super::wit::{since_v0_1_0 as v0_1_0, since_v0_2_0 as v0_2_0, since_v0_3_0 as v0_3_0};

/// The bindings of a prompt plugin, by contract version.
pub(crate) enum PromptBindings {
    V0_1_0(v0_1_0::prompt::PromptPlugin),
    V0_2_0(v0_2_0::prompt::PromptPlugin),
    V0_3_0(v0_3_0::prompt::PromptPlugin),
}

/// A loaded prompt plugin.
pub struct PromptPlugin {
    pub(crate) pool: InstancePool<PromptBindings>,
}

/// Roles a chat message may have.
pub const ROLES: [&str; 3] = ["system", "user", "assistant"];

impl OutputSize for Rendered {
    fn output_size(&self) -> usize {
        match self {
            Rendered::Text(text) => text.len(),
            Rendered::Chat(messages) => messages
                .iter()
                .map(|m| m.role.len() + m.content.len())
                .sum(),
        }
    }
}

impl PromptPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.pool.name()
    }

    /// Renders the prompt of one question. Empty prompts, empty chats and unknown roles are
    /// rejected as invalid output.
    pub fn render(&self, question: &str) -> Result<Rendered, PluginError> {
        self.render_in(Instance::Pooled, question)
    }

    /// [`Self::render`] on the chosen kind of instance.
    pub(crate) fn render_in(
        &self,
        instance: Instance,
        question: &str,
    ) -> Result<Rendered, PluginError> {
        const FUNCTION: &str = "prompt.render";
        let result = self
            .pool
            .call_in(instance, FUNCTION, |bindings, store| match bindings {
                PromptBindings::V0_1_0(b) => v0_1_0::render(b, store, question),
                PromptBindings::V0_2_0(b) => v0_2_0::render(b, store, question),
                PromptBindings::V0_3_0(b) => v0_3_0::render(b, store, question),
            })?;
        let rendered = self.pool.guest_result(FUNCTION, result)?;
        let problem = match &rendered {
            Rendered::Text(text) if text.is_empty() => Some("an empty prompt".to_string()),
            Rendered::Chat(messages) if messages.is_empty() => {
                Some("a chat with no messages".to_string())
            }
            Rendered::Chat(messages) => messages
                .iter()
                .find(|m| !ROLES.contains(&m.role.as_str()))
                .map(|m| {
                    format!(
                        "a message with role `{}` (expected system, user or assistant)",
                        m.role
                    )
                }),
            Rendered::Text(_) => None,
        };
        self.pool.validated(FUNCTION, rendered, problem)
    }
}
