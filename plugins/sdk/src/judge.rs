//! Judge plugins: a language model behind the plugin (an OpenAI-compatible endpoint, say)
//! completes the prompts of the host's LLM-as-judge.

pub use crate::types::Message;

/// A completion backend: built once per instance from its settings. Export it with
/// [`export_judge!`](crate::export_judge).
pub trait Judge: Sized + Send + Sync + 'static {
    /// Reads and checks the settings ([`crate::config`]); an error keeps the plugin from
    /// loading.
    fn new() -> Result<Self, String>;

    /// One completion per prompt, in order, each at most `max_tokens` tokens.
    fn complete(&self, prompts: Vec<Vec<Message>>, max_tokens: u32) -> Result<Vec<String>, String>;
}

/// Exports a type (any path) that implements [`Judge`] as this component's judge backend.
#[macro_export]
macro_rules! export_judge {
    ($ty:ty) => {
        const _: () = {
            static PLUGIN: $crate::__private::Slot<$ty> = $crate::__private::Slot::new();
            struct Export;
            impl $crate::bindings::judge::Guest for Export {
                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    PLUGIN.init(<$ty as $crate::judge::Judge>::new)
                }
            }
            impl $crate::bindings::judge::exports::research::plugins::judge::Guest for Export {
                fn complete(
                    prompts: ::std::vec::Vec<::std::vec::Vec<$crate::judge::Message>>,
                    max_tokens: u32,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<::std::string::String>,
                    ::std::string::String,
                > {
                    <$ty as $crate::judge::Judge>::complete(PLUGIN.get()?, prompts, max_tokens)
                }
            }
            $crate::bindings::judge::__export_judge_world!(Export with_types_in $crate::bindings::judge);
        };
    };
}
