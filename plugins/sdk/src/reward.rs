//! Reward plugins: score one finished trajectory.

pub use crate::bindings::reward::exports::research::plugins::reward::{
    Component, RewardScore, Sample,
};
pub use crate::types::Finish;

/// A reward function: built once per instance from its settings, then asked to score
/// trajectories. Export it with [`export_reward!`](crate::export_reward).
pub trait Reward: Sized + Send + Sync + 'static {
    /// Reads and checks the settings ([`crate::config`]). An error names the setting and what
    /// is wrong; the plugin then fails to load.
    fn new() -> Result<Self, String>;

    /// Scores one trajectory. `total` must be finite; every component is logged by name.
    /// Return an error when the sample cannot be scored at all.
    fn score(&self, sample: Sample) -> Result<RewardScore, String>;
}

impl RewardScore {
    /// A score with no components.
    pub fn new(total: f64) -> RewardScore {
        RewardScore {
            total,
            components: Vec::new(),
        }
    }

    /// Adds a named component (logged beside the total; it does not change the total).
    pub fn with(mut self, name: &str, value: f64) -> RewardScore {
        self.components.push(Component {
            name: name.to_string(),
            value,
        });
        self
    }
}

/// Exports a type (any path) that implements [`Reward`] as this component's reward.
#[macro_export]
macro_rules! export_reward {
    ($ty:ty) => {
        const _: () = {
            static PLUGIN: $crate::__private::Slot<$ty> = $crate::__private::Slot::new();
            struct Export;
            impl $crate::bindings::reward::Guest for Export {
                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    PLUGIN.init(<$ty as $crate::reward::Reward>::new)
                }
            }
            impl $crate::bindings::reward::exports::research::plugins::reward::Guest for Export {
                fn score(
                    sample: $crate::reward::Sample,
                ) -> ::core::result::Result<$crate::reward::RewardScore, ::std::string::String> {
                    <$ty as $crate::reward::Reward>::score(PLUGIN.get()?, sample)
                }
            }
            $crate::bindings::reward::__export_reward_world!(Export with_types_in $crate::bindings::reward);
        };
    };
}
