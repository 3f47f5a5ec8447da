//! Typed access to a reward plugin.

use super::error::PluginError;
use super::instance::{Instance, InstancePool, OutputSize};
use super::types::{RewardSample, RewardScore};
use super::wit::{since_v0_1_0 as v0_1_0, since_v0_2_0 as v0_2_0, since_v0_3_0 as v0_3_0};

/// The bindings of a reward plugin, by contract version.
pub(crate) enum RewardBindings {
    V0_1_0(v0_1_0::reward::RewardPlugin),
    V0_2_0(v0_2_0::reward::RewardPlugin),
    V0_3_0(v0_3_0::reward::RewardPlugin),
}

/// A loaded reward plugin.
pub struct RewardPlugin {
    pub(crate) pool: InstancePool<RewardBindings>,
}

/// Most components a reward may report.
pub const MAX_COMPONENTS: usize = 64;

impl OutputSize for RewardScore {
    fn output_size(&self) -> usize {
        self.components
            .iter()
            .map(|(name, _)| name.len() + 8)
            .sum::<usize>()
            + 8
    }
}

impl RewardPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.pool.name()
    }

    /// Scores one trajectory. Non-finite totals or components, empty or repeated component
    /// names and more than [`MAX_COMPONENTS`] components are rejected as invalid output.
    pub fn score(&self, sample: &RewardSample) -> Result<RewardScore, PluginError> {
        self.score_in(Instance::Pooled, sample)
    }

    /// [`Self::score`] on the chosen kind of instance.
    pub(crate) fn score_in(
        &self,
        instance: Instance,
        sample: &RewardSample,
    ) -> Result<RewardScore, PluginError> {
        const FUNCTION: &str = "reward.score";
        let result = self
            .pool
            .call_in(instance, FUNCTION, |bindings, store| match bindings {
                RewardBindings::V0_1_0(b) => v0_1_0::score(b, store, sample),
                RewardBindings::V0_2_0(b) => v0_2_0::score(b, store, sample),
                RewardBindings::V0_3_0(b) => v0_3_0::score(b, store, sample),
            })?;
        let score = self.pool.guest_result(FUNCTION, result)?;
        let problem = validate(&score).err();
        self.pool.validated(FUNCTION, score, problem)
    }
}

fn validate(score: &RewardScore) -> Result<(), String> {
    if !score.total.is_finite() {
        return Err(format!(
            "the total reward is {}, not a finite number",
            score.total
        ));
    }
    if score.components.len() > MAX_COMPONENTS {
        return Err(format!(
            "{} components, more than the {MAX_COMPONENTS} allowed",
            score.components.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, value) in &score.components {
        if name.trim().is_empty() {
            return Err("a component has an empty name".to_string());
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("component `{name}` is reported twice"));
        }
        if !value.is_finite() {
            return Err(format!(
                "component `{name}` is {value}, not a finite number"
            ));
        }
    }
    Ok(())
}
